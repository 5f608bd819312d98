#!/usr/bin/env bash
# One EC2-like node of the test cluster: network namespace kse2e-NAME (eth0 on
# the test bridge, 169.254.169.254 on lo), private mount and UTS namespaces
# (hostname NAME, overlays on /etc, /usr, /var/lib, /var/log, a private /run),
# its own containerd and kubelet run by kse2e-init (the node's stand-in for
# systemd, with a systemctl shim on the node's PATH), its own
# ec2-metadata-mock serving the instance identity, the node role's STS
# credentials and the user-data. Booting runs that user-data, rendered from
# tf/templates/user-data.sh.tftpl by terraform, which starts kubestrap.
#   node.sh boot NAME ROLE     NAME is cp, w1, w2...; ROLE control-plane|worker
#   node.sh exec NAME CMD...   run CMD inside the node
#   node.sh systemctl NAME ARGS...
source "$(dirname "$0")/lib.sh"

# agent_config NAME ROLE: the AgentConfig the node's user-data installs.
agent_config() {
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
  imagePullPolicy: IfNotPresent
  # The nodes are namespaces on one machine: kubeadm's system checks (swap,
  # kernel config, ports shared with the machine, ...) do not apply.
  ignorePreflightErrors: [all]
  # No cluster DNS: the demo needs none and CoreDNS is not built offline here.
  skipPhases: [addon/coredns]
  kubeletExtraArgs:
  # Each node's kubelet gets its own cgroup subtree (cgroup v1 on this machine).
  - {name: cgroup-root, value: /kse2e-$1}
  kubeletConfiguration:
    cgroupDriver: cgroupfs
    failCgroupV1: false
    failSwapOn: false
    # The nodes share one disk and one kernel: no image GC or disk eviction games.
    imageGCHighThresholdPercent: 100
    evictionHard: {memory.available: 100Mi}
controlPlane:
  tokenTTL: ${E2E_TOKEN_TTL:-2m}
worker:
  pollInterval: 2s
  expiryMargin: 20s
ecr:
  enabled: true
YAML
}

render_user_data() {
  local nd=$1 tf=$1/tf
  mkdir -p "$tf"
  agent_config "$2" "$3" > "$tf/config.yaml"
  # Endpoints of the emulators; on real EC2 this is empty.
  printf 'AWS_ENDPOINT_URL=%s\n' "$MOTO_URL" > "$tf/environment"
  (cd "$tf" && echo "base64encode(templatefile(\"$E2E_ROOT/tf/templates/user-data.sh.tftpl\", {config_yaml = trimspace(file(\"config.yaml\")), environment = trimspace(file(\"environment\"))}))" |
    TF_CLI_CONFIG_FILE=/dev/null terraform console 2>/dev/null | tr -d '"' | base64 -d > "$nd/user-data.sh")
  grep -q 'systemctl enable --now --no-block kubestrap' "$nd/user-data.sh" || die "user-data rendering failed"
}

unit() { # unit DIR NAME JSON
  mkdir -p "$1/$2"; echo "$3" > "$1/$2.json"
}

