package role

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

// The control-plane agent killed (kill -9: nothing after the point runs) at
// every step boundary of its lifecycle, then started again, converges: one
// finished init and no reset of a live control plane, valid join info in S3
// within one verify interval, no kubestrap token in the cluster that neither
// S3 nor state.json knows, no secret or temporary file left behind, no false
// "foreign writer" alarm, and a worker joins with what is published.
func TestControlPlaneConvergesAfterAKillAtEveryStep(t *testing.T) {
	steps := []string{stepLockAcquired, stepBeforeInit, stepInsideInit, stepAfterInit, stepAfterMarker, stepAfterTokenMade,
		stepAfterPublish, stepAfterStateWrite, stepAfterOldDeleted}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			h, clk, _ := newFakeClockHarness(t)
			if step == stepInsideInit {
				h.kubeadm.CrashNextInit(t) // kubeadm dies with the machine, after its kubeconfig phase
			}
			crashed := crashAt(t, h.controlPlane(), step)
			// Drive the clock (refresh at half-life, retired token's grace)
			// until the agent reaches the step.
			for i := 0; ; i++ {
				if i > 40 {
					t.Fatalf("the agent never reached %s", step)
				}
				if idleOrCrashed(t, clk, crashed) {
					break
				}
				clk.Step(10 * time.Minute)
			}

			h2 := h.restarted(t)
			cp := h2.controlPlane()
			stop := start(t, cp.Run)
			eventually(t, "READY after the restart", func() bool { _, n := h2.notifier.snapshot(); return n > 0 })
			eventually(t, "idle after the restart", clk.HasWaiters)
			clk.Step(cp.VerifyInterval) // one verify interval
			eventually(t, "idle after a verify round", clk.HasWaiters)
			_ = stop()

			if n := h.kubeadm.InitsCompleted(); n != 1 {
				t.Errorf("%d inits finished, want exactly 1", n)
			}
			resets := h.kubeadm.CallsOf("reset")
			if step == stepBeforeInit || step == stepInsideInit {
				if len(resets) > 1 {
					t.Errorf("reset calls = %q, want at most the one undoing the unfinished init", resets)
				}
			} else if len(resets) != 0 {
				t.Errorf("reset of an initialized control plane: %q", resets)
			}
			info := h.published(t)
			st := h2.reporter.State()
			known := []string{info.TokenID()}
			for _, r := range st.RetiredTokens {
				known = append(known, r.ID)
			}
			for _, id := range h.kubeadm.TokenIDs() {
				if !slices.Contains(known, id) {
					t.Errorf("token %s in the cluster is known to neither S3 nor state.json (known: %q)", id, known)
				}
			}
			if st.TokenID != info.TokenID() || st.JoinGeneration != info.Generation {
				t.Errorf("state.json says token %s generation %d, S3 holds %s generation %d",
					st.TokenID, st.JoinGeneration, info.TokenID(), info.Generation)
			}
			if text := allLogText(h.logs); strings.Contains(text, "not the object this agent last wrote") {
				t.Error("false alarm: the agent took its own publication for a foreign writer's")
			}
			assertNoLeftovers(t, h.cfg.StateDir)
			// The cluster is recorded as this node's, and the init lock is
			// not left behind for other control planes to wait on.
			assertMarkerOf(t, h, testInstanceID)
			if lock := h.initLock(t); lock.Held {
				t.Errorf("init lock left behind: %v", lock)
			}
			if st.InitializedBy != testInstanceID || st.InitLockHolder != "" {
				t.Errorf("state.json: initializedBy %q initLockHolder %q", st.InitializedBy, st.InitLockHolder)
			}
			workerJoins(t, h, clk.Now())
		})
	}
}

// The worker agent killed inside kubeadm join (after kubeadm finished, before
// the agent recorded it) and after the join ends joined exactly once, with no
// reset of a node that joined.
func TestWorkerConvergesAfterAKillDuringJoin(t *testing.T) {
	for _, step := range []string{stepInsideJoin, stepAfterJoin} {
		t.Run(step, func(t *testing.T) {
			h, clk, idle := newFakeClockHarness(t)
			h.cfg.Role = config.RoleWorker
			h.kubeadm.AcceptToken(t, goodToken)
			h.publish(t, joinInfo(goodToken, 1, clk.Now()))
			w := h.worker()
			crashed := make(chan struct{})
			w.crashPoint = freezeAt(t, step, crashed)
			go func() { _ = w.Run(t.Context()) }()
			<-crashed

			h2 := h.restarted(t)
			stop := start(t, h2.worker().Run)
			eventually(t, "READY after the restart", func() bool { _, n := h2.notifier.snapshot(); return n > 0 })
			clk.Step(time.Minute)
			idle("joined")
			_ = stop()
			if got := h.kubeadm.CallsOf("join"); len(got) != 1 {
				t.Errorf("join calls = %d, want 1", len(got))
			}
			if got := h.kubeadm.CallsOf("reset"); len(got) != 0 {
				t.Errorf("reset calls = %q on a node that joined", got)
			}
			assertNoLeftovers(t, h.cfg.StateDir)
		})
	}
}

// idleOrCrashed waits until the agent sleeps on clk or reached its crash
// point, and reports whether it crashed.
func idleOrCrashed(t *testing.T, clk *testingclock.FakeClock, crashed <-chan struct{}) bool {
	t.Helper()
	reached := false
	eventually(t, "the agent to idle or reach its crash point", func() bool {
		select {
		case <-crashed:
			reached = true
			return true
		default:
			return clk.HasWaiters()
		}
	})
	return reached
}

// assertNoLeftovers fails on a kubeadm configuration (it holds a token
// secret) or a temporary file in the state directory.
func assertNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "kubeadm-") && strings.HasSuffix(name, ".yaml") || strings.Contains(name, ".tmp-") {
			t.Errorf("%s left in the state directory", filepath.Join(dir, name))
		}
	}
}

// workerJoins runs a worker node against the same S3 and cluster and
// requires it to join with the published info.
func workerJoins(t *testing.T, cp *harness, now time.Time) {
	t.Helper()
	w := newHarnessWithClock(t, config.RoleWorker, testutil.NewInstantClock(now))
	w.s3, w.store = cp.s3, cp.store
	w.kubeadm = cp.kubeadm
	worker := w.worker()
	joined := filepath.Join(cp.kubeadm.Etc, "kubelet.conf")
	_ = os.Remove(joined)
	stop := start(t, worker.Run)
	eventually(t, "the worker to join", func() bool { return kubeadm.CheckKubeconfig(joined) == nil })
	_ = stop()
	if got := cp.kubeadm.CallsOf("join"); len(got) != 1 {
		t.Errorf("worker join calls = %d, want 1 (the published token must work)", len(got))
	}
}
