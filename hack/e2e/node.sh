#!/usr/bin/env bash
# One EC2-like node of the test cluster: a systemd-nspawn machine $PFX-NAME
# booting Debian's systemd as PID 1 (hack/e2e/sdnode.sh), in network namespace
# $PFX-NAME (eth0 on the test bridge, 169.254.169.254 on lo), with containerd
# and the kubelet as systemd units and kubestrap installed from its .deb
# (dpkg -i in the node, unit enabled: the AMI), and its own ec2-metadata-mock
# serving the instance identity, the node role's STS credentials and the
# user-data. Booting runs that user-data, rendered from
# tf/templates/user-data.sh.tftpl by terraform, as a unit of the node's
# systemd ("cloud-init"); it writes the config and starts kubestrap.
#   node.sh boot NAME ROLE     NAME is cp, w1, w2...; ROLE control-plane|worker
#   node.sh reboot NAME        power off through the node's PID 1, boot again on the same disks
#   node.sh exec NAME CMD...   run CMD inside the node (all its namespaces)
#   node.sh systemctl NAME ARGS...
#   node.sh shell NAME         an interactive shell in the node
#   node.sh notice NAME KIND   its metadata service serves a spot|rebalance|asg notice from now on
#   node.sh terminate NAME     its EC2 instance terminated (in moto) and the node powered off for good
#   node.sh poweroff NAME      a power loss (PID 1 killed), its EC2 instance stopped
#   node.sh start NAME         its EC2 instance started again, the node booted on the same disks
#   node.sh wipe NAME          the node removed (disks, IMDS, namespace), its instance left running
source "$(dirname "$0")/lib.sh"
H=$(cd "$(dirname "$0")" && pwd)

# agent_config NAME ROLE: the AgentConfig the node's user-data installs.
agent_config() {
  # The HA run: every control plane names the load balancer as its endpoint.
  local ep=""
  if [ "$2" = control-plane ] && [ "$CONTROL_PLANES" -gt 1 ]; then ep="  controlPlaneEndpoint: \"$CP_ENDPOINT\""; fi
  cat <<YAML
apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: $CLUSTER
role: $2
bucket: $BUCKET
aws:
  # moto serves S3 by path only.
  s3UsePathStyle: true
  imdsTimeout: 2m
kubeadm:
  path: /usr/bin/kubeadm
  kubernetesVersion: $KUBE_VERSION
$ep
  imagePullPolicy: IfNotPresent
  # Preflight as on EC2: only the checks a node of this machine cannot pass.
  # SystemVerification: the machine has cgroup v1 only (its cgroup2 hierarchy
  # has no controllers), which kubeadm refuses unless this check is skipped;
  # the rest of it (kernel configuration) passes. Swap: the nodes share the
  # machine's kernel, and its swap (if any) is not theirs to turn off.
  ignorePreflightErrors: [SystemVerification, Swap]
  kubeletConfiguration:
    # cgroup v1, see above: the kubelet refuses it unless told otherwise.
    failCgroupV1: false
    # The machine's swap, see above.
    failSwapOn: false
    # The nodes share one disk and one kernel: no image GC or disk eviction games.
    imageGCHighThresholdPercent: 100
    evictionHard: {memory.available: 100Mi}
controlPlane:
  tokenTTL: ${E2E_TOKEN_TTL:-2m}
  # A lease of 20 s (default 5 min): a dead lock holder is replaced within
  # the scenarios' waits, and a holder stopped past its lease (SIGSTOP for
  # 25 s) is still short of the unit's 60 s watchdog.
  lockLease: 20s
  nodeCleanup: {interval: 5s}
worker:
  pollInterval: 2s
  expiryMargin: 20s
ecr:
  enabled: true
YAML
  # Workers are instances of the worker Auto Scaling group (aws.sh): on a
  # termination notice the agent completes the group's lifecycle hook.
  [ "$2" != worker ] || cat <<YAML
leave:
  lifecycleHookName: $WORKER_HOOK
  autoScalingGroupName: $WORKER_ASG
  lifecycleHeartbeatTimeout: ${WORKER_HOOK_TIMEOUT}s
YAML
}

