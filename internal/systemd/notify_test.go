package systemd

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// listen binds a real unixgram NOTIFY_SOCKET and returns a reader of its datagrams.
func listen(t *testing.T) func(timeout time.Duration) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func(timeout time.Duration) []string {
		var msgs []string
		buf := make([]byte, 4096)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(timeout))
			n, err := conn.Read(buf)
			if err != nil {
				return msgs
			}
			msgs = append(msgs, string(buf[:n]))
		}
	}
}

func TestNotifierSendsReadyOnceAndStatusOnChange(t *testing.T) {
	read := listen(t)
	n := NewNotifier(func(err error) { t.Errorf("notify: %v", err) })
	n.Status("waiting for join info in s3://b/demo/join.json")
	n.Status("waiting for join info in s3://b/demo/join.json") // unchanged: not resent
	n.Status("joining 10.0.1.10:6443 with token abcdef")
	n.Ready("joined as ip-10-0-2-7")
	n.Ready("joined as ip-10-0-2-7")
	n.Ready("joined as ip-10-0-2-7, ECR credentials refreshed")
	got := read(200 * time.Millisecond)
	want := []string{
		"STATUS=waiting for join info in s3://b/demo/join.json",
		"STATUS=joining 10.0.1.10:6443 with token abcdef",
		"READY=1\nSTATUS=joined as ip-10-0-2-7",
		"STATUS=joined as ip-10-0-2-7, ECR credentials refreshed",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("datagrams:\n%q\nwant\n%q", got, want)
	}
}

func TestWatchdogAtHalfTheInterval(t *testing.T) {
	read := listen(t)
	t.Setenv("WATCHDOG_USEC", "200000") // 200ms: pings every 100ms
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	defer cancel()
	NewNotifier(nil).RunWatchdog(ctx, nil, nil)
	got := read(50 * time.Millisecond)
	pings := 0
	for _, m := range got {
		if m == "WATCHDOG=1" {
			pings++
		}
	}
	if pings < 3 || pings > 6 {
		t.Errorf("%d WATCHDOG=1 in 450ms at a 200ms watchdog, want about 5", pings)
	}
}

func TestNoWatchdogWithoutWatchdogUsec(t *testing.T) {
	listen(t)
	t.Setenv("WATCHDOG_USEC", "")
	done := make(chan struct{})
	go func() { NewNotifier(nil).RunWatchdog(context.Background(), nil, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("RunWatchdog kept running without WATCHDOG_USEC")
	}
}

// fakeSystemd records what a Notifier sends, and plays the agent's progress
// board for RunWatchdog: set says which parts are stale, checks counts the
// watchdog's looks at the board.
type fakeSystemd struct {
	mu     sync.Mutex
	sent   []string
	stale  atomic.Pointer[[]string]
	checks atomic.Int64
}

func (f *fakeSystemd) send(state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, state)
	return nil
}

func (f *fakeSystemd) board() []string {
	f.checks.Add(1)
	if p := f.stale.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *fakeSystemd) set(stale ...string) { f.stale.Store(&stale) }

// take returns and forgets what was sent so far.
func (f *fakeSystemd) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sent := f.sent
	f.sent = nil
	return sent
}

// waitFor waits until cond holds for everything sent since the last take.
func (f *fakeSystemd) waitFor(t *testing.T, what string, cond func(sent []string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		ok := cond(f.sent)
		f.mu.Unlock()
		if ok {
			return f.take()
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("never sent %s; sent %q", what, f.take())
	return nil
}

// waitChecks waits until the watchdog looked at the board n more times.
func (f *fakeSystemd) waitChecks(t *testing.T, n int64) {
	t.Helper()
	target := f.checks.Load() + n
	deadline := time.Now().Add(10 * time.Second)
	for f.checks.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the watchdog stopped looking at the board")
		}
		time.Sleep(time.Millisecond)
	}
}

func count(sent []string, msg string) int {
	n := 0
	for _, m := range sent {
		if m == msg {
			n++
		}
	}
	return n
}

// startWatchdog runs RunWatchdog at a 20ms watchdog (a look every 10ms) on f.
func startWatchdog(t *testing.T, f *fakeSystemd, n *Notifier) *observer.ObservedLogs {
	t.Helper()
	t.Setenv("WATCHDOG_USEC", "20000")
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.RunWatchdog(ctx, f.board, zap.New(core)); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return logs
}

