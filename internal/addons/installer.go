package addons

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/progress"
)

// Target applies objects to the cluster (an *Applier).
type Target interface {
	Apply(ctx context.Context, objs []Object) error
}

// Installer is the control plane's add-on part: once the cluster is
// initialized it applies the add-on objects, retrying until they are all
// applied, then rests until the agent stops. Every agent start applies them
// again, which changes nothing that is already as the manifests say.
type Installer struct {
	// Objects are what to apply, in order (from Load).
	Objects []Object
	// Initialized reports whether this node's cluster is initialized (the
	// control plane records it in state.json).
	Initialized func() bool
	// Connect returns the Target of the initialized cluster.
	Connect func() (Target, error)
	// OnResult is told the outcome: the time of the complete apply, or the
	// error of a failed attempt when it differs from the previous one.
	OnResult func(appliedAt time.Time, err error)
	Clock    clock.Clock
	Log      *zap.Logger
	// Progress is the part's watchdog heartbeat (nil: none).
	Progress *progress.Heartbeat
	// Backoff spaces failed attempts (default 2s doubling to 1m).
	Backoff *backoff.Backoff
	// Poll is how often it looks whether the cluster is initialized (default 2s).
	Poll time.Duration
	// Timeout bounds one attempt at applying every object (default 2m).
	Timeout time.Duration
}

// Run applies the add-ons once the cluster is initialized and returns only
// when ctx ends.
func (in *Installer) Run(ctx context.Context) error {
	if in.Backoff == nil {
		in.Backoff = backoff.New(2*time.Second, time.Minute)
	}
	if in.Poll == 0 {
		in.Poll = 2 * time.Second
	}
	if in.Timeout == 0 {
		in.Timeout = 2 * time.Minute
	}
	for !in.Initialized() {
		if err := in.sleep(ctx, in.Poll); err != nil {
			return err
		}
	}
	var target Target
	lastClass := ""
	for {
		err := in.attempt(ctx, &target)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := in.Backoff.Next()
		if class := err.Error(); class != lastClass {
			lastClass = class
			in.Log.Warn("cannot apply the add-ons yet; retrying", zap.Error(err), zap.Duration("retryIn", delay))
			in.OnResult(time.Time{}, err)
		}
		if err := in.sleep(ctx, delay); err != nil {
			return err
		}
	}
	in.Log.Info("add-ons applied", zap.Int("objects", len(in.Objects)))
	in.OnResult(in.Clock.Now().UTC(), nil)
	in.Progress.Done()
	<-ctx.Done()
	return ctx.Err()
}

func (in *Installer) attempt(ctx context.Context, target *Target) error {
	if *target == nil {
		t, err := in.Connect()
		if err != nil {
			return fmt.Errorf("connect to the cluster: %w", err)
		}
		*target = t
	}
	in.Progress.Within(in.Timeout)
	actx, cancel := context.WithTimeout(ctx, in.Timeout)
	defer cancel()
	err := (*target).Apply(actx, in.Objects)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("applying the add-ons took longer than %s: %w", in.Timeout, err)
	}
	return err
}

func (in *Installer) sleep(ctx context.Context, d time.Duration) error {
	in.Progress.Within(d)
	t := in.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
