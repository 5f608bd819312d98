package role

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/state"
)

// ControlPlaneRunner is the part of kubeadm the control plane runs.
type ControlPlaneRunner interface {
	Init(ctx context.Context, configFile string, extra ...string) error
	Reset(ctx context.Context, criSocket string) error
	TokenCreate(ctx context.Context, kubeconfig, token string, ttl time.Duration, description string) error
	TokenDelete(ctx context.Context, kubeconfig, tokenID string) error
}

// JoinStore reads and conditionally writes join info (a *join.Store).
type JoinStore interface {
	JoinSource
	Publish(ctx context.Context, info *join.Info, prevETag string) (string, error)
}

// ControlPlane initializes the cluster once and keeps fresh join info in S3.
type ControlPlane struct {
	Config   *config.AgentConfig
	Node     kubeadm.Node
	Store    JoinStore
	Kubeadm  ControlPlaneRunner
	Clock    clock.Clock
	Reporter *Reporter
	Log      *zap.Logger

	// AdminKubeconfig marks an initialized node (default /etc/kubernetes/admin.conf).
	AdminKubeconfig string
	// CACert is the cluster CA whose hash is published (default /etc/kubernetes/pki/ca.crt).
	CACert string
	// APIHealth reports whether the API server answers (default: /readyz via AdminKubeconfig).
	APIHealth func(ctx context.Context) error
	// NewToken makes a random bootstrap token (default: k8s.io/cluster-bootstrap).
	NewToken func() (string, error)
	// RetryBackoff spaces retries of failed init, token and publish steps.
	RetryBackoff *backoff.Backoff
	// VerifyInterval is how often the agent checks that join.json is still the
	// object it wrote (a conditional GET); default 1m.
	VerifyInterval time.Duration

	endpoint string
	// pending is a token created in the cluster but not yet published.
	pending *join.Info
}

func (c *ControlPlane) defaults() {
	if c.AdminKubeconfig == "" {
		c.AdminKubeconfig = kubeadm.AdminKubeconfig
	}
	if c.CACert == "" {
		c.CACert = kubeadm.CACertPath
	}
	if c.APIHealth == nil {
		c.APIHealth = func(ctx context.Context) error { return kubeadm.APIServerHealthy(ctx, c.AdminKubeconfig) }
	}
	if c.NewToken == nil {
		c.NewToken = bootstraputil.GenerateBootstrapToken
	}
	if c.RetryBackoff == nil {
		c.RetryBackoff = backoff.New(5*time.Second, 2*time.Minute)
	}
	if c.VerifyInterval == 0 {
		c.VerifyInterval = time.Minute
	}
}

// InitConfigPath is where the InitConfiguration is written (0600) for kubeadm init.
func (c *ControlPlane) InitConfigPath() string {
	return filepath.Join(c.Config.StateDir, "kubeadm-init.yaml")
}

func (c *ControlPlane) ttl() time.Duration { return c.Config.ControlPlane.TokenTTL.Duration }

// Run initializes the control plane if needed, then publishes join info and
// replaces the token at half-life until ctx ends.
func (c *ControlPlane) Run(ctx context.Context) error {
	c.defaults()
	c.endpoint = ControlPlaneEndpoint(c.Config, c.Node)
	if err := kubeadm.CheckKubeconfig(c.AdminKubeconfig); err == nil {
		c.Log.Info("control plane already initialized; kubeadm init will not run again",
			zap.String("kubeconfig", c.AdminKubeconfig))
		if err := c.waitForAPI(ctx); err != nil {
			return err
		}
	} else if err := c.initialize(ctx); err != nil {
		return err
	}
	return c.publishLoop(ctx)
}

// ControlPlaneEndpoint is the endpoint workers join: the configured one, or
// the advertise address (default: private IP) with the bind port.
func ControlPlaneEndpoint(cfg *config.AgentConfig, node kubeadm.Node) string {
	if cfg.Kubeadm.ControlPlaneEndpoint != "" {
		return cfg.Kubeadm.ControlPlaneEndpoint
	}
	addr := cfg.Kubeadm.AdvertiseAddress
	if addr == "" {
		addr = node.IP
	}
	return net.JoinHostPort(addr, strconv.Itoa(int(cfg.Kubeadm.BindPort)))
}

func (c *ControlPlane) waitForAPI(ctx context.Context) error {
	b := backoff.New(time.Second, 30*time.Second)
	for {
		err := c.APIHealth(ctx)
		if err == nil {
			return nil
		}
		c.Reporter.Phase(state.PhaseWaitingAPI,
			fmt.Sprintf("control plane already initialized; waiting for the API server to become healthy: %v", err))
		if err := sleep(ctx, c.Clock, b.Next()); err != nil {
			return err
		}
	}
}

