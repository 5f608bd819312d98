package leave

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	testingclock "k8s.io/utils/clock/testing"
)

// answer is one metadata path's reply.
type answer struct {
	value string
	found bool
	err   error
}

// fakeMetadata answers each path with what the test set (404 by default)
// and counts the requests.
type fakeMetadata struct {
	mu      sync.Mutex
	answers map[string]answer
	calls   map[string]int
}

func newFakeMetadata() *fakeMetadata {
	return &fakeMetadata{answers: map[string]answer{}, calls: map[string]int{}}
}

func (f *fakeMetadata) set(path string, a answer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[path] = a
}

func (f *fakeMetadata) found(path, value string) { f.set(path, answer{value: value, found: true}) }
func (f *fakeMetadata) notFound(path string)     { f.set(path, answer{}) }

func (f *fakeMetadata) setAll(a answer) {
	for _, p := range []string{PathSpotInstanceAction, PathTargetLifecycleState, PathRebalance} {
		f.set(p, a)
	}
}

func (f *fakeMetadata) GetMetadata(_ context.Context, path string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[path]++
	a := f.answers[path]
	return a.value, a.found, a.err
}

func (f *fakeMetadata) callsTo(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}

// statusError is an HTTP error as the SDK returns it (HTTPStatusCode).
type statusError int

func (e statusError) Error() string {
	return fmt.Sprintf("request to EC2 IMDS failed: HTTP %d", int(e))
}
func (e statusError) HTTPStatusCode() int { return int(e) }

var t0 = time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)

// watchRig runs a Watcher on a stepped fake clock.
type watchRig struct {
	t    *testing.T
	clk  *testingclock.FakeClock
	md   *fakeMetadata
	out  chan Notice
	logs *observer.ObservedLogs
}

func startWatcher(t *testing.T, md *fakeMetadata, opts WatcherOptions) *watchRig {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	r := &watchRig{t: t, clk: testingclock.NewFakeClock(t0), md: md, out: make(chan Notice), logs: logs}
	opts.Clock, opts.Log = r.clk, zap.New(core)
	w := NewWatcher(md, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, r.out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	r.waitIdle()
	return r
}

// waitIdle waits until the watcher finished a poll and waits on the clock.
func (r *watchRig) waitIdle() {
	r.t.Helper()
	for end := time.Now().Add(5 * time.Second); !r.clk.HasWaiters(); {
		if time.Now().After(end) {
			r.t.Fatal("the watcher does not wait on its clock")
		}
		time.Sleep(time.Millisecond)
	}
}

// step moves the clock by d and waits for the poll it triggers.
func (r *watchRig) step(d time.Duration) {
	r.t.Helper()
	r.clk.Step(d)
	r.waitIdle()
}

func (r *watchRig) next() Notice {
	r.t.Helper()
	select {
	case n := <-r.out:
		return n
	case <-time.After(5 * time.Second):
		r.t.Fatal("no notice emitted")
	}
	return Notice{}
}

func (r *watchRig) none() {
	r.t.Helper()
	select {
	case n := <-r.out:
		r.t.Fatalf("unexpected notice %+v", n)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWatcherPollsEveryInterval(t *testing.T) {
	md := newFakeMetadata()
	r := startWatcher(t, md, WatcherOptions{Interval: 5 * time.Second})
	if got := md.callsTo(PathSpotInstanceAction); got != 1 {
		t.Fatalf("polls at start = %d, want 1", got)
	}
	r.clk.Step(4 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if got := md.callsTo(PathSpotInstanceAction); got != 1 {
		t.Fatalf("polls after 4 s = %d, want 1", got)
	}
	r.step(time.Second)
	for _, p := range []string{PathSpotInstanceAction, PathTargetLifecycleState, PathRebalance} {
		if got := md.callsTo(p); got != 2 {
			t.Errorf("%s polled %d times after 5 s, want 2", p, got)
		}
	}
}

func TestWatcherEmitsNothingOn404s(t *testing.T) {
	md := newFakeMetadata() // every path 404
	r := startWatcher(t, md, WatcherOptions{})
	for range 5 {
		r.step(DefaultInterval)
	}
	r.none()
	if n := r.logs.Len(); n != 0 {
		t.Errorf("404s logged %d lines: %v", n, r.logs.All())
	}
}

func TestWatcherSpotDeadline(t *testing.T) {
	for _, tc := range []struct {
		name     string
		action   time.Duration // after the notice is seen
		deadline time.Duration
	}{
		{"action time after seen+110s: seen+110s", 120 * time.Second, 110 * time.Second},
		{"action time before seen+110s: the action time", 60 * time.Second, 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := newFakeMetadata()
			r := startWatcher(t, md, WatcherOptions{})
			seen := t0.Add(DefaultInterval)
			md.found(PathSpotInstanceAction, fmt.Sprintf(`{"action": "terminate", "time": %q}`, seen.Add(tc.action).Format(time.RFC3339)))
			r.step(DefaultInterval)
			n := r.next()
			want := Notice{Kind: Spot, NoticeTime: seen, Deadline: seen.Add(tc.deadline), Action: "terminate"}
			if n != want {
				t.Errorf("notice %+v, want %+v", n, want)
			}
		})
	}
}

func TestWatcherEmitsAnASGTerminationWithTheCallersBudget(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathTargetLifecycleState, "InService")
	r := startWatcher(t, md, WatcherOptions{ASGBudget: 7 * time.Minute})
	r.step(DefaultInterval)
	r.none()
	md.found(PathTargetLifecycleState, "Terminated")
	r.step(DefaultInterval)
	seen := t0.Add(2 * DefaultInterval)
	want := Notice{Kind: ASGTermination, NoticeTime: seen, Deadline: seen.Add(7 * time.Minute), Action: "Terminated"}
	if n := r.next(); n != want {
		t.Errorf("notice %+v, want %+v", n, want)
	}
	r.step(DefaultInterval)
	r.none() // still Terminated: not again
}

func TestWatcherEmitsARebalanceRecommendation(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathRebalance, `{"noticeTime": "2026-11-26T05:29:58Z"}`)
	r := startWatcher(t, md, WatcherOptions{})
	n := r.next()
	if n.Kind != Rebalance || !n.NoticeTime.Equal(t0.Add(-2*time.Second)) || !n.Deadline.Equal(t0.Add(DefaultRebalanceBudget)) || n.Terminates() {
		t.Errorf("notice %+v", n)
	}
}

func TestWatcherLogsIMDSErrorsOncePerClassAndRecovers(t *testing.T) {
	md := newFakeMetadata()
	md.setAll(answer{err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}})
	r := startWatcher(t, md, WatcherOptions{})
	r.step(DefaultInterval)
	r.step(DefaultInterval)
	md.setAll(answer{err: statusError(500)})
	r.step(DefaultInterval)
	r.step(DefaultInterval)
	md.setAll(answer{}) // answers again: 404s
	r.step(DefaultInterval)
	r.step(DefaultInterval)

	var got []string
	for _, e := range r.logs.All() {
		got = append(got, fmt.Sprintf("%s %s %v", e.Level, e.Message, e.ContextMap()["class"]))
	}
	want := []string{
		"warn cannot read a leave signal from the instance metadata service; polling on network",
		"warn cannot read a leave signal from the instance metadata service; polling on HTTP 500",
		"info instance metadata service answers again <nil>",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("logs:\n%q\nwant:\n%q", got, want)
	}
	if c := md.callsTo(PathSpotInstanceAction); c != 7 {
		t.Errorf("spot path polled %d times, want 7 (polling went on)", c)
	}
}

