package leave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/progress"
)

// Watcher defaults.
const (
	// DefaultInterval is how often IMDS is polled: the EC2 guide's advice
	// for spot/instance-action.
	DefaultInterval = 5 * time.Second
	// DefaultIMDSTimeout bounds each metadata request.
	DefaultIMDSTimeout = 2 * time.Second
	// DefaultSpotBudget is how long after a spot notice is seen the leave
	// must be over (the notice comes 2 minutes ahead; 10 s are kept for the
	// kubelet and the shutdown).
	DefaultSpotBudget = 110 * time.Second
	// DefaultASGBudget is the ASG leave's budget when the caller gives none:
	// below the 300 s heartbeat timeout of the project's lifecycle hook.
	DefaultASGBudget = 280 * time.Second
	// DefaultRebalanceBudget bounds the cordon after a rebalance recommendation.
	DefaultRebalanceBudget = time.Minute
	// maxPending bounds the notices waiting to be received; seenCap bounds
	// the notice keys remembered per kind for de-duplication.
	maxPending = 16
	seenCap    = 32
)

// WatcherOptions tune a Watcher; the zero value is the defaults.
type WatcherOptions struct {
	// Interval between polls (default DefaultInterval).
	Interval time.Duration
	// RequestTimeout bounds each metadata request (default DefaultIMDSTimeout).
	RequestTimeout time.Duration
	// SpotBudget: a spot notice's deadline is the action time or when it was
	// seen plus SpotBudget, whichever is earlier (default DefaultSpotBudget).
	SpotBudget time.Duration
	// ASGBudget: an ASG notice's deadline is when it was seen plus ASGBudget
	// (default DefaultASGBudget). The caller derives it from the lifecycle
	// hook: its heartbeat timeout minus a margin when no heartbeats are sent,
	// or up to the hook's global timeout (100 heartbeat timeouts, at most
	// 48 h) when they are.
	ASGBudget time.Duration
	// RebalanceBudget: a rebalance notice's deadline is when it was seen
	// plus RebalanceBudget (default DefaultRebalanceBudget).
	RebalanceBudget time.Duration
	// Clock times the polls and stamps the notices (default: the real clock).
	Clock clock.Clock
	// Log gets the notices, and one line per kind of IMDS failure (default: none).
	Log *zap.Logger
	// Heartbeat is promised before every request and every wait (may be nil).
	Heartbeat *progress.Heartbeat
}

func (o *WatcherOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultIMDSTimeout
	}
	if o.SpotBudget <= 0 {
		o.SpotBudget = DefaultSpotBudget
	}
	if o.ASGBudget <= 0 {
		o.ASGBudget = DefaultASGBudget
	}
	if o.RebalanceBudget <= 0 {
		o.RebalanceBudget = DefaultRebalanceBudget
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
}

// Watcher polls IMDS for the leave signals and emits each notice once.
//
//   - spot/instance-action ({"action","time"}; 404: none): one notice per
//     action and time. A notice that disappears and comes back with the same
//     time (IMDS flapping) is not emitted again.
//   - autoscaling/target-lifecycle-state (text): "Terminated" is one notice
//     for the life of the Watcher (an instance never goes back from
//     Terminating); "InService" and anything else is nothing.
//   - events/recommendations/rebalance ({"noticeTime"}; 404: none): one
//     notice per noticeTime; a recommendation with a new noticeTime is new.
//
// A failing request is logged once per kind of failure (HTTP status,
// timeout, network, other) until IMDS answers every path again, which is
// logged once too; polling goes on whatever happens.
//
// A Watcher is used by one Run at a time.
type Watcher struct {
	md   Metadata
	opts WatcherOptions

	spotSeen, rebalanceSeen seen
	asgEmitted              bool
	// failing holds the failure classes logged since IMDS last answered.
	failing map[string]bool
}

// NewWatcher returns a Watcher reading md.
func NewWatcher(md Metadata, opts WatcherOptions) *Watcher {
	opts.defaults()
	return &Watcher{md: md, opts: opts, failing: map[string]bool{}}
}

// Run polls at once and then every interval until ctx ends, and sends each
// new notice to out. Notices wait in a small queue while out is not read,
// so polling never stops; when the queue is full the oldest is dropped with
// a log line. Run returns ctx's error.
func (w *Watcher) Run(ctx context.Context, out chan<- Notice) error {
	var pending []Notice
	for {
		for _, n := range w.poll(ctx) {
			if len(pending) == maxPending {
				w.opts.Log.Warn("leave notices are not being received; dropping the oldest", zap.Stringer("notice", pending[0]))
				pending = pending[1:]
			}
			pending = append(pending, n)
		}
		w.opts.Heartbeat.Within(w.opts.Interval)
		t := w.opts.Clock.NewTimer(w.opts.Interval)
		if err := w.deliver(ctx, out, &pending, t.C()); err != nil {
			t.Stop()
			return err
		}
	}
}

