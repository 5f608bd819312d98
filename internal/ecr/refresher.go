package ecr

import (
	"context"
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
	for {
		wait := r.refreshOnce(ctx)
		t := r.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
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
