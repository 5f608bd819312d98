//go:build deploy

package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestTerraformFmt(t *testing.T) {
	tf := needTool(t, "terraform")
	res := runCmd(t, cmdSpec{dir: repoRoot(t), env: terraformEnv(t)}, tf, "fmt", "-check", "-recursive", "-diff", "tf")
	if res.code != 0 {
		t.Fatalf("terraform fmt -check -recursive tf: %s", res)
	}
}

// nodeConfigDir copies the provider-free node-config module with the templates
// it renders into a scratch directory, so terraform never writes into tf/.
func nodeConfigDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, repoPath(t, "tf", "modules", "node-config"), filepath.Join(dir, "modules", "node-config"), ".terraform")
	copyTree(t, repoPath(t, "tf", "templates"), filepath.Join(dir, "templates"))
	return filepath.Join(dir, "modules", "node-config")
}

// TestUserDataConfigValidates renders the user-data of both roles with the real
// terraform, through the same module nodes.tf uses, and has kubestrap validate
// the configuration the script writes.
func TestUserDataConfigValidates(t *testing.T) {
	needTool(t, "terraform")
	cases := map[string]map[string]any{
		"control-plane": {
			"cluster":                "demo",
			"role":                   "control-plane",
			"bucket":                 "demo-kubestrap-123456789012-eu-west-1",
			"region":                 "eu-west-1",
			"kubernetes_version":     "v1.37.2",
			"control_plane_endpoint": "demo-api-0123456789abcdef.elb.eu-west-1.amazonaws.com:6443",
			"cert_sans":              []string{"demo-api-0123456789abcdef.elb.eu-west-1.amazonaws.com", "k8s.example.com"},
			"kms_key_id":             "arn:aws:kms:eu-west-1:123456789012:key/0b9e5f1c-2d3a-4b5c-8d6e-7f8091a2b3c4",
			"token_ttl":              "2h",
			"ecr_registry_ids":       []string{"123456789012"},
		},
		"worker": {
			"cluster":            "demo",
			"role":               "worker",
			"bucket":             "demo-kubestrap-123456789012-eu-west-1",
			"region":             "eu-west-1",
			"kubernetes_version": "v1.37.2",
			"ecr_registry_ids":   []string{"123456789012", "210987654321"},
			"kubelet_extra_args": []map[string]string{{"name": "node-labels", "value": "node.kubernetes.io/pool=general"}},
		},
	}
	for role, vars := range cases {
		t.Run(role, func(t *testing.T) {
			dir := nodeConfigDir(t)
			writeJSON(t, filepath.Join(dir, "terraform.tfvars.json"), vars)

			var userData string
			tfEval(t, dir, "local.user_data", &userData)
			checkUserDataScript(t, userData)
			doc := configFromUserData(t, userData)
			t.Logf("%s config:\n%s", role, doc)
			msg := validateConfig(t, role+".yaml", doc)
			t.Log(msg)

			var cfg map[string]any
			if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
				t.Fatal(err)
			}
			if cfg["role"] != role || cfg["cluster"] != "demo" || cfg["bucket"] != vars["bucket"] {
				t.Errorf("config does not carry role/cluster/bucket: %v", cfg)
			}
			kubeadm, _ := cfg["kubeadm"].(map[string]any)
			if kubeadm["kubernetesVersion"] != "v1.37.2" || kubeadm["criSocket"] != "unix:///run/containerd/containerd.sock" {
				t.Errorf("kubeadm section: %v", kubeadm)
			}
			if role == "control-plane" {
				if kubeadm["controlPlaneEndpoint"] != vars["control_plane_endpoint"] {
					t.Errorf("controlPlaneEndpoint = %v, want %v", kubeadm["controlPlaneEndpoint"], vars["control_plane_endpoint"])
				}
				if sans := strs(kubeadm["certSANs"]); !slices.Equal(sans, vars["cert_sans"].([]string)) {
					t.Errorf("certSANs = %q, want %q", sans, vars["cert_sans"])
				}
				cp, _ := cfg["controlPlane"].(map[string]any)
				if cp["kmsKeyId"] != vars["kms_key_id"] {
					t.Errorf("controlPlane.kmsKeyId = %v", cp["kmsKeyId"])
				}
			}
		})
	}
}

// checkUserDataScript checks the shape of a rendered user-data script and its
// shell syntax.
func checkUserDataScript(t *testing.T, script string) {
	t.Helper()
	if !strings.HasPrefix(script, "#!/bin/bash\n") {
		t.Errorf("user-data does not start with #!/bin/bash")
	}
	for _, want := range []string{
		"/usr/bin/kubestrap validate --config /etc/kubestrap/config.yaml\n",
		"systemctl enable --now --no-block kubestrap\n",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("user-data lacks %q", want)
		}
	}
	if len(script) > 16<<10 {
		t.Errorf("user-data is %d bytes; EC2 allows 16 KiB", len(script))
	}
	path := filepath.Join(t.TempDir(), "user-data.sh")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if res := runCmd(t, cmdSpec{}, "bash", "-n", path); res.code != 0 {
		t.Errorf("bash -n user-data: %s", res)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		if res := runCmd(t, cmdSpec{}, sc, "--severity=warning", path); res.code != 0 {
			t.Errorf("shellcheck user-data: %s", res)
		}
	} else {
		t.Log("shellcheck not installed (make deploy-deps); skipped")
	}
}

