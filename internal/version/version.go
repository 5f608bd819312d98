// Package version holds the build identity stamped in by the linker
// (-X github.com/kubestrap/kubestrap/internal/version.Version=...).
package version

// Set at link time by `make build`; the defaults mark an unstamped build.
var (
	Version = "dev"
	Commit  = "unknown"
)

// KubernetesVersion is the Kubernetes release kubestrap targets and writes
// into every kubeadm configuration unless the config overrides it.
const KubernetesVersion = "v1.37.2"
