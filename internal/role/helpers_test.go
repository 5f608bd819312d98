package role

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

// fakeKubeadmPath is the fake kubeadm built once by TestMain.
var fakeKubeadmPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubestrap-role-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeKubeadmPath, err = testutil.BuildFakeKubeadm(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// recordingNotifier remembers every STATUS and READY the agent sent.
type recordingNotifier struct {
	mu       sync.Mutex
	statuses []string
	readies  int
}

func (n *recordingNotifier) Status(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.statuses = append(n.statuses, msg)
}

func (n *recordingNotifier) Ready(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.readies++
	n.statuses = append(n.statuses, msg)
}

func (n *recordingNotifier) snapshot() ([]string, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.statuses...), n.readies
}

// sawStatus reports whether a STATUS containing sub was sent.
func (n *recordingNotifier) sawStatus(sub string) bool {
	st, _ := n.snapshot()
	for _, s := range st {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func testConfig(t *testing.T, role config.Role) *config.AgentConfig {
	t.Helper()
	cfg := config.Defaults()
	cfg.APIVersion, cfg.Kind = config.APIVersion, config.Kind
	cfg.Cluster, cfg.Role, cfg.Bucket = "demo", role, "demo-bootstrap"
	cfg.StateDir = t.TempDir()
	cfg.ECR.Enabled = false
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	return &cfg
}

// testInstanceID is the harness's EC2 instance ID.
const testInstanceID = "i-00000000000000c1"

type harness struct {
	// instanceID is the control plane's EC2 instance ID ("": testInstanceID).
	instanceID string
	cfg        *config.AgentConfig
	s3         *testutil.FakeS3
	store      *join.Store
	kubeadm    *testutil.FakeKubeadm
	clock      clock.Clock
	notifier   *recordingNotifier
	reporter   *Reporter
	logs       *observer.ObservedLogs
	log        *zap.Logger
}

func newHarness(t *testing.T, role config.Role) *harness {
	t.Helper()
	return newHarnessWithClock(t, role, testutil.NewInstantClock(t0))
}

func newHarnessWithClock(t *testing.T, role config.Role, clk clock.Clock) *harness {
	t.Helper()
	h := &harness{cfg: testConfig(t, role), clock: clk, notifier: &recordingNotifier{}}
	h.s3 = testutil.NewFakeS3(t, h.cfg.Bucket)
	h.store = &join.Store{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: join.Key(h.cfg.Cluster)}
	h.kubeadm = testutil.NewFakeKubeadm(t, fakeKubeadmPath)
	core, logs := observer.New(zap.DebugLevel)
	h.log, h.logs = zap.New(core), logs
	r, err := NewReporter(h.cfg.StateDir, h.notifier, h.log, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	h.reporter = r
	return h
}

// restarted is the same node after an agent restart or reboot: same state
// directory, S3 and kubeadm, a new process (notifier and reporter).
func (h *harness) restarted(t *testing.T) *harness {
	t.Helper()
	h2 := *h
	h2.notifier = &recordingNotifier{}
	r, err := NewReporter(h.cfg.StateDir, h2.notifier, h.log, h.clock)
	if err != nil {
		t.Fatal(err)
	}
	h2.reporter = r
	return &h2
}

// start runs fn in the background; the returned stop cancels it and
// returns its error.
func start(t *testing.T, fn func(ctx context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("agent loop did not stop within 30s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually waits (wall clock, bounded) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// allLogText is every log message and string field, for secret checks.
func allLogText(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		b.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			b.WriteString(" " + k + "=")
			b.WriteString(fmt.Sprint(v))
		}
		b.WriteString("\n")
	}
	return b.String()
}
