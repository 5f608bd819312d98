package ecr

import (
	"context"
	"os"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/progress"
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
	// CallTimeout bounds each GetAuthorizationToken call, reading the answer
	// included, so a stalled connection cannot hang the refresher (default
	// DefaultCallTimeout).
	CallTimeout time.Duration
	// Progress is this part's watchdog heartbeat (nil: none): the refresher
	// promises progress before every wait and every call.
	Progress *progress.Heartbeat

	kick chan struct{}
}

// DefaultCallTimeout is the deadline of one ECR call when Refresher.CallTimeout is zero.
const DefaultCallTimeout = 30 * time.Second

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
	if r.CallTimeout <= 0 {
		r.CallTimeout = DefaultCallTimeout
	}
	if r.kick == nil {
		r.kick = make(chan struct{}, 1)
	}
	// A killed agent may have left a temporary file holding full
	// credentials next to the kubelet's config.json.
	if gone := fsutil.RemoveStaleTemps(r.Path); len(gone) > 0 {
		r.Log.Info("removed temporary files of an interrupted credentials write", zap.Strings("files", gone))
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
	r.Progress.Within(wait)
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
	r.Progress.Within(r.CallTimeout)
	callCtx, cancel := context.WithTimeout(ctx, r.CallTimeout)
	creds, err := Fetch(callCtx, r.Client, r.RegistryIDs)
	cancel()
	if err == nil {
		r.Progress.Within(r.CallTimeout)
		var moved *MovedAside
		moved, err = Write(r.Path, creds)
		if moved != nil {
			r.Log.Warn("the kubelet's docker config could not be parsed: moved it aside and wrote a fresh one; "+
				"merge what it held back by hand", zap.String("path", r.Path), zap.String("movedTo", moved.Path),
				zap.String("reason", moved.Reason))
		}
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
