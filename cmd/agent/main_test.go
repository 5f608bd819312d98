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

func TestValidateExitCodes(t *testing.T) {
	if code, out, _ := runCLI("validate", "--config", writeConfig(t, validConfig)); code != 0 || !strings.Contains(out, "valid worker config") {
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
