package role

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/state"
)

// controlPlane is the harness's control-plane agent. It takes part in the
// init election, as in production, as instance h.instanceID (default
// testInstanceID) with the lock's own (real) clock and a restarted agent's
// knowledge that no earlier agent process of its node runs (agent.lock).
func (h *harness) controlPlane() *ControlPlane {
	id := h.instanceID
	if id == "" {
		id = testInstanceID
	}
	return &ControlPlane{
		Config: h.cfg, Node: kubeadm.Node{Name: "cp-1", IP: "10.0.1.10"}, Store: h.store,
		Kubeadm: &kubeadm.Runner{Path: h.kubeadm.Path, Env: h.kubeadm.Env(), Log: h.log},
		Clock:   h.clock, Reporter: h.reporter, Log: h.log,
		AdminKubeconfig: h.kubeadm.AdminConf(), CACert: h.kubeadm.CACert(), EtcdDataDir: h.kubeadm.Etcd,
		APIHealth: func(context.Context) error { return nil },
		Election: &InitElection{
			Lock: &lease.Lock{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.LockKey(h.cfg.Cluster, lease.InitLock),
				Holder: id, ReclaimOwn: func() bool { return true }},
			Marker: &lease.Marker{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.MarkerKey(h.cfg.Cluster), Cluster: h.cfg.Cluster},
		},
	}
}

// published reads and validates the join info in S3 as a worker would.
func (h *harness) published(t *testing.T) *join.Info {
	t.Helper()
	f, err := h.store.Fetch(context.Background(), "")
	if err != nil {
		t.Fatalf("fetch join info: %v", err)
	}
	info, err := join.Parse(f.Body, join.Expectations{Cluster: "demo", Now: h.clock.Now(), Margin: time.Minute})
	if err != nil {
		t.Fatalf("published join info is not valid: %v\n%s", err, f.Body)
	}
	return info
}

// newFakeClockHarness gives a control plane a clock that moves only when the
// test steps it, and a helper that waits until the loop sleeps on it.
func newFakeClockHarness(t *testing.T) (*harness, *testingclock.FakeClock, func(string)) {
	clk := testingclock.NewFakeClock(t0)
	h := newHarnessWithClock(t, config.RoleControlPlane, clk)
	return h, clk, func(what string) { eventually(t, what, clk.HasWaiters) }
}

