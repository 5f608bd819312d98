# Common settings for the end-to-end harness (sourced by hack/e2e/*.sh).
# Everything it creates on the machine is named $PFX-* (E2E_PREFIX, default
# kse2e): network namespaces, node machines and their cgroups, mounts under $RUN.
# The settings below are used by the scripts that source this file, not here.
# shellcheck shell=bash disable=SC2034
set -euo pipefail
PFX=${E2E_PREFIX:-kse2e}
[[ $PFX =~ ^[a-z][a-z0-9]{1,7}$ ]] || { echo "E2E_PREFIX must be 2-8 lower-case letters or digits" >&2; exit 2; }
E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${CACHE:-/var/cache/kubestrap}
KUBE_BIN=${KUBE_BIN:-$CACHE/kube-v1.37.2}
BUILD=${E2E_BUILD:-$CACHE/e2e-build}   # cached builds (tools, images)
RUN=${E2E_RUN:-$CACHE/e2e-run}         # state of one cluster; removed by down
BIN=$BUILD/bin
IMG=$BUILD/images
KUBESTRAP=${KUBESTRAP:-$E2E_ROOT/bin/kubestrap}
export PATH=$BIN:$KUBE_BIN:$PATH

# Versions of everything the harness builds or installs.
CONTAINERD_VERSION=v2.4.2
CRANE_VERSION=v0.22.1
CRICTL_VERSION=v1.37.0
AEMM_VERSION=v1.13.0
KUBE_VERSION=v1.37.2
PAUSE_TAG=3.10.2
ETCD_TAG=3.7.0-0
# Cluster add-ons (packaging/addons, images built by hack/e2e/images.sh).
FLANNEL_VERSION=v0.28.10
FLANNEL_CNI_PLUGIN_TAG=v1.9.1-flannel1
COREDNS_VERSION=v1.14.6
METRICS_SERVER_VERSION=v0.8.0

# The fake AWS world.
CLUSTER=kse2e
BUCKET=kse2e-bootstrap
REGION=eu-west-1
ACCOUNT=123456789012          # moto's default account
ECR_HOST=$ACCOUNT.dkr.ecr.$REGION.amazonaws.com
DEMO_REPO=kse2e/demo-app
DEMO_IMAGE=$ECR_HOST/$DEMO_REPO:v1

# The test network: one namespace (kse2e-net) holds bridge kse2e-br0 and routes
# between the hosts; it has no link to the machine's own network.
NET_NS=$PFX-net
SUBNET_PREFIX=10.200.0
ROUTER_IP=$SUBNET_PREFIX.1
AWS_NS=$PFX-aws
AWS_IP=$SUBNET_PREFIX.2
MOTO_PORT=5000
MOTO_URL=http://$AWS_IP:$MOTO_PORT
# The Auto Scaling endpoint the nodes use (test/e2e/asgproxy): it answers the
# lifecycle calls moto lacks, records them in $RUN/aws/lifecycle-actions.jsonl,
# and forwards everything else to moto.
ASG_PORT=5001
ASG_URL=http://$AWS_IP:$ASG_PORT
# The worker Auto Scaling group and its termination lifecycle hook (in moto;
# the workers' instances are attached to it).
WORKER_ASG=$CLUSTER-workers
WORKER_HOOK=$CLUSTER-workers-terminate
WORKER_HOOK_TIMEOUT=60
# The systemd nodes (hack/e2e/sdnode.sh): machine $PFX-NAME, its disks in
# $RUN/sd/nodes/$PFX-NAME, the node image cached in $BUILD/sdnode-image.
export SDNODE_DIR=${SDNODE_DIR:-$RUN/sd} SDNODE_IMAGE=${SDNODE_IMAGE:-$BUILD/sdnode-image}

log() { printf '%s [e2e] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# stage NAME CMD...: run a stage and print how long it took.
stage() {
  local name=$1; shift
  local t0=$SECONDS
  log "stage $name: start"
  "$@"
  log "stage $name: done in $((SECONDS - t0))s"
  echo "$name $((SECONDS - t0))" >> "${STAGE_TIMES:-/dev/null}"
}

# node_index NAME: cp -> 10, w1 -> 11, w2 -> 12 ...; the other control planes
# of the HA run: cp2 -> 7, cp3 -> 8, cp4 -> 9.
node_index() {
  case $1 in
    cp) echo 10 ;;
    cp[2-4]) echo $((5 + ${1#cp})) ;;
    w[0-9]*) echo $((10 + ${1#w})) ;;
    *) die "bad node name $1" ;;
  esac
}
node_ip() { echo "$SUBNET_PREFIX.$(node_index "$1")"; }
# node_iid NAME: the node's EC2 instance, a real instance in moto (aws.sh up
# runs one per node of $ALL_NODES and records its ID in $RUN/aws/iids/NAME).
node_iid() {
  node_index "$1" >/dev/null
  local f=$RUN/aws/iids/$1 iid
  iid=$(cat "$f" 2>/dev/null) || die "no EC2 instance recorded for node $1 ($f): aws.sh up runs one per node of ALL_NODES"
  [[ $iid =~ ^i-[0-9a-f]{8,17}$ ]] || die "$f: $iid is not an instance ID"
  echo "$iid"
}
# The nodes a run may boot (their instance-role credentials are issued up front).
ALL_NODES="cp w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 cp2 cp3 cp4"
is_cp() { [[ $1 == cp || $1 == cp[2-4] ]]; }
# The HA run (make e2e-ha): E2E_CONTROL_PLANES control planes (cp, cp2, cp3)
# boot at once behind a TCP load balancer on the aws host (test/e2e/tcplb),
# whose address is every control plane's kubeadm.controlPlaneEndpoint; cp4 is
# the replacement a scenario boots. The load balancer's backends are all four.
CONTROL_PLANES=${E2E_CONTROL_PLANES:-1}
[[ $CONTROL_PLANES =~ ^[13]$ ]] || { echo "E2E_CONTROL_PLANES must be 1 or 3" >&2; exit 2; }
CP_NODES="cp cp2 cp3 cp4"
CP_ENDPOINT=$AWS_IP:6443
node_ns() { echo "$PFX-$1"; }
node_dir() { echo "$RUN/nodes/$1"; }

# in_node NODE CMD...: run CMD inside the node (all its namespaces), as root
# logged in there would (sdnode.sh exec).
in_node() { local n=$1; shift; "$E2E_ROOT/hack/e2e/sdnode.sh" exec "$(node_ns "$n")" "$@"; }
# node_disk NAME: the node's disk, seen from the machine (upper/ = its root
# file system's changes; kubelet/, containerd/ = /var/lib/kubelet, /var/lib/containerd).
node_disk() { echo "$SDNODE_DIR/nodes/$(node_ns "$1")/disk"; }
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" -- "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: poll CMD (bounded) until it succeeds.
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "timed out after ${t}s waiting for $what"; return 1; }
    sleep 0.5
  done
}
