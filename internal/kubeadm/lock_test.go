package kubeadm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// The lock outlives the process that took it: a kubeadm child that inherited
// it keeps it after its parent let go (as if the agent died), and the next
// Acquire waits until that child exits.
func TestLockIsHeldByAnOrphanedChild(t *testing.T) {
	lock := &Lock{Path: filepath.Join(t.TempDir(), LockFile)}
	held, err := lock.Acquire(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command("sleep", "1")
	child.ExtraFiles = []*os.File{held.File()}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	held.RecordPID(child.Process.Pid)
	started := time.Now()
	if err := held.Close(); err != nil { // the agent is gone; its kubeadm is not
		t.Fatal(err)
	}
	waitedFor := -1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, err := lock.Acquire(ctx, func(pid int) { waitedFor = pid })
	if err != nil {
		t.Fatalf("acquire after the orphan exits: %v", err)
	}
	defer next.Close()
	if waited := time.Since(started); waited < 800*time.Millisecond {
		t.Errorf("lock acquired after %s while the orphaned child still ran", waited)
	}
	if waitedFor != child.Process.Pid {
		t.Errorf("onWait told pid %d, want the orphan's %d", waitedFor, child.Process.Pid)
	}
	_ = child.Wait()
}

func TestLockAcquireEndsWithTheContext(t *testing.T) {
	lock := &Lock{Path: filepath.Join(t.TempDir(), LockFile)}
	held, err := lock.Acquire(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := lock.Acquire(ctx, nil); err == nil {
		t.Fatal("acquired a lock another holder has")
	}
}

// Two runners on one lock never run kubeadm at the same time.
func TestRunnersSerializeOnTheLock(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "running")
	bin := script(t, `if [ -e `+marker+` ]; then echo overlap; exit 1; fi
touch `+marker+`; sleep 0.3; rm `+marker+`
`)
	lock := &Lock{Path: filepath.Join(dir, LockFile)}
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		r := &Runner{Path: bin, Log: zap.NewNop(), Lock: lock}
		go func() { _, err := r.Run(context.Background(), "version"); errs <- err }()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Errorf("run %d: %v", i, err)
		}
	}
}

// kubeadm generates the token; the agent reads it from the output, and only
// the redacted form reaches the log.
func TestTokenCreateReadsTheGeneratedTokenAndLogsItRedacted(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := &Runner{Path: script(t, `case "$*" in *"token create --ttl 2h0m0s --description d --kubeconfig /k"*) ;; *) echo "bad args: $*" >&2; exit 1;; esac
echo "I1129 10:00:00.000000    1 token.go:1] a klog line on stderr" >&2
echo "q3x9zz.0123456789abcdef"
`), Log: zap.New(core)}
	token, err := r.TokenCreate(context.Background(), "/k", 2*time.Hour, "d")
	if err != nil {
		t.Fatal(err)
	}
	if token != "q3x9zz.0123456789abcdef" {
		t.Errorf("token = %q", token)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "0123456789abcdef") {
			t.Errorf("token secret in the log: %q", e.Message)
		}
	}
}

func TestTokenListParsesKubeadmJSONAndSkipsKlogLines(t *testing.T) {
	r := &Runner{Path: script(t, `echo "W1129 10:00:00.000000    1 config.go:1] a warning" >&2
cat <<'EOF2'
{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "abcdef.0123456789abcdef",
    "description": "kubestrap join token, generation 3",
    "expires": "2026-11-29T12:00:00Z",
    "usages": ["authentication", "signing"]
}
{
    "kind": "BootstrapToken",
    "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
    "token": "ghijkl.0123456789abcdef",
    "usages": ["authentication"]
}
EOF2
`), Log: zap.NewNop()}
	tokens, err := r.TokenList(context.Background(), "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 2 || tokens[0].ID != "abcdef" || !IsKubestrapToken(tokens[0].Description) ||
		tokens[1].ID != "ghijkl" || IsKubestrapToken(tokens[1].Description) {
		t.Errorf("tokens = %+v", tokens)
	}
}

// helperAgentEnv makes the test binary act as an agent that runs kubeadm
// (the script in the variable) and is then killed by the test.
const helperAgentEnv = "KUBESTRAP_TEST_HELPER_AGENT"

func TestHelperAgentProcess(t *testing.T) {
	bin := os.Getenv(helperAgentEnv)
	if bin == "" {
		t.Skip("runs only as the helper process of TestOrphanedKubeadmSurvivesItsAgent")
	}
	lock := &Lock{Path: os.Getenv(helperAgentEnv + "_LOCK")}
	r := &Runner{Path: bin, Log: zap.NewNop(), Lock: lock}
	_, _ = r.Run(context.Background(), "join")
}

// An agent killed with kill -9 during a kubeadm run does not take kubeadm
// with it: kubeadm's next output line does not kill it with SIGPIPE, it
// finishes its work, and until then it holds the lock.
func TestOrphanedKubeadmSurvivesItsAgent(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	started := filepath.Join(dir, "started")
	bin := script(t, `touch `+started+`
sleep 1
echo "[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap"
echo "This node has joined the cluster" >&2
touch `+done+`
`)
	lockPath := filepath.Join(dir, LockFile)
	agent := exec.Command(os.Args[0], "-test.run=^TestHelperAgentProcess$")
	agent.Env = append(os.Environ(), helperAgentEnv+"="+bin, helperAgentEnv+"_LOCK="+lockPath)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(started); err != nil; _, err = os.Stat(started) {
		if time.Now().After(deadline) {
			_ = agent.Process.Kill()
			t.Fatal("the helper agent never started kubeadm")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = agent.Process.Kill() // kill -9 of the agent alone
	_ = agent.Wait()
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held, err := (&Lock{Path: lockPath}).Acquire(ctx, nil)
	if err != nil {
		t.Fatalf("lock never released: %v", err)
	}
	defer held.Close()
	if time.Since(killed) < 500*time.Millisecond {
		t.Errorf("lock free %s after the agent died, while its kubeadm still ran", time.Since(killed))
	}
	if _, err := os.Stat(done); err != nil {
		t.Errorf("the orphaned kubeadm did not finish (killed by SIGPIPE?): %v", err)
	}
}

func TestEndOrphanStopsKubeadmOnly(t *testing.T) {
	orphan := exec.Command(script(t, "sleep 30\n"))
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	exited := make(chan struct{})
	go func() { _ = orphan.Wait(); close(exited) }()
	ctx := context.Background()
	if err := EndOrphan(ctx, other.Process.Pid, time.Second); err == nil {
		t.Error("EndOrphan ended a process that is not kubeadm")
	}
	if err := EndOrphan(ctx, orphan.Process.Pid, 5*time.Second); err != nil {
		t.Fatalf("EndOrphan: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = orphan.Process.Kill()
		t.Fatal("the orphaned kubeadm still runs")
	}
}