func TestControlPlaneInitsOncePublishesAndBecomesReady(t *testing.T) {
	h, _, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	stop := start(t, cp.Run)
	idle("first publish")
	if _, n := h.notifier.snapshot(); n < 1 {
		t.Fatal("no READY after the first publish")
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
	if got := h.kubeadm.CallsOf("init"); len(got) != 1 || !strings.Contains(got[0], "--config "+cp.InitConfigPath()) {
		t.Fatalf("init calls = %q", got)
	}
	if _, err := os.Stat(cp.InitConfigPath()); !os.IsNotExist(err) {
		t.Errorf("init configuration (holds the first token) left on disk")
	}
	info := h.published(t)
	wantHash, err := kubeadm.CACertHash(h.kubeadm.CACert())
	if err != nil {
		t.Fatal(err)
	}
	if info.Generation != 1 || info.APIServerEndpoint != "10.0.1.10:6443" || info.CACertHashes[0] != wantHash {
		t.Errorf("published %+v, want generation 1 at 10.0.1.10:6443 with hash %s", info, wantHash)
	}
	// The published token is the one init registered with the cluster.
	if tokens := h.kubeadm.Tokens(); len(tokens) != 1 || tokens[0] != info.Token {
		t.Errorf("cluster tokens %d, want exactly the published one", len(tokens))
	}
	if got := info.ExpiresAt.Sub(info.IssuedAt); got != 2*time.Hour {
		t.Errorf("token life %s, want the 2h TTL", got)
	}
	st := h.reporter.State()
	if st.Phase != state.PhasePublished || st.TokenID != info.TokenID() || st.PublishedETag == "" {
		t.Errorf("state = %+v", st)
	}
	if text := allLogText(h.logs); strings.Contains(text, info.Token) {
		t.Errorf("token secret reached the log")
	}
}

func TestControlPlaneReplacesTokenAtHalfLifeAndDeletesTheOldOne(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	h := newHarnessWithClock(t, config.RoleControlPlane, clk)
	stop := start(t, h.controlPlane().Run)
	// idle waits until the loop sleeps on the clock again.
	idle := func(what string) { eventually(t, what, clk.HasWaiters) }
	idle("first publish")
	first := h.published(t)

	// Before half-life nothing changes; the loop only checks S3 each minute.
	for i := 0; i < 59; i++ {
		clk.Step(time.Minute)
		idle("a verify round")
	}
	if got := h.published(t); got.Generation != first.Generation {
		t.Fatalf("token replaced before half-life: generation %d", got.Generation)
	}
	puts := h.s3.Counts.Snapshot().Puts
	clk.Step(time.Minute) // half-life reached
	idle("refresh")
	second := h.published(t)
	if second.Generation != first.Generation+1 || second.Token == first.Token {
		t.Fatalf("after half-life: generation %d (was %d), token changed %v", second.Generation, first.Generation, second.Token != first.Token)
	}
	if d := h.s3.Counts.Snapshot().Puts - puts; d != 1 {
		t.Errorf("refresh wrote %d objects, want 1", d)
	}
	// At the refresh the published info still had half its life left.
	if left := first.ExpiresAt.Sub(clk.Now()); left != time.Hour {
		t.Errorf("refreshed with %s left on the old token, want 1h", left)
	}
	// A worker that read the old info just before the refresh may still be
	// joining with it: the old token stays until one poll interval and one
	// join timeout have passed.
	if tokens := h.kubeadm.Tokens(); len(tokens) != 2 || !slices.Contains(tokens, first.Token) {
		t.Errorf("cluster holds %d tokens right after the refresh, want the old and the new one", len(tokens))
	}
	grace := h.cfg.Worker.PollInterval.Duration + h.cfg.Kubeadm.JoinTimeout.Duration
	clk.Step(grace - time.Second)
	idle("just before the old token's grace ends")
	if del := h.kubeadm.CallsOf("token delete"); len(del) != 0 {
		t.Errorf("old token deleted %s early: %q", time.Second, del)
	}
	clk.Step(time.Second)
	idle("old token deleted")
	// The superseded token is gone from the cluster; only the new one remains.
	if tokens := h.kubeadm.Tokens(); len(tokens) != 1 || tokens[0] != second.Token {
		t.Errorf("cluster holds %d tokens, want only the published one", len(tokens))
	}
	create := h.kubeadm.CallsOf("token create")
	if len(create) != 1 || !strings.Contains(create[0], "--ttl 2h0m0s") ||
		!strings.Contains(create[0], "--description kubestrap join token, generation 2") {
		t.Errorf("token create calls = %q", create)
	}
	// kubeadm generated the token: its secret was never on a command line.
	for _, c := range h.kubeadm.Calls() {
		if strings.Contains(c, second.Token[7:]) || strings.Contains(c, first.Token[7:]) {
			t.Errorf("a token secret was on kubeadm's command line: %q", kubeadm.Redact(c))
		}
	}
	if del := h.kubeadm.CallsOf("token delete"); len(del) != 1 || !strings.HasPrefix(del[0], "token delete "+first.TokenID()) {
		t.Errorf("token delete calls = %q, want one for %s", del, first.TokenID())
	}
	if st := h.reporter.State(); len(st.RetiredTokens) != 0 {
		t.Errorf("retired tokens left in state: %+v", st.RetiredTokens)
	}
	_ = stop()
}

func TestControlPlaneRestartResumesWithoutInit(t *testing.T) {
	h, _, idle := newFakeClockHarness(t)
	stop := start(t, h.controlPlane().Run)
	idle("first publish")
	_ = stop()
	gen := h.reporter.State().JoinGeneration

	h2 := h.restarted(t)
	puts := h.s3.Counts.Snapshot().Puts
	stop = start(t, h2.controlPlane().Run)
	idle("resumed")
	_ = stop()
	if _, n := h2.notifier.snapshot(); n < 1 {
		t.Error("no READY after restart")
	}
	if got := len(h.kubeadm.CallsOf("init")); got != 1 {
		t.Errorf("init calls = %d after restart, want 1", got)
	}
	// The token published before the restart is still fresh: nothing to redo.
	if got := h2.reporter.State().JoinGeneration; got != gen || h.s3.Counts.Snapshot().Puts != puts {
		t.Errorf("restart republished: generation %d (was %d)", got, gen)
	}
}

func TestControlPlaneResetsAndRetriesFailedInit(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.kubeadm.FailNext(t, "init")
	stop := start(t, h.controlPlane().Run)
	idle("backoff after the failed init")
	if got := len(h.kubeadm.CallsOf("init")); got != 1 {
		t.Fatalf("init retried before the backoff: %d calls", got)
	}
	clk.Step(5 * time.Second)
	idle("publish after the second init")
	_ = stop()
	calls := h.kubeadm.Calls()
	if len(calls) < 3 || !strings.HasPrefix(calls[0], "init") || !strings.HasPrefix(calls[1], "reset -f") || !strings.HasPrefix(calls[2], "init") {
		t.Fatalf("calls = %q, want init, reset -f, init", calls)
	}
	if !h.notifier.sawStatus("kubeadm init failed") || !h.notifier.sawStatus("kube-apiserver check failed") {
		t.Errorf("STATUS does not report the failed init with kubeadm's reason")
	}
}

func TestControlPlaneRepublishesOverForeignJoinInfo(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	stop := start(t, cp.Run)
	idle("first publish")
	gen := h.reporter.State().JoinGeneration
	// An attacker with write access replaces join.json.
	hostile := map[string]any{"apiVersion": join.APIVersion, "kind": join.Kind, "cluster": "demo",
		"apiServerEndpoint": "evil.example.com:6443", "token": "zzzzzz.zzzzzzzzzzzzzzzz", "generation": 99}
	b, _ := json.Marshal(hostile)
	h.s3.Put(t, join.Key("demo"), b)
	clk.Step(time.Minute) // the next verify round
	idle("republish")
	_ = stop()
	if h.reporter.State().JoinGeneration <= gen {
		t.Fatal("foreign join info was not replaced")
	}
	info := h.published(t)
	if info.APIServerEndpoint != "10.0.1.10:6443" || info.Generation <= 99 {
		t.Errorf("after republish: endpoint %s generation %d; want ours with generation above 99", info.APIServerEndpoint, info.Generation)
	}
}

func TestControlPlaneWaitsForAPIServerWhenInitialized(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	stop := start(t, cp.Run)
	idle("first publish")
	_ = stop()
	healthy := false
	h2 := h.restarted(t)
	cp2 := h2.controlPlane()
	calls := 0
	cp2.APIHealth = func(context.Context) error {
		calls++
		if calls > 3 {
			healthy = true
			return nil
		}
		return errors.New("connection refused")
	}
	// An initialized node whose API server is still starting after a reboot.
	stop = start(t, cp2.Run)
	for i := 0; i < 3; i++ {
		idle("a wait for the API server")
		if _, n := h2.notifier.snapshot(); n != 0 {
			t.Fatal("READY before the API server was healthy")
		}
		clk.Step(30 * time.Second)
	}
	idle("publishing")
	_ = stop()
	if !healthy || !h2.notifier.sawStatus("waiting for the API server") {
		t.Errorf("did not wait for the API server")
	}
	if got := len(h.kubeadm.CallsOf("init")); got != 1 {
		t.Errorf("init calls = %d, want 1", got)
	}
}

// flakyStore fails the first failures publishes, as S3 does during an outage.
type flakyStore struct {
	JoinStore
	mu       sync.Mutex
	failures int
}

func (f *flakyStore) Publish(ctx context.Context, info *join.Info, prev string) (string, error) {
	f.mu.Lock()
	fail := f.failures > 0
	if fail {
		f.failures--
	}
	f.mu.Unlock()
	if fail {
		return "", errors.New("put s3://demo-bootstrap/demo/join.json: ServiceUnavailable: please reduce your request rate")
	}
	return f.JoinStore.Publish(ctx, info, prev)
}

func TestControlPlaneReportsDegradedAndRetriesPublish(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	cp.Store = &flakyStore{JoinStore: h.store, failures: 2}
	stop := start(t, cp.Run)
	idle("backoff after the first failed publish")
	if _, n := h.notifier.snapshot(); n != 0 {
		t.Fatal("READY before join info was published")
	}
	if !h.notifier.sawStatus("degraded: cannot refresh join info in s3://demo-bootstrap/demo/join.json") ||
		!h.notifier.sawStatus("ServiceUnavailable") {
		t.Errorf("no degraded STATUS with the reason; got %q", first(h.notifier.snapshot()))
	}
	if h.reporter.State().Phase != state.PhaseDegraded {
		t.Errorf("phase %s, want Degraded", h.reporter.State().Phase)
	}
	clk.Step(5 * time.Second)
	idle("second backoff")
	clk.Step(10 * time.Second)
	idle("published")
	_ = stop()
	if _, n := h.notifier.snapshot(); n < 1 {
		t.Fatal("no READY once S3 recovered")
	}
	info := h.published(t)
	// The token created for the first attempt is the one published: no orphan tokens.
	if tokens := h.kubeadm.Tokens(); len(tokens) != 1 || tokens[0] != info.Token {
		t.Errorf("cluster tokens %d, want only the published one", len(tokens))
	}
}

func TestControlPlaneDropsAStaleUnpublishedToken(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	cp.Store = &flakyStore{JoinStore: h.store, failures: 6}
	stop := start(t, cp.Run)
	// Back off through the outage until the token from init is more than a quarter-life old.
	for i := 0; i < 7; i++ {
		idle("a publish attempt")
		clk.Step(10 * time.Minute)
	}
	idle("published")
	_ = stop()
	info := h.published(t)
	if tokens := h.kubeadm.Tokens(); len(tokens) != 1 || tokens[0] != info.Token {
		t.Errorf("cluster holds %d tokens after the outage, want only the published one", len(tokens))
	}
	if len(h.kubeadm.CallsOf("token delete")) == 0 {
		t.Error("the stale unpublished token was not deleted")
	}
}
