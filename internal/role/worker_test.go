package role

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/join/jointest"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/state"

	"github.com/kubestrap/kubestrap/internal/config"
)

const (
	goodToken  = "abcdef.0123456789abcdef"
	otherToken = "ghijkl.0123456789abcdef"
)

func joinInfo(token string, generation int64, issued time.Time) *join.Info {
	return &join.Info{
		APIVersion: join.APIVersion, Kind: join.Kind, Cluster: "demo",
		APIServerEndpoint: "10.0.1.10:6443", Token: token,
		CACertHashes:      []string{"sha256:" + strings.Repeat("0f", 32)},
		KubernetesVersion: "v1.37.2",
		IssuedAt:          issued.UTC().Truncate(time.Second),
		ExpiresAt:         issued.Add(2 * time.Hour).UTC().Truncate(time.Second),
		Generation:        generation,
	}
}

func (h *harness) publish(t *testing.T, info *join.Info) {
	t.Helper()
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	h.s3.Put(t, join.Key("demo"), b)
}

func (h *harness) worker() *Worker {
	return &Worker{
		Config: h.cfg, Node: kubeadm.Node{Name: "node-a", IP: "10.0.2.7"}, Source: h.store,
		Kubeadm: &kubeadm.Runner{Path: h.kubeadm.Path, Env: h.kubeadm.Env(), Log: h.log},
		Clock:   h.clock, Reporter: h.reporter, Log: h.log,
		KubeletKubeconfig: h.kubeadm.KubeletConf(),
		Rand:              func() float64 { return 0.5 },
	}
}

func (h *harness) phase() state.Phase { return h.reporter.State().Phase }

func TestWorkerJoinsAndStopsPollingOnceJoined(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	w := h.worker()
	var joinedHooks atomic.Int32
	w.OnJoined = func() { joinedHooks.Add(1) }
	stop := start(t, w.Run)

	// Nothing in S3 yet: the worker waits, polling.
	eventually(t, "a few polls", func() bool { return h.s3.Counts.Snapshot().Gets >= 3 })
	if !h.notifier.sawStatus("waiting for join info in s3://demo-bootstrap/demo/join.json") {
		t.Errorf("no waiting STATUS; got %v", first(h.notifier.snapshot()))
	}
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now()))
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	atJoin := h.s3.Counts.Snapshot()
	// Let the joined loop run through many membership checks in virtual time.
	before := h.clock.Now()
	eventually(t, "an hour of virtual time", func() bool { return h.clock.Since(before) > time.Hour })
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	if after := h.s3.Counts.Snapshot(); after.Gets != atJoin.Gets {
		t.Errorf("S3 GETs after join: %d, want 0", after.Gets-atJoin.Gets)
	}
	if got := h.kubeadm.CallsOf("join"); len(got) != 1 || !strings.HasPrefix(got[0], "join --config "+w.JoinConfigPath()) {
		t.Errorf("kubeadm join calls = %q", got)
	}
	if joinedHooks.Load() != 1 {
		t.Errorf("OnJoined ran %d times, want once (it refreshes the kubelet's ECR credentials)", joinedHooks.Load())
	}
	if _, err := os.Stat(w.JoinConfigPath()); !os.IsNotExist(err) {
		t.Errorf("join configuration (holds the token secret) left on disk: %v", err)
	}
	statuses, readies := h.notifier.snapshot()
	if readies == 0 {
		t.Errorf("READY never sent")
	}
	for _, want := range []string{"joining 10.0.1.10:6443 with token abcdef", "joined as node-a"} {
		if !h.notifier.sawStatus(want) {
			t.Errorf("no STATUS %q in %q", want, statuses)
		}
	}
	st, err := state.Load(h.cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != state.PhaseJoined || st.JoinGeneration != 1 || st.TokenID != "abcdef" || st.TokenExpiresAt.IsZero() {
		t.Errorf("state.json = %+v", st)
	}
	if text := allLogText(h.logs); strings.Contains(text, "0123456789abcdef") {
		t.Errorf("token secret reached the log:\n%s", text)
	}
}

func first(s []string, _ int) []string { return s }

func TestWorkerUsesConditionalGetsWhileWaiting(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	// An object that is refused keeps the worker waiting on the same ETag.
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now().Add(-3*time.Hour)))
	stop := start(t, h.worker().Run)
	eventually(t, "ten polls", func() bool { return h.s3.Counts.Snapshot().Gets >= 10 })
	_ = stop()
	c := h.s3.Counts.Snapshot()
	if c.Conditional < c.Gets-1 {
		t.Errorf("%d of %d GETs were conditional; all but the first should be", c.Conditional, c.Gets)
	}
	if calls := h.kubeadm.Calls(); len(calls) != 0 {
		t.Errorf("kubeadm called for expired join info: %q", calls)
	}
}

func TestWorkerRefusesHostileJoinInfoWithoutCallingKubeadm(t *testing.T) {
	for _, tc := range jointest.HostileCases() {
		t.Run(tc.Name, func(t *testing.T) {
			h := newHarness(t, config.RoleWorker)
			h.kubeadm.AcceptToken(t, goodToken)
			h.s3.Put(t, join.Key("demo"), tc.Body)
			stop := start(t, h.worker().Run)
			eventually(t, "a refusal STATUS", func() bool { return h.notifier.sawStatus("refusing join info") })
			// Keep watching: more polls happen after the refusal.
			n := h.s3.Counts.Snapshot().Gets
			eventually(t, "more polls", func() bool { return h.s3.Counts.Snapshot().Gets > n+2 })
			_ = stop()
			if calls := h.kubeadm.Calls(); len(calls) != 0 {
				t.Fatalf("kubeadm called: %q", calls)
			}
			if h.phase() != state.PhaseWaitingJoinInfo {
				t.Errorf("phase = %s", h.phase())
			}
		})
	}
}

