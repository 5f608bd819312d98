// Package deploy holds the tests of everything around the kubestrap binary that
// an operator touches: the systemd unit, the .deb and .rpm packages, the
// Terraform for the cluster (rendered with the real terraform, IAM policies
// enforced by moto_server), and the Packer template of the node image.
//
// They need the build tag deploy and the tools `make deploy-deps` installs:
//
//	make deploy-deps
//	go test -tags deploy -count=1 ./test/deploy/...
//
// KUBESTRAP_BIN names a prebuilt agent binary (otherwise the tests build one),
// TF_PLUGIN_DIR a directory holding the hashicorp/aws provider for the
// `terraform apply` test (default /opt/tf-plugins).
package deploy
