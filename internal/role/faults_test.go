package role

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/state"
)

// initializedHarness runs a control plane to its first publication and stops it.
func initializedHarness(t *testing.T) (*harness, *testingclock.FakeClock, func(string)) {
	t.Helper()
	h, clk, idle := newFakeClockHarness(t)
	stop := start(t, h.controlPlane().Run)
	idle("first publish")
	_ = stop()
	return h, clk, idle
}

// Item 1: a node whose state says it was initialized is never reset or
// re-initialized when admin.conf goes missing; it says why and waits.
func TestControlPlaneBlocksInsteadOfResettingWhenAdminConfIsGone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, h *harness)
	}{
		{"admin.conf removed", func(t *testing.T, h *harness) { mustRemove(t, h.kubeadm.AdminConf()) }},
		{"admin.conf truncated", func(t *testing.T, h *harness) {
			if err := os.WriteFile(h.kubeadm.AdminConf(), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"admin.conf and state.json removed", func(t *testing.T, h *harness) {
			mustRemove(t, h.kubeadm.AdminConf())
			mustRemove(t, state.Path(h.cfg.StateDir))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, clk, idle := initializedHarness(t)
			saved, err := os.ReadFile(h.kubeadm.AdminConf())
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, h)
			h2 := h.restarted(t)
			stop := start(t, h2.controlPlane().Run)
			idle("blocked")
			for i := 0; i < 3; i++ {
				clk.Step(BlockedRecheck)
				idle("still blocked")
			}
			if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
				t.Fatalf("kubeadm reset ran on an initialized control plane: %q", got)
			}
			if got := h.kubeadm.CallsOf("init"); len(got) != 1 {
				t.Fatalf("kubeadm init ran again: %d calls", len(got))
			}
			if h2.reporter.State().Phase != state.PhaseBlocked {
				t.Errorf("phase %s, want Blocked", h2.reporter.State().Phase)
			}
			if !h2.notifier.sawStatus("will not run kubeadm init or reset") || !h2.notifier.sawStatus(h.kubeadm.AdminConf()) {
				t.Errorf("STATUS does not say what is wrong: %q", first(h2.notifier.snapshot()))
			}
			if _, n := h2.notifier.snapshot(); n != 0 {
				t.Error("READY while blocked")
			}
			// The operator restores admin.conf: the agent carries on by itself.
			if err := os.WriteFile(h.kubeadm.AdminConf(), saved, 0o600); err != nil {
				t.Fatal(err)
			}
			clk.Step(BlockedRecheck)
			eventually(t, "READY after admin.conf came back", func() bool { _, n := h2.notifier.snapshot(); return n > 0 })
			_ = stop()
		})
	}
}

// Item 2: an init interrupted after kubeadm wrote admin.conf is finished on
// restart (reset, init again), not taken for a cluster.
func TestControlPlaneRedoesAnInitInterruptedAfterTheKubeconfigPhase(t *testing.T) {
	h, _, idle := newFakeClockHarness(t)
	h.kubeadm.CrashNextInit(t)
	cp := h.controlPlane()
	crashed := crashAt(t, cp, stepInsideInit)
	<-crashed
	if err := kubeadm.CheckKubeconfig(h.kubeadm.AdminConf()); err != nil {
		t.Fatalf("the crashed init did not leave admin.conf behind (test setup): %v", err)
	}
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("published after finishing the init")
	_ = stop()
	calls := h.kubeadm.Calls()
	if len(calls) < 3 || !strings.HasPrefix(calls[0], "init") || !strings.HasPrefix(calls[1], "reset -f") || !strings.HasPrefix(calls[2], "init") {
		t.Fatalf("calls = %q, want init (crashed), reset -f, init", calls)
	}
	if n := h.kubeadm.InitsCompleted(); n != 1 {
		t.Errorf("%d inits completed, want 1", n)
	}
	h.published(t)
	if _, n := h2.notifier.snapshot(); n != 1 {
		t.Error("no READY after the finished init")
	}
}

