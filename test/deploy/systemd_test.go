//go:build deploy

package deploy

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

func parseUnit(t testing.TB, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the single value of a key, failing when it is missing or repeated.
func (u unitFile) one(t testing.TB, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("[%s] %s: want exactly one value, got %q", section, key, vs)
	}
	return vs[0]
}

// words returns every space-separated word of every value of a key.
func (u unitFile) words(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// TestUnitContract checks the settings other parts of kubestrap rely on
// (docs/design.md: systemd), and that the hardening leaves kubeadm alone.
func TestUnitContract(t *testing.T) {
	u := parseUnit(t, repoPath(t, "systemd", "kubestrap.service"))

	want := map[string]string{
		"Type":            "notify",
		"NotifyAccess":    "main",
		"TimeoutStartSec": "infinity",
		"Restart":         "always",
		"WatchdogSec":     "60s",
		"EnvironmentFile": "-/etc/default/kubestrap",
		"ExecStart":       "/usr/bin/kubestrap run --config /etc/kubestrap/config.yaml",
	}
	for k, v := range want {
		if got := u.one(t, "Service", k); got != v {
			t.Errorf("[Service] %s=%s, want %s", k, got, v)
		}
	}
	restartDelay, err := time.ParseDuration(u.one(t, "Service", "RestartSec"))
	if err != nil || restartDelay < time.Second || restartDelay > 30*time.Second {
		t.Errorf("RestartSec=%s: want a duration between 1s and 30s (%v)", u.one(t, "Service", "RestartSec"), err)
	}
	for _, dep := range []string{"network-online.target", "containerd.service"} {
		if !slices.Contains(u.words("Unit", "After"), dep) {
			t.Errorf("[Unit] After= lacks %s: %q", dep, u["Unit"]["After"])
		}
	}
	if !slices.Contains(u.words("Unit", "Wants"), "network-online.target") {
		t.Errorf("[Unit] Wants= lacks network-online.target: %q", u["Unit"]["Wants"])
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("[Install] WantedBy=%s, want multi-user.target", got)
	}

	// kubeadm runs as root from this unit, writes /etc/kubernetes, /var/lib/kubelet
	// and /var/lib/etcd, unmounts kubelet volumes on reset and starts the kubelet
	// over D-Bus: nothing may give the service its own file system view or take
	// capabilities away.
	for _, k := range []string{
		"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
		"ReadOnlyPaths", "InaccessiblePaths", "ProtectKernelModules", "ProtectKernelTunables",
		"ProtectControlGroups", "ProtectProc", "CapabilityBoundingSet", "DynamicUser", "User",
		"PrivateNetwork", "IPAddressDeny", "DevicePolicy", "DeviceAllow", "RootDirectory",
	} {
		if vs, ok := u["Service"][k]; ok {
			t.Errorf("[Service] %s=%q would break kubeadm (see the comment in the unit)", k, vs)
		}
	}
	for _, k := range []string{"NoNewPrivileges", "RestrictSUIDSGID", "LockPersonality", "RestrictRealtime"} {
		if got := u.one(t, "Service", k); got != "yes" {
			t.Errorf("[Service] %s=%s, want yes", k, got)
		}
	}
}

// TestUnitDoesNotRestartBadConfiguration: a configuration that a restart
// cannot fix makes the agent exit 2, and the unit then stays failed instead of
// starting it again every RestartSec (Restart=always alone would, forever).
// Both halves are checked: the unit's settings, and the exit code of the
// unit's own ExecStart command line run on bad configurations.
func TestUnitDoesNotRestartBadConfiguration(t *testing.T) {
	u := parseUnit(t, repoPath(t, "systemd", "kubestrap.service"))
	if got := u.words("Service", "RestartPreventExitStatus"); !slices.Contains(got, "2") {
		t.Errorf("[Service] RestartPreventExitStatus=%q: want 2 (invalid configuration) in it", got)
	}
	if got := u.words("Service", "RestartForceExitStatus"); slices.Contains(got, "2") {
		t.Errorf("[Service] RestartForceExitStatus=%q would restart exit 2 after all", got)
	}
	dropIn := parseUnit(t, repoPath(t, "systemd", "kubestrap.service.d", "10-endpoints.conf.example"))
	for _, k := range []string{"RestartPreventExitStatus", "RestartForceExitStatus", "Restart"} {
		if vs, ok := dropIn["Service"][k]; ok {
			t.Errorf("the example drop-in sets %s=%q: it must leave the restart policy alone", k, vs)
		}
	}

	execStart := strings.Fields(u.one(t, "Service", "ExecStart"))
	i := slices.Index(execStart, "--config")
	if len(execStart) < 2 || i < 0 || i+1 >= len(execStart) {
		t.Fatalf("ExecStart=%q: want /usr/bin/kubestrap run --config FILE", execStart)
	}
	base := "apiVersion: kubestrap.dev/v1alpha1\nkind: AgentConfig\ncluster: demo\nrole: worker\nbucket: demo-bootstrap\n" +
		"aws: {region: eu-west-1, imdsTimeout: 1s}\necr: {enabled: false}\n"
	kubeadm := filepath.Join(t.TempDir(), "kubeadm")
	if err := os.WriteFile(kubeadm, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, doc, field string }{
		{"bad field", strings.Replace(base, "role: worker", "role: wroker", 1) + "kubeadm: {path: " + kubeadm + "}\n", "role"},
		{"kubeadm missing", base + "kubeadm: {path: /nonexistent/kubeadm}\n", "kubeadm.path"},
		{"token half-life within the workers' margin", base + "kubeadm: {path: " + kubeadm + "}\ncontrolPlane: {tokenTTL: 3m}\n",
			"controlPlane.tokenTTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.yaml")
			doc := tc.doc + "stateDir: " + filepath.Join(dir, "state") + "\n"
			if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			args := slices.Clone(execStart[1:]) // the unit's arguments, with --config's value replaced
			args[i] = cfg
			res := runCmd(t, cmdSpec{timeout: 30 * time.Second}, kubestrapBin(t), args...)
			if res.code != 2 || !strings.Contains(res.stderr, tc.field+": ") {
				t.Errorf("ExecStart with a bad configuration: want exit 2 (not restarted) naming %s, got %s", tc.field, res)
			}
		})
	}
}

