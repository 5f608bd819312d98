#!/usr/bin/env bash
# Removes everything the harness made: processes (by PID: those recorded, those
# inside the test network namespaces and those in the kubelets' cgroups),
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

# 1. Agents and kubelets first, then the pods, then the node managers (which stop containerd).
for n in "${nodes[@]}"; do
  nd=$(node_dir "$n")
  if alive "$(cat "$nd/init.pid" 2>/dev/null)" && [ -e "$NSDIR/$n-mnt" ]; then
    timeout 60 "$(dirname "$0")/node.sh" systemctl "$n" stop kubestrap kubelet >/dev/null 2>&1
    timeout 90 nsenter --net="/run/netns/kse2e-$n" --mount="$NSDIR/$n-mnt" -- \
      "$BIN/crictl" -r unix:///run/containerd/containerd.sock -t 20s rmp -fa >/dev/null 2>&1 &
  fi
done
wait
for n in "${nodes[@]}"; do
  p=$(cat "$(node_dir "$n")/init.pid" 2>/dev/null); alive "$p" && kill "$p"
done
for n in "${nodes[@]}"; do
  p=$(cat "$(node_dir "$n")/init.pid" 2>/dev/null)
  for _ in $(seq 60); do alive "$p" || break; sleep 0.5; done
done
# 2. Whatever is left in our namespaces or our cgroups: ours, killed by PID.
shopt -s globstar
for round in 1 2 3; do
  pids=()
  # PIDs are numbers, one a word: splitting the output into words is intended.
  # shellcheck disable=SC2207
  for n in "${nodes[@]}"; do pids+=($(ns_pids "kse2e-$n") $(cg_pids "kse2e-$n")); done
  # shellcheck disable=SC2207
  pids+=($(ns_pids "$AWS_NS") $(ns_pids "$NET_NS"))
  for f in "$RUN"/pids/*.pid "$RUN"/nodes/*/aemm.pid "$RUN"/nodes/*/init.pid; do
    # shellcheck disable=SC2207
    [ -f "$f" ] && pids+=($(cat "$f"))
  done
  live=(); for p in "${pids[@]}"; do alive "$p" && live+=("$p"); done
  [ ${#live[@]} = 0 ] && break
  log "stopping ${#live[@]} leftover processes (round $round)"
  kill_wait "${live[@]}"
done
# 3. Namespaces, mounts, cgroups.
for n in "${nodes[@]}"; do
  umount "$NSDIR/$n-mnt" "$NSDIR/$n-uts" 2>/dev/null
done
mountpoint -q "$NSDIR" && umount "$NSDIR"
for ns in $(ip netns list | awk '{print $1}' | grep '^kse2e-'); do ip netns del "$ns"; done
if [ -f "$RUN/netns-created" ] && mountpoint -q /run/netns && [ -z "$(ls -A /run/netns)" ]; then
  umount /run/netns && rmdir /run/netns
fi
for h in /sys/fs/cgroup/*/; do
  for g in "$h"kse2e-*; do [ -d "$g" ] && find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null; done
done
# 4. Host sysctls the kubelets (and kube-proxy) rewrite.
if [ -f "$RUN/host-sysctls" ]; then
  while read -r k v; do
    [ "$(cat "$k" 2>/dev/null)" = "$v" ] || { echo "$v" > "$k" && log "restored $k = $v"; }
  done < "$RUN/host-sysctls"
fi
# 5. Keep the logs, drop the state.
rm -rf "$CACHE/e2e-last-logs"; mkdir -p "$CACHE/e2e-last-logs"
cp -r "$RUN/logs" "$CACHE/e2e-last-logs/" 2>/dev/null
for n in "${nodes[@]}"; do
  d=$CACHE/e2e-last-logs/$n; mkdir -p "$d"; nd=$(node_dir "$n")
  cp "$nd"/*.log "$d/" 2>/dev/null
  for u in "$nd"/units/*/; do
    for f in "$u"*.log; do [ -f "$f" ] && cp "$f" "$d/$(basename "$u")-$(basename "$f")"; done
  done
  cp "$nd/kubestrap/state.json" "$d/" 2>/dev/null
done
left=$(grep -c " $RUN" /proc/self/mountinfo)
[ "$left" = 0 ] || log "WARNING: $left mounts under $RUN remain"
rm -rf "$RUN"
log "teardown done in $((SECONDS - t0))s (logs of this run in $CACHE/e2e-last-logs)"
