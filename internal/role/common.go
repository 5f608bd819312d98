// Package role runs the control-plane and worker lifecycles described in
// DESIGN.md, on top of narrow interfaces (S3, kubeadm, clock, notifier) so
// that every path can be exercised in unit tests.
package role

import (
	"context"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/state"
)

// Notifier is the systemd side of the agent.
type Notifier interface {
	Status(msg string)
	Ready(status string)
}

// JoinSource reads join info (a *join.Store in production).
type JoinSource interface {
	Fetch(ctx context.Context, etag string) (*join.Fetched, error)
	URL() string
}

// Reporter keeps state.json, the systemd STATUS and the log in step: every
// phase change goes to all three.
type Reporter struct {
	Dir      string
	Notifier Notifier
	Log      *zap.Logger
	Clock    clock.PassiveClock

	mu sync.Mutex
	st state.State
	// released is set once start-up garbage was returned to the OS.
	released bool
}

// NewReporter loads the previous state (if any) as a starting point.
func NewReporter(dir string, n Notifier, log *zap.Logger, clk clock.PassiveClock) (*Reporter, error) {
	st, err := state.Load(dir)
	if err != nil {
		return nil, err
	}
	return &Reporter{Dir: dir, Notifier: n, Log: log, Clock: clk, st: *st}, nil
}

// State returns a copy of the current state.
func (r *Reporter) State() state.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// Update changes the state with fn and saves it.
func (r *Reporter) Update(fn func(*state.State)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.st)
	r.st.UpdatedAt = r.Clock.Now().UTC()
	if err := state.Save(r.Dir, &r.st); err != nil {
		r.Log.Error("cannot save state", zap.Error(err))
	}
}

// Phase records a phase change: state.json, STATUS= and a log line.
func (r *Reporter) Phase(p state.Phase, msg string, fields ...zap.Field) {
	r.Update(func(s *state.State) { s.Phase, s.Message = p, msg })
	r.Notifier.Status(msg)
	fields = append(fields, zap.String("phase", string(p)))
	switch p {
	case state.PhaseJoinFailed, state.PhaseInitFailed, state.PhaseDegraded:
		r.Log.Warn(msg, fields...)
	default:
		r.Log.Info(msg, fields...)
	}
}

// Problem records a phase change caused by something wrong (refused join
// info, unreachable S3): like Phase, but logged as a warning.
func (r *Reporter) Problem(p state.Phase, msg string, fields ...zap.Field) {
	r.Update(func(s *state.State) { s.Phase, s.Message = p, msg })
	r.Notifier.Status(msg)
	r.Log.Warn(msg, append(fields, zap.String("phase", string(p)))...)
}

// Ready records the steady state and sends READY=1 (once) with msg as STATUS.
// The first time, it also returns start-up garbage to the OS: from here on
// the agent idles for hours, and its resident memory is what operators see.
func (r *Reporter) Ready(p state.Phase, msg string, fields ...zap.Field) {
	r.Update(func(s *state.State) { s.Phase, s.Message = p, msg })
	r.Notifier.Ready(msg)
	r.Log.Info(msg, append(fields, zap.String("phase", string(p)))...)
	r.mu.Lock()
	first := !r.released
	r.released = true
	r.mu.Unlock()
	if first {
		debug.FreeOSMemory()
	}
}

// sleep waits d on clk or until ctx ends.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