// Item 3: join.json removed by an operator (README's "rotate now") or hidden
// by a delete marker is published again, not reported Degraded forever.
func TestControlPlaneRepublishesRemovedJoinInfo(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	stop := start(t, h.controlPlane().Run)
	idle("first publish")
	before := h.published(t)
	h.s3.Delete(t, join.Key("demo"))
	clk.Step(time.Minute) // the next verify round
	idle("republished")
	_ = stop()
	after := h.published(t)
	if after.Generation <= before.Generation || after.Token == before.Token {
		t.Errorf("after removal: generation %d (was %d), new token %v", after.Generation, before.Generation, after.Token != before.Token)
	}
	if h.reporter.State().Phase != state.PhasePublished {
		t.Errorf("phase %s, want Published", h.reporter.State().Phase)
	}
	if h.notifier.sawStatus("degraded") {
		t.Error("reported Degraded for a removed object")
	}
}

// Item 4: a foreign join.json with a generation at the top of the range does
// not make the agent's generation wrap.
func TestControlPlaneIgnoresAnImplausibleForeignGeneration(t *testing.T) {
	for _, foreign := range []int64{math.MaxInt64, join.MaxGeneration, join.MaxGeneration - 1} {
		h, clk, idle := newFakeClockHarness(t)
		stop := start(t, h.controlPlane().Run)
		idle("first publish")
		gen := h.reporter.State().JoinGeneration
		doc := joinInfo(otherToken, 1, clk.Now())
		doc.Generation = foreign
		h.publish(t, doc)
		clk.Step(time.Minute)
		idle("replaced")
		// And the next refresh after that still counts up.
		clk.Step(time.Hour)
		idle("refreshed")
		_ = stop()
		info := h.published(t) // parses as a worker would: a positive generation within range
		if got := h.reporter.State().JoinGeneration; got != info.Generation || got <= gen || got > join.MaxGeneration {
			t.Errorf("foreign generation %d: state generation %d, published %d (was %d)", foreign, got, info.Generation, gen)
		}
	}
}

// Item 14: an S3 outage writes state.json and logs a warning once, not at
// every retry (STATUS texts differ by request ID and delay).
func TestControlPlaneOutageIsReportedOnce(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	store := &flakyStore{JoinStore: h.store, failures: 4}
	cp.Store = store
	stop := start(t, cp.Run)
	idle("first failure")
	st := h.reporter.State()
	for i := 0; i < 3; i++ {
		clk.Step(2 * time.Minute)
		idle("another failed retry")
	}
	if got := h.reporter.State(); !got.UpdatedAt.Equal(st.UpdatedAt) || got.Phase != state.PhaseDegraded {
		t.Errorf("state.json rewritten during the outage: updatedAt %s -> %s", st.UpdatedAt, got.UpdatedAt)
	}
	warnings := 0
	for _, e := range h.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if strings.Contains(e.Message, "cannot refresh join info") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("%d warnings for one outage, want 1", warnings)
	}
	clk.Step(2 * time.Minute)
	idle("recovered")
	_ = stop()
	if _, n := h.notifier.snapshot(); n != 1 {
		t.Error("no READY after the outage")
	}
}

