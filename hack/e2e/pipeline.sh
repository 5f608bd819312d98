#!/usr/bin/env bash
# The demo app's delivery pipeline, as .github/workflows/demo-app.yml runs it
# (the same make targets, mk/cicd.mk), against the end-to-end cluster and its
# ECR registry: build the image, push it tagged TAG with the credentials ECR
# hands out, roll it out with the ci-deployer ServiceAccount's kubeconfig (the
# RBAC of examples/demo-app/ci-deployer-rbac.yaml: the demo Deployment only),
# then roll back to the tag that ran before. The workflow runs on a runner in
# the VPC: here the make targets run in the aws host's network namespace, and
# the ECR host name resolves to the registry through a private /etc/hosts (a
# mount namespace that ends with the command).
# usage: hack/e2e/pipeline.sh TAG
source "$(dirname "$0")/lib.sh"
H=$(dirname "$0")
tag=${1:?usage: pipeline.sh TAG}
P=$RUN/pipeline; mkdir -p "$P"
repo=$ECR_HOST/$DEMO_REPO
admin_kc=$(node_disk cp)/upper/etc/kubernetes/admin.conf

# runner CMD...: CMD as the workflow's runner sees the world (see above).
# shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
runner() {
  { cat /etc/hosts; echo "$AWS_IP $ECR_HOST"; } > "$P/hosts"
  unshare --mount --propagation private -- /bin/bash -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$P/hosts" \
    nsenter --net=/run/netns/"$AWS_NS" -- "$@"
}

# The deploy identity: ci-deployer's token, in a kubeconfig for the API server.
"$H/kubectl.sh" apply -f "$E2E_ROOT/examples/demo-app/ci-deployer-rbac.yaml" >&2
token=""
for _ in $(seq 60); do
  token=$("$H/kubectl.sh" get secret ci-deployer-token -o jsonpath='{.data.token}' 2>/dev/null | base64 -d) && [ -n "$token" ] && break
  sleep 1
done
[ -n "$token" ] || die "no token in secret ci-deployer-token"
server=$(KUBECONFIG=$admin_kc kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
KUBECONFIG=$admin_kc kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d > "$P/ca.crt"
kc=$P/ci-deployer.kubeconfig
rm -f "$kc"
KUBECONFIG=$kc kubectl config set-cluster e2e --server "$server" --certificate-authority "$P/ca.crt" --embed-certs >/dev/null
KUBECONFIG=$kc kubectl config set-credentials ci-deployer --token "$token" >/dev/null
KUBECONFIG=$kc kubectl config set-context ci --cluster e2e --user ci-deployer >/dev/null
KUBECONFIG=$kc kubectl config use-context ci >/dev/null
chmod 600 "$kc"

read -r key secret < "$RUN/aws/admin-key"
aws_env=(AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret" AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION"
  AWS_ENDPOINT_URL="$MOTO_URL" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null SSL_CERT_FILE="$RUN/aws/pki/ca.crt")
mk=(make -C "$E2E_ROOT" --no-print-directory IMAGE_REPO="$repo" DEMO_IMAGE_TAR="$P/demo-app-$tag.tar")

log "pipeline: build"
"${mk[@]}" demo-image IMAGE_TAG="$tag"
log "pipeline: push"
runner env "${aws_env[@]}" "${mk[@]}" demo-push IMAGE_TAG="$tag"
prev=$(runner env KUBECONFIG="$kc" "${mk[@]}" -s demo-current-tag)
[ -n "$prev" ] || die "no current tag of deployment/demo-app"
echo "previous-tag $prev"
log "pipeline: roll out $tag (running: $prev)"
runner env KUBECONFIG="$kc" "${mk[@]}" demo-rollout IMAGE_TAG="$tag" ROLLOUT_TIMEOUT=180s
echo "rolled-out $(runner env KUBECONFIG="$kc" "${mk[@]}" -s demo-current-tag)"
"$H/kubectl.sh" get pods -l app=demo-app -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.spec.containers[0].image}{"\n"}{end}' >&2
log "pipeline: roll back to $prev"
runner env KUBECONFIG="$kc" "${mk[@]}" demo-rollback PREVIOUS_TAG="$prev" ROLLOUT_TIMEOUT=180s
echo "rolled-back $(runner env KUBECONFIG="$kc" "${mk[@]}" -s demo-current-tag)"
