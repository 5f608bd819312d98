#!/usr/bin/env bash
# One control-plane node under real systemd, bootstrapped by kubestrap from its
# .deb: the issue 12 building blocks (sdnode.sh) put together by hand, apart
# from the e2e cluster. Everything it makes is named $P-* (netns $P-aws with
# moto_server, netns and machine $P-cp) and lives in $SDNODE_DIR.
#   P=ks12 SDNODE_DIR=/var/tmp/ks12 hack/e2e/sdnode-try.sh up     (make package first)
#   P=ks12 SDNODE_DIR=/var/tmp/ks12 hack/e2e/sdnode-try.sh down
# No route leaves the test network: the node's default route points at the
# aws namespace, which forwards nothing and has no other link.
source "$(dirname "$0")/lib.sh"
H=$(cd "$(dirname "$0")" && pwd)
P=${P:-sdtry}
export SDNODE_DIR=${SDNODE_DIR:-/var/tmp/$P}
NET=${SDTRY_SUBNET:-10.212.0}
AWS=$NET.2 CP=$NET.10
N=$P-cp
ST=$SDNODE_DIR/try
BUCKET=$P-bootstrap

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

up() {
  mkdir -p "$ST"
  local deb; deb=$(find "$E2E_ROOT/dist" -maxdepth 1 -name 'kubestrap_*.deb' -printf '%T@ %p\n' 2>/dev/null |
    sort -rn | head -1 | cut -d' ' -f2-)
  [ -f "$deb" ] || die "no .deb in $E2E_ROOT/dist (make package)"
  "$H/sdnode.sh" image

  # Network: $P-aws <-veth-> $P-cp; IMDS on the node's lo.
  ip netns add "$P-aws"; ip netns add "$P-cp"
  ip -n "$P-aws" link add "$P-vcp" type veth peer name eth0 netns "$P-cp"
  ip -n "$P-aws" link set lo up
  ip -n "$P-aws" addr add "$AWS/24" dev "$P-vcp"; ip -n "$P-aws" link set "$P-vcp" up
  ip -n "$P-cp" link set lo up
  ip -n "$P-cp" addr add "$CP/24" dev eth0; ip -n "$P-cp" link set eth0 up
  ip -n "$P-cp" route add default via "$AWS"
  ip -n "$P-cp" addr add 169.254.169.254/32 dev lo
  in_ns "$P-cp" sysctl -qw net.ipv4.ip_forward=1

  # S3: moto_server (no IAM enforcement here), the bucket.
  setsid nsenter --net="/run/netns/$P-aws" -- nice -n 10 moto_server -H "$AWS" -p 5000 > "$ST/moto.log" 2>&1 < /dev/null &
  echo $! > "$ST/moto.pid"
  wait_for 60 moto_server in_ns "$P-aws" curl -sf "http://$AWS:5000/"
  in_ns "$P-aws" python3 - "$AWS" "$BUCKET" "$REGION" <<'PY'
import boto3, sys
aws, bucket, region = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://{aws}:5000", region_name=region,
                  aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="example")
s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
PY

  # The instance metadata service (static example credentials: moto accepts any).
  python3 - "$ST/aemm.json" "$CP" "$N" "$REGION" "$ACCOUNT" <<'PY'
import json, sys
out, ip, name, region, account = sys.argv[1:]
role, iid = "sdnode-control-plane", "i-0e2e0000000000aa"
json.dump({"imdsv2": True, "server": {"hostname": "169.254.169.254", "port": "80"},
  "metadata": {"paths": {"iam-security-credentials": f"/latest/meta-data/iam/security-credentials/{role}"},
    "values": {"instance-id": iid, "local-ipv4": ip,
      "local-hostname": f"ip-{ip.replace('.', '-')}.{region}.compute.internal",
      "placement-region": region, "placement-availability-zone": region + "a",
      "iam-security-credentials-role": role,
      "iam-security-credentials": {"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "example", "Token": "example",
        "Expiration": "2036-01-01T00:00:00Z"}, "tags-instance-name": name}},
  "dynamic": {"values": {"instance-identity-document": {"accountId": account, "architecture": "x86_64",
    "availabilityZone": region + "a", "imageId": "ami-0e2e0000000000000", "instanceId": iid,
    "instanceType": "m5.large", "pendingTime": "2026-01-01T00:00:00Z", "privateIp": ip, "region": region,
    "version": "2017-09-30"}}}}, open(out, "w"), indent=1)
