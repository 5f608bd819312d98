//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/internal/state"
)

// Scenario 1: fresh bootstrap of 1 + 2 nodes by kubestrap, from user-data.
func TestScenario1FreshBootstrap(t *testing.T) {
	ns := nodes(t)
	for _, name := range []string{"cp", "w1", "w2"} {
		n, ok := ns[name]
		if !ok || !n.ready() {
			t.Fatalf("Node %s: present=%v ready=%v", name, ok, n.ready())
		}
	}
	if _, ok := ns["cp"].Metadata.Labels["node-role.kubernetes.io/control-plane"]; !ok {
		t.Errorf("Node cp lacks the control-plane role label")
	}

	// The control plane: one kubeadm init, join info published, READY.
	cp := agentState(t, "cp")
	if cp.Phase != state.PhasePublished || cp.InitializedAt.IsZero() || cp.TokenID == "" {
		t.Errorf("cp state: phase %s, initializedAt %s, token %q", cp.Phase, cp.InitializedAt, cp.TokenID)
	}
	if n := countCalls(kubeadmCalls(t, "cp"), "init"); n != 1 {
		t.Errorf("cp ran kubeadm init %d times, want 1", n)
	}
	if !readyIn(notifications(t, "cp"), 1) {
		t.Errorf("cp agent sent no READY=1")
	}
	info, raw := joinObject(t)
	if info.Cluster != cluster || info.TokenID() != cp.TokenID || info.Generation != cp.JoinGeneration {
		t.Errorf("join.json (gen %d, token %s) is not what cp published (gen %d, token %s)",
			info.Generation, info.TokenID(), cp.JoinGeneration, cp.TokenID)
	}
	if _, ok := tokens(t)[cp.TokenID]; !ok {
		t.Errorf("published token %s is not in kubeadm token list", cp.TokenID)
	}
	if !strings.Contains(string(raw), `"caCertHashes":["sha256:`) {
		t.Errorf("join.json has no CA hash pin: %s", raw)
	}

	// Workers: one kubeadm join each, READY, ECR credentials for the kubelet.
	for _, w := range []string{"w1", "w2"} {
		st := agentState(t, w)
		if st.Phase != state.PhaseJoined || st.JoinedAt.IsZero() {
			t.Errorf("%s state: phase %s joinedAt %s", w, st.Phase, st.JoinedAt)
		}
		if n := countCalls(kubeadmCalls(t, w), "join"); n != 1 {
			t.Errorf("%s ran kubeadm join %d times, want 1", w, n)
		}
		ns := notifications(t, w)
		if !readyIn(ns, 1) {
			t.Errorf("%s agent sent no READY=1", w)
		}
		if s := statuses(ns); len(s) == 0 || s[len(s)-1] != "joined as "+w {
			t.Errorf("%s: last STATUS %q", w, s)
		}
		if len(st.ECRRegistries) != 1 || st.ECRRegistries[0] != ecrHost {
			t.Errorf("%s: ECR registries %v, want [%s]", w, st.ECRRegistries, ecrHost)
		}
		fi, err := os.Stat(filepath.Join(nodeDir(w), "kubelet", "config.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: /var/lib/kubelet/config.json: %v (mode %v)", w, err, fi)
		}
	}
	// No token secret in any agent log: only token IDs.
	secret := info.Token[strings.Index(info.Token, ".")+1:]
	for _, n := range []string{"cp", "w1", "w2"} {
		if strings.Contains(agentLog(t, n), secret) {
			t.Errorf("%s: the token secret appears in the agent log", n)
		}
	}
}

// The demo app: built locally, pushed to the ECR-style registry, pulled by a
// worker's kubelet with the credentials kubestrap wrote, answering on its NodePort.
func TestDemoApp(t *testing.T) {
	out := mustScript(t, "demo-app.sh")
	t.Log(out)
	if !strings.Contains(out, "hello from kubestrap demo-app") {
		t.Fatalf("demo-app did not answer")
	}
}
