#!/usr/bin/env bash
# Brings up the whole test cluster: network, aws host, a control plane and
# $E2E_WORKERS workers (default 2), every node booted by its user-data; waits
# until kubestrap reports READY on each and all Nodes are Ready.
# usage: hack/e2e/up.sh   (builds first: make e2e-build)
source "$(dirname "$0")/lib.sh"
H=$(dirname "$0")
[ ! -d "$RUN/nodes" ] || die "a cluster is already up in $RUN (make demo-down first)"
mkdir -p "$RUN/logs" "$RUN/pids"
STAGE_TIMES=${STAGE_TIMES:-$RUN/stage-times}
[ -x "$KUBESTRAP" ] || die "$KUBESTRAP missing (make build)"
# The binary under test, fixed for this run even if bin/ is rebuilt meanwhile.
cp "$KUBESTRAP" "$RUN/kubestrap"; export KUBESTRAP=$RUN/kubestrap

# Host state the cluster changes, restored by down.sh.
[ -d /run/netns ] || touch "$RUN/netns-created"
: > "$RUN/host-sysctls"
for k in /proc/sys/vm/overcommit_memory /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops \
         /proc/sys/kernel/keys/root_maxkeys /proc/sys/kernel/keys/root_maxbytes \
         /proc/sys/net/netfilter/nf_conntrack_max /sys/module/nf_conntrack/parameters/hashsize; do
  [ -r "$k" ] && echo "$k $(cat "$k")" >> "$RUN/host-sysctls"
done

# ready NODE: kubestrap on NODE has sent READY=1.
ready() { grep -q '"ready": true' "$(node_dir "$1")/units/kubestrap/state.json" 2>/dev/null; }
wait_ready() {
  local n
  for n in "$@"; do
    wait_for "${E2E_READY_TIMEOUT:-300}" "kubestrap READY on $n" ready "$n" || {
      tail -20 "$(node_dir "$n")/units/kubestrap/output.log" >&2; return 1; }
    log "$n: $(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["status"])' "$(node_dir "$n")/units/kubestrap/state.json")"
  done
}
nodes_ready() {
  local want=$1
  [ "$("$H/kubectl.sh" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)" = "$want" ]
}

t0=$SECONDS
stage network "$H/net.sh" up
stage aws "$H/aws.sh" up
boot_cp() { "$H/node.sh" boot cp control-plane; wait_ready cp; }
stage control-plane boot_cp
workers=()
for i in $(seq 1 "${E2E_WORKERS:-2}"); do workers+=("w$i"); done
boot_workers() {
  local w; for w in "${workers[@]}"; do "$H/node.sh" boot "$w" worker; done
  wait_ready "${workers[@]}"
  wait_for 180 "all nodes Ready" nodes_ready $((1 + ${#workers[@]}))
}
stage workers boot_workers
"$H/kubectl.sh" get nodes -o wide
log "cluster up in $((SECONDS - t0))s"
echo "cluster-up $((SECONDS - t0))" >> "$STAGE_TIMES"