render_user_data() {
  local nd=$1 tf=$1/tf
  mkdir -p "$tf"
  agent_config "$2" "$3" > "$tf/config.yaml"
  # Endpoints of the emulators; on real EC2 this is empty. Auto Scaling goes
  # to the proxy that answers the lifecycle calls moto lacks (aws.sh).
  printf 'AWS_ENDPOINT_URL=%s\nAWS_ENDPOINT_URL_AUTO_SCALING=%s\n' "$MOTO_URL" "$ASG_URL" > "$tf/environment"
  (cd "$tf" && echo "base64encode(templatefile(\"$E2E_ROOT/tf/templates/user-data.sh.tftpl\", {config_yaml = trimspace(file(\"config.yaml\")), environment = trimspace(file(\"environment\"))}))" |
    TF_CLI_CONFIG_FILE=/dev/null terraform console 2>/dev/null | tr -d '"' | base64 -d > "$nd/user-data.sh")
  grep -q 'systemctl enable --now --no-block kubestrap' "$nd/user-data.sh" || die "user-data rendering failed"
}

# deb: the kubestrap package under test (make package-deb), fixed for the run.
deb() { find "$RUN" -maxdepth 1 -name 'kubestrap_*.deb' | head -1; }

boot() {
  local n=$1 role=$2 nd ns ip m
  node_index "$n" >/dev/null   # dies on a name that is not a node
  nd=$(node_dir "$n"); ns=$(node_ns "$n"); ip=$(node_ip "$n"); m=$ns
  [ ! -e "$nd/role" ] || die "node $n exists already"
  mkdir -p "$nd" "$RUN/logs"; echo "$role" > "$nd/role"
  local iid; iid=$(node_iid "$n")
  [ -f "$(deb)" ] || die "no kubestrap .deb in $RUN (up.sh copies it)"

  # Network: eth0 on the test bridge (the VPC subnet), the metadata address
  # on lo. Pod traffic between nodes is the pod network's (flannel VXLAN over
  # eth0): the harness adds no pod routes.
  "$H/net.sh" attach "$ns" "$ip"
  ip -n "$ns" addr add 169.254.169.254/32 dev lo

  # The instance metadata service of this instance (before the node boots:
  # an instance's IMDS is there from its first instruction).
  render_user_data "$nd" "$n" "$role"
  imds "$n" "$ip" "$iid" "$role"

  # Power on: Debian's systemd as PID 1 (sdnode.sh boot), then the AMI's
  # provisioning on the fresh disk: the kubestrap .deb, pre-pulled images.
  "$H/sdnode.sh" boot "$m" --netns "$ns" --hostname "$n" --ip "$ip"
  local R; R=$SDNODE_DIR/nodes/$m/root
  printf '%s %s\n' "$AWS_IP" "$ECR_HOST" >> "$R/etc/hosts"
  "$H/sdnode.sh" bake "$m" "$(deb)"
  mkdir -p "$R/etc/containerd/certs.d/$ECR_HOST"
  cp "$RUN/aws/pki/ca.crt" "$R/etc/containerd/certs.d/$ECR_HOST/ca.crt"
  printf 'server = "https://%s"\n[host."https://%s"]\n  capabilities = ["pull", "resolve"]\n  ca = "/etc/containerd/certs.d/%s/ca.crt"\n' \
    "$ECR_HOST" "$ECR_HOST" "$ECR_HOST" > "$R/etc/containerd/certs.d/$ECR_HOST/hosts.toml"
  # The VPC's resolver stands at the router's address (as AmazonProvidedDNS
  # does at the VPC base + 2): nothing answers there, so names outside the
  # cluster fail fast; CoreDNS forwards to it and answers cluster names itself.
  printf 'nameserver %s\n' "$ROUTER_IP" > "$R/etc/resolv.conf"
  # The AMI's images (kubeadm would not pull them with imagePullPolicy IfNotPresent).
  # Every node: the pod sandbox, kube-proxy, the pod network (flannel and its
  # CNI plugin), and the add-ons that may land on any node (CoreDNS,
  # metrics-server).
  local imgs=("pause:registry.k8s.io/pause:$PAUSE_TAG" "kube-proxy:registry.k8s.io/kube-proxy:$KUBE_VERSION"
    "flannel:ghcr.io/flannel-io/flannel:$FLANNEL_VERSION"
    "flannel-cni-plugin:ghcr.io/flannel-io/flannel-cni-plugin:$FLANNEL_CNI_PLUGIN_TAG"
    "coredns:registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
    "metrics-server:registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION")
  if [ "$role" = control-plane ]; then
    imgs+=("etcd:registry.k8s.io/etcd:$ETCD_TAG")
    for c in kube-apiserver kube-controller-manager kube-scheduler; do imgs+=("$c:registry.k8s.io/$c:$KUBE_VERSION"); done
  fi
  local i
  for i in "${imgs[@]}"; do "$H/sdnode.sh" import "$m" "$IMG/${i%%:*}.tar" "${i#*:}"; done

  # Negative control of the hardening (docs/e2e.md): E2E_BROKEN_UNIT=mount adds
  # a test-only drop-in that also forbids the mount system calls, which
  # kubeadm reset needs to unmount the kubelet's volumes.
  if [ "${E2E_BROKEN_UNIT:-}" = mount ]; then
    mkdir -p "$R/etc/systemd/system/kubestrap.service.d"
    printf '# TEST ONLY (E2E_BROKEN_UNIT=mount): a deliberately broken unit\n[Service]\nSystemCallFilter=~@mount\n' \
      > "$R/etc/systemd/system/kubestrap.service.d/99-e2e-broken.conf"
    "$H/sdnode.sh" exec "$m" systemctl daemon-reload
  fi

  # "cloud-init": fetch the user-data from IMDSv2 and run it as root, as a
  # unit of the node's systemd.
  # shellcheck disable=SC2016 # expanded by the shell inside the node
  "$H/sdnode.sh" run "$m" /bin/bash -ec '
    t=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" http://169.254.169.254/latest/api/token)
    curl -sf -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/user-data > /var/lib/cloud-user-data.sh
    bash /var/lib/cloud-user-data.sh' > "$nd/cloud-init.log" 2>&1 || { cat "$nd/cloud-init.log" >&2; die "user-data failed on $n"; }
  log "node $n ($role, $ip, $iid) booted; kubestrap started by its user-data"
}

