package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/role"
	"github.com/kubestrap/kubestrap/internal/state"
)

// nodeRecorder records an Event about a Node (an *events.Recorder).
type nodeRecorder interface {
	Node(ctx context.Context, nodeName, eventType, reason, message string) error
}

type nodeEvent struct{ typ, reason, msg string }

// nodeEvents queues Kubernetes Events about this node and records them from
// a part of its own, so that no role ever waits on the API server. An event
// queued before the node has credentials (a worker before its join) waits
// until its kubeconfig is usable. The queue is bounded: when it is full the
// newest event is dropped with a log line (the journal has everything).
type nodeEvents struct {
	node       string
	kubeconfig string
	recorder   nodeRecorder
	clock      clock.Clock
	log        *zap.Logger
	queue      chan nodeEvent
	// credentialsPoll is how often a queued event looks for the kubeconfig.
	credentialsPoll time.Duration
}

// eventQueueSize bounds the events waiting to be recorded.
const eventQueueSize = 64

func newNodeEvents(node, kubeconfig string, rec nodeRecorder, clk clock.Clock, log *zap.Logger) *nodeEvents {
	return &nodeEvents{node: node, kubeconfig: kubeconfig, recorder: rec, clock: clk, log: log,
		queue: make(chan nodeEvent, eventQueueSize), credentialsPoll: 5 * time.Second}
}

// add queues an event; it never blocks.
func (e *nodeEvents) add(typ, reason, msg string) {
	select {
	case e.queue <- nodeEvent{typ, reason, msg}:
	default:
		e.log.Warn("too many Kubernetes Events waiting; dropping one", zap.String("reason", reason))
	}
}

// run records queued events until ctx ends. An event the API server refuses
// is retried twice, then dropped with a warning.
func (e *nodeEvents) run(ctx context.Context, hb *progress.Heartbeat) error {
	for {
		hb.Done() // idle while nothing is queued: not stuck
		var ev nodeEvent
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev = <-e.queue:
		}
		for kubeadm.CheckKubeconfig(e.kubeconfig) != nil {
			if err := wait(ctx, e.clock, hb, e.credentialsPoll); err != nil {
				return err
			}
		}
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if attempt > 0 {
				if werr := wait(ctx, e.clock, hb, 5*time.Second); werr != nil {
					return werr
				}
			}
			hb.Within(events.DefaultTimeout * 3)
			if err = e.recorder.Node(ctx, e.node, ev.typ, ev.reason, ev.msg); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil && ctx.Err() == nil {
			e.log.Warn("cannot record a Kubernetes Event on this node", zap.String("reason", ev.reason), zap.Error(err))
		}
	}
}

func wait(ctx context.Context, clk clock.Clock, hb *progress.Heartbeat, d time.Duration) error {
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

// onWarning turns the problems a role reports into Warning Events: a failed
// join info refresh on the control plane, and a Blocked agent on any node.
func (e *nodeEvents) onWarning(p state.Phase, meaning, msg string) {
	switch {
	case p == state.PhaseBlocked:
		e.add(events.Warning, "KubestrapBlocked", msg)
	case strings.HasPrefix(meaning, "refresh:"):
		e.add(events.Warning, "JoinInfoRefreshFailed", msg)
	}
}

// workerEvents is the worker's observer: metrics first, then Events. A join
// records Joined (Rejoined when this agent saw the node joined before, and
// its membership gone since), and the refusals that came before it.
type workerEvents struct {
	role.WorkerObserver
	ev *nodeEvents

	mu            sync.Mutex
	joined        bool
	refused       map[string]int
	tokenRejected int
}

func (o *workerEvents) Fetch(result string) {
	if o.WorkerObserver != nil {
		o.WorkerObserver.Fetch(result)
	}
	if !strings.HasPrefix(result, "refused_") {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.refused == nil {
		o.refused = map[string]int{}
	}
	o.refused[result]++
}

func (o *workerEvents) JoinAttempt(result string, d time.Duration) {
	if o.WorkerObserver != nil {
		o.WorkerObserver.JoinAttempt(result, d)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch result {
	case role.JoinTokenRejected:
		o.tokenRejected++
	case role.JoinSuccess:
		classes := make([]string, 0, len(o.refused))
		for c := range o.refused {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			o.ev.add(events.Warning, "JoinInfoRefused", fmt.Sprintf(
				"before this join, kubestrap refused the join info in S3 %d time(s): %s (see journalctl -u kubestrap)",
				o.refused[c], strings.TrimPrefix(c, "refused_")))
		}
		if o.tokenRejected > 0 {
			o.ev.add(events.Warning, "JoinTokenRejected", fmt.Sprintf(
				"before this join, the API server refused the published token %d time(s) (expired or deleted); "+
					"kubestrap waited for newer join info", o.tokenRejected))
		}
		reason, msg := "Joined", fmt.Sprintf("kubestrap joined this node to the cluster (kubeadm join took %s)", d.Round(time.Second))
		if o.joined {
			reason = "Rejoined"
			msg = fmt.Sprintf("kubestrap joined this node again after its membership was gone (kubelet.conf removed, "+
				"as by kubeadm reset); kubeadm join took %s", d.Round(time.Second))
		}
		o.ev.add(events.Normal, reason, msg)
		o.joined, o.refused, o.tokenRejected = true, nil, 0
	}
}

// controlPlaneEvents is the control plane's observer: metrics, then a
// JoinInfoPublished Event for every new generation.
type controlPlaneEvents struct {
	role.ControlPlaneObserver
	ev     *nodeEvents
	bucket string

	mu   sync.Mutex
	last int64
}

func (o *controlPlaneEvents) Published(generation int64, tokenExpires time.Time) {
	if o.ControlPlaneObserver != nil {
		o.ControlPlaneObserver.Published(generation, tokenExpires)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if generation == o.last {
		return
	}
	o.last = generation
	o.ev.add(events.Normal, "JoinInfoPublished", fmt.Sprintf(
		"kubestrap published join info generation %d to %s; its token expires at %s",
		generation, o.bucket, tokenExpires.UTC().Format(time.RFC3339)))
}
