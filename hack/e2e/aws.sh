#!/usr/bin/env bash
# The "aws" host of the test network ($AWS_NS, $AWS_IP): moto_server (S3, ECR,
# STS, IAM, EC2, Auto Scaling) on :$MOTO_PORT, the Auto Scaling proxy
# (test/e2e/asgproxy) on :$ASG_PORT, and a real OCI registry (Debian's distribution
# registry) with TLS and htpasswd auth on :443, answering as the account's ECR
# registry $ECR_HOST with the user and password that moto's ECR
# GetAuthorizationToken hands out (AWS / <account>-auth-token).
#   aws.sh up            start them, create the bucket, the node roles, the ECR
#                        repository, one EC2 instance per node of $ALL_NODES
#                        (IDs in $RUN/aws/iids/NODE), the worker Auto Scaling
#                        group with its termination lifecycle hook; push the
#                        demo image, enforce IAM
#   aws.sh cli ARGS...         the aws CLI against moto as the account's administrator
#   aws.sh as-node NODE ARGS... the aws CLI with the instance-role credentials that
#                              NODE's metadata service hands out
# IAM is enforced once the setup is done: the node roles get the policies that
# Terraform gives them (tf/templates/*-policy.json.tftpl, rendered by terraform),
# the administrator is an IAM user with an access key.
source "$(dirname "$0")/lib.sh"
A=$RUN/aws
mkdir -p "$A" "$RUN/pids" "$RUN/logs"

# awscli ARGS...: as the administrator (before IAM is enforced: any key).
awscli() {
  local key=kse2e-setup secret=kse2e-setup
  [ -f "$A/admin-key" ] && read -r key secret < "$A/admin-key"
  in_ns "$AWS_NS" env AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" \
    AWS_DEFAULT_REGION=$REGION AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$MOTO_URL" "$@"
}

# awspy ARGS...: python3 ARGS in the aws host, with the administrator's
# environment (boto3 against moto: MOTO_URL, AWS_DEFAULT_REGION, the key).
awspy() {
  local key=kse2e-setup secret=kse2e-setup
  [ -f "$A/admin-key" ] && read -r key secret < "$A/admin-key"
  in_ns "$AWS_NS" env AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" MOTO_URL="$MOTO_URL" \
    AWS_DEFAULT_REGION=$REGION AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null python3 "$@"
}

# role_policy ROLE: the role's policy as Terraform renders it (or, if the template
# cannot be rendered, an equivalent one, with a warning).
role_policy() {
  local tpl=$E2E_ROOT/tf/templates/$1-policy.json.tftpl out
  local vars="bucket_arn = \"arn:aws:s3:::$BUCKET\", cluster = \"$CLUSTER\""
  vars+=", kms_key_arn = \"arn:aws:kms:$REGION:$ACCOUNT:key/00000000-0000-0000-0000-000000000000\""
  vars+=", kms_via_service = \"s3.$REGION.amazonaws.com\""
  vars+=", ecr_repository_arns = [\"arn:aws:ecr:$REGION:$ACCOUNT:repository/$DEMO_REPO\"]"
  # terraform console reads one expression a line.
  out=$(cd "$A" && echo "base64encode(templatefile(\"$tpl\", {$vars}))" |
    TF_CLI_CONFIG_FILE=/dev/null terraform console 2>/dev/null | tr -d '"' | base64 -d |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' 2>/dev/null) || out=""
  if [ -z "$out" ]; then
    log "WARNING: cannot render $tpl; using the harness's own $1 policy"
    local s3='"s3:GetObject"' res="arn:aws:s3:::$BUCKET/$CLUSTER/join.json"
    [ "$1" = control-plane ] && s3='"s3:GetObject","s3:PutObject","s3:DeleteObject"' res="arn:aws:s3:::$BUCKET/$CLUSTER/*"
    out="{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":[$s3],\"Resource\":\"$res\"},{\"Effect\":\"Allow\",\"Action\":[\"ecr:GetAuthorizationToken\"],\"Resource\":\"*\"}]}"
  fi
  echo "$out"
}

# spawn NAME CMD...: start a daemon on the aws host in its own session, PID in $RUN/pids/NAME.pid.
spawn() {
  local name=$1; shift
  setsid nsenter --net=/run/netns/"$AWS_NS" -- "$@" > "$RUN/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/pids/$name.pid"
}

case ${1:-} in
up)
  "$(dirname "$0")/net.sh" attach "$AWS_NS" "$AWS_IP"
  # moto_server, with one fix: with IAM enforced, moto recomputes a request's
  # SigV4 signature from werkzeug's request.url, whose query string has %2F
  # (and every other reserved character but &=+#) decoded, so an S3 request
  # with a '/' in a query value (the node cleanup's ListObjectsV2
  # prefix=kse2e%2Fleave%2F, a delimiter=%2F) is refused with
  # SignatureDoesNotMatch (moto 5.2.1; getmoto/moto#5948). Here the signature
  # is checked against the query string as sent, which the SDKs encode as
  # SigV4 signs it; every other check of moto's is unchanged.
  spawn moto python3 -c '
