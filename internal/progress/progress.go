// Package progress lets the agent's long-running parts say when they will
// next show progress, so that the systemd watchdog is fed only while every
// part is alive. A part that is stuck (a remote call without an answer, a
// deadlock) misses its own deadline and the watchdog stops.
package progress

import (
	"slices"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Slack is added to every promise: scheduling and GC pauses are not hangs.
const Slack = 30 * time.Second

// Heartbeat is one part's promise of progress. The zero value is unusable;
// get one from Board.Part. A nil *Heartbeat ignores every call, so code
// under test may leave it out.
type Heartbeat struct {
	board *Board
	name  string
}

// Within promises that the part shows progress again within d: before a
// sleep of d, a remote call with a deadline of d, or a kubeadm run with a
// timeout of d.
func (h *Heartbeat) Within(d time.Duration) {
	if h == nil {
		return
	}
	h.board.set(h.name, h.board.clock.Now().Add(d+Slack))
}

// Done removes the part from the board: a part that returned is not stuck.
func (h *Heartbeat) Done() {
	if h == nil {
		return
	}
	h.board.mu.Lock()
	defer h.board.mu.Unlock()
	delete(h.board.due, h.name)
}

// Board holds every part's deadline.
type Board struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	due   map[string]time.Time
}

// NewBoard returns an empty board on clk.
func NewBoard(clk clock.PassiveClock) *Board {
	return &Board{clock: clk, due: map[string]time.Time{}}
}

// Part registers a part by name with an initial promise of d.
func (b *Board) Part(name string, d time.Duration) *Heartbeat {
	h := &Heartbeat{board: b, name: name}
	h.Within(d)
	return h
}

func (b *Board) set(name string, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.due[name] = t
}

// Stale returns the parts whose promised progress is overdue, sorted by
// name, or nil.
func (b *Board) Stale() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	var stale []string
	for name, t := range b.due {
		if now.After(t) {
			stale = append(stale, name)
		}
	}
	slices.Sort(stale)
	return stale
}