// initialize runs kubeadm init until it succeeds, with kubeadm reset -f
// between attempts.
func (c *ControlPlane) initialize(ctx context.Context) error {
	b := c.RetryBackoff
	for attempt := 1; ; attempt++ {
		token, err := c.NewToken()
		if err != nil {
			return fmt.Errorf("generate bootstrap token: %w", err)
		}
		doc, _, err := kubeadm.InitConfig(c.Config, c.Node, token, c.ttl())
		if err != nil {
			return fmt.Errorf("build kubeadm init configuration: %w", err)
		}
		path := c.InitConfigPath()
		if err := fsutil.WriteFileAtomic(path, doc, 0o600); err != nil {
			return fmt.Errorf("write kubeadm init configuration: %w", err)
		}
		c.Reporter.Phase(state.PhaseInitializing,
			fmt.Sprintf("initializing the control plane with kubeadm init (endpoint %s)", c.endpoint),
			zap.Int("attempt", attempt))
		issued := c.Clock.Now()
		ictx, cancel := context.WithTimeout(ctx, c.Config.Kubeadm.InitTimeout.Duration)
		err = c.Kubeadm.Init(ictx, path, "--skip-token-print")
		cancel()
		_ = os.Remove(path) // it holds the first token's secret
		if err == nil {
			c.Reporter.Update(func(s *state.State) { s.InitializedAt = c.Clock.Now().UTC() })
			c.pending = c.newInfo(token, issued)
			b.Reset()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := b.Next()
		c.Reporter.Phase(state.PhaseInitFailed,
			fmt.Sprintf("kubeadm init failed: %v; resetting with kubeadm reset -f and retrying in %s", err, delay.Round(time.Second)),
			zap.Int("attempt", attempt))
		if rerr := c.Kubeadm.Reset(ctx, c.Config.Kubeadm.CRISocket); rerr != nil {
			c.Log.Warn("kubeadm reset after failed init failed", zap.Error(rerr))
		}
		if err := sleep(ctx, c.Clock, delay); err != nil {
			return err
		}
	}
}

func (c *ControlPlane) newInfo(token string, issued time.Time) *join.Info {
	return &join.Info{
		APIVersion:        join.APIVersion,
		Kind:              join.Kind,
		Cluster:           c.Config.Cluster,
		APIServerEndpoint: c.endpoint,
		Token:             token,
		KubernetesVersion: c.Config.Kubeadm.KubernetesVersion,
		IssuedAt:          issued.UTC().Truncate(time.Second),
		ExpiresAt:         issued.Add(c.ttl()).UTC().Truncate(time.Second),
	}
}

// rotationDue says whether the published token must be replaced now, and
// when it will be otherwise.
func (c *ControlPlane) rotationDue(st state.State) (bool, time.Time) {
	if st.TokenID == "" || st.PublishedETag == "" || st.TokenExpiresAt.IsZero() {
		return true, time.Time{}
	}
	at := st.TokenExpiresAt.Add(-c.ttl() / 2)
	return !c.Clock.Now().Before(at), at
}

func (c *ControlPlane) publishLoop(ctx context.Context) error {
	b := c.RetryBackoff
	for {
		st := c.Reporter.State()
		due, at := c.rotationDue(st)
		due = due || c.pending != nil
		if !due {
			if reason := c.publishedIsOurs(ctx, st); reason != "" {
				c.Log.Warn(reason+"; publishing fresh join info", zap.String("object", c.Store.URL()))
				due = true
			}
		}
		if due {
			if err := c.rotate(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				delay := b.Next()
				msg := fmt.Sprintf("degraded: cannot refresh join info in %s: %v; retrying in %s", c.Store.URL(), err, delay.Round(time.Second))
				if exp := c.Reporter.State().TokenExpiresAt; !exp.IsZero() {
					msg += fmt.Sprintf("; the published token expires at %s", exp.Format(time.RFC3339))
				}
				c.Reporter.Phase(state.PhaseDegraded, msg)
				if err := sleep(ctx, c.Clock, delay); err != nil {
					return err
				}
				continue
			}
			b.Reset()
			st = c.Reporter.State()
			_, at = c.rotationDue(st)
		}
		c.Reporter.Ready(state.PhasePublished,
			fmt.Sprintf("control plane ready; join info generation %d with token %s published to %s, next refresh at %s",
				st.JoinGeneration, st.TokenID, c.Store.URL(), at.UTC().Format(time.RFC3339)),
			zap.Int64("generation", st.JoinGeneration), zap.String("tokenID", st.TokenID))
		wait := at.Sub(c.Clock.Now())
		if wait > c.VerifyInterval {
			wait = c.VerifyInterval
		}
		if err := sleep(ctx, c.Clock, wait); err != nil {
			return err
		}
	}
}

// publishedIsOurs checks with a conditional GET that join.json is still the
// object this agent wrote; it returns why not, or "".
func (c *ControlPlane) publishedIsOurs(ctx context.Context, st state.State) string {
	f, err := c.Store.Fetch(ctx, st.PublishedETag)
	switch {
	case errors.Is(err, join.ErrNotFound):
		return "join info in S3 was removed"
	case err != nil:
		c.Log.Warn("cannot check the published join info", zap.Error(err))
		return ""
	case f.NotModified:
		return ""
	}
	return "join info in S3 was changed by another writer"
}

// rotate creates a new token (unless one is pending), publishes join info
// for it and deletes the superseded token from the cluster.
func (c *ControlPlane) rotate(ctx context.Context) error {
	st := c.Reporter.State()
	now := c.Clock.Now()
	// A pending token that has lost a quarter of its life is not worth
	// publishing: remove it from the cluster and make a fresh one.
	if c.pending != nil && now.After(c.pending.IssuedAt.Add(c.ttl()/4)) {
		if err := c.Kubeadm.TokenDelete(ctx, c.AdminKubeconfig, c.pending.TokenID()); err != nil {
			c.Log.Warn("cannot delete an unpublished bootstrap token; it will expire by itself",
				zap.String("tokenID", c.pending.TokenID()), zap.Error(err))
		}
		c.pending = nil
	}
	if c.pending == nil {
		token, err := c.NewToken()
		if err != nil {
			return fmt.Errorf("generate bootstrap token: %w", err)
		}
		info := c.newInfo(token, now)
		gen := st.JoinGeneration + 1
		c.Reporter.Phase(state.PhasePublishing, fmt.Sprintf("creating bootstrap token %s", info.TokenID()),
			zap.String("tokenID", info.TokenID()), zap.Int64("generation", gen))
		if err := c.Kubeadm.TokenCreate(ctx, c.AdminKubeconfig, token, c.ttl(), kubeadm.TokenDescription(gen)); err != nil {
			return fmt.Errorf("create bootstrap token: %w", err)
		}
		c.pending = info
	}
	info := *c.pending
	hash, err := kubeadm.CACertHash(c.CACert)
	if err != nil {
		return err
	}
	info.CACertHashes = []string{hash}
	info.Generation = st.JoinGeneration + 1

	etag, err := c.Store.Publish(ctx, &info, st.PublishedETag)
	if errors.Is(err, join.ErrConflict) {
		etag, err = c.replaceForeign(ctx, &info, st.PublishedETag)
	}
	if err != nil {
		return fmt.Errorf("publish join info: %w", err)
	}
	c.pending = nil
	c.Reporter.Update(func(s *state.State) {
		s.JoinGeneration, s.TokenID, s.TokenExpiresAt = info.Generation, info.TokenID(), info.ExpiresAt
		s.PublishedETag, s.LastPublish, s.APIEndpoint = etag, c.Clock.Now().UTC(), info.APIServerEndpoint
	})
	c.Log.Info("published join info", zap.String("object", c.Store.URL()), zap.Int64("generation", info.Generation),
		zap.String("tokenID", info.TokenID()), zap.Time("expiresAt", info.ExpiresAt))
	if old := st.TokenID; old != "" && old != info.TokenID() {
		if err := c.Kubeadm.TokenDelete(ctx, c.AdminKubeconfig, old); err != nil {
			c.Log.Warn("cannot delete the superseded bootstrap token; it will expire by itself",
				zap.String("tokenID", old), zap.Error(err))
		} else {
			c.Log.Info("deleted superseded bootstrap token", zap.String("tokenID", old))
		}
	}
	return nil
}

// replaceForeign handles a conditional write that lost: someone else wrote
// (or removed) join.json. The agent is the only legitimate writer, so it says
// so loudly and replaces the object, conditionally on what it now sees.
func (c *ControlPlane) replaceForeign(ctx context.Context, info *join.Info, expected string) (string, error) {
	f, err := c.Store.Fetch(ctx, "")
	current := ""
	switch {
	case errors.Is(err, join.ErrNotFound):
	case err != nil:
		return "", err
	default:
		current = f.ETag
		var seen struct {
			Generation int64 `json:"generation"`
		}
		if json.Unmarshal(f.Body, &seen) == nil && seen.Generation >= info.Generation {
			info.Generation = seen.Generation + 1
		}
	}
	c.Log.Warn("join info in S3 is not the object this agent last wrote; replacing it",
		zap.String("object", c.Store.URL()), zap.String("expectedETag", expected), zap.String("foundETag", current))
	return c.Store.Publish(ctx, info, current)
}