func TestWatchdogStopsWhileAPartIsStaleAndResumesWhenFresh(t *testing.T) {
	f := &fakeSystemd{}
	n := &Notifier{send: f.send}
	n.Ready("joined as ip-10-0-2-7")
	f.take()
	logs := startWatchdog(t, f, n)

	f.waitFor(t, "two WATCHDOG=1 while every part is fresh", func(s []string) bool { return count(s, "WATCHDOG=1") >= 2 })

	f.set("ecr", "worker")
	stuck := "STATUS=stuck: no progress from ecr, worker; systemd will restart kubestrap"
	f.waitFor(t, "a STATUS naming the stale parts", func(s []string) bool { return slices.Contains(s, stuck) })
	// Once the STATUS is out, every later look at the board finds it stale:
	// not one WATCHDOG=1 (nor a second STATUS) in ten looks.
	f.waitChecks(t, 10)
	if sent := f.take(); len(sent) != 0 {
		t.Fatalf("sent %q while a part was stale", sent)
	}
	warns := logs.FilterMessageSnippet("stopped feeding the watchdog").AllUntimed()
	if len(warns) != 1 || warns[0].Level != zap.WarnLevel {
		t.Fatalf("want one warning naming the stale parts, got %v", warns)
	}
	if got := warns[0].ContextMap()["stale"]; !slices.Equal(got.([]interface{}), []interface{}{"ecr", "worker"}) {
		t.Errorf("warning names %v, want [ecr worker]", got)
	}

	f.set()
	sent := f.waitFor(t, "WATCHDOG=1 once fresh again", func(s []string) bool { return count(s, "WATCHDOG=1") >= 2 })
	if sent[0] != "STATUS=joined as ip-10-0-2-7" || sent[1] != "WATCHDOG=1" {
		t.Errorf("after recovery sent %q, want the previous STATUS back, then WATCHDOG=1", sent)
	}
}

func TestWatchdogNamesNewlyStaleParts(t *testing.T) {
	f := &fakeSystemd{}
	n := &Notifier{send: f.send}
	f.set("ecr")
	logs := startWatchdog(t, f, n)
	f.waitFor(t, "a STATUS naming ecr", func(s []string) bool {
		return slices.Contains(s, "STATUS=stuck: no progress from ecr; systemd will restart kubestrap")
	})
	f.set("control-plane", "ecr")
	sent := f.waitFor(t, "a STATUS naming both", func(s []string) bool {
		return slices.Contains(s, "STATUS=stuck: no progress from control-plane, ecr; systemd will restart kubestrap")
	})
	f.waitChecks(t, 5)
	if sent = append(sent, f.take()...); count(sent, "WATCHDOG=1") != 0 || len(sent) != 1 {
		t.Errorf("sent %q, want only the new STATUS", sent)
	}
	if n := logs.FilterMessageSnippet("stopped feeding the watchdog").Len(); n != 2 {
		t.Errorf("%d warnings, want one per change of the stale parts", n)
	}
}

func TestWatchdogKeepsAStatusSentWhileStale(t *testing.T) {
	f := &fakeSystemd{}
	n := &Notifier{send: f.send}
	n.Status("waiting for join info")
	f.set("worker")
	startWatchdog(t, f, n)
	f.waitFor(t, "a STATUS naming worker", func(s []string) bool { return len(s) > 0 })
	n.Status("joining 10.0.1.10:6443") // the part moved on and said so
	f.set()
	sent := f.waitFor(t, "WATCHDOG=1", func(s []string) bool { return count(s, "WATCHDOG=1") >= 1 })
	if slices.Contains(sent, "STATUS=waiting for join info") {
		t.Errorf("the watchdog put back an older status over a newer one: %q", sent)
	}
}

// A look that comes late (the process was stopped past its promises, e.g. a
// SIGSTOP or a paused VM) feeds the watchdog once although parts are stale
// (their promises fell due while nothing could run); the next look, on
// time, judges them again and stops the pings.
func TestWatchdogFeedsOnceAfterTheProcessWasPaused(t *testing.T) {
	f := &fakeSystemd{}
	n := &Notifier{send: f.send}
	core, logs := observer.New(zap.InfoLevel)
	w := &watchdog{n: n, stale: f.board, log: zap.New(core), interval: time.Minute}
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)

	w.tick(t0)
	if sent := f.take(); !slices.Equal(sent, []string{"WATCHDOG=1"}) {
		t.Fatalf("first look, all fresh: sent %q", sent)
	}
	f.set("control-plane")
	// On time (30 s later, 1 s of scheduling delay): the stale part is judged.
	w.tick(t0.Add(31 * time.Second))
	if sent := f.take(); count(sent, "WATCHDOG=1") != 0 {
		t.Fatalf("a look on time with a stale part fed the watchdog: %q", sent)
	}
	// The process stopped for 25 s: the next look comes 25 s late.
	w.tick(t0.Add(86 * time.Second))
	if sent := f.take(); !slices.Equal(sent, []string{"WATCHDOG=1"}) {
		t.Fatalf("the look after a pause: sent %q, want one WATCHDOG=1", sent)
	}
	if logs.FilterMessageSnippet("did not run for a while").Len() != 1 {
		t.Errorf("the pause is not in the log: %v", logs.AllUntimed())
	}
	// The next look on time judges the part again: still stale, no ping.
	w.tick(t0.Add(116 * time.Second))
	if sent := f.take(); count(sent, "WATCHDOG=1") != 0 {
		t.Fatalf("the look after the pause's look fed the watchdog with a stale part: %q", sent)
	}
}
