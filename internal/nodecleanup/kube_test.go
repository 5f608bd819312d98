package nodecleanup

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	clocktesting "k8s.io/utils/clock/testing"
)

// An unusable admin.conf (here: none yet, then an empty file) does not end
// the node cleanup: it waits, and goes on once the file is usable.
func TestWaitForKubeNodesWaitsForAUsableKubeconfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.conf")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(t0)
	type result struct {
		nodes *KubeNodes
		err   error
	}
	done := make(chan result, 1)
	go func() {
		n, err := WaitForKubeNodes(context.Background(), path, clk, 20*time.Second, nil, zap.NewNop())
		done <- result{n, err}
	}()
	for range 3 { // three attempts on the unusable file
		waitForWaiter(t, clk)
		select {
		case r := <-done:
			t.Fatalf("returned on an unusable kubeconfig: %+v", r)
		default:
		}
		clk.Step(20 * time.Second)
	}
	waitForWaiter(t, clk)
	kc := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:6443\", insecure-skip-tls-verify: true}}]\n" +
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Step(20 * time.Second)
	select {
	case r := <-done:
		if r.err != nil || r.nodes == nil {
			t.Fatalf("after the kubeconfig was fixed: %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the kubeconfig was fixed")
	}
	// Only its context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := WaitForKubeNodes(ctx, path, clocktesting.NewFakeClock(t0), time.Second, nil, zap.NewNop()); err == nil {
		t.Error("a cancelled wait returned no error")
	}
}

func waitForWaiter(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("WaitForKubeNodes never waited on its clock")
		}
		time.Sleep(time.Millisecond)
	}
}
