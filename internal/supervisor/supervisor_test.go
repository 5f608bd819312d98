package supervisor

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/progress"
)

// untilCancelled is a well-behaved part: it runs until its context ends.
func untilCancelled(stopped *atomic.Bool) RunFunc {
	return func(ctx context.Context, _ *progress.Heartbeat) error {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond) // a part takes a moment to wind down
		stopped.Store(true)
		return ctx.Err()
	}
}

func run(t *testing.T, ctx context.Context, s *Supervisor) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestFailingPartStopsTheOthersAndNamesItself(t *testing.T) {
	boom := errors.New("boom")
	var stopped atomic.Bool
	s := New(nil)
	s.Add("worker", time.Minute, untilCancelled(&stopped))
	s.Add("ecr", time.Minute, func(ctx context.Context, _ *progress.Heartbeat) error { return boom })
	err := run(t, context.Background(), s)
	if !errors.Is(err, boom) || err.Error() != "ecr: boom" {
		t.Fatalf("Run = %v, want ecr: boom", err)
	}
	if !stopped.Load() {
		t.Fatal("Run returned before the other part had stopped")
	}
}

func TestPartReturningNilEarlyIsAnError(t *testing.T) {
	var stopped atomic.Bool
	s := New(nil)
	s.Add("control-plane", time.Minute, untilCancelled(&stopped))
	s.Add("ecr", time.Minute, func(context.Context, *progress.Heartbeat) error { return nil })
	err := run(t, context.Background(), s)
	if !errors.Is(err, ErrStopped) || err.Error() != "ecr: "+ErrStopped.Error() {
		t.Fatalf("Run = %v, want ecr: %v", err, ErrStopped)
	}
	if !stopped.Load() {
		t.Fatal("the other part was not stopped")
	}
}

func TestEndOfContextIsNoFailure(t *testing.T) {
	var a, b atomic.Bool
	s := New(nil)
	s.Add("worker", time.Minute, untilCancelled(&a))
	s.Add("ecr", time.Minute, untilCancelled(&b))
	s.Add("quiet", time.Minute, func(ctx context.Context, _ *progress.Heartbeat) error {
		<-ctx.Done()
		return nil // returning nil when told to stop is fine too
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := run(t, ctx, s); !errors.Is(err, context.Canceled) || err != context.Canceled {
		t.Fatalf("Run = %v, want context.Canceled itself", err)
	}
	if !a.Load() || !b.Load() {
		t.Fatal("Run returned before every part had stopped")
	}
}

func TestErrorWhileStoppingIsReported(t *testing.T) {
	flush := errors.New("cannot save state")
	s := New(nil)
	s.Add("worker", time.Minute, func(ctx context.Context, _ *progress.Heartbeat) error {
		<-ctx.Done()
		return flush
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(t, ctx, s); !errors.Is(err, flush) || err.Error() != "worker: cannot save state" {
		t.Fatalf("Run = %v, want worker: cannot save state", err)
	}
}

func TestNoPartsReturnsAtOnce(t *testing.T) {
	if err := run(t, context.Background(), New(nil)); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestEveryPartGetsItsHeartbeatOnTheBoard(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC))
	board := progress.NewBoard(clk)
	s := New(board)
	type started struct {
		name string
		hb   *progress.Heartbeat
	}
	starts := make(chan started, 2)
	for _, name := range []string{"worker", "ecr"} {
		s.Add(name, time.Minute, func(ctx context.Context, hb *progress.Heartbeat) error {
			starts <- started{name, hb}
			<-ctx.Done()
			return ctx.Err()
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	hbs := map[string]*progress.Heartbeat{}
	for range 2 {
		st := <-starts
		if st.hb == nil {
			t.Fatalf("%s: nil heartbeat", st.name)
		}
		hbs[st.name] = st.hb
	}
	// The initial promise holds: nobody is stale until a minute plus the slack.
	clk.SetTime(clk.Now().Add(time.Minute + progress.Slack))
	if stale := board.Stale(); stale != nil {
		t.Fatalf("stale within the initial promise: %v", stale)
	}
	// ECR promises more; the worker stays silent and goes stale.
	hbs["ecr"].Within(time.Hour)
	clk.SetTime(clk.Now().Add(time.Second))
	if stale := board.Stale(); !slices.Equal(stale, []string{"worker"}) {
		t.Fatalf("stale = %v, want [worker]", stale)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if stale := board.Stale(); stale != nil {
		t.Fatalf("parts that returned are still on the board: %v", stale)
	}
}
