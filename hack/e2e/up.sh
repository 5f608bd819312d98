#!/usr/bin/env bash
# Brings up the whole test cluster: network, aws host, a control plane and
# $E2E_WORKERS workers (default 2), every node booted by its user-data; waits
# until kubestrap reports READY on each and all Nodes are Ready. With
# E2E_CRASH_INIT=1 (make e2e) the control plane's first kubeadm init is
# crashed on purpose (see crash_inside_init).
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

# crash_inside_init: issue 13's crash point "inside kubeadm init, after its
# kubeconfig phase", during the control plane's own bootstrap. Once kubeadm
# init has written admin.conf (its `[kubeconfig] Writing "admin.conf"` line in
# the agent's log), the agent and every kubeadm process of the node get
# SIGKILL at once, as in a power loss (the kubelet and the static pods kubeadm
# started so far go on). The node's service manager starts the agent again.
# What was killed goes to $RUN/crash-inside-init.json for the scenario
# TestCrashInsideInit, which checks what the restarted agent did.
crash_inside_init() {
  local nd out pid starts kpids=() p end=$((SECONDS + 180))
  nd=$(node_dir cp); out=$nd/units/kubestrap/output.log
  until grep -qF '[kubeconfig] Writing "admin.conf"' "$out" 2>/dev/null; do
    [ $SECONDS -lt $end ] || { log "no kubeadm init reached its kubeconfig phase on cp within 180s"; return 1; }
    sleep 0.05
  done
  # kse2e-init's state.json (indented JSON): "pid": N, "starts": N.
  pid=$(sed -n 's/^ *"pid": \([0-9]*\).*/\1/p' "$nd/units/kubestrap/state.json")
  starts=$(sed -n 's/^ *"starts": \([0-9]*\).*/\1/p' "$nd/units/kubestrap/state.json")
  for p in $(ip netns pids "$(node_ns cp)"); do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = kubeadm ]; then kpids+=("$p"); fi
  done
  if [ -z "$pid" ] || [ ${#kpids[@]} = 0 ]; then
    log "cp: no agent (pid '$pid') or no kubeadm (${kpids[*]}) to kill"; return 1
  fi
  kill -9 "$pid" "${kpids[@]}"
  printf '{"killedAt": "%s", "agentPid": %s, "agentStart": %s, "kubeadmPids": [%s], "trigger": "[kubeconfig] Writing \\"admin.conf\\""}\n' \
    "$(date -u +%FT%T.%NZ)" "$pid" "$starts" "$(IFS=,; echo "${kpids[*]}")" > "$RUN/crash-inside-init.json"
  log "cp: killed the agent ($pid) and kubeadm (${kpids[*]}) inside kubeadm init, after it wrote admin.conf"
}

t0=$SECONDS
stage network "$H/net.sh" up
stage aws "$H/aws.sh" up
boot_cp() {
  "$H/node.sh" boot cp control-plane
  [ "${E2E_CRASH_INIT:-0}" = 0 ] || crash_inside_init
  wait_ready cp
}
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
