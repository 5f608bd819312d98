#!/usr/bin/env bash
# make e2e: bring the cluster up, run the scenarios of test/e2e against it,
# and tear everything down at the end, whatever happened.
source "$(dirname "$0")/lib.sh"
H=$(dirname "$0")
"$H/down.sh" >/dev/null 2>&1 || true   # leftovers of an interrupted run
mkdir -p "$RUN"
export STAGE_TIMES=$BUILD/last-e2e-times
[ "$CONTROL_PLANES" = 1 ] || STAGE_TIMES=$BUILD/last-e2e-ha-times
: > "$STAGE_TIMES"
trap 'stage teardown "$H/down.sh"; log "stage times (s):"; sed "s/^/    /" "$STAGE_TIMES" >&2' EXIT
# The control plane's first kubeadm init is crashed on purpose (issue 13's
# "inside init" crash point; TestCrashInsideInit checks the recovery).
E2E_CRASH_INIT=${E2E_CRASH_INIT:-1} "$H/up.sh"
rc=0
t0=$SECONDS
set +e
env E2E_ROOT="$E2E_ROOT" E2E_RUN="$RUN" KUBE_BIN="$KUBE_BIN" E2E_CONTROL_PLANES="$CONTROL_PLANES" \
  go test -C "$E2E_ROOT" -tags e2e -count=1 -p 1 -v -timeout "${E2E_TIMEOUT:-60m}" -run "${E2E_TESTS:-.}" ./test/e2e/... 2>&1 |
  tee "$RUN/logs/go-test.log"
rc=${PIPESTATUS[0]}
set -e
# Each scenario's result and duration, then the whole.
grep -E '^--- (PASS|FAIL|SKIP)' "$RUN/logs/go-test.log" | awk '{sub(":", "", $2); print "  " $3 " " $2 " " $4}' | tr -d '()' >> "$STAGE_TIMES"
echo "scenarios $((SECONDS - t0))" >> "$STAGE_TIMES"
exit "$rc"
