#!/usr/bin/env bash
# Installs what the end-to-end cluster needs, idempotently:
#   Debian packages (runc, CNI plugins, iptables, conntrack, the distribution
#   registry, htpasswd, openssl, systemd-container and debootstrap for the nodes,
#   busybox-static for the flannel CNI plugin image's `cp`), and Go tools built from their modules into
#   $BUILD/bin (containerd, crane, crictl, ec2-metadata-mock).
# usage: hack/e2e/deps.sh
source "$(dirname "$0")/lib.sh"
mkdir -p "$BIN"

# command -> Debian package
declare -A pkgs=(
  [runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins [ip]=iproute2
  [iptables]=iptables [conntrack]=conntrack [docker-registry]=docker-registry
  [htpasswd]=apache2-utils [openssl]=openssl [nsenter]=util-linux [curl]=curl
  [systemd-nspawn]=systemd-container [debootstrap]=debootstrap [journalctl]=systemd
  [/bin/busybox]=busybox-static
)
missing=()
for c in "${!pkgs[@]}"; do
  if [[ $c == /* ]]; then [ -e "$c" ] || missing+=("${pkgs[$c]}")
  else command -v "$c" >/dev/null || missing+=("${pkgs[$c]}"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The docker-registry package would start its own service where there is an
  # init system; the harness runs its own instance inside the test network.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# gotool NAME VERSION PKG...: go install into $BIN unless that version is there.
gotool() {
  local name=$1 ver=$2; shift 2
  local stamp=$BIN/.$name-$ver
  [ -f "$stamp" ] && return 0
  local t0=$SECONDS
  log "building $name $ver"
  GOBIN=$BIN go install "$@"
  touch "$stamp"
  log "built $name $ver in $((SECONDS - t0))s"
}
gotool containerd $CONTAINERD_VERSION -tags no_btrfs,no_devmapper,no_zfs \
  github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION \
  github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION
gotool crane $CRANE_VERSION github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION
gotool crictl $CRICTL_VERSION sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION
gotool ec2-metadata-mock $AEMM_VERSION github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@$AEMM_VERSION
for t in moto_server terraform kubectl aws; do
  command -v $t >/dev/null || die "$t is not installed (expected preinstalled on this kind of machine)"
done
log "dependencies ready"