func TestWatcherEmitsAFlappingSpotNoticeOnce(t *testing.T) {
	md := newFakeMetadata()
	notice := `{"action": "terminate", "time": "2026-11-26T05:32:00Z"}`
	md.found(PathSpotInstanceAction, notice)
	r := startWatcher(t, md, WatcherOptions{})
	if n := r.next(); n.Kind != Spot {
		t.Fatalf("first notice %+v", n)
	}
	md.notFound(PathSpotInstanceAction)
	r.step(DefaultInterval)
	md.set(PathSpotInstanceAction, answer{err: statusError(503)})
	r.step(DefaultInterval)
	md.found(PathSpotInstanceAction, notice)
	r.step(DefaultInterval)
	r.step(DefaultInterval)
	r.none()
}

func TestWatcherEmitsRebalanceThenSpot(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathRebalance, `{"noticeTime": "2026-11-26T05:29:00Z"}`)
	r := startWatcher(t, md, WatcherOptions{})
	if n := r.next(); n.Kind != Rebalance {
		t.Fatalf("first notice %+v, want a rebalance", n)
	}
	md.found(PathSpotInstanceAction, `{"action": "terminate", "time": "2026-11-26T05:32:00Z"}`)
	r.step(DefaultInterval)
	if n := r.next(); n.Kind != Spot {
		t.Fatalf("second notice %+v, want a spot notice", n)
	}
	r.none()
}

func TestWatcherTreatsARebalanceWithANewNoticeTimeAsNew(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathRebalance, `{"noticeTime": "2026-11-26T05:29:00Z"}`)
	r := startWatcher(t, md, WatcherOptions{})
	r.next()
	r.step(DefaultInterval)
	r.none() // same noticeTime
	md.notFound(PathRebalance)
	r.step(DefaultInterval)
	md.found(PathRebalance, `{"noticeTime": "2026-11-26T05:40:00Z"}`)
	r.step(DefaultInterval)
	if n := r.next(); n.Kind != Rebalance || !n.NoticeTime.Equal(time.Date(2026, 11, 26, 5, 40, 0, 0, time.UTC)) {
		t.Errorf("notice %+v, want the rebalance of 05:40", n)
	}
}

func TestWatcherKeepsNoticesWhileNobodyReads(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathRebalance, `{"noticeTime": "2026-11-26T05:29:00Z"}`)
	r := startWatcher(t, md, WatcherOptions{})
	md.found(PathSpotInstanceAction, `{"action": "stop", "time": "2026-11-26T05:32:00Z"}`)
	r.step(DefaultInterval) // the rebalance notice was not read: polling goes on
	if n := r.next(); n.Kind != Rebalance {
		t.Errorf("first notice %+v, want the rebalance", n)
	}
	if n := r.next(); n.Kind != Spot || n.Action != "stop" {
		t.Errorf("second notice %+v, want the spot stop", n)
	}
}