import sys
from urllib.parse import urlsplit
from flask import has_request_context, request
from moto.core.authorization import ActionAuthenticatorMixin as A
from moto.server import main
check = getattr(A, "_authenticate_and_authorize_action", None)
def check_as_sent(self, *args, **kwargs):
    if not has_request_context():
        return check(self, *args, **kwargs)
    uri = self.uri
    self.uri = urlsplit(uri)._replace(query=request.environ.get("QUERY_STRING", "")).geturl()
    try:
        return check(self, *args, **kwargs)
    finally:
        self.uri = uri
if check is None:
    print("kse2e: this moto has no _authenticate_and_authorize_action; its signature check is left as it is", file=sys.stderr)
else:
    A._authenticate_and_authorize_action = check_as_sent
sys.exit(main())
' -H "$AWS_IP" -p "$MOTO_PORT"
  # Auto Scaling's lifecycle calls, which moto lacks, answered and recorded
  # (one JSON line each, made with a worker's own instance-role credentials
  # only); every other request forwarded to moto.
  [ -x "$BIN/asgproxy" ] || die "no $BIN/asgproxy (make e2e-build builds it)"
  spawn asgproxy "$BIN/asgproxy" -listen "$AWS_IP:$ASG_PORT" -upstream "$MOTO_URL" -creds "$A/creds" \
    -record "$A/lifecycle-actions.jsonl" -worker-role kse2e-worker -hooks "$WORKER_ASG/$WORKER_HOOK"

  # The HA run (E2E_CONTROL_PLANES > 1): a TCP load balancer in front of the
  # control planes' API servers, as the internal NLB of tf/control-plane.tf:
  # the control-plane endpoint $CP_ENDPOINT of every node.
  if [ "$CONTROL_PLANES" -gt 1 ]; then
    [ -x "$BIN/tcplb" ] || die "no $BIN/tcplb (make e2e-build builds it)"
    backends=$(for n in $CP_NODES; do printf '%s:6443,' "$(node_ip "$n")"; done)
    spawn tcplb "$BIN/tcplb" -listen "$CP_ENDPOINT" -backends "${backends%,}"
  fi

  # TLS: a CA of our own, trusted by each node's containerd (certs.d/<host>/ca.crt).
  mkdir -p "$A/pki" "$A/registry"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kse2e test CA" \
    -keyout "$A/pki/ca.key" -out "$A/pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$ECR_HOST" \
    -keyout "$A/pki/registry.key" -out "$A/pki/registry.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,IP:%s\nextendedKeyUsage=serverAuth\n' "$ECR_HOST" "$AWS_IP" > "$A/pki/ext.cnf"
  openssl x509 -req -in "$A/pki/registry.csr" -CA "$A/pki/ca.crt" -CAkey "$A/pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$A/pki/ext.cnf" -out "$A/pki/registry.crt" 2>/dev/null
  # The registry accepts exactly what ECR's GetAuthorizationToken returns (moto: AWS / <account>-auth-token).
  htpasswd -Bbn AWS "$ACCOUNT-auth-token" > "$A/htpasswd"
  cat > "$A/registry.yml" <<YML