boot() {
  local n=$1 role=$2 nd ns ip
  node_index "$n" >/dev/null   # dies on a name that is not a node
  nd=$(node_dir "$n"); ns=$(node_ns "$n"); ip=$(node_ip "$n")
  [ ! -e "$nd/init.pid" ] || die "node $n exists already"
  mkdir -p "$nd"/{etc,usr,varlib,varlog}/{upper,work} "$nd"/{kubelet,etcd,kubestrap,containerd,units} "$NSDIR" "$RUN/logs"
  local iid; iid=$(node_iid "$n")

  # Network: eth0 on the test bridge, the metadata address on lo, pods routed via the node.
  "$(dirname "$0")/net.sh" attach "$ns" "$ip"
  ip -n "$ns" addr add 169.254.169.254/32 dev lo
  "$(dirname "$0")/net.sh" route "$(node_pod_cidr "$n")" "$ip"

  # The kubelet's cgroup root, in every v1 hierarchy.
  for h in /sys/fs/cgroup/*/; do mkdir -p "$h/kse2e-$n"; done
  if [ -d "/sys/fs/cgroup/cpuset/kse2e-$n" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/kse2e-$n/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/kse2e-$n/cpuset.mems"
  fi

  # Test instrumentation: /usr/bin/kubeadm records each run (subcommand only: no
  # secrets) in kubeadm-calls.log, then runs the real kubeadm.
  cat > "$nd/kubeadm-wrapper" <<WRAP
#!/bin/sh
echo "\$(date -u +%FT%T.%NZ) \$1 \$2" >> $nd/kubeadm-calls.log
exec $KUBE_BIN/kubeadm "\$@"
WRAP
  chmod 755 "$nd/kubeadm-wrapper"

  # Mount + UTS namespaces, kept alive by bind mounts on files in $NSDIR.
  if ! mountpoint -q "$NSDIR"; then mount --bind "$NSDIR" "$NSDIR"; mount --make-private "$NSDIR"; fi
  touch "$NSDIR/$n-mnt" "$NSDIR/$n-uts"
  unshare --mount="$NSDIR/$n-mnt" --uts="$NSDIR/$n-uts" --propagation slave /bin/bash -ec "
    hostname $n
    mount -t tmpfs -o mode=755,size=256m kse2e-run-$n /run
    mkdir -p /run/lock
    for d in etc usr; do
      mount -t overlay kse2e-\$d-$n -o lowerdir=/\$d,upperdir=$nd/\$d/upper,workdir=$nd/\$d/work /\$d
    done
    mount -t overlay kse2e-varlib-$n -o lowerdir=/var/lib,upperdir=$nd/varlib/upper,workdir=$nd/varlib/work /var/lib
    mount -t overlay kse2e-varlog-$n -o lowerdir=/var/log,upperdir=$nd/varlog/upper,workdir=$nd/varlog/work /var/log
    for d in kubelet etcd kubestrap containerd; do mkdir -p /var/lib/\$d; mount --bind $nd/\$d /var/lib/\$d; done
    mount --make-rshared /var/lib/kubelet
    # The AMI: kubestrap, kubeadm, kubelet in /usr/bin; systemctl is the harness's shim.
    touch /usr/bin/kubelet; mount --bind $KUBE_BIN/kubelet /usr/bin/kubelet
    touch /usr/bin/kubeadm; mount --bind $nd/kubeadm-wrapper /usr/bin/kubeadm
    touch /usr/bin/kubestrap; mount --bind $KUBESTRAP /usr/bin/kubestrap
    printf '#!/bin/sh\nexec $BIN/kse2e-init systemctl --units $nd/units \"\$@\"\n' > /usr/local/bin/systemctl
    chmod 755 /usr/local/bin/systemctl
    echo $n > /etc/hostname
    printf '127.0.0.1 localhost\n%s %s\n%s %s\n' $ip $n $AWS_IP $ECR_HOST > /etc/hosts
    # containerd: stock configuration plus what this machine needs.
    mkdir -p /etc/containerd/certs.d/$ECR_HOST /etc/cni/net.d
    $BIN/containerd config default | sed \
      -e \"s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#\" \
      -e \"s#bin_dirs = \\['/opt/cni/bin'\\]#bin_dirs = ['/usr/lib/cni']#\" \
      -e \"s#config_path = ''#config_path = '/etc/containerd/certs.d'#\" \
      -e \"s#path = '/opt/containerd'#path = '/var/lib/containerd/opt'#\" > /etc/containerd/config.toml
    cp $RUN/aws/pki/ca.crt /etc/containerd/certs.d/$ECR_HOST/ca.crt
    printf 'server = \"https://%s\"\n[host.\"https://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"/etc/containerd/certs.d/%s/ca.crt\"\n' \
      $ECR_HOST $ECR_HOST $ECR_HOST > /etc/containerd/certs.d/$ECR_HOST/hosts.toml
    cat > /etc/cni/net.d/10-kse2e.conflist <<CNI
{\"cniVersion\": \"1.0.0\", \"name\": \"kse2e\", \"plugins\": [
  {\"type\": \"bridge\", \"bridge\": \"kse2e-cni0\", \"isGateway\": true, \"ipMasq\": true, \"hairpinMode\": true,
   \"ipam\": {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"$(node_pod_cidr "$n")\"}]], \"routes\": [{\"dst\": \"0.0.0.0/0\"}]}},
  {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}},
  {\"type\": \"loopback\"}]}
CNI
  "

  # Units, as the node image's systemd would have them.
  local U=$nd/units
  unit "$U" containerd "{\"name\":\"containerd\",\"type\":\"simple\",\"exec\":[\"$BIN/containerd\"],
    \"environment\":{\"PATH\":\"$BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"},\"restartSec\":5}"
  unit "$U" kubelet "{\"name\":\"kubelet\",\"type\":\"simple\",
    \"exec\":[\"/bin/sh\",\"-c\",\". /var/lib/kubelet/kubeadm-flags.env 2>/dev/null; exec /usr/bin/kubelet --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml \$KUBELET_KUBEADM_ARGS \$KUBELET_EXTRA_ARGS\"],
    \"environmentFile\":\"/etc/default/kubelet\",\"conditionPathExists\":\"/var/lib/kubelet/config.yaml\",\"restartSec\":2}"
  # kubestrap: the shipped unit's RestartPreventExitStatus (exit 2, bad
  # configuration, is not restarted); shorter RestartSec and TimeoutStopSec.
  local noRestart
  noRestart=$(sed -n 's/^RestartPreventExitStatus=//p' "$E2E_ROOT/systemd/kubestrap.service" | tr -s ' ' ',')
  unit "$U" kubestrap "{\"name\":\"kubestrap\",\"type\":\"notify\",
    \"exec\":[\"/usr/bin/kubestrap\",\"run\",\"--config\",\"/etc/kubestrap/config.yaml\"],
    \"environmentFile\":\"/etc/default/kubestrap\",\"restartSec\":2,\"timeoutStopSec\":40,\"watchdogSec\":60,
    \"restartPreventExitStatus\":[$noRestart]}"
  for u in containerd kubelet; do touch "$U/$u/enabled"; echo start > "$U/$u/want"; done
  setsid nsenter --net=/run/netns/"$ns" --mount="$NSDIR/$n-mnt" --uts="$NSDIR/$n-uts" -- \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    "$BIN/kse2e-init" init --units "$U" > "$nd/init.log" 2>&1 < /dev/null &
  echo $! > "$nd/init.pid"

  # The AMI's images (kubeadm would not pull them with imagePullPolicy IfNotPresent).
  wait_for 30 "containerd on $n" in_node "$n" "$BIN/ctr" version
  local imgs=("pause:registry.k8s.io/pause:$PAUSE_TAG" "kube-proxy:registry.k8s.io/kube-proxy:$KUBE_VERSION")
  if [ "$role" = control-plane ]; then
    imgs+=("etcd:registry.k8s.io/etcd:$ETCD_TAG")
    for c in kube-apiserver kube-controller-manager kube-scheduler; do imgs+=("$c:registry.k8s.io/$c:$KUBE_VERSION"); done
  fi
  local i f ref src
  for i in "${imgs[@]}"; do
    f=$IMG/${i%%:*}.tar; ref=${i#*:}
    src=$(tar -xOf "$f" manifest.json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["RepoTags"][0])')
    in_node "$n" "$BIN/ctr" -n k8s.io images import "$f" >/dev/null 2>&1
    in_node "$n" "$BIN/ctr" -n k8s.io images tag --force "$src" "$ref" >/dev/null 2>&1
    in_node "$n" "$BIN/ctr" -n k8s.io images rm "$src" >/dev/null 2>&1
  done

  # The instance metadata service of this instance.
  render_user_data "$nd" "$n" "$role"
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
  setsid nsenter --net=/run/netns/"$ns" -- env HOME="$nd/aemm-home" "$BIN/ec2-metadata-mock" -c "$nd/aemm.json" \
    > "$nd/aemm.log" 2>&1 < /dev/null &
  echo $! > "$nd/aemm.pid"
  wait_for 20 "metadata service on $n" in_ns "$ns" curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token

  # "cloud-init": fetch the user-data from IMDSv2 and run it, as root, inside the node.
  # shellcheck disable=SC2016 # expanded by the shell inside the node
  in_node "$n" /bin/bash -ec '
    t=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" http://169.254.169.254/latest/api/token)
    curl -sf -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/user-data > /var/lib/kubestrap-user-data.sh
    bash /var/lib/kubestrap-user-data.sh' > "$nd/cloud-init.log" 2>&1 || { cat "$nd/cloud-init.log" >&2; die "user-data failed on $n"; }
  log "node $n ($role, $ip, $iid) booted; kubestrap started by its user-data"
}

case ${1:-} in
boot) export REGION ACCOUNT RUN; boot "$2" "$3" ;;
exec) n=$2; shift 2; in_node "$n" "$@" ;;
systemctl) n=$2; shift 2; in_node "$n" "$BIN/kse2e-init" systemctl --units "$(node_dir "$n")/units" "$@" ;;
*) echo "usage: node.sh boot NAME ROLE | exec NAME CMD... | systemctl NAME ARGS..." >&2; exit 2 ;;
esac
