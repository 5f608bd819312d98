#!/usr/bin/env bash
# Deploys examples/demo-app (image pulled from the cluster's ECR registry with
# the credentials kubestrap wrote on the node; no imagePullSecret), waits for
# it and asks it over its NodePort on every worker, from the aws host.
# usage: hack/e2e/demo-app.sh
source "$(dirname "$0")/lib.sh"
H=$(dirname "$0")
sed "s#\${DEMO_IMAGE}#$DEMO_IMAGE#" "$E2E_ROOT/examples/demo-app/demo-app.yaml" | "$H/kubectl.sh" apply -f -
"$H/kubectl.sh" rollout status deployment/demo-app --timeout=180s
"$H/kubectl.sh" get pods -l app=demo-app -o wide
node=$("$H/kubectl.sh" get pods -l app=demo-app -o jsonpath='{.items[0].spec.nodeName}')
[[ $node == w* ]] || die "demo-app runs on $node, not on a worker"
# The image came from the registry, pulled by the kubelet with kubestrap's credentials.
"$H/kubectl.sh" get events --field-selector reason=Pulled -o custom-columns=MESSAGE:.message --no-headers | grep demo-app | tail -1
for w in "$RUN"/nodes/w*; do
  [ -e "$w" ] || continue
  w=${w##*/}
  ip=$(node_ip "$w")
  out=$(in_ns "$AWS_NS" curl -sf --max-time 5 --retry 10 --retry-delay 1 --retry-all-errors "http://$ip:30080/") ||
    die "demo-app did not answer on $w ($ip:30080)"
  log "http://$ip:30080/ ($w) -> $out"
done
