package addons

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/progress"
)

var t0 = time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)

const poll = 2 * time.Second

// fakeTarget records each Apply with the fake time it came at.
type fakeTarget struct {
	clk *testingclock.FakeClock
	mu  sync.Mutex
	// errs are the errors of the first calls; later calls succeed.
	errs  []error
	calls []time.Time
	// block makes Apply wait for its context and return its error.
	block bool
}

func (f *fakeTarget) Apply(ctx context.Context, objs []Object) error {
	f.mu.Lock()
	n := len(f.calls)
	f.calls = append(f.calls, f.clk.Now())
	block := f.block
	var err error
	if n < len(f.errs) {
		err = f.errs[n]
	}
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (f *fakeTarget) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

type result struct {
	at  time.Time
	err error
}

// installerHarness runs an Installer on a fake clock with a fake target.
type installerHarness struct {
	t           *testing.T
	clk         *testingclock.FakeClock
	in          *Installer
	target      *fakeTarget
	initialized atomic.Bool
	initCalls   atomic.Int32

	mu          sync.Mutex
	connectErrs []error // errors of the first Connect calls
	connects    int
	results     []result

	cancel context.CancelFunc
	done   chan error
}

func newInstallerHarness(t *testing.T) *installerHarness {
	clk := testingclock.NewFakeClock(t0)
	h := &installerHarness{t: t, clk: clk, target: &fakeTarget{clk: clk}}
	h.in = &Installer{
		Objects: mustParse(t, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n"),
		Initialized: func() bool {
			h.initCalls.Add(1)
			return h.initialized.Load()
		},
		Connect: func() (Target, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.connects++
			if h.connects <= len(h.connectErrs) {
				return nil, h.connectErrs[h.connects-1]
			}
			return h.target, nil
		},
		OnResult: func(at time.Time, err error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.results = append(h.results, result{at, err})
		},
		Clock: clk,
		Log:   zaptest.NewLogger(t),
		// Delays of exactly 1s, 2s, 4s, 4s...: no jitter.
		Backoff: &backoff.Backoff{Initial: time.Second, Max: 4 * time.Second, Rand: func() float64 { return 0 }},
		Poll:    poll,
	}
	return h
}

func (h *installerHarness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.in.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// stop cancels Run and returns what it returned.
func (h *installerHarness) stop() error {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return after its context was cancelled")
		return nil
	}
}

func (h *installerHarness) snapshot() (connects int, results []result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connects, slices.Clone(h.results)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// stepUntilApplies moves the fake clock in steps of 250ms, each once the
// installer sleeps, until the target has seen n calls.
func (h *installerHarness) stepUntilApplies(n int) {
	h.t.Helper()
	for i := 0; len(h.target.callTimes()) < n; i++ {
		if i > 400 {
			h.t.Fatalf("%d calls after %d steps, want %d", len(h.target.callTimes()), i, n)
		}
		eventually(h.t, "the installer to sleep or apply", func() bool {
			return h.clk.HasWaiters() || len(h.target.callTimes()) >= n
		})
		if len(h.target.callTimes()) >= n {
			return
		}
		h.clk.Step(250 * time.Millisecond)
	}
}

func errTexts(rs []result) []string {
	var out []string
	for _, r := range rs {
		if r.err == nil {
			out = append(out, "<nil>")
		} else {
			out = append(out, r.err.Error())
		}
	}
	return out
}

func TestInstallerWaitsForTheClusterWithoutConnecting(t *testing.T) {
	h := newInstallerHarness(t)
	h.start()
	for i := int32(1); i <= 4; i++ {
		eventually(t, "a look at the cluster, then a sleep", func() bool { return h.initCalls.Load() == i && h.clk.HasWaiters() })
		if connects, _ := h.snapshot(); connects != 0 {
			t.Fatalf("Connect called %d times before the cluster is initialized", connects)
		}
		if i < 4 {
			h.clk.Step(poll)
		}
	}
	h.initialized.Store(true)
	h.clk.Step(poll)
	eventually(t, "the apply", func() bool { _, rs := h.snapshot(); return len(rs) == 1 })
	if err := h.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
	if calls, want := h.target.callTimes(), []time.Time{t0.Add(4 * poll)}; !slices.Equal(calls, want) {
		t.Errorf("Apply at %v, want once at %v", calls, want)
	}
}

func TestInstallerRetriesAFailingTargetWithBackoff(t *testing.T) {
	h := newInstallerHarness(t)
	h.initialized.Store(true)
	refused := errors.New("apply DaemonSet kube-flannel-ds: refused")
	h.target.errs = []error{refused, refused, refused}
	h.start()
	h.stepUntilApplies(4)
	want := []time.Time{t0, t0.Add(time.Second), t0.Add(3 * time.Second), t0.Add(7 * time.Second)}
	if calls := h.target.callTimes(); !slices.Equal(calls, want) {
		t.Errorf("Apply at %v, want %v (backoff 1s, 2s, 4s)", calls, want)
	}
	if connects, _ := h.snapshot(); connects != 1 {
		t.Errorf("Connect called %d times, want 1: the target is kept across failed applies", connects)
	}
}

func TestInstallerReportsAnErrorOnlyWhenItChanges(t *testing.T) {
	h := newInstallerHarness(t)
	h.initialized.Store(true)
	e1, e2 := errors.New("does not serve kind Widget (yet)"), errors.New("apply DaemonSet: refused")
	h.target.errs = []error{e1, e1, e2, e2, e1}
	h.start()
	h.stepUntilApplies(6)
	eventually(t, "the success to be reported", func() bool { _, rs := h.snapshot(); return len(rs) == 4 })
	_, results := h.snapshot()
	if got, want := errTexts(results), []string{e1.Error(), e2.Error(), e1.Error(), "<nil>"}; !slices.Equal(got, want) {
		t.Errorf("OnResult errors %q, want %q", got, want)
	}
	for _, r := range results[:3] {
		if !r.at.IsZero() {
			t.Errorf("error %v reported with time %v, want zero", r.err, r.at)
		}
	}
	if last := h.target.callTimes()[5]; !results[3].at.Equal(last) || results[3].at.Location() != time.UTC {
		t.Errorf("success reported at %v, want the time of the last apply %v in UTC", results[3].at, last)
	}
}

func TestInstallerRestsAfterSuccess(t *testing.T) {
	h := newInstallerHarness(t)
	h.initialized.Store(true)
	h.start()
	eventually(t, "the apply", func() bool { _, rs := h.snapshot(); return len(rs) == 1 })
	for i := 0; i < 5; i++ {
		h.clk.Step(time.Hour)
	}
	if h.clk.HasWaiters() {
		t.Error("the installer set a timer after success")
	}
	if err := h.stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v", err)
	}
	if calls := h.target.callTimes(); len(calls) != 1 {
		t.Errorf("Apply called %d times, want once", len(calls))
	}
	if _, results := h.snapshot(); len(results) != 1 || results[0].err != nil || !results[0].at.Equal(t0) {
		t.Errorf("OnResult %+v, want once with %v and no error", results, t0)
	}
}

func TestInstallerLeavesTheWatchdogBoardWhenDone(t *testing.T) {
	h := newInstallerHarness(t)
	board := progress.NewBoard(h.clk)
	h.in.Progress = board.Part("addons", time.Minute)
	h.start()
	for i := 0; i < 90; i++ { // 3 minutes of waiting for the cluster: it keeps its promise
		eventually(t, "a sleep", h.clk.HasWaiters)
		h.clk.Step(poll)
		if s := board.Stale(); s != nil {
			t.Fatalf("stale while waiting for the cluster: %v", s)
		}
	}
	eventually(t, "a sleep", h.clk.HasWaiters)
	h.initialized.Store(true)
	h.clk.Step(poll)
	eventually(t, "the apply", func() bool { _, rs := h.snapshot(); return len(rs) == 1 })
	h.clk.Step(24 * time.Hour)
	if s := board.Stale(); s != nil {
		t.Errorf("stale while resting after success: %v", s)
	}
}

func TestInstallerRetriesConnect(t *testing.T) {
	h := newInstallerHarness(t)
	h.initialized.Store(true)
	noConf := errors.New("kubeconfig /etc/kubernetes/admin.conf: no such file")
	h.connectErrs = []error{noConf, noConf}
	h.start()
	h.stepUntilApplies(1)
	eventually(t, "the success to be reported", func() bool { _, rs := h.snapshot(); return len(rs) == 2 })
	connects, results := h.snapshot()
	if connects != 3 {
		t.Errorf("Connect called %d times, want 3", connects)
	}
	if calls, want := h.target.callTimes(), []time.Time{t0.Add(3 * time.Second)}; !slices.Equal(calls, want) {
		t.Errorf("Apply at %v, want %v (after connect backoff 1s, 2s)", calls, want)
	}
	if !errors.Is(results[0].err, noConf) || !strings.Contains(results[0].err.Error(), "connect to the cluster") || results[1].err != nil {
		t.Errorf("OnResult errors %q, want the connect error once, then success", errTexts(results))
	}
}

func TestInstallerBoundsAnAttemptByTimeout(t *testing.T) {
	h := newInstallerHarness(t)
	h.initialized.Store(true)
	h.target.block = true
	h.in.Timeout = 20 * time.Millisecond
	h.start()
	eventually(t, "the error to be reported", func() bool { _, rs := h.snapshot(); return len(rs) == 1 })
	_, results := h.snapshot()
	if err := results[0].err; !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "took longer than 20ms") {
		t.Errorf("OnResult error %v, want the attempt's deadline", err)
	}
}

func TestInstallerReturnsWhenCancelled(t *testing.T) {
	refused := errors.New("refused")
	cases := []struct {
		name  string
		setup func(h *installerHarness)
		// waiting reports that Run is in the wait the case is about.
		waiting func(h *installerHarness) bool
	}{
		{"waiting for the cluster", func(h *installerHarness) {},
			func(h *installerHarness) bool { return h.initCalls.Load() > 0 && h.clk.HasWaiters() }},
		{"backing off after a connect failure", func(h *installerHarness) {
			h.initialized.Store(true)
			h.connectErrs = []error{refused}
		}, func(h *installerHarness) bool { _, rs := h.snapshot(); return len(rs) == 1 && h.clk.HasWaiters() }},
		{"backing off after an apply failure", func(h *installerHarness) {
			h.initialized.Store(true)
			h.target.errs = []error{refused}
		}, func(h *installerHarness) bool { _, rs := h.snapshot(); return len(rs) == 1 && h.clk.HasWaiters() }},
		{"applying", func(h *installerHarness) {
			h.initialized.Store(true)
			h.target.block = true
		}, func(h *installerHarness) bool { return len(h.target.callTimes()) == 1 }},
		{"resting after success", func(h *installerHarness) { h.initialized.Store(true) },
			func(h *installerHarness) bool { _, rs := h.snapshot(); return len(rs) == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newInstallerHarness(t)
			tc.setup(h)
			h.start()
			eventually(t, tc.name, func() bool { return tc.waiting(h) })
			_, before := h.snapshot()
			if err := h.stop(); !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
			// The cancellation is not an add-on error to record.
			if _, after := h.snapshot(); len(after) != len(before) {
				t.Errorf("OnResult called on cancellation: %q", errTexts(after[len(before):]))
			}
		})
	}
}
