#!/usr/bin/env bash
# kubectl against the test cluster, as its administrator (the control plane's
# admin.conf), from the aws host of the test network.
# usage: hack/e2e/kubectl.sh ARGS...
source "$(dirname "$0")/lib.sh"
kc=$(node_disk cp)/upper/etc/kubernetes/admin.conf
[ -f "$kc" ] || die "no admin.conf yet: is the control plane initialized?"
exec nsenter --net=/run/netns/"$AWS_NS" -- kubectl --kubeconfig "$kc" "$@"
