package ecr

import (
	"context"
	"os"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
)

// Refresher keeps the kubelet's ECR credentials fresh: it fetches them,
// writes them, and fetches again at half their life, retrying with backoff.
type Refresher struct {
	Client      API
	RegistryIDs []string
	Path        string
	Clock       clock.Clock
	Log         *zap.Logger
	// OnUpdate hears about every attempt: creds on success, err on failure.
	OnUpdate func(creds *Credentials, err error)
	// Fallback is the refresh interval for credentials without a usable
	// expiry (default 1h); MaxInterval caps the wait (default 6h).
	Fallback, MaxInterval time.Duration
	// Backoff spaces retries after errors (default 5s doubling to 5m).
	Backoff *backoff.Backoff
	// CheckInterval is how often the refresher checks that the file still
	// exists (kubeadm reset empties /var/lib/kubelet); default 15s.
	CheckInterval time.Duration

	kick chan struct{}
}

// NewRefresher returns a Refresher ready for Kick before Run starts.
func NewRefresher(r Refresher) *Refresher {
	r.kick = make(chan struct{}, 1)
	return &r
}

// Kick asks for a refresh now, for example right after the node joined.
func (r *Refresher) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run refreshes until ctx ends.
func (r *Refresher) Run(ctx context.Context) error {
	if r.Fallback == 0 {
		r.Fallback = time.Hour
	}
	if r.MaxInterval == 0 {
		r.MaxInterval = 6 * time.Hour
	}
	if r.Backoff == nil {
		r.Backoff = backoff.New(5*time.Second, 5*time.Minute)
	}
	if r.CheckInterval == 0 {
		r.CheckInterval = 15 * time.Second
	}
	if r.kick == nil {
		r.kick = make(chan struct{}, 1)
	}
	for {
		wait := r.refreshOnce(ctx)
		if err := r.waitForNext(ctx, wait); err != nil {
			return err
		}
	}
}

// waitForNext returns when the next refresh is due, a Kick arrived, or the
// credentials file disappeared.
func (r *Refresher) waitForNext(ctx context.Context, wait time.Duration) error {
	due := r.Clock.NewTimer(wait)
	defer due.Stop()
	for {
		check := r.Clock.NewTimer(r.CheckInterval)
		select {
		case <-ctx.Done():
			check.Stop()
			return ctx.Err()
		case <-due.C():
			check.Stop()
			return nil
		case <-r.kick:
			check.Stop()
			return nil
		case <-check.C():
			if _, err := os.Stat(r.Path); os.IsNotExist(err) {
				r.Log.Info("ECR credentials file is gone (kubeadm reset?); writing it again", zap.String("path", r.Path))
				return nil
			}
		}
	}
}

// refreshOnce fetches and writes credentials and returns how long to wait.
func (r *Refresher) refreshOnce(ctx context.Context) time.Duration {
	creds, err := Fetch(ctx, r.Client, r.RegistryIDs)
	if err == nil {
		err = Write(r.Path, creds)
	}
	if r.OnUpdate != nil {
		r.OnUpdate(creds, err)
	}
	if err != nil {
		delay := r.Backoff.Next()
		r.Log.Warn("cannot refresh ECR pull credentials; retrying", zap.Duration("retryIn", delay), zap.Error(err))
		return delay
	}
	r.Backoff.Reset()
	now := r.Clock.Now()
	wait := RefreshDelay(now, creds.ExpiresAt, r.Fallback, r.MaxInterval)
	fields := []zap.Field{zap.Strings("registries", creds.Hosts()), zap.String("path", r.Path),
		zap.Time("expiresAt", creds.ExpiresAt), zap.Duration("nextRefreshIn", wait)}
	if !creds.ExpiresAt.After(now) {
		r.Log.Warn("ECR returned credentials that are already expired; refreshing on the fallback interval", fields...)
	} else {
		r.Log.Info("wrote ECR pull credentials for the kubelet", fields...)
	}
	return wait
}
