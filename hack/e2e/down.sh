#!/usr/bin/env bash
# Removes everything the harness made: the node machines (powered off through
# their own systemd, then their overlay roots unmounted and their cgroups
# removed), processes (by PID: those recorded, those inside the test network
# namespaces and those in the nodes' cgroups),
# namespaces, mounts, cgroups; restores the host sysctls the kubelets rewrote.
# Logs of the last run are kept in $CACHE/e2e-last-logs. Safe to run twice.
# usage: hack/e2e/down.sh
source "$(dirname "$0")/lib.sh"
set +e
[ -d "$RUN" ] || { log "nothing to tear down"; exit 0; }
t0=$SECONDS
nodes=()
for d in "$RUN"/nodes/*/; do [ -d "$d" ] && nodes+=("$(basename "$d")"); done

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# kill_wait PID...: SIGTERM, then SIGKILL after 15s.
kill_wait() {
  local p left
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 30); do
    left=0; for p in "$@"; do alive "$p" && left=1; done
    [ $left = 0 ] && return 0; sleep 0.5
  done
  for p in "$@"; do kill -9 "$p" 2>/dev/null; done
}
ns_pids() { ip netns pids "$1" 2>/dev/null; }
cg_pids() { cat /sys/fs/cgroup/*/"$1"/cgroup.procs /sys/fs/cgroup/*/"$1"/**/cgroup.procs 2>/dev/null | sort -u; }

machines=()
for d in "$SDNODE_DIR"/nodes/*/; do [ -d "$d" ] && machines+=("$(basename "$d")"); done
# 1. The nodes' journals (kept with the logs), then each node powered off
#    through its own systemd (which stops kubestrap, the kubelet, containerd
#    and every pod), all at once; its PID 1 is killed if it takes over 60s.
mkdir -p "$RUN/logs/nodes"
for m in "${machines[@]}"; do
  j=$SDNODE_DIR/nodes/$m/disk/upper/var/log/journal
  [ -d "$j" ] && journalctl -D "$j" -o short-precise --no-pager > "$RUN/logs/nodes/$m.journal" 2>&1
  "$(dirname "$0")/sdnode.sh" stop "$m" 60 > "$RUN/logs/nodes/$m.stop" 2>&1 &
done
wait
# 2. Whatever is left in our namespaces or our cgroups: ours, killed by PID.
shopt -s globstar
for round in 1 2 3; do
  pids=()
  # PIDs are numbers, one a word: splitting the output into words is intended.
  # shellcheck disable=SC2207
  for n in "${nodes[@]}"; do pids+=($(ns_pids "$(node_ns "$n")") $(cg_pids "$(node_ns "$n")")); done
  # shellcheck disable=SC2207
  pids+=($(ns_pids "$AWS_NS") $(ns_pids "$NET_NS"))
  for f in "$RUN"/pids/*.pid "$RUN"/nodes/*/aemm.pid "$SDNODE_DIR"/nodes/*/nspawn.pid; do
    # shellcheck disable=SC2207
    [ -f "$f" ] && pids+=($(cat "$f"))
  done
  live=(); for p in "${pids[@]}"; do alive "$p" && live+=("$p"); done
  [ ${#live[@]} = 0 ] && break
  log "stopping ${#live[@]} leftover processes (round $round)"
  kill_wait "${live[@]}"
done
# 3. Namespaces, mounts, cgroups.
for m in "${machines[@]}"; do
  r=$SDNODE_DIR/nodes/$m/root; mountpoint -q "$r" && umount "$r"
done
for ns in $(ip netns list | awk '{print $1}' | grep "^$PFX-"); do ip netns del "$ns"; done
if [ -f "$RUN/netns-created" ] && mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then
  umount /run/netns && rmdir /run/netns
fi
for h in /sys/fs/cgroup/*/; do
  for g in "$h$PFX"-*; do [ -d "$g" ] && find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null; done
done
# 4. Host sysctls saved by up.sh (the inotify limits it raised, any a node changed): restored.
if [ -f "$RUN/host-sysctls" ]; then
  while read -r k v; do
    [ "$(cat "$k" 2>/dev/null)" = "$v" ] || { echo "$v" > "$k" && log "restored $k = $v"; }
  done < "$RUN/host-sysctls"
fi
# 5. Keep the logs, drop the state.
LAST=$CACHE/e2e-last-logs; [ "$PFX" = kse2e ] || LAST=$CACHE/e2e-last-logs-$PFX
rm -rf "$LAST"; mkdir -p "$LAST"
cp -r "$RUN/logs" "$LAST/" 2>/dev/null
for n in "${nodes[@]}"; do
  d=$LAST/$n; mkdir -p "$d"; nd=$(node_dir "$n")
  cp "$nd"/*.log "$d/" 2>/dev/null
  cp "$(node_disk "$n")/upper/var/lib/kubestrap/state.json" "$d/" 2>/dev/null
done
left=$(grep -c " $RUN" /proc/self/mountinfo)
[ "$left" = 0 ] || log "WARNING: $left mounts under $RUN remain"
rm -rf "$RUN"
log "teardown done in $((SECONDS - t0))s (logs of this run in $LAST)"
