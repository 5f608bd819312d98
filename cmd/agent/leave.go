package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/leave"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/supervisor"
)

// asgBudgetMargin is kept between the drain's deadline after an Auto
// Scaling termination notice and the lifecycle hook's heartbeat timeout.
const asgBudgetMargin = 20 * time.Second

// leaveStatus hears a leave's progress (the agent's Reporter).
type leaveStatus interface {
	Phase(p state.Phase, msg string, fields ...zap.Field)
	Problem(p state.Phase, msg string, fields ...zap.Field)
}

// leaveParts are the worker's two leave parts: "leave-watch" polls the
// instance metadata service for notices, "leave" has the node leave on
// each: an Event, cordon, evictions until the deadline (a rebalance only
// cordons) and, with a lifecycle hook configured, heartbeats and CONTINUE.
type leaveParts struct {
	cfg        config.LeaveConfig
	awsCfg     aws.Config
	node       string
	instanceID string
	kubeconfig string
	events     leave.Events
	status     leaveStatus
	clock      clock.Clock
	log        *zap.Logger
	// records gets this node's leave record on a terminating notice (nil:
	// none).
	records *leave.RecordStore
	// observe hears every leave (the agent's metrics; nil: none).
	observe func(kind string, evicted, left, skipped int, d time.Duration)

	notices chan leave.Notice
}

func addLeaveParts(parts *supervisor.Supervisor, p *leaveParts) {
	p.notices = make(chan leave.Notice, 8)
	md := leave.NewIMDS(p.awsCfg)
	parts.Add("leave-watch", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
		w := leave.NewWatcher(md, leave.WatcherOptions{Interval: p.cfg.PollInterval.Duration, Clock: p.clock,
			ASGBudget: p.cfg.LifecycleHeartbeatTimeout.Duration - asgBudgetMargin, Log: p.log, Heartbeat: hb})
		return w.Run(ctx, p.notices)
	})
	parts.Add("leave", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
		var lc leave.Lifecycle
		if p.cfg.LifecycleHookName != "" {
			var err error
			lc, err = leave.NewASGLifecycle(autoscaling.NewFromConfig(p.awsCfg), md, leave.ASGConfig{
				InstanceID: p.instanceID, HookName: p.cfg.LifecycleHookName, GroupName: p.cfg.AutoScalingGroupName})
			if err != nil {
				return fmt.Errorf("leave: lifecycle hook %s: %w", p.cfg.LifecycleHookName, err)
			}
		}
		for {
			hb.Done() // idle until a notice comes: not stuck
			var n leave.Notice
			select {
			case <-ctx.Done():
				return ctx.Err()
			case n = <-p.notices:
			}
			p.handle(ctx, hb, n, lc)
		}
	})
}

// handle has the node leave on notice n.
func (p *leaveParts) handle(ctx context.Context, hb *progress.Heartbeat, n leave.Notice, lc leave.Lifecycle) {
	if err := kubeadm.CheckKubeconfig(p.kubeconfig); err != nil {
		// Not joined: nothing runs here that could be drained.
		p.status.Problem(state.PhaseLeaving, fmt.Sprintf("%s: this node has not joined (%v); nothing to drain", n, err))
		if n.Kind == leave.ASGTermination && lc != nil {
			hb.Within(30 * time.Second)
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			if err := lc.Complete(cctx, leave.LifecycleContinue); err != nil {
				p.log.Warn("cannot complete the lifecycle action", zap.Error(err))
			}
			cancel()
		}
		return
	}
	if n.Terminates() && p.records != nil {
		// A hint for the control plane's node cleanup, which looks at this
		// instance at once and deletes the Node once EC2 says it is gone.
		hb.Within(30 * time.Second)
		if err := p.records.Put(ctx, leave.NewRecord(p.instanceID, p.node, n)); err != nil {
			p.log.Warn("cannot write the leave record; the control plane will find the terminated instance through EC2 alone", zap.Error(err))
		} else {
			p.log.Info("leave record written", zap.String("key", leave.RecordKey(p.records.Cluster, p.instanceID)))
		}
	}
	opts := leave.Options{Clock: p.clock, Log: p.log, Heartbeat: hb, Events: p.events}
	if n.Kind == leave.ASGTermination {
		opts.Lifecycle = lc
		opts.LifecycleHeartbeat = p.cfg.LifecycleHeartbeatTimeout.Duration / 3
	}
	l, err := leave.NewFromKubeconfig(p.kubeconfig, p.node, opts)
	if err != nil {
		p.status.Problem(state.PhaseLeaving, fmt.Sprintf("%s: cannot talk to the API server with %s: %v", n, p.kubeconfig, err))
		return
	}
	if n.Terminates() {
		p.status.Phase(state.PhaseLeaving, fmt.Sprintf("%s: cordoning this node and evicting its pods before %s",
			n, n.Deadline.UTC().Format(time.RFC3339)))
	}
	res, err := l.Leave(ctx, n)
	if p.observe != nil && ctx.Err() == nil {
		p.observe(string(n.Kind), len(res.Evicted), len(res.Left), len(res.Skipped), res.Finished.Sub(res.Started))
	}
	fields := []zap.Field{zap.Strings("evicted", res.Evicted), zap.Strings("left", res.Left),
		zap.Strings("skipped", res.Skipped), zap.String("credentials", res.Credentials)}
	switch {
	case ctx.Err() != nil:
		return
	case err != nil:
		p.status.Problem(state.PhaseLeaving, res.Summary()+": "+err.Error(), fields...)
	case res.DeadlineHit || len(res.Left) > 0:
		p.status.Problem(state.PhaseLeaving, res.Summary()+"; left: "+strings.Join(res.Left, ", "), fields...)
	default:
		p.status.Phase(state.PhaseLeaving, res.Summary(), fields...)
	}
}