// deliver sends pending notices to out until tick fires or ctx ends.
func (w *Watcher) deliver(ctx context.Context, out chan<- Notice, pending *[]Notice, tick <-chan time.Time) error {
	for {
		var send chan<- Notice
		var next Notice
		if len(*pending) > 0 {
			send, next = out, (*pending)[0]
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case send <- next:
			*pending = (*pending)[1:]
		case <-tick:
			return nil
		}
	}
}

// poll reads the three signals once and returns the new notices.
func (w *Watcher) poll(ctx context.Context) []Notice {
	var notices []Notice
	failed := false
	for _, path := range []string{PathSpotInstanceAction, PathTargetLifecycleState, PathRebalance} {
		w.opts.Heartbeat.Within(w.opts.RequestTimeout)
		rctx, cancel := context.WithTimeout(ctx, w.opts.RequestTimeout)
		value, found, err := w.md.GetMetadata(rctx, path)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return notices // stopping: not an IMDS failure
			}
			failed = true
			w.failure(errorClass(err), path, err)
			continue
		}
		if !found {
			continue
		}
		now := w.opts.Clock.Now()
		var n *Notice
		switch path {
		case PathSpotInstanceAction:
			n = w.spot(value, now)
		case PathTargetLifecycleState:
			n = w.lifecycle(value, now)
		case PathRebalance:
			n = w.rebalance(value, now)
		}
		if n != nil {
			w.opts.Log.Info("leave notice", zap.String("kind", string(n.Kind)), zap.String("action", n.Action),
				zap.Time("noticeTime", n.NoticeTime), zap.Time("deadline", n.Deadline))
			notices = append(notices, *n)
		}
	}
	if !failed && len(w.failing) > 0 {
		w.opts.Log.Info("instance metadata service answers again")
		clear(w.failing)
	}
	return notices
}

// failure logs err once per class until IMDS answers again.
func (w *Watcher) failure(class, path string, err error) {
	if w.failing[class] {
		return
	}
	w.failing[class] = true
	w.opts.Log.Warn("cannot read a leave signal from the instance metadata service; polling on",
		zap.String("class", class), zap.String("path", path), zap.Error(err))
}

func (w *Watcher) spot(value string, now time.Time) *Notice {
	var v struct {
		Action string `json:"action"`
		Time   string `json:"time"`
	}
	key := value
	deadline := now.Add(w.opts.SpotBudget)
	if err := json.Unmarshal([]byte(value), &v); err != nil {
		// IMDS answers this path only when a notice is there: act on it.
		w.failure("malformed "+PathSpotInstanceAction, PathSpotInstanceAction, err)
	} else {
		key = v.Action + "@" + v.Time
		if t, err := time.Parse(time.RFC3339, v.Time); err == nil && t.Before(deadline) {
			deadline = t
		}
	}
	if !w.spotSeen.add(key) {
		return nil
	}
	return &Notice{Kind: Spot, NoticeTime: now, Deadline: deadline, Action: v.Action}
}

func (w *Watcher) lifecycle(value string, now time.Time) *Notice {
	if value != "Terminated" || w.asgEmitted {
		return nil
	}
	w.asgEmitted = true
	return &Notice{Kind: ASGTermination, NoticeTime: now, Deadline: now.Add(w.opts.ASGBudget), Action: value}
}

func (w *Watcher) rebalance(value string, now time.Time) *Notice {
	var v struct {
		NoticeTime string `json:"noticeTime"`
	}
	key, noticeTime := value, now
	if err := json.Unmarshal([]byte(value), &v); err != nil {
		w.failure("malformed "+PathRebalance, PathRebalance, err)
	} else {
		key = v.NoticeTime
		if t, err := time.Parse(time.RFC3339, v.NoticeTime); err == nil {
			noticeTime = t
		}
	}
	if !w.rebalanceSeen.add(key) {
		return nil
	}
	return &Notice{Kind: Rebalance, NoticeTime: noticeTime, Deadline: now.Add(w.opts.RebalanceBudget)}
}

// errorClass is the kind of an IMDS failure, for logging each kind once.
func errorClass(err error) string {
	var status interface{ HTTPStatusCode() int }
	var netErr net.Error
	switch {
	case errors.As(err, &status):
		return fmt.Sprintf("HTTP %d", status.HTTPStatusCode())
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &netErr):
		if netErr.Timeout() {
			return "timeout"
		}
		return "network"
	}
	return "other"
}

// seen is a bounded set of notice keys: the oldest is forgotten first.
type seen struct{ keys []string }

// add records key and says whether it is new.
func (s *seen) add(key string) bool {
	for _, k := range s.keys {
		if k == key {
			return false
		}
	}
	if len(s.keys) == seenCap {
		s.keys = s.keys[1:]
	}
	s.keys = append(s.keys, key)
	return true
}