version: 0.1
log: {level: info, fields: {service: kse2e-ecr}}
storage:
  filesystem: {rootdirectory: $A/registry}
  delete: {enabled: true}
http:
  addr: $AWS_IP:443
  tls: {certificate: $A/pki/registry.crt, key: $A/pki/registry.key}
auth:
  htpasswd: {realm: kse2e-ecr, path: $A/htpasswd}
YML
  spawn registry docker-registry serve "$A/registry.yml"

  wait_for 60 "moto_server" in_ns "$AWS_NS" curl -sf "$MOTO_URL/moto-api/"
  wait_for 30 "the Auto Scaling proxy (forwarding to moto)" in_ns "$AWS_NS" curl -sf "$ASG_URL/moto-api/"
  wait_for 30 "registry" in_ns "$AWS_NS" curl -s --cacert "$A/pki/ca.crt" -o /dev/null "https://$AWS_IP/v2/"

  # The nodes' EC2 instances: one real moto instance per node a run may boot,
  # tagged Name=<node>, in a VPC subnet of the nodes' network with the node's
  # own address as its private IP (as on EC2, where a Node's InternalIP and
  # its etcd peer host are its instance's private IP), so that each agent's
  # instance ID (IMDS, STS session, the Node's providerID aws:///<zone>/<id>)
  # names an instance EC2 describes, node.sh terminate can end it, and EC2
  # answers by address; the IDs go to $A/iids/<node>. Then the worker Auto
  # Scaling group, the workers' instances attached, and its termination
  # lifecycle hook, as Terraform makes them (tf/nodes.tf). One Python process
  # (boto3, as the aws CLI uses; a dozen CLI runs would take 15 s of this
  # machine's two cores), in the background while the bucket, the roles and
  # the registry are set up.
  mkdir -p "$A/iids"
  read -ra all <<< "$ALL_NODES"
  node_addrs=()
  for n in "${all[@]}"; do node_addrs+=("$n=$(node_ip "$n")"); done
  awspy - "$A/iids" "$WORKER_ASG" "$WORKER_HOOK" "$WORKER_HOOK_TIMEOUT" "$PFX" "$SUBNET_PREFIX.0/24" "${node_addrs[@]}" <<'PY' &
import os, sys
import boto3
iids, group, hook, timeout, pfx, cidr = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
nodes = [a.split("=", 1) for a in sys.argv[7:]]
region, url = os.environ["AWS_DEFAULT_REGION"], os.environ["MOTO_URL"]
ec2 = boto3.client("ec2", endpoint_url=url, region_name=region)
asg = boto3.client("autoscaling", endpoint_url=url, region_name=region)
ami, itype, zone = "ami-0e2e0000000000000", "m5.large", region + "a"
vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
ids = []
for n, ip in nodes:
    out = ec2.run_instances(ImageId=ami, InstanceType=itype, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=ip,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "kubestrap-e2e", "Value": pfx}, {"Key": "Name", "Value": n}]}])
    i = out["Instances"][0]["InstanceId"]
    assert out["Instances"][0]["PrivateIpAddress"] == ip, f"{n}: private IP {out['Instances'][0]['PrivateIpAddress']}, want {ip}"
    ids.append(i)
    with open(f"{iids}/{n}.tmp", "w") as f:
        f.write(i + "\n")
    os.rename(f"{iids}/{n}.tmp", f"{iids}/{n}")
workers = [i for (n, _), i in zip(nodes, ids) if not n.startswith("cp")]
asg.create_launch_configuration(LaunchConfigurationName=group, ImageId=ami, InstanceType=itype)
asg.create_auto_scaling_group(AutoScalingGroupName=group, LaunchConfigurationName=group, MinSize=0,
    MaxSize=len(workers), DesiredCapacity=0, AvailabilityZones=[zone])
