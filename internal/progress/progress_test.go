package progress

import (
	"slices"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func newBoard() (*Board, *testingclock.FakePassiveClock) {
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC))
	return NewBoard(clk), clk
}

func TestPartIsStaleOnlyAfterItsPromiseAndTheSlack(t *testing.T) {
	b, clk := newBoard()
	b.Part("ecr", time.Minute)
	clk.SetTime(clk.Now().Add(time.Minute + Slack))
	if s := b.Stale(); s != nil {
		t.Fatalf("stale at exactly the promise plus slack: %v", s)
	}
	clk.SetTime(clk.Now().Add(time.Nanosecond))
	if s := b.Stale(); !slices.Equal(s, []string{"ecr"}) {
		t.Fatalf("stale = %v, want [ecr]", s)
	}
}

func TestWithinRenewsThePromise(t *testing.T) {
	b, clk := newBoard()
	hb := b.Part("worker", time.Minute)
	clk.SetTime(clk.Now().Add(50 * time.Second))
	hb.Within(10 * time.Minute) // before a long kubeadm join
	clk.SetTime(clk.Now().Add(10 * time.Minute))
	if s := b.Stale(); s != nil {
		t.Fatalf("stale within the renewed promise: %v", s)
	}
	clk.SetTime(clk.Now().Add(Slack + time.Second))
	if s := b.Stale(); !slices.Equal(s, []string{"worker"}) {
		t.Fatalf("stale = %v, want [worker]", s)
	}
	hb.Within(time.Second) // progress again: fresh
	if s := b.Stale(); s != nil {
		t.Fatalf("stale after new progress: %v", s)
	}
}

func TestStaleListsOnlyOverduePartsSorted(t *testing.T) {
	b, clk := newBoard()
	b.Part("worker", time.Second)
	b.Part("metrics", time.Hour)
	b.Part("ecr", time.Second)
	clk.SetTime(clk.Now().Add(time.Minute))
	if s := b.Stale(); !slices.Equal(s, []string{"ecr", "worker"}) {
		t.Fatalf("stale = %v, want [ecr worker]", s)
	}
}

func TestDoneTakesThePartOffTheBoard(t *testing.T) {
	b, clk := newBoard()
	hb := b.Part("ecr", time.Second)
	clk.SetTime(clk.Now().Add(time.Hour))
	hb.Done()
	if s := b.Stale(); s != nil {
		t.Fatalf("a part that returned is stale: %v", s)
	}
}

func TestNilHeartbeatIsANoOp(t *testing.T) {
	var hb *Heartbeat
	hb.Within(time.Second)
	hb.Done()
}
