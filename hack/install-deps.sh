#!/usr/bin/env bash
# Installs what the integration tests need on a fresh machine, idempotently:
# Go tools into $1 (ec2-metadata-mock), and checks for moto_server.
# usage: hack/install-deps.sh TOOLS_BIN
set -euo pipefail
BIN=${1:?usage: install-deps.sh TOOLS_BIN}
mkdir -p "$BIN"
if [ ! -x "$BIN/ec2-metadata-mock" ]; then
  echo "installing ec2-metadata-mock v1.13.0 into $BIN"
  GOBIN="$BIN" go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
fi
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server] with pip"
  python3 -m pip install --quiet 'moto[server]==5.2.1'
fi
echo "deps ok: $BIN/ec2-metadata-mock, $(command -v moto_server)"