func TestWorkerWaitsForNewerJoinInfoAfterTokenRefused(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	// Generation 1 carries a token the API server no longer knows.
	h.publish(t, joinInfo(otherToken, 1, h.clock.Now()))
	h.kubeadm.AcceptToken(t, goodToken)
	stop := start(t, h.worker().Run)
	eventually(t, "token refusal reported", func() bool { return h.notifier.sawStatus("token ghijkl was refused") })
	n := h.s3.Counts.Snapshot().Gets
	eventually(t, "more polls", func() bool { return h.s3.Counts.Snapshot().Gets > n+5 })
	if got := len(h.kubeadm.CallsOf("join")); got != 1 {
		t.Fatalf("join attempted %d times with the refused generation, want 1", got)
	}
	h.publish(t, joinInfo(goodToken, 2, h.clock.Now()))
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	_ = stop()
	if got := len(h.kubeadm.CallsOf("join")); got != 2 {
		t.Errorf("join calls = %d, want 2", got)
	}
	if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
		t.Errorf("a token refusal must not reset the node: %q", got)
	}
	if st := h.reporter.State(); st.JoinGeneration != 2 {
		t.Errorf("joined with generation %d, want 2", st.JoinGeneration)
	}
}

func TestWorkerResetsAndRetriesOtherJoinFailures(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	h.kubeadm.FailNext(t, "join")
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now()))
	begin := h.clock.Now()
	stop := start(t, h.worker().Run)
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	_ = stop()
	calls := h.kubeadm.Calls()
	if len(calls) < 3 || !strings.HasPrefix(calls[0], "join ") || !strings.HasPrefix(calls[1], "reset -f") || !strings.HasPrefix(calls[2], "join ") {
		t.Fatalf("calls = %q, want join, reset -f, join", calls)
	}
	if !h.notifier.sawStatus("join failed") {
		t.Error("no STATUS about the failed join")
	}
	// The retry waited for the backoff (virtual time), not immediately.
	if waited := h.clock.Since(begin); waited < 2*time.Second {
		t.Errorf("retried after %s, want a backoff of at least 2.5s", waited)
	}
}

func TestWorkerAlreadyJoinedDoesNotJoinAgain(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now()))
	stop := start(t, h.worker().Run)
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	_ = stop()

	// "Reboot": a new agent process with the same state dir and node.
	h2 := h.restarted(t)
	gets := h.s3.Counts.Snapshot().Gets
	stop = start(t, h2.worker().Run)
	eventually(t, "READY after restart", func() bool { _, n := h2.notifier.snapshot(); return n >= 1 })
	_ = stop()
	if got := len(h.kubeadm.CallsOf("join")); got != 1 {
		t.Errorf("join calls = %d after restart, want 1", got)
	}
	if d := h.s3.Counts.Snapshot().Gets - gets; d != 0 {
		t.Errorf("restarted joined agent made %d S3 requests", d)
	}
}

func TestWorkerJoinsAgainWhenMembershipRemoved(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now()))
	stop := start(t, h.worker().Run)
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	// kubeadm reset -f removes kubelet.conf.
	if err := os.Remove(h.kubeadm.KubeletConf()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "joined again", func() bool { return len(h.kubeadm.CallsOf("join")) == 2 && h.phase() == state.PhaseJoined })
	_ = stop()
	if !h.notifier.sawStatus("node is no longer joined") {
		t.Error("no STATUS about the lost membership")
	}
}

// deniedSource answers like real S3 for a missing key the role may not list.
type deniedSource struct{ calls int }

func (d *deniedSource) Fetch(context.Context, string) (*join.Fetched, error) {
	d.calls++
	return nil, fmt.Errorf("get s3://demo-bootstrap/demo/join.json: %w", join.ErrAccessDenied)
}
func (d *deniedSource) URL() string { return "s3://demo-bootstrap/demo/join.json" }

func TestWorkerTreatsAccessDeniedAsNotPublishedYet(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	w := h.worker()
	src := &deniedSource{}
	w.Source = src
	stop := start(t, w.Run)
	eventually(t, "a STATUS about access", func() bool { return h.notifier.sawStatus("S3 denies access: not published yet") })
	_ = stop()
	if h.phase() != state.PhaseWaitingJoinInfo || len(h.kubeadm.Calls()) != 0 {
		t.Errorf("phase %s, kubeadm calls %q", h.phase(), h.kubeadm.Calls())
	}
}

func TestWorkerWaitsSteadilyWhileTheOldNodeIsStillReady(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	h.kubeadm.FailNext(t, "join-node-exists")
	h.publish(t, joinInfo(goodToken, 1, h.clock.Now()))
	begin := h.clock.Now()
	stop := start(t, h.worker().Run)
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	_ = stop()
	if !h.notifier.sawStatus("the cluster still lists node-a as a Ready node") {
		t.Errorf("no STATUS explaining the wait; got %q", first(h.notifier.snapshot()))
	}
	if waited := h.clock.Since(begin); waited < NodeStillRegisteredRetry {
		t.Errorf("retried after %s, want %s", waited, NodeStillRegisteredRetry)
	}
	if got := len(h.kubeadm.CallsOf("join")); got != 2 {
		t.Errorf("join calls = %d, want 2", got)
	}
}