# reboot NAME: the instance is stopped (power-off through its systemd) and
# started again on the same disks; nothing of the harness runs in between.
reboot() {
  local n=$1 nd; nd=$(node_dir "$n")
  [ -e "$nd/role" ] || die "no node $n"
  [ ! -e "$nd/terminated" ] || die "node $n was terminated: its instance does not come back"
  "$H/sdnode.sh" stop "$(node_ns "$n")" 60
  "$H/sdnode.sh" boot "$(node_ns "$n")" --netns "$(node_ns "$n")" --hostname "$n" --ip "$(node_ip "$n")"
}

# terminate NAME: as EC2 terminates an instance: the instance is terminated
# (moto: shutting-down, then terminated; an instance of the worker group is
# replaced by moto's Auto Scaling, without a node), its OS powered off through
# its systemd as in a reboot, and its metadata service gone. It never boots
# again; down.sh removes what is left.
terminate() {
  local n=$1 nd iid state; nd=$(node_dir "$n")
  [ -e "$nd/role" ] || die "no node $n"
  [ ! -e "$nd/terminated" ] || die "node $n was terminated already"
  iid=$(node_iid "$n")
  state=$("$H/aws.sh" cli ec2 terminate-instances --instance-ids "$iid" \
    --query 'TerminatingInstances[0].CurrentState.Name' --output text) || die "cannot terminate $iid ($n) in moto"
  date -u +%FT%T.%NZ > "$nd/terminated"
  "$H/sdnode.sh" stop "$(node_ns "$n")" 60
  local pid; pid=$(cat "$nd/aemm.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  log "$n: instance $iid terminated (EC2 state $state), node powered off"
}

# poweroff NAME: a power loss: the node's PID 1 is killed (every process of
# the node dies at once, nothing is flushed or stopped cleanly) and its EC2
# instance is stopped (moto), as after a host failure. `node.sh start`
# brings it back on the same disks.
poweroff() {
  local n=$1 nd iid state; nd=$(node_dir "$n")
  [ -e "$nd/role" ] || die "no node $n"
  [ ! -e "$nd/terminated" ] || die "node $n was terminated"
  "$H/sdnode.sh" stop "$(node_ns "$n")" 0
  iid=$(node_iid "$n")
  state=$("$H/aws.sh" cli ec2 stop-instances --instance-ids "$iid" \
    --query 'StoppingInstances[0].CurrentState.Name' --output text) || die "cannot stop $iid ($n) in moto"
  log "$n: power lost (PID 1 killed), instance $iid stopped (EC2 state $state)"
}

# start NAME: the stopped instance started again (moto) and the node booted
# on the same disks; its enabled units (containerd, kubelet, kubestrap) start.
start() {
  local n=$1 nd iid; nd=$(node_dir "$n")
  [ -e "$nd/role" ] || die "no node $n"
  [ ! -e "$nd/terminated" ] || die "node $n was terminated: its instance does not come back"
  iid=$(node_iid "$n")
  "$H/aws.sh" cli ec2 start-instances --instance-ids "$iid" >/dev/null || die "cannot start $iid ($n) in moto"
  "$H/sdnode.sh" boot "$(node_ns "$n")" --netns "$(node_ns "$n")" --hostname "$n" --ip "$(node_ip "$n")"
}

# wipe NAME: the node is gone for good but its instance stays running in
# moto, so that a scenario can boot a fresh node of that name (a new disk,
# the same instance ID) into a new cluster: PID 1 killed, the disks, the
# metadata service, the network namespace and the node's directory removed.
# Its journal is kept in $RUN/logs/nodes/<machine>.wiped-<time>.journal.
wipe() {
  local n=$1 nd ns j pid; nd=$(node_dir "$n"); ns=$(node_ns "$n")
  [ -e "$nd/role" ] || die "no node $n"
  mkdir -p "$RUN/logs/nodes"
  j=$(node_disk "$n")/upper/var/log/journal
  [ ! -d "$j" ] || journalctl -D "$j" -o short-precise --no-pager > "$RUN/logs/nodes/$ns.wiped-$(date +%H%M%S).journal" 2>&1
  "$H/sdnode.sh" rm "$ns" 0
  pid=$(cat "$nd/aemm.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  # The veth pair goes with its bridge end at once (the namespace itself may
  # outlive its last processes for a moment, and with it eth0).
  ip -n "$NET_NS" link del "v${ns#"$PFX"-}" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$nd"
  log "$n: node wiped (its instance $(node_iid "$n") still runs)"
}

# start_aemm NAME SPOT REBALANCE ASG: the node's ec2-metadata-mock, serving
# a spot interruption, a rebalance recommendation and an Auto Scaling
# termination SPOT, REBALANCE and ASG seconds after its start (it serves them
# at once unless delayed). An instance has none (a year) until a scenario
# sends one with node.sh notice.
start_aemm() {
  local n=$1 nd ns; nd=$(node_dir "$n"); ns=$(node_ns "$n")
  setsid nsenter --net=/run/netns/"$ns" -- env HOME="$nd/aemm-home" "$BIN/ec2-metadata-mock" -c "$nd/aemm.json" \
    --mock-delay-sec "$2" --rebalance-delay-sec "$3" --asg-termination-delay-sec "$4" \
    >> "$nd/aemm.log" 2>&1 < /dev/null &
  echo $! > "$nd/aemm.pid"
}

# notice NAME spot|rebalance|asg: the instance's metadata service starts
# serving that notice now (ec2-metadata-mock restarted with it undelayed).
notice() {
  local n=$1 nd pid; nd=$(node_dir "$n")
  [ -f "$nd/aemm.pid" ] || die "no metadata service for $n"
  [ ! -e "$nd/terminated" ] || die "node $n was terminated: no metadata service"
  pid=$(cat "$nd/aemm.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  case $2 in
    spot) start_aemm "$n" 0 31536000 31536000 ;;
    rebalance) start_aemm "$n" 31536000 0 31536000 ;;
    asg) start_aemm "$n" 31536000 31536000 0 ;;
    *) die "notice: spot, rebalance or asg, not $2" ;;
  esac
  wait_for 20 "metadata service on $n" in_ns "$(node_ns "$n")" curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token
  log "$n: the metadata service now serves a $2 notice"
}