PY
  mkdir -p "$ST/aemm-home"
  setsid nsenter --net="/run/netns/$P-cp" -- env HOME="$ST/aemm-home" "$BIN/ec2-metadata-mock" -c "$ST/aemm.json" \
    > "$ST/aemm.log" 2>&1 < /dev/null &
  echo $! > "$ST/aemm.pid"
  wait_for 20 "metadata service" in_ns "$P-cp" curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
    http://169.254.169.254/latest/api/token

  # Boot, then the AMI's provisioning: the .deb, the images, the CNI config.
  "$H/sdnode.sh" boot "$N" --netns "$P-cp" --ip "$CP"
  local t0; t0=$(date +%s%N)
  "$H/sdnode.sh" bake "$N" "$deb"
  local i imgs=("pause:registry.k8s.io/pause:$PAUSE_TAG" "etcd:registry.k8s.io/etcd:$ETCD_TAG"
    "kube-proxy:registry.k8s.io/kube-proxy:$KUBE_VERSION")
  for i in kube-apiserver kube-controller-manager kube-scheduler; do imgs+=("$i:registry.k8s.io/$i:$KUBE_VERSION"); done
  for i in "${imgs[@]}"; do "$H/sdnode.sh" import "$N" "${SDTRY_IMAGES:-$IMG}/${i%%:*}.tar" "${i#*:}"; done
  cat > "$SDNODE_DIR/nodes/$N/root/etc/cni/net.d/10-$P.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "$P", "plugins": [
  {"type": "bridge", "bridge": "$P-cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.10.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
CNI
  log "provisioned $N in $(ms_since "$t0") ms (.deb, ${#imgs[@]} images, CNI)"

  # User-data, rendered by terraform from the real template, run once as a unit.
  cat > "$ST/config.yaml" <<YAML
apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: $P
role: control-plane
bucket: $BUCKET
aws:
  # moto serves S3 by path only.
  s3UsePathStyle: true
  imdsTimeout: 2m
kubeadm:
  kubernetesVersion: $KUBE_VERSION
  imagePullPolicy: IfNotPresent
  # CoreDNS is not built for the test cluster.
  skipPhases: [addon/coredns]
  # Only the checks a node of this machine cannot pass, each for its reason:
  # SystemVerification: the machine has cgroup v1 only (its cgroup2 hierarchy
  # has no controllers), which kubeadm refuses unless this check is skipped
  # (KEP 5573); the rest of SystemVerification (kernel config) passes.
  ignorePreflightErrors: [SystemVerification]
  kubeletConfiguration:
    # cgroup v1, see above: the kubelet refuses it unless told otherwise.
    failCgroupV1: false
ecr:
  enabled: true
YAML
  printf 'AWS_ENDPOINT_URL=http://%s:5000\n' "$AWS" > "$ST/environment"
  (cd "$ST" && echo "base64encode(templatefile(\"$E2E_ROOT/tf/templates/user-data.sh.tftpl\", {config_yaml = trimspace(file(\"config.yaml\")), environment = trimspace(file(\"environment\"))}))" |
    TF_CLI_CONFIG_FILE=/dev/null terraform console 2>/dev/null | tr -d '"' | base64 -d > "$ST/user-data.sh")
  grep -q 'systemctl enable --now --no-block kubestrap' "$ST/user-data.sh" || die "user-data rendering failed"
  install -D -m 700 "$ST/user-data.sh" "$SDNODE_DIR/nodes/$N/root/var/lib/cloud/user-data.sh"
  t0=$(date +%s%N)
  "$H/sdnode.sh" run "$N" /bin/bash /var/lib/cloud/user-data.sh
  local s
  for _ in $(seq 300); do
    s=$("$H/sdnode.sh" exec "$N" systemctl show kubestrap -p ActiveState --value)
    [ "$s" = active ] && break
    [ "$s" = failed ] && break
    sleep 1
  done
  log "kubestrap $s $(ms_since "$t0") ms after user-data started"
  "$H/sdnode.sh" exec "$N" systemctl show kubestrap -p ActiveState,NRestarts,StatusText
  [ "$s" = active ] || die "kubestrap did not become ready"
}

down() {
  set +e
  "$H/sdnode.sh" rm "$N"
  local f p
  for f in "$ST"/*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f"); kill "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  for f in "$P-cp" "$P-aws"; do
    ip netns pids "$f" 2>/dev/null | xargs -r kill -9
    ip netns del "$f" 2>/dev/null
  done
  rm -rf "$ST"
  log "$P: down"
}

case ${1:-} in
up) up ;;
down) down ;;
*) echo "usage: P=PREFIX SDNODE_DIR=DIR sdnode-try.sh up|down" >&2; exit 2 ;;
esac
