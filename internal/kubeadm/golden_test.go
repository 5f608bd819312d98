package kubeadm

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/config"
)

// update rewrites the golden files: go test ./internal/kubeadm -run Golden -update
var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

// The exact documents kubeadm receives are kept in testdata, so that every
// change to them shows up in review. A failing test prints the difference;
// when the change is intended, rerun with -update and commit the files.
func TestKubeadmConfigurationsMatchGoldenFiles(t *testing.T) {
	node := Node{Name: "ip-10-0-1-10", IP: "10.0.1.10"}
	full := testConfig()
	full.Kubeadm.ControlPlaneEndpoint = "api.demo.internal:6443"
	full.Kubeadm.CertSANs = []string{"api.demo.internal"}
	full.Kubeadm.IgnorePreflightErrors = []string{"NumCPU"}
	full.Kubeadm.KubeletExtraArgs = []config.Arg{{Name: "max-pods", Value: "58"}}
	full.Kubeadm.KubeletConfiguration = map[string]any{"cgroupDriver": "systemd", "maxPods": 58}

	cases := map[string]func() ([]byte, error){
		"init-defaults": func() ([]byte, error) {
			doc, _, err := InitConfig(testConfig(), node, "abcdef.0123456789abcdef", 2*time.Hour)
			return doc, err
		},
		"init-full": func() ([]byte, error) {
			doc, _, err := InitConfig(full, node, "abcdef.0123456789abcdef", 2*time.Hour)
			return doc, err
		},
		"join-defaults": func() ([]byte, error) {
			return JoinConfig(testConfig(), Node{Name: "ip-10-0-2-7", IP: "10.0.2.7"}, JoinOptions{
				APIServerEndpoint: "10.0.1.10:6443", Token: "abcdef.0123456789abcdef",
				CACertHashes: []string{"sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"},
			})
		},
	}
	for name, build := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := build()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from the generated document; if intended, rerun with -update.\n--- want\n%s\n--- got\n%s", path, want, got)
			}
		})
	}
}
