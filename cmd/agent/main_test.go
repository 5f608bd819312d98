package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const validConfig = "apiVersion: kubestrap.dev/v1alpha1\nkind: AgentConfig\ncluster: demo\nrole: worker\nbucket: demo-bootstrap\n"

// fakeKubeadm is an executable file standing in for kubeadm.
func fakeKubeadm(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeadm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// withKubeadm is validConfig (or an edit of it) with kubeadm.path set.
func withKubeadm(doc, path string) string { return doc + "kubeadm: {path: " + path + "}\n" }

func TestValidateExitCodes(t *testing.T) {
	good := withKubeadm(validConfig, fakeKubeadm(t))
	if code, out, _ := runCLI("validate", "--config", writeConfig(t, good)); code != 0 || !strings.Contains(out, "valid worker config") {
		t.Errorf("good config: exit %d, %q", code, out)
	}
	code, _, errOut := runCLI("validate", "--config", writeConfig(t, strings.Replace(validConfig, "role: worker", "role: boss", 1)))
	if code != 2 || !strings.Contains(errOut, "role:") {
		t.Errorf("bad role: exit %d, %q", code, errOut)
	}
	if code, _, _ := runCLI("validate", "--config", "/nonexistent/config.yaml"); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("validate"); code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("run", "--config", writeConfig(t, "cluster: [")); code != 2 {
		t.Errorf("run with broken config: exit %d, want 2", code)
	}
}

// TestBadConfigurationExitsTwo: what a restart cannot fix makes both
// `validate` and `run` exit 2 (which the unit does not restart), naming the
// field, and `run` stops before it does anything.
func TestBadConfigurationExitsTwo(t *testing.T) {
	notExecutable := filepath.Join(t.TempDir(), "kubeadm")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // no kubeadm on PATH
	cases := []struct{ name, doc, field, says string }{
		{"kubeadm missing", withKubeadm(validConfig, "/nonexistent/kubeadm"), "kubeadm.path", "not an executable file"},
		{"kubeadm not executable", withKubeadm(validConfig, notExecutable), "kubeadm.path", "not an executable file"},
		{"kubeadm not on PATH", validConfig, "kubeadm.path", `"kubeadm" is not found on PATH`},
		{"token half-life within the workers' margin", withKubeadm(validConfig, fakeKubeadm(t)) + "controlPlane: {tokenTTL: 3m}\n",
			"controlPlane.tokenTTL", "too short for worker.expiryMargin 2m0s"},
		{"margin longer than the token's half-life", withKubeadm(validConfig, fakeKubeadm(t)) + "worker: {expiryMargin: 1h}\n",
			"controlPlane.tokenTTL", "or worker.expiryMargin below 1h0m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := filepath.Join(t.TempDir(), "state")
			path := writeConfig(t, tc.doc+"stateDir: "+stateDir+"\n")
			for _, cmd := range []string{"validate", "run"} {
				code, _, errOut := runCLI(cmd, "--config", path)
				if code != 2 || !strings.Contains(errOut, tc.field+": ") || !strings.Contains(errOut, tc.says) {
					t.Errorf("%s: exit %d, %q; want exit 2 naming %s with %q", cmd, code, errOut, tc.field, tc.says)
				}
			}
			if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
				t.Errorf("run did something before refusing its configuration: %s exists (%v)", stateDir, err)
			}
			// status needs stateDir only: a missing kubeadm does not stop it.
			if tc.field == "kubeadm.path" {
				if code, _, errOut := runCLI("status", "--config", path); code != 1 || !strings.Contains(errOut, "has not run") {
					t.Errorf("status: exit %d, %q; want 1, has not run", code, errOut)
				}
			}
		})
	}
}