// TestUserDataTemplate renders templates/user-data.sh.tftpl directly with
// templatefile(), as Terraform does, with and without extra environment, and
// runs the script in a scratch root: it must write the configuration, have
// kubestrap accept it, and start the unit without blocking.
func TestUserDataTemplate(t *testing.T) {
	needTool(t, "terraform")
	config, err := os.ReadFile(repoPath(t, "packaging", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := repoPath(t, "tf", "templates", "user-data.sh.tftpl")

	plain := renderTemplate(t, tmpl, map[string]any{"config_yaml": string(config), "environment": ""})
	checkUserDataScript(t, plain)
	if got := configFromUserData(t, plain); strings.TrimSpace(got) != strings.TrimSpace(string(config)) {
		t.Errorf("the heredoc changed the configuration:\n%s", got)
	}
	if strings.Contains(plain, "> /etc/default/kubestrap") {
		t.Error("with environment = \"\" user-data must not write /etc/default/kubestrap")
	}

	env := "AWS_ENDPOINT_URL=http://10.0.0.2:5055\nAWS_REGION=us-east-1"
	withEnv := renderTemplate(t, tmpl, map[string]any{"config_yaml": string(config), "environment": env})
	checkUserDataScript(t, withEnv)
	if !strings.Contains(withEnv, "cat > /etc/default/kubestrap <<'KUBESTRAP_ENV_EOF'\n"+env+"\nKUBESTRAP_ENV_EOF\n") {
		t.Errorf("environment not written to /etc/default/kubestrap:\n%s", withEnv)
	}

	t.Run("runs", func(t *testing.T) {
		root := userDataRoot(t, withEnv)
		res := mustRun(t, cmdSpec{env: []string{"PATH=/usr/bin:/bin"}, timeout: time.Minute}, "chroot", root, "/bin/bash", "/user-data")
		t.Log(strings.TrimSpace(res.stdout + res.stderr))
		written, err := os.ReadFile(filepath.Join(root, "etc/kubestrap/config.yaml"))
		if err != nil || string(written) != string(config)+"\n" && string(written) != string(config) {
			t.Errorf("/etc/kubestrap/config.yaml = %q (%v)", written, err)
		}
		if fi, err := os.Stat(filepath.Join(root, "etc/kubestrap/config.yaml")); err == nil && fi.Mode().Perm() != 0o644 {
			t.Errorf("config.yaml mode %o, want 644", fi.Mode().Perm())
		}
		if e, _ := os.ReadFile(filepath.Join(root, "etc/default/kubestrap")); string(e) != env+"\n" {
			t.Errorf("/etc/default/kubestrap = %q", e)
		}
		assertCalls(t, "user-data", takeCalls(t, root), []string{"systemctl enable --now --no-block kubestrap"})
	})

	t.Run("stops on a bad config", func(t *testing.T) {
		bad := renderTemplate(t, tmpl, map[string]any{"config_yaml": strings.Replace(string(config), "role: worker", "role: wroker", 1), "environment": ""})
		root := userDataRoot(t, bad)
		res := runCmd(t, cmdSpec{env: []string{"PATH=/usr/bin:/bin"}, timeout: time.Minute}, "chroot", root, "/bin/bash", "/user-data")
		if res.code == 0 || !strings.Contains(res.stdout+res.stderr, "role") {
			t.Errorf("user-data with a bad role: want a failure naming the field, got %s", res)
		}
		assertCalls(t, "bad config", takeCalls(t, root), nil)
	})
}

// userDataRoot is a scratch root in which a user-data script runs as on a node:
// bash and the tools it uses, the agent at /usr/bin/kubestrap, a recording
// systemctl, and the script at /user-data.
func userDataRoot(t *testing.T, script string) string {
	t.Helper()
	root := chrootRoot(t, true)
	for _, prog := range []string{"bash", "install", "mv"} {
		p, err := exec.LookPath(prog)
		if err != nil {
			t.Skipf("%s not found: %v", prog, err)
		}
		p, _ = filepath.EvalSymlinks(p)
		if err := copyFile(p, filepath.Join(root, "bin", prog), 0o755); err != nil {
			t.Fatal(err)
		}
		copyLibs(t, p, root)
	}
	if err := copyFile(kubestrapBin(t), filepath.Join(root, "usr/bin/kubestrap"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The AMI has kubeadm; the agent checks kubeadm.path before it starts.
	if err := os.WriteFile(filepath.Join(root, "usr/bin/kubeadm"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "user-data"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}
