// Package role runs the control-plane and worker lifecycles described in
// docs/design.md, on top of narrow interfaces (S3, kubeadm, clock, notifier) so
// that every path can be exercised in unit tests.
package role

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/errclass"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/state"
)

// RemoteCallTimeout bounds one S3 request or kubeadm token command.
const RemoteCallTimeout = time.Minute

// ResetTimeout bounds one kubeadm reset.
const ResetTimeout = 5 * time.Minute

// removeLeftovers deletes what a killed agent may have left in dir: kubeadm
// configurations holding a token secret (named in secretFiles) and the
// temporary files of interrupted atomic writes. Call it only after
// waitForKubeadmLock: no kubeadm of an earlier agent process still reads
// them, and this process starts none before it returns.
func removeLeftovers(log *zap.Logger, dir string, secretFiles ...string) {
	var gone []string
	for _, name := range secretFiles {
		if err := os.Remove(filepath.Join(dir, name)); err == nil {
			gone = append(gone, name)
		}
	}
	temps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	for _, p := range temps {
		if err := os.Remove(p); err == nil {
			gone = append(gone, filepath.Base(p))
		}
	}
	if len(gone) > 0 {
		log.Info("removed files left by an interrupted run", zap.String("dir", dir), zap.Strings("files", gone))
	}
}

// waitForKubeadmLock waits until no kubeadm run (of this or an earlier agent
// process) holds the lock, reporting the wait. An orphaned kubeadm that
// still runs after limit (the longest kubeadm timeout) is ended.
func waitForKubeadmLock(ctx context.Context, lock *kubeadm.Lock, r *Reporter, hb *progress.Heartbeat, limit time.Duration) error {
	if lock == nil {
		return nil
	}
	onWait := func(pid int) {
		r.Phase(state.PhaseStarting, fmt.Sprintf("waiting for a kubeadm run left by an earlier agent process (pid %d) to finish", pid))
	}
	for {
		hb.Within(limit + kubeadm.GracePeriod)
		wctx, cancel := context.WithTimeout(ctx, limit)
		held, err := lock.Acquire(wctx, onWait)
		cancel()
		if err == nil {
			return held.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pid := lock.HolderPID()
		r.Log.Warn("a kubeadm run left by an earlier agent process outlived every kubeadm timeout; ending it",
			zap.Int("pid", pid), zap.Duration("waited", limit))
		if err := kubeadm.EndOrphan(ctx, pid, kubeadm.GracePeriod); err != nil {
			r.Condition(state.PhaseBlocked, "orphan-not-ended", fmt.Sprintf(
				"blocked: %s is held by another process and cannot be ended (%v); stop it, then the agent goes on", lock.Path, err))
		}
	}
}

// orphanLimit is how long a kubeadm run of an earlier agent process may
// still hold the lock: the longest timeout of any run.
func orphanLimit(k config.KubeadmConfig) time.Duration {
	return max(k.InitTimeout.Duration, k.JoinTimeout.Duration, ResetTimeout, RemoteCallTimeout) + kubeadm.GracePeriod
}

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
	// OnWarning, when set, hears every problem as it is first reported
	// (Problem, and Condition once per meaning): the agent turns some into
	// Kubernetes Events. It must not block.
	OnWarning func(p state.Phase, meaning, msg string)

	mu sync.Mutex
	st state.State
	// released is set once start-up garbage was returned to the OS.
	released bool
	// condition is the meaning of the last problem reported with Condition.
	condition string
}

// NewReporter loads the previous state (if any) as a starting point. A state
// file that cannot be decoded is moved aside with a warning: the roles
// rebuild what they need from the node, S3 and the cluster.
func NewReporter(dir string, n Notifier, log *zap.Logger, clk clock.PassiveClock) (*Reporter, error) {
	st, aside, err := state.LoadOrSetAside(dir, clk.Now())
	if err != nil {
		return nil, err
	}
	if aside != "" {
		log.Warn("state file was unreadable; moved it aside and rebuilding the state from this node",
			zap.String("movedTo", aside))
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
	r.mu.Lock()
	r.condition = ""
	r.mu.Unlock()
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
	r.mu.Lock()
	r.condition = ""
	r.mu.Unlock()
	r.Update(func(s *state.State) { s.Phase, s.Message = p, msg })
	r.Notifier.Status(msg)
	r.Log.Warn(msg, append(fields, zap.String("phase", string(p)))...)
	if r.OnWarning != nil {
		r.OnWarning(p, "", msg)
	}
}

// Condition reports a problem that may repeat at every retry. meaning
// identifies it (phase and error class, never request IDs or retry delays):
// the first report of a meaning writes state.json and logs a warning; a
// repeat only refreshes STATUS and logs at debug level, so an outage does not
// rewrite the state file or flood the journal.
func (r *Reporter) Condition(p state.Phase, meaning, msg string, fields ...zap.Field) {
	r.report(zapcore.WarnLevel, p, meaning, msg, fields...)
}

// Waiting is Condition for an expected wait (join info not published yet):
// the same de-duplication, logged at info level.
func (r *Reporter) Waiting(p state.Phase, meaning, msg string, fields ...zap.Field) {
	r.report(zapcore.InfoLevel, p, meaning, msg, fields...)
}

func (r *Reporter) report(level zapcore.Level, p state.Phase, meaning, msg string, fields ...zap.Field) {
	key := string(p) + "\x00" + meaning
	r.mu.Lock()
	repeat := r.condition == key
	r.condition = key
	r.mu.Unlock()
	r.Notifier.Status(msg)
	if repeat {
		r.Log.Debug(msg, append(fields, zap.String("phase", string(p)))...)
		return
	}
	r.Update(func(s *state.State) { s.Phase, s.Message = p, msg })
	r.Log.Log(level, msg, append(fields, zap.String("phase", string(p)))...)
	if level >= zapcore.WarnLevel && r.OnWarning != nil {
		r.OnWarning(p, meaning, msg)
	}
}

// Ready records the steady state and sends READY=1 (once) with msg as STATUS.
// The first time, it also returns start-up garbage to the OS: from here on
// the agent idles for hours, and its resident memory is what operators see.
func (r *Reporter) Ready(p state.Phase, msg string, fields ...zap.Field) {
	r.mu.Lock()
	r.condition = ""
	r.mu.Unlock()
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

// sleep waits d on clk or until ctx ends, having promised progress within d.
func sleep(ctx context.Context, clk clock.Clock, hb *progress.Heartbeat, d time.Duration) error {
	hb.Within(d)
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// errorClass names the kind of an error for de-duplication: a kubeadm exit
// code, a conflicting write, or what errclass.Of names (an S3 error code, a
// timeout, a network error).
func errorClass(err error) string {
	var exitErr *kubeadm.ExitError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &exitErr):
		return fmt.Sprintf("kubeadm-exit:%d", exitErr.ExitCode)
	case errors.Is(err, join.ErrConflict):
		return "conflict"
	}
	return errclass.Of(err)
}
