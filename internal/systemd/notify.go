// Package systemd speaks the sd_notify protocol (READY, STATUS, WATCHDOG)
// through github.com/coreos/go-systemd/v22/daemon.
package systemd

import (
	"context"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
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

// RunWatchdog sends WATCHDOG=1 at half the interval systemd asked for
// (WATCHDOG_USEC) until ctx ends; it returns at once when no watchdog is set.
func (n *Notifier) RunWatchdog(ctx context.Context) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	n.notify(daemon.SdNotifyWatchdog)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.notify(daemon.SdNotifyWatchdog)
		}
	}
}
