//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

func kubeadmBin(t *testing.T) string {
	return filepath.Join(requireEnvDir(t, "KUBE_BIN"), "kubeadm")
}

func runKubeadm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(kubeadmBin(t), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// configVariants are agent configurations covering what the generated
// kubeadm documents can contain.
func configVariants(t *testing.T) map[string]*config.AgentConfig {
	base := func() *config.AgentConfig {
		c := config.Defaults()
		c.APIVersion, c.Kind, c.Cluster, c.Bucket, c.Role = config.APIVersion, config.Kind, "demo", "demo-bootstrap", config.RoleControlPlane
		return &c
	}
	full := base()
	full.Kubeadm.ControlPlaneEndpoint = "api.demo.internal:6443"
	full.Kubeadm.CRISocket = "unix:///run/containerd/containerd.sock"
	full.Kubeadm.ImagePullPolicy = "IfNotPresent"
	full.Kubeadm.IgnorePreflightErrors = []string{"NumCPU", "Mem"}
	full.Kubeadm.SkipPhases = []string{"addon/kube-proxy"}
	full.Kubeadm.CertSANs = []string{"api.demo.internal", "10.0.1.10"}
	full.Kubeadm.ImageRepository = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/k8s"
	full.Kubeadm.PodSubnet, full.Kubeadm.ServiceSubnet = "192.168.0.0/16", "10.100.0.0/16"
	full.Kubeadm.KubeletExtraArgs = []config.Arg{{Name: "cgroup-root", Value: "/node"}, {Name: "max-pods", Value: "50"}}
	full.Kubeadm.KubeletConfiguration = map[string]any{"cgroupDriver": "cgroupfs", "failSwapOn": false,
		"evictionHard": map[string]any{"memory.available": "100Mi"}}
	ipv6 := base()
	ipv6.Kubeadm.AdvertiseAddress = "fd00::10"
	ipv6.Kubeadm.PodSubnet, ipv6.Kubeadm.ServiceSubnet = "fd01::/48", "fd02::/108"
	return map[string]*config.AgentConfig{"defaults": base(), "full": full, "ipv6": ipv6}
}

func TestGeneratedConfigurationsPassRealKubeadmValidate(t *testing.T) {
	for name, cfg := range configVariants(t) {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("variant invalid: %v", err)
			}
			node := kubeadm.Node{Name: "ip-10-0-1-10", IP: "10.0.1.10"}
			if name == "ipv6" {
				node.IP = "fd00::10"
			}
			initDoc, _, err := kubeadm.InitConfig(cfg, node, "abcdef.0123456789abcdef", 2*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := runKubeadm(t, "config", "validate", "--config", writeTemp(t, "init.yaml", initDoc)); err != nil {
				t.Fatalf("init configuration refused: %v\n%s\n%s", err, out, initDoc)
			}
			joinDoc, err := kubeadm.JoinConfig(cfg, node, kubeadm.JoinOptions{
				APIServerEndpoint: "10.0.1.10:6443", Token: "abcdef.0123456789abcdef",
				CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)},
			})
			if err != nil {
				t.Fatal(err)
			}
			if out, err := runKubeadm(t, "config", "validate", "--config", writeTemp(t, "join.yaml", joinDoc)); err != nil {
				t.Fatalf("join configuration refused: %v\n%s\n%s", err, out, joinDoc)
			}
			// The control-plane join and the certificate upload carry the
			// certificate key in the file (never on a command line).
			key := strings.Repeat("0f", 32)
			cpJoinDoc, err := kubeadm.JoinConfig(cfg, node, kubeadm.JoinOptions{
				APIServerEndpoint: "10.0.1.5:6443", Token: "abcdef.0123456789abcdef",
				CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)}, ControlPlane: true, CertificateKey: key,
			})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(cpJoinDoc), "certificateKey: "+key) {
				t.Fatalf("control-plane join configuration without the key:\n%s", cpJoinDoc)
			}
			if out, err := runKubeadm(t, "config", "validate", "--config", writeTemp(t, "cp-join.yaml", cpJoinDoc)); err != nil {
				t.Fatalf("control-plane join configuration refused: %v\n%s\n%s", err, out, cpJoinDoc)
			}
			uploadDoc, err := kubeadm.UploadCertsConfig(cfg, node, key)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := runKubeadm(t, "config", "validate", "--config", writeTemp(t, "upload.yaml", uploadDoc)); err != nil {
				t.Fatalf("upload-certs configuration refused: %v\n%s\n%s", err, out, uploadDoc)
			}
		})
	}
}

func TestInitDryRunWithGeneratedConfiguration(t *testing.T) {
	cfg := configVariants(t)["full"]
	cfg.Kubeadm.IgnorePreflightErrors = []string{"all"}
	doc, _, err := kubeadm.InitConfig(cfg, kubeadm.Node{Name: "ip-10-0-1-10", IP: "10.0.1.10"}, "abcdef.0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runKubeadm(t, "init", "--dry-run", "--config", writeTemp(t, "init.yaml", doc))
	if err != nil {
		t.Fatalf("kubeadm init --dry-run failed: %v\n%s", err, tail(out, 40))
	}
	if !strings.Contains(out, "Your Kubernetes control-plane has initialized successfully") {
		t.Errorf("dry run did not complete:\n%s", tail(out, 20))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