// TestValidateSkipHostChecks: away from the node (CI, a laptop) the file
// alone can be checked; the file's own rules still hold.
func TestValidateSkipHostChecks(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	missing := writeConfig(t, withKubeadm(validConfig, "/nonexistent/kubeadm"))
	if code, out, errOut := runCLI("validate", "--skip-host-checks", "--config", missing); code != 0 {
		t.Errorf("--skip-host-checks with kubeadm missing: exit %d, %q %q", code, out, errOut)
	}
	if code, _, _ := runCLI("validate", "--config", missing); code != 2 {
		t.Errorf("without --skip-host-checks: exit %d, want 2", code)
	}
	bad := writeConfig(t, withKubeadm(validConfig, "/nonexistent/kubeadm")+"controlPlane: {tokenTTL: 3m}\n")
	if code, _, errOut := runCLI("validate", "--skip-host-checks", "--config", bad); code != 2 || !strings.Contains(errOut, "controlPlane.tokenTTL: ") {
		t.Errorf("--skip-host-checks with a bad tokenTTL: exit %d, %q", code, errOut)
	}
}

// TestValidateRefusesAnAddonManifestThatDoesNotParse: a control plane's
// add-on manifest is read by validate; one that does not parse is a bad
// configuration (exit 2) naming controlPlane.addons and the document.
func TestValidateRefusesAnAddonManifestThatDoesNotParse(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	const ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n---\n"
	if err := os.WriteFile(good, []byte(ns+"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: kube-flannel}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte(ns+"apiVersion: v1\nmetadata: {name: cfg, namespace: kube-flannel}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	controlPlane := func(manifest string) string {
		doc := withKubeadm(strings.Replace(validConfig, "role: worker", "role: control-plane", 1), fakeKubeadm(t))
		return writeConfig(t, doc+"controlPlane: {addons: ["+manifest+"]}\n")
	}
	if code, out, errOut := runCLI("validate", "--config", controlPlane(good)); code != 0 || !strings.Contains(out, "valid control-plane config") {
		t.Fatalf("control plane with a good manifest: exit %d, %q %q", code, out, errOut)
	}
	code, _, errOut := runCLI("validate", "--config", controlPlane(bad))
	if code != 2 || !strings.Contains(errOut, "controlPlane.addons: ") || !strings.Contains(errOut, bad+"#2") ||
		!strings.Contains(errOut, "without apiVersion or kind") {
		t.Errorf("manifest without kind: exit %d, %q; want exit 2 naming controlPlane.addons and %s#2", code, errOut, bad)
	}
}

// TestValidateControlPlaneWithNoAddons: an empty controlPlane.addons means
// none, so the packaged manifests need not be on the machine.
func TestValidateControlPlaneWithNoAddons(t *testing.T) {
	doc := withKubeadm(strings.Replace(validConfig, "role: worker", "role: control-plane", 1), fakeKubeadm(t))
	if code, out, errOut := runCLI("validate", "--config", writeConfig(t, doc+"controlPlane: {addons: []}\n")); code != 0 ||
		!strings.Contains(out, "valid control-plane config") {
		t.Errorf("control plane with addons []: exit %d, %q %q", code, out, errOut)
	}
}

func TestVersionNamesKubernetesTarget(t *testing.T) {
	code, out, _ := runCLI("version")
	if code != 0 || !strings.Contains(out, "Kubernetes v1.37.2") || !strings.Contains(out, "commit") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func TestStatusPrintsStateWithoutSecrets(t *testing.T) {
	dir := t.TempDir()
	exp := time.Now().Add(90 * time.Minute).UTC()
	st := &state.State{Role: "worker", Cluster: "demo", NodeName: "ip-10-0-2-7", Phase: state.PhaseJoined,
		Message: "joined as ip-10-0-2-7", JoinGeneration: 7, TokenID: "abcdef", TokenExpiresAt: exp,
		ECRExpiresAt: exp, ECRRegistries: []string{"1.dkr.ecr.eu-west-1.amazonaws.com"}, UpdatedAt: time.Now()}
	if err := state.Save(dir, st); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCLI("status", "--state-dir", dir)
	for _, want := range []string{"Joined", "generation 7, token abcdef", "Token expires:", "ECR creds expire:", "ip-10-0-2-7"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	if code, _, errOut := runCLI("status", "--state-dir", t.TempDir()); code != 1 || !strings.Contains(errOut, "has not run") {
		t.Errorf("status without state: exit %d %q", code, errOut)
	}
}