# imds NAME IP IID ROLE: ec2-metadata-mock in the node's network namespace.
imds() {
  local n=$1 ip=$2 iid=$3 role=$4 nd ns; nd=$(node_dir "$n"); ns=$(node_ns "$n")
  # The instance profile's role: its STS credentials (see aws.sh) are what IMDS serves.
  [ -f "$RUN/aws/creds/$n.json" ] || die "no instance-role credentials for $n (nodes: $ALL_NODES)"
  ROLE=kse2e-$role python3 - "$nd" "$n" "$ip" "$iid" <<'PY'
import base64, json, sys
nd, name, ip, iid = sys.argv[1:]
import os
env = os.environ
c = json.load(open(f"{os.environ['RUN']}/aws/creds/{name}.json"))["Credentials"]
region, account, role = env["REGION"], env["ACCOUNT"], env["ROLE"]
cfg = {
  "imdsv2": True,
  "server": {"hostname": "169.254.169.254", "port": "80"},
  "metadata": {
    "paths": {"iam-security-credentials": f"/latest/meta-data/iam/security-credentials/{role}"},
    "values": {
      "instance-id": iid, "local-ipv4": ip, "local-hostname": f"ip-{ip.replace('.', '-')}.{region}.compute.internal",
      "placement-region": region, "placement-availability-zone": region + "a",
      "iam-security-credentials-role": role,
      "iam-security-credentials": {"Code": "Success", "LastUpdated": c["Expiration"], "Type": "AWS-HMAC",
        "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"],
        "Expiration": c["Expiration"].replace("+00:00", "Z")},
      "tags-instance-name": name,
    },
  },
  "dynamic": {"values": {"instance-identity-document": {
    "accountId": account, "architecture": "x86_64", "availabilityZone": region + "a", "imageId": "ami-0e2e0000000000000",
    "instanceId": iid, "instanceType": "m5.large", "pendingTime": "2026-11-26T00:00:00Z", "privateIp": ip,
    "region": region, "version": "2017-09-30"}}},
  "userdata": {"values": {"userdata": base64.b64encode(open(f"{nd}/user-data.sh", "rb").read()).decode()}},
}
json.dump(cfg, open(f"{nd}/aemm.json", "w"), indent=1)
PY
  mkdir -p "$nd/aemm-home"
  start_aemm "$n" 31536000 31536000 31536000
  wait_for 20 "metadata service on $n" in_ns "$ns" curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token

}

case ${1:-} in
boot) export REGION ACCOUNT RUN; boot "$2" "$3" ;;
reboot) reboot "$2" ;;
exec) n=$2; shift 2; in_node "$n" "$@" ;;
systemctl) n=$2; shift 2; in_node "$n" systemctl "$@" ;;
shell) in_node "$2" /bin/bash -l ;;
notice) notice "$2" "$3" ;;
terminate) terminate "$2" ;;
poweroff) poweroff "$2" ;;
start) start "$2" ;;
wipe) wipe "$2" ;;
*) echo "usage: node.sh boot NAME ROLE | reboot NAME | exec NAME CMD... | systemctl NAME ARGS... | shell NAME | notice NAME spot|rebalance|asg | terminate NAME | poweroff NAME | start NAME | wipe NAME" >&2; exit 2 ;;
esac
