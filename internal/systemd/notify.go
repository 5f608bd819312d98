// Package systemd speaks the sd_notify protocol (READY, STATUS, WATCHDOG)
// through github.com/coreos/go-systemd/v22/daemon.
package systemd

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// statusPrefix starts a free-form status line (go-systemd has no constant for it).
const statusPrefix = "STATUS="

// Notifier sends notifications to the service manager. Without
// NOTIFY_SOCKET every call is a no-op.
type Notifier struct {
	mu      sync.Mutex
	ready   bool
	status  string
	send    func(state string) error
	onError func(error)
}

// NewNotifier returns a Notifier that writes to $NOTIFY_SOCKET; onError, when
// not nil, hears about failed sends.
func NewNotifier(onError func(error)) *Notifier {
	return &Notifier{
		send: func(state string) error {
			_, err := daemon.SdNotify(false, state)
			return err
		},
		onError: onError,
	}
}

func (n *Notifier) notify(state string) {
	if err := n.send(state); err != nil && n.onError != nil {
		n.onError(err)
	}
}

// Status sends STATUS=msg when it differs from the last status sent.
func (n *Notifier) Status(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if msg == n.status {
		return
	}
	n.status = msg
	n.notify(statusPrefix + msg)
}

// Ready sends READY=1 (with a STATUS) once per process; later calls only
// update the status.
func (n *Notifier) Ready(status string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready {
		if status != n.status {
			n.status = status
			n.notify(statusPrefix + status)
		}
		return
	}
	n.ready = true
	n.status = status
	n.notify(daemon.SdNotifyReady + "\n" + statusPrefix + status)
}

// IsReady reports whether READY=1 was sent.
func (n *Notifier) IsReady() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready
}

// Stopping sends STOPPING=1.
func (n *Notifier) Stopping() { n.notify(daemon.SdNotifyStopping) }

// replaceStatus sends STATUS=next when the last status sent is still old.
func (n *Notifier) replaceStatus(old, next string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.status != old || next == old {
		return
	}
	n.status = next
	n.notify(statusPrefix + next)
}

func (n *Notifier) lastStatus() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// RunWatchdog sends WATCHDOG=1 at half the interval systemd asked for
// (WATCHDOG_USEC) until ctx ends, but only while stale returns no part: a
// part of the agent that stopped showing progress (a call that never
// answers, a deadlock) stops the pings, and systemd kills and restarts the
// agent after WatchdogSec. It says so once in the log (log may be nil) and in
// a STATUS naming the stale parts, and puts the previous status back if every
// part shows progress again in time. A nil stale means always fresh.
// RunWatchdog returns at once when no watchdog is set.
func (n *Notifier) RunWatchdog(ctx context.Context, stale func() []string, log *zap.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	if stale == nil {
		stale = func() []string { return nil }
	}
	if log == nil {
		log = zap.NewNop()
	}
	w := &watchdog{n: n, stale: stale, log: log, interval: interval}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		w.tick(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type watchdog struct {
	n        *Notifier
	stale    func() []string
	log      *zap.Logger
	interval time.Duration
	// stuck names the stale parts ("" while all are fresh); stuckStatus is
	// the STATUS sent about them, before the status it replaced.
	stuck, stuckStatus, before string
	// last is when the previous look ran (zero before the first).
	last time.Time
}

// pausedAfter is how late a look may come before the watchdog concludes
// that the agent's process did not run in between (SIGSTOP, a paused VM):
// a process that runs is woken by its ticker within milliseconds.
const pausedAfter = time.Second

// tick is one look at the board at now. A look that comes late (the whole
// process was stopped or its machine paused, e.g. past a lock's lease) feeds
// the watchdog once without judging the parts: their promises fell due while
// no part could run, and a process that runs again is not stuck. The next
// look, half an interval later, judges them as usual, so a part that is
// really stuck still stops the pings then.
func (w *watchdog) tick(now time.Time) {
	prev := w.last
	w.last = now
	if !prev.IsZero() {
		if late := now.Sub(prev.Add(w.interval / 2)); late > pausedAfter {
			w.log.Info("the agent did not run for a while (its process was stopped or its machine paused); "+
				"feeding the watchdog once and judging its parts at the next look", zap.Duration("late", late.Round(time.Millisecond)))
			w.n.notify(daemon.SdNotifyWatchdog)
			return
		}
	}
	parts := w.stale()
	if len(parts) == 0 {
		if w.stuck != "" {
			w.log.Info("every part of the agent shows progress again; feeding the watchdog",
				zap.String("wasStale", w.stuck))
			w.n.replaceStatus(w.stuckStatus, w.before)
			w.stuck = ""
		}
		w.n.notify(daemon.SdNotifyWatchdog)
		return
	}
	names := strings.Join(parts, ", ")
	if names == w.stuck {
		return
	}
	if w.stuck == "" {
		w.before = w.n.lastStatus()
	}
	w.stuck = names
	w.log.Warn("no progress from a part of the agent; stopped feeding the watchdog, systemd will restart the agent",
		zap.Strings("stale", parts), zap.Duration("watchdogSec", w.interval))
	w.stuckStatus = "stuck: no progress from " + names + "; systemd will restart kubestrap"
	w.n.Status(w.stuckStatus)
}
