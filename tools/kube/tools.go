// Package kube pins the Kubernetes v1.37.2 binaries (kubeadm, kubelet and the
// control-plane components) that the integration and end-to-end tests build
// from the Go modules; see the Makefile target kube-bins.
package kube
