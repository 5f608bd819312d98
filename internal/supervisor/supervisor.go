// Package supervisor runs the agent's long-running parts (the role
// lifecycle, the ECR refresher, and whatever comes next) side by side. Every
// part has one shape, a function that runs until its context ends and keeps
// promising progress on its own heartbeat; the systemd watchdog reads the
// heartbeats from the progress board. When one part stops, the supervisor
// stops them all, so that systemd restarts the whole agent rather than
// leaving it half alive.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kubestrap/kubestrap/internal/progress"
)

// ErrStopped is the error (wrapped with the part's name) of a part that
// returned nil while the agent was still running: parts run until their
// context ends.
var ErrStopped = errors.New("stopped before the agent was asked to stop")

// RunFunc is a part. It runs until ctx ends or it fails, and calls hb.Within
// before every wait and every remote call (hb may be nil).
type RunFunc func(ctx context.Context, hb *progress.Heartbeat) error

type part struct {
	name    string
	initial time.Duration
	run     RunFunc
}

// Supervisor runs parts; add them with Add, then call Run once.
type Supervisor struct {
	board *progress.Board
	parts []part
}

// New returns a Supervisor whose parts promise progress on board; with a nil
// board every part gets a nil (no-op) heartbeat.
func New(board *progress.Board) *Supervisor {
	return &Supervisor{board: board}
}

// Add registers a part under name (used in errors and on the board). initial
// is its first promise of progress, from the moment Run starts it until its
// first hb.Within.
func (s *Supervisor) Add(name string, initial time.Duration, run RunFunc) {
	s.parts = append(s.parts, part{name: name, initial: initial, run: run})
}

// Run starts every part on its own goroutine, with its heartbeat on the
// board, and returns once all of them have returned. The first part to
// return ends the run: the others' context is cancelled. Run returns the
// first error, wrapped with its part's name; a part that returns nil before
// ctx ends counts as ErrStopped, and a part that returns its context's error
// after the cancellation has none. When ctx ended and no part failed, Run
// returns ctx.Err().
func (s *Supervisor) Run(ctx context.Context) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.parts))
	for _, p := range s.parts {
		var hb *progress.Heartbeat
		if s.board != nil {
			hb = s.board.Part(p.name, p.initial)
		}
		go func() {
			err := p.run(ctx, hb)
			hb.Done()
			results <- result{p.name, err}
		}()
	}
	var first error
	for range s.parts {
		r := <-results
		switch {
		case r.err == nil && ctx.Err() == nil:
			r.err = ErrStopped
		case ctx.Err() != nil && errors.Is(r.err, ctx.Err()):
			r.err = nil // it stopped because it was told to
		}
		if first == nil && r.err != nil {
			first = fmt.Errorf("%s: %w", r.name, r.err)
		}
		cancel()
	}
	if first == nil {
		return parent.Err()
	}
	return first
}
