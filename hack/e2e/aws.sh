#!/usr/bin/env bash
# The "aws" host of the test network ($AWS_NS, $AWS_IP): moto_server (S3, ECR,
# STS, IAM) on :$MOTO_PORT and a real OCI registry (Debian's distribution
# registry) with TLS and htpasswd auth on :443, answering as the account's ECR
# registry $ECR_HOST with the user and password that moto's ECR
# GetAuthorizationToken hands out (AWS / <account>-auth-token).
#   aws.sh up            start both, create the bucket, the node role and the ECR
#                        repository, push the demo image
#   aws.sh creds NAME    print STS AssumeRole credentials of the node role (JSON)
#   aws.sh cli ARGS...   run the aws CLI against moto as the account's administrator
source "$(dirname "$0")/lib.sh"
A=$RUN/aws
mkdir -p "$A" "$RUN/pids" "$RUN/logs"

awscli() {
  in_ns "$AWS_NS" env AWS_ACCESS_KEY_ID=kse2e-admin AWS_SECRET_ACCESS_KEY=kse2e-admin \
    AWS_DEFAULT_REGION=$REGION AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$MOTO_URL" "$@"
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
  spawn moto moto_server -H "$AWS_IP" -p "$MOTO_PORT"

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
  wait_for 30 "registry" in_ns "$AWS_NS" curl -s --cacert "$A/pki/ca.crt" -o /dev/null "https://$AWS_IP/v2/"

  awscli s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration LocationConstraint=$REGION >/dev/null
  awscli s3api put-bucket-versioning --bucket "$BUCKET" --versioning-configuration Status=Enabled
  awscli iam create-role --role-name "$ROLE" --assume-role-policy-document \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}' >/dev/null
  awscli iam put-role-policy --role-name "$ROLE" --policy-name kse2e-node --policy-document \
    "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\",\"s3:PutObject\"],\"Resource\":\"arn:aws:s3:::$BUCKET/$CLUSTER/*\"},{\"Effect\":\"Allow\",\"Action\":[\"ecr:GetAuthorizationToken\",\"ecr:BatchGetImage\",\"ecr:GetDownloadUrlForLayer\"],\"Resource\":\"*\"}]}"
  awscli ecr create-repository --repository-name "$DEMO_REPO" >/dev/null

  # Push the demo image with the credentials ECR hands out.
  auth=$(awscli ecr get-authorization-token --query 'authorizationData[0].authorizationToken' --output text)
  mkdir -p "$A/docker"
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$AWS_IP" "$auth" > "$A/docker/config.json"
  in_ns "$AWS_NS" env DOCKER_CONFIG="$A/docker" SSL_CERT_FILE="$A/pki/ca.crt" \
    crane push "$IMG/demo-app.tar" "$AWS_IP/$DEMO_REPO:v1" >/dev/null
  log "aws host up: moto $MOTO_URL, registry $ECR_HOST ($AWS_IP:443), image $DEMO_IMAGE pushed"
  ;;
creds)
  awscli sts assume-role --role-arn "arn:aws:iam::$ACCOUNT:role/$ROLE" --role-session-name "$2" \
    --duration-seconds 43200 --output json
  ;;
cli)
  shift; awscli "$@"
  ;;
*) echo "usage: aws.sh up | creds SESSION | cli ARGS..." >&2; exit 2 ;;
esac
