#!/bin/sh
# PID 1 of a systemd test node (installed as /usr/local/sbin/sdnode-init and
# started by systemd-nspawn, see hack/e2e/sdnode.sh): prepares what a kubelet
# and containerd need in a container on this machine, then execs Debian's
# systemd, which stays PID 1 for the node's whole life.
set -u

# 1. systemd-nspawn mounts the cgroup v1 controllers read-only. Inside the
#    node's cgroup namespace only the node's own subtree is visible, so make
#    them writable before systemd starts: systemd then manages memory, cpu,
#    pids and devices for its units, and the kubelet (systemd cgroup driver)
#    and runc can create the pods' cgroups.
for c in /sys/fs/cgroup/*; do
  [ -L "$c" ] && continue
  case $(stat -f -c %T "$c" 2>/dev/null) in
    cgroupfs) mount -o remount,bind,rw "$c" 2>/dev/null || echo "sdnode-init: cannot make $c writable" >&2 ;;
  esac
done

# 2. The kubelet sets six global kernel tunables at start and exits if it
#    cannot. /proc/sys stays read-only (writing it would change the machine),
#    so show the kubelet the values it wants through read-only files bound
#    over the real ones, whatever the machine's values are now; it then has
#    nothing to write.
mkdir -p /run/sdnode/sysctl
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  k=${kv%=*} v=${kv#*=}
  f=/run/sdnode/sysctl/$(echo "$k" | tr / _)
  echo "$v" > "$f"
  mount --bind "$f" "/proc/sys/$k" && mount -o remount,bind,ro "/proc/sys/$k" ||
    echo "sdnode-init: cannot show $k = $v" >&2
done

# 3. The kubelet's OOM watcher reads /dev/kmsg and exits if it cannot open it;
#    containers have none. The console never returns kernel messages, which is
#    what a quiet kernel looks like (kind's entrypoint does the same).
[ -e /dev/kmsg ] || ln -s /dev/console /dev/kmsg

exec /lib/systemd/systemd "$@"
