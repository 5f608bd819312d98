#!/usr/bin/env bash
# make demo: the cluster (up.sh) and the demo app (demo-app.sh), with the time
# each stage took. The cluster stays up until make demo-down.
source "$(dirname "$0")/lib.sh"
H=$(dirname "$0")
export STAGE_TIMES=$RUN/stage-times
if [ -d "$RUN/nodes" ]; then
  log "a cluster is already up in $RUN; redeploying the demo app only (make demo-down to start afresh)"
else
  "$H/down.sh" >/dev/null 2>&1 || true   # leftovers of an interrupted run
  mkdir -p "$RUN"
  "$H/up.sh"
fi
stage demo-app "$H/demo-app.sh"
log "stage times (s):"; sed 's/^/    /' "$STAGE_TIMES" >&2
cat >&2 <<MSG

The demo cluster is up. Try:
  hack/e2e/kubectl.sh get nodes -o wide
  hack/e2e/node.sh exec w1 kubestrap status
  nsenter --net=/run/netns/$AWS_NS curl -s http://$(node_ip w1):30080/
Remove everything with: make demo-down
MSG
