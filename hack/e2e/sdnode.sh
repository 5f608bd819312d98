#!/usr/bin/env bash
# Test nodes that boot Debian's real systemd as PID 1 (issue 12): one
# systemd-nspawn container per node, in a network namespace of its own, with
# containerd and the kubelet as systemd units and kubestrap installed from its
# .deb, like an EC2 instance of the AMI (packaging/ami/provision.sh).
#
#   sdnode.sh image                      build or refresh the node image (cached)
#   sdnode.sh boot NAME [--netns NS] [--hostname H] [--ip IP]
#                                        boot machine NAME (first boot: a fresh disk)
#   sdnode.sh bake NAME DEB              the AMI step: dpkg -i DEB in the node, enable the unit
#   sdnode.sh import NAME TAR REF        load a docker tarball into the node's containerd as REF
#   sdnode.sh exec NAME CMD...           run CMD in the node's namespaces (stays in the host's cgroups)
#   sdnode.sh run NAME CMD...            run CMD as a transient unit of the node's systemd, wait, pipe
#   sdnode.sh leader NAME                PID of the node's systemd, seen from the machine
#   sdnode.sh stop NAME [TIMEOUT]        power off through the node's PID 1 (disks kept: boot again = reboot)
#   sdnode.sh rm NAME                    stop, then delete the node's disks
#
# Environment: SDNODE_DIR (state: image/ and nodes/NAME/; default
# $CACHE/sdnode), SDNODE_IMAGE (default $SDNODE_DIR/image), SDNODE_MIRROR
# (Debian mirror for debootstrap). Every host object of node NAME carries the
# name: the machine, its cgroup in each v1 hierarchy (/sys/fs/cgroup/*/NAME),
# its overlay mount ($SDNODE_DIR/nodes/NAME/root).
#
# A node's file system: overlay of the image layer (kube binaries, containerd,
# units, config) over a debootstrap'ed Debian bookworm (read-only lowers,
# shared by all nodes) with a disk-backed upper in nodes/NAME/disk/upper, so a
# node keeps its disk across stop/boot like an instance across a reboot.
# /var/lib/containerd and /var/lib/kubelet are bind mounts of plain
# directories (containerd's overlayfs snapshotter cannot work on an overlay).
source "$(dirname "$0")/lib.sh"
H=$(cd "$(dirname "$0")" && pwd)
SDNODE_DIR=${SDNODE_DIR:-$CACHE/sdnode}
IMAGE=${SDNODE_IMAGE:-$SDNODE_DIR/image}
NODES=$SDNODE_DIR/nodes
MIRROR=${SDNODE_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The base system: what a Debian EC2 image has plus what provision.sh installs
# (conntrack ethtool socat iptables), runc for containerd, Debian's CNI plugins.
BASE_PACKAGES=systemd,systemd-sysv,dbus,util-linux,iproute2,iptables,conntrack,ethtool,socat,runc,containernetworking-plugins,ca-certificates,curl,kmod,procps
# Units of the base system a test node has no use for (timers that would run
# apt or fstrim in every node, the pstore and e2scrub jobs).
MASKED="apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service
  fstrim.timer systemd-pstore.service getty@tty1.service console-getty.service"

node_path() { echo "$NODES/$1"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# leader NAME: the node's PID 1 (systemd), or nothing when the node is down.
leader() {
  local nd; nd=$(node_path "$1")
  local l; l=$(cat "$nd/leader.pid" 2>/dev/null) || return 1
  alive "$l" && [ "$(cat "/proc/$l/comm" 2>/dev/null)" = systemd ] && echo "$l"
}
# in_sdnode NAME CMD...: CMD in all the node's namespaces, with a clean environment.
in_sdnode() {
  local n=$1 l; shift
  l=$(leader "$n") || die "node $n is not running"
  nsenter -t "$l" -a -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

# ---- image ---------------------------------------------------------------------
image_base() {
  local want="$SUITE $MIRROR $BASE_PACKAGES" t0=$SECONDS
  [ -d "$IMAGE/base" ] && [ "$(cat "$IMAGE/base.inputs" 2>/dev/null)" = "$want" ] && return 0
  command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
  log "debootstrap $SUITE into $IMAGE/base (about 90 s)"
  rm -rf "$IMAGE/base.tmp"; mkdir -p "$IMAGE"
  nice -n 10 ionice -c3 debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$IMAGE/base.tmp" "$MIRROR" \
    > "$IMAGE/debootstrap.log" 2>&1 || { tail -20 "$IMAGE/debootstrap.log" >&2; die "debootstrap failed"; }
  # No instance identity in the image (each node gets its own machine-id).
  rm -rf "$IMAGE/base.tmp/var/cache/apt/archives/"*.deb "$IMAGE/base.tmp/var/lib/apt/lists/"*
  : > "$IMAGE/base.tmp/etc/machine-id"
  rm -rf "$IMAGE/base"; mv "$IMAGE/base.tmp" "$IMAGE/base"
  echo "$want" > "$IMAGE/base.inputs"
  log "base image in $((SECONDS - t0))s ($(du -sh "$IMAGE/base" | cut -f1))"
}

# The image layer: what packaging/ami/provision.sh adds to Debian, from this
# machine's builds instead of the package repositories (no internet here).
image_layer() {
  local cdir sum L
  cdir=$(go mod download -json "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  [ -f "$cdir/containerd.service" ] || die "containerd.service not in $cdir"
  local inputs=("$KUBE_BIN/kubelet" "$KUBE_BIN/kubeadm" "$BIN/containerd" "$BIN/containerd-shim-runc-v2" "$BIN/ctr"
    "$BIN/crictl" "$cdir/containerd.service" "$H"/sdnode/*)
  local f; for f in "${inputs[@]}"; do [ -f "$f" ] || die "image input $f missing"; done
  # The layer's inputs: those files, this function and the masked units.
  sum=$( (sha256sum "${inputs[@]}" | awk '{print $1}'; declare -f image_layer; echo "$MASKED") | sha256sum | cut -c1-16)
  L=$IMAGE/layer-$sum
  if [ -d "$L" ]; then ln -sfn "layer-$sum" "$IMAGE/layer"; return 0; fi
  log "image layer $sum"
  rm -rf "$L.tmp"; mkdir -p "$L.tmp"; local T=$L.tmp
  # kubeadm and the kubelet where their packages put them, with the units the
  # packages ship (hack/e2e/sdnode/kubelet.service, 10-kubeadm.conf); both enabled,
  # as the kubelet package's postinst does. The kubelet restarts every 10 s
  # until kubeadm writes its configuration, as on any fresh node.
  install -D -m 755 "$KUBE_BIN/kubelet" "$T/usr/bin/kubelet"
  install -D -m 755 "$KUBE_BIN/kubeadm" "$T/usr/bin/kubeadm"
  install -D -m 644 "$H/sdnode/kubelet.service" "$T/usr/lib/systemd/system/kubelet.service"
  install -D -m 644 "$H/sdnode/10-kubeadm.conf" "$T/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
  install -D -m 644 /dev/null "$T/etc/default/kubelet"; echo 'KUBELET_EXTRA_ARGS=' > "$T/etc/default/kubelet"
  mkdir -p "$T/etc/kubernetes/manifests" "$T/var/lib/kubelet" "$T/var/lib/containerd" "$T/etc/systemd/system/multi-user.target.wants"
  # containerd as its release tarball installs it (/usr/local/bin, the unit
  # from its repository in /usr/local/lib/systemd/system), enabled.
  local b; for b in containerd containerd-shim-runc-v2 ctr; do install -D -m 755 "$BIN/$b" "$T/usr/local/bin/$b"; done
  install -D -m 644 "$cdir/containerd.service" "$T/usr/local/lib/systemd/system/containerd.service"
  ln -s /usr/local/lib/systemd/system/containerd.service "$T/etc/systemd/system/multi-user.target.wants/containerd.service"
  ln -s /usr/lib/systemd/system/kubelet.service "$T/etc/systemd/system/multi-user.target.wants/kubelet.service"
  install -D -m 755 "$BIN/crictl" "$T/usr/bin/crictl"
  printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\nimage-endpoint: unix:///run/containerd/containerd.sock\n' \
    > "$T/etc/crictl.yaml"
  # containerd's default configuration as provision.sh edits it (systemd
  # cgroups), plus: oom_score_adj < 0 is refused on this machine (no
  # CAP_SYS_RESOURCE in its bounding set), registry host configuration in
  # certs.d. The standard CNI plugins (bridge, host-local, portmap,
  # loopback, ...) in /opt/cni/bin as the kubernetes-cni package installs
  # them; the pod network's own plugin and configuration are installed by
  # its DaemonSet (flannel, applied by kubestrap), as on EC2.
  mkdir -p "$T/etc/containerd/certs.d" "$T/etc/cni/net.d" "$T/opt/cni/bin"
  cp -a /usr/lib/cni/. "$T/opt/cni/bin/"
  "$BIN/containerd" config default | sed \
    -e "s#SystemdCgroup = false#SystemdCgroup = true#" \
    -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
    -e "0,/config_path = ''/s##config_path = '/etc/containerd/certs.d'#" > "$T/etc/containerd/config.toml"
  grep -q 'SystemdCgroup = true' "$T/etc/containerd/config.toml" || die "containerd config: SystemdCgroup not set"
  # PID 1 wrapper (see the file) and the node's systemd settings.
  install -D -m 755 "$H/sdnode/sdnode-init.sh" "$T/usr/local/sbin/sdnode-init"
  mkdir -p "$T/etc/systemd/system.conf.d"
  # A node is stopped like an instance, but the harness cannot wait 90 s for
  # each leftover process at power-off.
  printf '[Manager]\nDefaultTimeoutStopSec=20s\n' > "$T/etc/systemd/system.conf.d/sdnode.conf"
  local u; for u in $MASKED; do ln -s /dev/null "$T/etc/systemd/system/$u"; done
  ln -s /usr/lib/systemd/system/multi-user.target "$T/etc/systemd/system/default.target"
  # No DNS in the test network (nothing to ask), and no stale host name.
  echo '# no DNS server in the test network' > "$T/etc/resolv.conf"
  echo localhost > "$T/etc/hostname"
  mv "$T" "$L"; ln -sfn "layer-$sum" "$IMAGE/layer"
  # Layers no node's disk was made from.
  for f in "$IMAGE"/layer-*; do
    [ "$f" = "$L" ] || cat "$NODES"/*/disk/layer 2>/dev/null | grep -qxF "$f" || rm -rf "$f"
  done
}

# ---- boot ----------------------------------------------------------------------
boot() {
  local n=$1; shift
  local netns="" host="" ip=""
  while [ $# -gt 0 ]; do
    case $1 in
      --netns) netns=$2; shift 2 ;; --hostname) host=$2; shift 2 ;; --ip) ip=$2; shift 2 ;;
      *) die "boot: unknown option $1" ;;
    esac
  done
  host=${host:-$n}
  [[ $n =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "bad node name $n"
  local nd; nd=$(node_path "$n")
  leader "$n" >/dev/null && die "node $n is running already"
  { [ -d "$IMAGE/layer" ] && [ -d "$IMAGE/base" ]; } || die "no node image in $IMAGE (sdnode.sh image)"
  mkdir -p "$nd/disk/upper" "$nd/disk/work" "$nd/disk/containerd" "$nd/disk/kubelet" "$nd/root"
  # The image layer this disk was made with (a reboot keeps it).
  [ -f "$nd/disk/layer" ] || readlink -f "$IMAGE/layer" > "$nd/disk/layer"
  local layer; layer=$(cat "$nd/disk/layer")
  [ -d "$layer" ] || die "node $n was made from image layer $layer, which is gone"
  mountpoint -q "$nd/root" ||
    mount -t overlay "$n-root" -o "lowerdir=$layer:$IMAGE/base,upperdir=$nd/disk/upper,workdir=$nd/disk/work" "$nd/root"
  local R=$nd/root
  if [ ! -f "$nd/disk/first-boot" ]; then
    # First boot of this instance: its identity.
    echo "$host" > "$R/etc/hostname"
    systemd-id128 new > "$R/etc/machine-id"
    printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n%s%s\n' "${ip:+$ip }" "$host" > "$R/etc/hosts"
    date -u +%FT%TZ > "$nd/disk/first-boot"
  fi

  # The node's cgroup in every hierarchy of the machine: nspawn uses the cgroup
  # it is started in as the root of the node's cgroup namespace.
  local h hs=()
  for h in /sys/fs/cgroup/*/; do mountpoint -q "$h" && hs+=("${h%/}"); done
  for h in "${hs[@]}"; do mkdir -p "$h/$n"; done
  if [ -d "/sys/fs/cgroup/cpuset/$n" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/$n/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$n/cpuset.mems"
  fi
  local net=(--private-network)
  [ -z "$netns" ] || net=(--network-namespace-path="/run/netns/$netns")
  # --register=no --keep-unit: no machined and no host systemd (PID 1 of this
  #   machine is not systemd). --kill-signal: SIGTERM to nspawn powers off.
  # --capability=all minus module loading and the clock (global to the
  #   machine); @keyring: runc needs keyctl for its session keyring.
  local args=(--register=no --keep-unit --machine="$n" --hostname="$host" -D "$R"
    --console=read-only --link-journal=no --resolv-conf=off --timezone=off
    --kill-signal=SIGRTMIN+3 --capability=all --drop-capability="CAP_SYS_MODULE,CAP_SYS_TIME"
    --system-call-filter=@keyring
    --bind="$nd/disk/containerd:/var/lib/containerd" --bind="$nd/disk/kubelet:/var/lib/kubelet"
    "${net[@]}" /usr/local/sbin/sdnode-init)
  local t0; t0=$(date +%s%N)
  # shellcheck disable=SC2016 # $$ and $h are the launcher's
  setsid bash -c 'n=$1; shift; for h in '"${hs[*]}"'; do echo $$ > "$h/$n/cgroup.procs"; done
    exec systemd-nspawn "$@"' launcher "$n" "${args[@]}" >> "$nd/console.log" 2>&1 < /dev/null &
  local nspid=$! l=""
  echo "$nspid" > "$nd/nspawn.pid"
  for _ in $(seq 200); do
    l=$(pgrep -P "$nspid" -x systemd || true); [ -n "$l" ] && break
    alive "$nspid" || { tail -20 "$nd/console.log" >&2; die "systemd-nspawn for $n exited"; }
    sleep 0.05
  done
  [ -n "$l" ] || die "no systemd in node $n"
  echo "$l" > "$nd/leader.pid"
  # Booted = past basic.target: "starting" while start jobs still run (on a
  # reboot, kubestrap's start job lasts until it sends READY=1), "running"
  # once none is left, "degraded" if a unit failed.
  local s=""
  for _ in $(seq 600); do
    s=$(in_sdnode "$n" systemctl is-system-running 2>/dev/null || true)
    case $s in starting|running|degraded) break ;; esac
    sleep 0.1
  done
  local ms=$((($(date +%s%N) - t0) / 1000000))
  case $s in starting|running|degraded) ;; *) tail -20 "$nd/console.log" >&2; die "node $n did not boot (state: $s)" ;; esac
  [ "$s" != degraded ] || log "node $n is degraded: $(in_sdnode "$n" systemctl --failed --no-legend --plain | awk '{print $1}' | xargs)"
  log "node $n up: systemd PID $l (nspawn $nspid), $s after ${ms} ms"
  echo "$ms" > "$nd/boot-ms"
}

# ---- provisioning ---------------------------------------------------------------
# bake NAME DEB: what provision.sh does with the kubestrap package, inside the
# running node: apt-get install of the .deb (dpkg -i; its maintainer scripts
# talk to the node's systemd), then the unit enabled. Only on a fresh disk.
bake() {
  local n=$1 deb=$2 nd; nd=$(node_path "$n")
  [ -f "$deb" ] || die "no package $deb"
  [ -f "$nd/disk/baked" ] && { log "node $n: already baked"; return 0; }
  mkdir -p "$nd/root/var/cache/sdnode"
  cp "$deb" "$nd/root/var/cache/sdnode/kubestrap.deb"
  in_sdnode "$n" systemd-run --quiet --wait --pipe --collect --unit=sdnode-bake --service-type=exec -- /bin/sh -ec '
    dpkg -i /var/cache/sdnode/kubestrap.deb
    kubestrap version
    systemctl enable kubestrap.service
    rm -f /var/cache/sdnode/kubestrap.deb /etc/kubestrap/config.yaml /etc/default/kubestrap
    rm -rf /var/lib/kubestrap'
  date -u +%FT%TZ > "$nd/disk/baked"
}

# import NAME TAR REF: the AMI's pre-pulled images (imagePullPolicy IfNotPresent).
import_image() {
  local n=$1 tar=$2 ref=$3 src
  wait_for 30 "containerd on $n" in_sdnode "$n" ctr version
  src=$(tar -xOf "$tar" manifest.json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["RepoTags"][0])')
  # ctr warns about cgroup v1 on every call: keep its output for failures only.
  local out
  out=$(in_sdnode "$n" ctr -n k8s.io images import - < "$tar" 2>&1) || { echo "$out" >&2; die "import of $tar into $n failed"; }
  if [ "$src" != "$ref" ]; then
    out=$(in_sdnode "$n" ctr -n k8s.io images tag --force "$src" "$ref" 2>&1) || { echo "$out" >&2; die "tag $ref on $n failed"; }
    in_sdnode "$n" ctr -n k8s.io images rm "$src" >/dev/null 2>&1 || true
  fi
}

# ---- stop ----------------------------------------------------------------------
# stop NAME [TIMEOUT]: SIGRTMIN+4 asks the node's systemd for a clean
# power-off; after TIMEOUT seconds its PID 1 is killed, which ends the whole
# PID namespace (pods included). Killing nspawn alone would leave the node running.
stop() {
  local n=$1 timeout=${2:-60} nd l nspid
  nd=$(node_path "$n")
  nspid=$(cat "$nd/nspawn.pid" 2>/dev/null || true)
  if l=$(leader "$n"); then
    # PID 1 may be dying already (a scenario killed it to cut the power):
    # a signal that finds it gone is not an error.
    kill -s SIGRTMIN+4 "$l" 2>/dev/null || true
    for _ in $(seq $((timeout * 10))); do alive "$l" || break; sleep 0.1; done
    if alive "$l"; then log "node $n: no power-off after ${timeout}s, killing its PID 1"; kill -KILL "$l" 2>/dev/null || true; fi
    for _ in $(seq 100); do alive "$l" || break; sleep 0.1; done
    alive "$l" && die "PID 1 ($l) of node $n does not exit"
  fi
  for _ in $(seq 100); do alive "$nspid" || break; sleep 0.1; done
  alive "$nspid" && die "systemd-nspawn $nspid of node $n does not exit"
  rm -f "$nd/leader.pid" "$nd/nspawn.pid"
  if mountpoint -q "$nd/root"; then umount "$nd/root"; fi
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$n" ] && find "$h$n" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ ! -d "$h$n" ] || log "WARNING: cgroup $h$n is still in use"
  done
  # nspawn's host-side propagation directory (the machine's /run is on disk).
  rmdir "/run/systemd/nspawn/propagate/$n" /run/systemd/nspawn/propagate /run/systemd/nspawn/locks \
    /run/systemd/nspawn 2>/dev/null || true
  return 0
}

case ${1:-} in
image) image_base; image_layer; log "node image ready: $IMAGE/layer over $IMAGE/base" ;;
boot) shift; boot "$@" ;;
bake) bake "$2" "$3" ;;
import) import_image "$2" "$3" "$4" ;;
exec) n=$2; shift 2; in_sdnode "$n" "$@" ;;
run) n=$2; shift 2; in_sdnode "$n" systemd-run --quiet --wait --pipe --collect --service-type=exec -- "$@" ;;
leader) leader "$2" || die "node $2 is not running" ;;
stop) stop "$2" "${3:-60}" ;;
rm) stop "$2" "${3:-60}"; rm -rf "$(node_path "$2")" ;;
*) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
