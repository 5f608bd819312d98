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
# The package under test (make package-deb), fixed for this run even if dist/ changes meanwhile.
deb=${KUBESTRAP_DEB:-$(find "$E2E_ROOT/dist" -maxdepth 1 -name 'kubestrap_*.deb' -printf '%T@ %p\n' 2>/dev/null |
  sort -rn | head -1 | cut -d' ' -f2-)}
[ -f "$deb" ] || die "no kubestrap .deb in $E2E_ROOT/dist (make package-deb)"
cp "$deb" "$RUN/"

# Host state the cluster could change, checked (and restored) by down.sh: the
# nodes see the kubelet's sysctls as read-only files (sdnode-init), kube-proxy's
# conntrack settings are global.
[ -d /run/netns ] || touch "$RUN/netns-created"
: > "$RUN/host-sysctls"
for k in /proc/sys/vm/overcommit_memory /proc/sys/vm/panic_on_oom /proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops \
         /proc/sys/kernel/keys/root_maxkeys /proc/sys/kernel/keys/root_maxbytes \
         /proc/sys/net/netfilter/nf_conntrack_max /sys/module/nf_conntrack/parameters/hashsize; do
  [ -r "$k" ] && echo "$k $(cat "$k")" >> "$RUN/host-sysctls"
done
# The one change made on purpose, undone by down.sh: every node's systemd,
# journald, kubelet and containerd take inotify instances of the machine's
# root user, and the default 128 runs out at about seven nodes (systemd then
# fails at boot with "Failed to allocate manager object: Too many open files").
for kv in fs/inotify/max_user_instances=4096 fs/inotify/max_user_watches=524288; do
  k=/proc/sys/${kv%=*}
  echo "$k $(cat "$k")" >> "$RUN/host-sysctls"
  [ "$(cat "$k")" -ge "${kv#*=}" ] || echo "${kv#*=}" > "$k"
done

# unit_prop NODE PROP: a property of the node's kubestrap unit (systemctl show).
unit_prop() { in_node "$1" systemctl show kubestrap -p "$2" --value; }
# ready NODE: kubestrap on NODE has sent READY=1 (Type=notify: active).
ready() { [ "$(unit_prop "$1" ActiveState)" = active ]; }
# journal NODE ARGS...: the node's journal, read from its disk.
journal() { journalctl -D "$(node_disk "$1")/upper/var/log/journal" -q --no-pager "${@:2}"; }
wait_ready() {
  local n
  for n in "$@"; do
    wait_for "${E2E_READY_TIMEOUT:-300}" "kubestrap READY on $n" ready "$n" || {
      journal "$n" -u kubestrap -n 20 >&2; return 1; }
    log "$n: $(unit_prop "$n" StatusText)"
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
  local pid nspid starts kpids=() p end=$((SECONDS + 180))
  until journal cp -u kubestrap -o cat 2>/dev/null | grep -qF '[kubeconfig] Writing "admin.conf"'; do
    [ $SECONDS -lt $end ] || { log "no kubeadm init reached its kubeconfig phase on cp within 180s"; return 1; }
    sleep 0.1
  done
  pid="" kpids=()
  for p in $(ip netns pids "$(node_ns cp)"); do
    case $(cat "/proc/$p/comm" 2>/dev/null) in
      kubeadm) kpids+=("$p") ;;
      kubestrap) pid=$p ;;
    esac
  done
  if [ -z "$pid" ] || [ ${#kpids[@]} = 0 ]; then
    log "cp: no agent (pid '$pid') or no kubeadm (${kpids[*]}) to kill"; return 1
  fi
  # The agent's PID inside the node, then the kill.
  nspid=$(awk '/^NSpid:/ {print $NF}' "/proc/$pid/status")
  kill -9 "$pid" "${kpids[@]}"
  # Which of the unit's processes it was (1 = first), as the scenarios count them in the journal.
  starts=$(journal cp -u kubestrap -o json | python3 -c '
import json, sys
want, seen = sys.argv[1], []
for line in sys.stdin:
    e = json.loads(line)
    if e.get("_PID") in (None, "1") or e.get("_COMM") != "kubestrap": continue
    k = (e.get("_BOOT_ID"), e["_PID"])
    if k not in seen: seen.append(k)
print(next((i + 1 for i, k in enumerate(seen) if k[1] == want), len(seen)))' "$nspid")
  printf '{"killedAt": "%s", "agentPid": %s, "agentStart": %s, "kubeadmPids": [%s], "trigger": "[kubeconfig] Writing \\"admin.conf\\""}\n' \
    "$(date -u +%FT%T.%NZ)" "$pid" "$starts" "$(IFS=,; echo "${kpids[*]}")" > "$RUN/crash-inside-init.json"
  log "cp: killed the agent ($pid, process $starts of its unit) and kubeadm (${kpids[*]}) inside kubeadm init, after it wrote admin.conf"
}

t0=$SECONDS
stage network "$H/net.sh" up
stage aws "$H/aws.sh" up
boot_cp() {
  "$H/node.sh" boot cp control-plane
  [ "${E2E_CRASH_INIT:-0}" = 0 ] || crash_inside_init
  wait_ready cp
}
# The HA run: three control planes booted at once; they elect the one that
# runs kubeadm init through S3, and the others join it one at a time.
boot_cps() {
  local cps=(cp cp2 cp3) n pids=()
  for n in "${cps[@]}"; do "$H/node.sh" boot "$n" control-plane & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n"; done
  E2E_READY_TIMEOUT=${E2E_READY_TIMEOUT:-600} wait_ready "${cps[@]}"
}
if [ "$CONTROL_PLANES" -gt 1 ]; then stage control-plane boot_cps; else stage control-plane boot_cp; fi
workers=()
for i in $(seq 1 "${E2E_WORKERS:-2}"); do workers+=("w$i"); done
boot_workers() {
  local w; for w in "${workers[@]}"; do "$H/node.sh" boot "$w" worker; done
  wait_ready "${workers[@]}"
  wait_for 180 "all nodes Ready" nodes_ready $((CONTROL_PLANES + ${#workers[@]}))
}
stage workers boot_workers
"$H/kubectl.sh" get nodes -o wide
log "cluster up in $((SECONDS - t0))s"
echo "cluster-up $((SECONDS - t0))" >> "$STAGE_TIMES"