asg.attach_instances(AutoScalingGroupName=group, InstanceIds=workers)
asg.put_lifecycle_hook(AutoScalingGroupName=group, LifecycleHookName=hook, HeartbeatTimeout=timeout,
    LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", DefaultResult="CONTINUE")
PY
  ec2_job=$!
  awscli s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration LocationConstraint=$REGION >/dev/null
  awscli s3api put-bucket-versioning --bucket "$BUCKET" --versioning-configuration Status=Enabled
  for r in control-plane worker; do
    awscli iam create-role --role-name "kse2e-$r" --assume-role-policy-document \
      '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}' >/dev/null
    awscli iam put-role-policy --role-name "kse2e-$r" --policy-name kubestrap --policy-document "$(role_policy $r)"
  done
  awscli ecr create-repository --repository-name "$DEMO_REPO" >/dev/null
  # The administrator (the tests, and the attacker of scenario 6): an IAM user.
  awscli iam create-user --user-name kse2e-admin >/dev/null
  awscli iam put-user-policy --user-name kse2e-admin --policy-name admin --policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
  awscli iam create-access-key --user-name kse2e-admin --query 'AccessKey.[AccessKeyId,SecretAccessKey]' \
    --output text > "$A/admin-key.tmp"
  mv "$A/admin-key.tmp" "$A/admin-key"

  # Push the demo image with the credentials ECR hands out.
  auth=$(awscli ecr get-authorization-token --query 'authorizationData[0].authorizationToken' --output text)
  mkdir -p "$A/docker"
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$AWS_IP" "$auth" > "$A/docker/config.json"
  in_ns "$AWS_NS" env DOCKER_CONFIG="$A/docker" SSL_CERT_FILE="$A/pki/ca.crt" \
    crane push "$IMG/demo-app.tar" "$AWS_IP/$DEMO_REPO:v1" >/dev/null
  wait "$ec2_job" || die "cannot create the nodes' EC2 instances and the worker Auto Scaling group in moto"
  # The instance profiles' credentials, one STS session per instance (named by its
  # instance id), issued before IAM is enforced: moto cannot evaluate the EC2
  # service principal of the roles' trust policy, so nothing could assume them later.
  mkdir -p "$A/creds"; jobs=()
  for n in "${all[@]}"; do
    r=worker; is_cp "$n" && r=control-plane
    awscli sts assume-role --role-arn "arn:aws:iam::$ACCOUNT:role/kse2e-$r" --role-session-name "$(node_iid "$n")" \
      --duration-seconds 43200 --output json > "$A/creds/$n.json" &
    jobs+=($!)
  done
  wait "${jobs[@]}"   # only these: moto, the proxy and the registry run in the background too
  for n in "${all[@]}"; do grep -q SessionToken "$A/creds/$n.json" || die "no instance-role credentials for $n"; done
  # From now on moto enforces IAM: every call needs credentials it issued and a policy allowing it.
  in_ns "$AWS_NS" curl -sf -X POST -H 'Content-Type: application/json' -d 0 "$MOTO_URL/moto-api/reset-auth" >/dev/null
  awscli s3api head-bucket --bucket "$BUCKET" >/dev/null || die "the administrator cannot use moto with IAM enforced"
  log "aws host up: moto $MOTO_URL (IAM enforced), Auto Scaling proxy $ASG_URL, ${#all[@]} EC2 instances," \
    "group $WORKER_ASG with hook $WORKER_HOOK, registry $ECR_HOST ($AWS_IP:443), image $DEMO_IMAGE pushed"
  ;;
as-node)
  n=$2; shift 2
  # shellcheck disable=SC2016 # expanded by the shell inside the node
  c=$(in_node "$n" /bin/sh -ec '
    t=$(curl -sf -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token)
    r=$(curl -sf -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/)
    curl -sf -H "X-aws-ec2-metadata-token: $t" http://169.254.169.254/latest/meta-data/iam/security-credentials/$r')
  read -r key secret token < <(echo "$c" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["AccessKeyId"], c["SecretAccessKey"], c["Token"])')
  in_ns "$AWS_NS" env AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_SESSION_TOKEN="$token" \
    AWS_DEFAULT_REGION=$REGION AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$MOTO_URL" "$@"
  ;;
cli)
  shift; awscli "$@"
  ;;
*) echo "usage: aws.sh up | cli ARGS... | as-node NODE ARGS..." >&2; exit 2 ;;
esac