// systemd's watchdog ends a stuck agent with WatchdogSignal (SIGABRT by
// default). The agent must die by that signal, not exit 2 as Go does by
// default: exit 2 means invalid configuration and RestartPreventExitStatus=2
// would leave a stuck agent dead instead of restarting it.
func TestWatchdogAbortIsRestartedNotTakenForBadConfiguration(t *testing.T) {
	u := parseUnit(t, repoPath(t, "systemd", "kubestrap.service"))
	if sig := u.words("Service", "WatchdogSignal"); len(sig) > 0 && sig[0] != "SIGABRT" {
		t.Fatalf("WatchdogSignal=%q: this test sends SIGABRT", sig)
	}
	dir := t.TempDir()
	kubeadm := filepath.Join(dir, "kubeadm")
	if err := os.WriteFile(kubeadm, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	// IMDS on a closed loopback port: the agent waits for its identity.
	doc := "apiVersion: kubestrap.dev/v1alpha1\nkind: AgentConfig\ncluster: demo\nrole: worker\nbucket: demo-bootstrap\n" +
		"aws: {imdsTimeout: 60s}\necr: {enabled: false}\nkubeadm: {path: " + kubeadm + "}\nstateDir: " + filepath.Join(dir, "state") + "\n"
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubestrapBin(t), "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:9", "AWS_REGION=eu-west-1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "reading instance identity") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGABRT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("agent ended with %v after SIGABRT", err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("after SIGABRT the agent %s; want it killed by SIGABRT (systemd restarts that), not exit 2\n%s", ee, stderr.String())
	}
	if !strings.Contains(stderr.String(), "goroutine ") {
		t.Error("no goroutine dump in the agent's output: the journal would not say where it was stuck")
	}
}

// verifyRoot builds a scratch root for `systemd-analyze verify --root`: the
// host's own units (for sysinit.target and friends), the agent binary at
// /usr/bin/kubestrap and the unit where the package installs it.
func verifyRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			copyTree(t, dir, filepath.Join(root, "usr/lib/systemd/system"))
			break
		}
	}
	if err := copyFile(kubestrapBin(t), filepath.Join(root, "usr/bin/kubestrap"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(repoPath(t, "systemd", "kubestrap.service"), filepath.Join(root, "usr/lib/systemd/system/kubestrap.service"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// systemdVerify runs systemd-analyze verify on kubestrap.service in root. It
// exits 0 even for unknown keys and unparsable values, so any output counts as
// a failure too.
func systemdVerify(t *testing.T, root string) result {
	t.Helper()
	sa := needTool(t, "systemd-analyze")
	return runCmd(t, cmdSpec{timeout: time.Minute}, sa, "verify", "--root="+root, "kubestrap.service")
}

func TestUnitVerifies(t *testing.T) {
	needTool(t, "systemd-analyze")
	root := verifyRoot(t)

	if res := systemdVerify(t, root); res.code != 0 || res.stdout+res.stderr != "" {
		t.Fatalf("systemd-analyze verify kubestrap.service: %s", res)
	}

	t.Run("with the example drop-in", func(t *testing.T) {
		dropIn := filepath.Join(root, "etc/systemd/system/kubestrap.service.d/10-endpoints.conf")
		if err := copyFile(repoPath(t, "systemd", "kubestrap.service.d", "10-endpoints.conf.example"), dropIn, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(filepath.Dir(dropIn))
		if res := systemdVerify(t, root); res.code != 0 || res.stdout+res.stderr != "" {
			t.Fatalf("systemd-analyze verify with 10-endpoints.conf: %s", res)
		}
	})

	// The check must be able to fail: a broken drop-in is reported.
	t.Run("a broken drop-in is caught", func(t *testing.T) {
		dropIn := filepath.Join(root, "etc/systemd/system/kubestrap.service.d/99-broken.conf")
		if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(filepath.Dir(dropIn))
		if err := os.WriteFile(dropIn, []byte("[Service]\nRestart=sometimes\nWatchdogSecs=10\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		res := systemdVerify(t, root)
		if res.code == 0 && res.stdout+res.stderr == "" {
			t.Fatal("systemd-analyze verify accepted a drop-in with a bad value and an unknown key")
		}
		t.Logf("as expected: %s", strings.TrimSpace(res.stderr))
	})

	t.Run("without the binary", func(t *testing.T) {
		if err := os.Remove(filepath.Join(root, "usr/bin/kubestrap")); err != nil {
			t.Fatal(err)
		}
		if res := systemdVerify(t, root); res.code == 0 {
			t.Fatalf("systemd-analyze verify passed although ExecStart does not exist: %s", res)
		}
	})
}

// TestUnitExposure keeps the hardening from regressing: systemd's own score of
// the unit (0 safest, 10 unsafe; a plain root service scores about 9.6).
func TestUnitExposure(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	root := verifyRoot(t)
	res := runCmd(t, cmdSpec{timeout: time.Minute}, sa, "security", "--no-pager", "--offline=true", "--root="+root, "--threshold=70", "kubestrap.service")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	t.Log(lines[len(lines)-1])
	if res.code != 0 {
		t.Fatalf("exposure above 7.0 or analysis failed: %s", res)
	}
}