// Item 18: files a killed agent left in the state directory (the
// configuration holding a token secret, temporary files of atomic writes)
// are removed at start.
func TestLeftoversOfAKilledAgentAreRemovedAtStart(t *testing.T) {
	for _, role := range []config.Role{config.RoleWorker, config.RoleControlPlane} {
		h, _, idle := newFakeClockHarness(t)
		h.cfg.Role = role
		left := []string{"kubeadm-join.yaml", "kubeadm-init.yaml", ".state.json.tmp-123", ".kubeadm-join.yaml.tmp-9"}
		for _, name := range left {
			if err := os.WriteFile(filepath.Join(h.cfg.StateDir, name), []byte("token: abcdef.0123456789abcdef\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		run := h.controlPlane().Run
		want := []string{"kubeadm-init.yaml", ".state.json.tmp-123", ".kubeadm-join.yaml.tmp-9"}
		if role == config.RoleWorker {
			run = h.worker().Run
			want = []string{"kubeadm-join.yaml", ".state.json.tmp-123", ".kubeadm-join.yaml.tmp-9"}
		}
		stop := start(t, run)
		idle("running")
		_ = stop()
		for _, name := range want {
			if _, err := os.Stat(filepath.Join(h.cfg.StateDir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s left in the state directory", role, name)
			}
		}
	}
}

// Item 19: a truncated state.json is moved aside and rebuilt from the node,
// instead of failing every start.
func TestCorruptStateFileIsSetAsideAndRebuilt(t *testing.T) {
	h, _, idle := initializedHarness(t)
	if err := os.WriteFile(state.Path(h.cfg.StateDir), []byte(`{"role":"control-pl`), 0o644); err != nil {
		t.Fatal(err)
	}
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("running again")
	_ = stop()
	if _, n := h2.notifier.snapshot(); n != 1 {
		t.Error("no READY after rebuilding the state")
	}
	if got := len(h.kubeadm.CallsOf("init")) + len(h.kubeadm.CallsOf("reset")); got != 1 {
		t.Errorf("init+reset calls = %d, want the first init only", got)
	}
	aside, _ := filepath.Glob(state.Path(h.cfg.StateDir) + ".corrupt-*")
	if len(aside) != 1 {
		t.Errorf("corrupt state file not moved aside: %q", aside)
	}
	if h2.reporter.State().InitializedAt.IsZero() {
		t.Error("initializedAt not rebuilt from the node")
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// crashAt runs cp until it reaches step, and freezes it there as kill -9
// would: nothing after that step happens. The returned channel closes when
// the step is reached.
func crashAt(t *testing.T, cp *ControlPlane, step string) <-chan struct{} {
	t.Helper()
	crashed := make(chan struct{})
	cp.crashPoint = freezeAt(t, step, crashed)
	go func() { _ = cp.Run(context.Background()) }()
	return crashed
}

// freezeAt is a crash point that blocks forever (until the test ends, then
// the goroutine exits without running anything further) at step.
func freezeAt(t *testing.T, step string, crashed chan struct{}) func(string) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(s string) {
		if s != step {
			return
		}
		close(crashed)
		<-release
		runtime.Goexit()
	}
}

// Item 5: a join that succeeded while the kubeconfig is not where the
// configuration says is reported, never followed by kubeadm reset.
func TestWorkerNeverResetsANodeThatJoined(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.cfg.Role = config.RoleWorker
	h.kubeadm.AcceptToken(t, goodToken)
	h.publish(t, joinInfo(goodToken, 1, clk.Now()))
	w := h.worker()
	w.KubeletKubeconfig = filepath.Join(t.TempDir(), "kubelet.conf") // not where kubeadm writes it
	stop := start(t, w.Run)
	idle("blocked after the join")
	for i := 0; i < 4; i++ {
		clk.Step(5 * time.Minute)
		idle("still blocked")
	}
	_ = stop()
	if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
		t.Fatalf("kubeadm reset ran on a node that joined: %q", got)
	}
	// Reported once, though every retry fails the same way.
	blocked := 0
	for _, e := range h.logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if strings.Contains(e.Message, "will not reset a node that joined") {
			blocked++
		}
	}
	if blocked != 1 {
		t.Errorf("%d Blocked warnings over %d retries, want 1", blocked, len(h.kubeadm.CallsOf("join")))
	}
	if h.phase() != state.PhaseBlocked || !h.notifier.sawStatus("will not reset a node that joined") ||
		!h.notifier.sawStatus(w.KubeletKubeconfig) {
		t.Errorf("phase %s; STATUS does not name the problem: %q", h.phase(), first(h.notifier.snapshot()))
	}
	// And after a restart, still no reset.
	h2 := h.restarted(t)
	w2 := h2.worker()
	w2.KubeletKubeconfig = w.KubeletKubeconfig
	stop = start(t, w2.Run)
	idle("restarted")
	clk.Step(5 * time.Minute)
	idle("restarted, blocked")
	_ = stop()
	if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
		t.Fatalf("kubeadm reset ran after a restart on a node that joined: %q", got)
	}
}

// Item 11: join info refused because issuedAt is ahead of this node's clock
// (behind at boot) is accepted once the clock catches up, though the object
// never changed.
func TestWorkerRevaluesATimeDependentRefusalAtEveryPoll(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.cfg.Role = config.RoleWorker
	h.kubeadm.AcceptToken(t, goodToken)
	h.publish(t, joinInfo(goodToken, 1, clk.Now().Add(join.MaxClockSkew+time.Minute)))
	stop := start(t, h.worker().Run)
	idle("refused")
	if !h.notifier.sawStatus("in the future") {
		t.Fatalf("not refused for issuedAt in the future: %q", first(h.notifier.snapshot()))
	}
	puts := h.s3.Counts.Snapshot().Puts
	for i := 0; i < 12 && len(h.kubeadm.CallsOf("join")) == 0; i++ {
		clk.Step(h.cfg.Worker.PollInterval.Duration)
		idle("a poll")
	}
	_ = stop()
	if h.s3.Counts.Snapshot().Puts != puts {
		t.Fatal("the object changed (test setup)")
	}
	if got := h.kubeadm.CallsOf("join"); len(got) != 1 {
		t.Errorf("join calls = %d once the clock caught up, want 1", len(got))
	}
}

// Item 16: a refused token at the top of the generation range does not wrap
// the worker's wait into a tight loop of joins with the same document.
func TestWorkerWaitsPastARefusedTopGeneration(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.cfg.Role = config.RoleWorker
	info := joinInfo(goodToken, join.MaxGeneration, clk.Now()) // token unknown to the cluster
	h.publish(t, info)
	stop := start(t, h.worker().Run)
	idle("refused by the API server")
	for i := 0; i < 5; i++ {
		clk.Step(h.cfg.Worker.PollInterval.Duration)
		idle("a poll")
	}
	_ = stop()
	if got := h.kubeadm.CallsOf("join"); len(got) != 1 {
		t.Errorf("join calls = %d with one refused document, want 1", len(got))
	}
	if !h.notifier.sawStatus("already refused") {
		t.Errorf("STATUS does not say the generation was refused: %q", first(h.notifier.snapshot()))
	}
}

// Item 17: an agent that starts while a kubeadm join of a dead predecessor
// still runs waits for it, and finds the node joined: one join, no reset.
func TestWorkerWaitsForAnOrphanedJoin(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.cfg.Role = config.RoleWorker
	h.kubeadm.AcceptToken(t, goodToken)
	h.publish(t, joinInfo(goodToken, 1, clk.Now()))
	lock := &kubeadm.Lock{Path: filepath.Join(h.cfg.StateDir, kubeadm.LockFile)}
	// The dead agent's kubeadm join, still running and holding the lock.
	w0 := h.worker()
	doc, err := kubeadm.JoinConfig(h.cfg, w0.Node, kubeadm.JoinOptions{APIServerEndpoint: "10.0.1.10:6443", Token: goodToken,
		CACertHashes: []string{"sha256:" + strings.Repeat("0f", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	orphanConfig := filepath.Join(t.TempDir(), "join.yaml")
	if err := os.WriteFile(orphanConfig, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	h.kubeadm.DelayNextJoin(t, 2*time.Second)
	orphan := &kubeadm.Runner{Path: h.kubeadm.Path, Env: h.kubeadm.Env(), Log: h.log, Lock: lock}
	orphanDone := make(chan error, 1)
	go func() { orphanDone <- orphan.Join(context.Background(), orphanConfig) }()
	eventually(t, "the orphaned join to start", func() bool { return len(h.kubeadm.CallsOf("join")) == 1 })

	w := h.worker()
	w.Lock = lock
	w.Kubeadm = &kubeadm.Runner{Path: h.kubeadm.Path, Env: h.kubeadm.Env(), Log: h.log, Lock: lock}
	stop := start(t, w.Run)
	if err := <-orphanDone; err != nil {
		t.Fatalf("orphaned join: %v", err)
	}
	eventually(t, "READY", func() bool { _, n := h.notifier.snapshot(); return n > 0 })
	idle("joined")
	_ = stop()
	if got := h.kubeadm.CallsOf("join"); len(got) != 1 {
		t.Errorf("join calls = %d, want the orphan's only", len(got))
	}
	if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
		t.Errorf("reset calls = %q, want none", got)
	}
	if !h.notifier.sawStatus("waiting for a kubeadm run left by an earlier agent process") {
		t.Errorf("STATUS did not say it waited for the orphaned kubeadm: %q", first(h.notifier.snapshot()))
	}
}

// A hostile writer who copied the live token into a join.json with its own
// endpoint is not taken for this node's own publication at restart: the
// object is replaced as foreign.
func TestControlPlaneDoesNotAdoptAHostileCopyOfItsToken(t *testing.T) {
	h, clk, idle := initializedHarness(t)
	ours := h.published(t)
	hostile := *ours
	hostile.APIServerEndpoint = "evil.example.com:6443"
	h.publish(t, &hostile)
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("running again")
	clk.Step(time.Minute)
	idle("a verify round")
	_ = stop()
	if got := h.published(t); got.APIServerEndpoint != ours.APIServerEndpoint {
		t.Errorf("join.json names %s after the restart, want the control plane's %s", got.APIServerEndpoint, ours.APIServerEndpoint)
	}
	if text := allLogText(h.logs); strings.Contains(text, "adopting join info") ||
		!strings.Contains(text, "not the object this agent last wrote") {
		t.Error("the hostile copy was adopted, or not replaced loudly as foreign")
	}
}

// A superseded token whose expiry comes before its grace ends is still
// recorded in state.json (so a restart does not take it for an orphan and
// delete it early) and is deleted at its expiry.
func TestRetiredTokenExpiringBeforeItsGraceSurvivesARestart(t *testing.T) {
	h, clk, _ := newFakeClockHarness(t)
	h.cfg.ControlPlane.TokenTTL.Duration = 5 * time.Minute // half-life 2m30s, shorter than the 5m5s grace
	cp := h.controlPlane()
	crashed := make(chan struct{})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	// kill -9 right after the state write of the first refresh (generation 2).
	cp.crashPoint = func(step string) {
		if step == stepAfterStateWrite && cp.Reporter.State().JoinGeneration == 2 {
			close(crashed)
			<-release
			runtime.Goexit()
		}
	}
	go func() { _ = cp.Run(context.Background()) }()
	first := ""
	for reached := false; !reached; {
		reached = idleOrCrashed(t, clk, crashed)
		if first == "" {
			first = h.published(t).TokenID()
		}
		if !reached {
			clk.Step(30 * time.Second)
		}
	}
	st := h.reporter.State()
	if len(st.RetiredTokens) != 1 || st.RetiredTokens[0].ID != first {
		t.Fatalf("retired tokens %+v, want the first token %s", st.RetiredTokens, first)
	}
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	eventually(t, "idle after the restart", clk.HasWaiters)
	if !slices.Contains(h.kubeadm.TokenIDs(), first) {
		t.Fatalf("the superseded token %s was deleted at restart, before its expiry", first)
	}
	clk.Step(st.RetiredTokens[0].DeleteAfter.Sub(clk.Now()))
	eventually(t, "the old token deleted at its expiry", func() bool { return !slices.Contains(h.kubeadm.TokenIDs(), first) })
	_ = stop()
}
