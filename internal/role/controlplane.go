package role

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/state"
)

// ControlPlaneRunner is the part of kubeadm the control plane runs.
type ControlPlaneRunner interface {
	Init(ctx context.Context, configFile string, extra ...string) error
	Reset(ctx context.Context, criSocket string) error
	// TokenCreate has kubeadm generate a token and returns it.
	TokenCreate(ctx context.Context, kubeconfig string, ttl time.Duration, description string) (string, error)
	TokenDelete(ctx context.Context, kubeconfig, tokenID string) error
	TokenList(ctx context.Context, kubeconfig string) ([]kubeadm.Token, error)
	// Join runs kubeadm join --config (a control-plane join here).
	Join(ctx context.Context, configFile string) error
	// UploadCerts runs kubeadm init phase upload-certs --upload-certs --config.
	UploadCerts(ctx context.Context, configFile, kubeconfig string) error
}

// JoinStore reads and conditionally writes join info (a *join.Store).
type JoinStore interface {
	JoinSource
	Publish(ctx context.Context, info *join.Info, prevETag string) (string, error)
}

// BlockedRecheck is how often a Blocked agent looks again whether the
// operator fixed what it reported.
const BlockedRecheck = 30 * time.Second

// maxGenerationJump is the largest step ahead a foreign join info's
// generation may take before it is called implausible and ignored.
const maxGenerationJump = 1 << 32

// initConfigName is the InitConfiguration file in the state directory.
const initConfigName = "kubeadm-init.yaml"

// ControlPlane initializes the cluster once and keeps fresh join info in S3.
type ControlPlane struct {
	Config   *config.AgentConfig
	Node     kubeadm.Node
	Store    JoinStore
	Kubeadm  ControlPlaneRunner
	Clock    clock.Clock
	Reporter *Reporter
	Log      *zap.Logger
	// Progress is this part's watchdog heartbeat (nil: none).
	Progress *progress.Heartbeat
	// Lock serializes kubeadm runs across agent processes; Run waits for an
	// orphaned kubeadm before it looks at the node (nil: no lock).
	Lock *kubeadm.Lock

	// AdminKubeconfig marks an initialized node (default /etc/kubernetes/admin.conf).
	AdminKubeconfig string
	// CACert is the cluster CA whose hash is published (default /etc/kubernetes/pki/ca.crt).
	CACert string
	// EtcdDataDir is local etcd's data directory (default /var/lib/etcd).
	EtcdDataDir string
	// APIHealth reports whether the API server answers (default: /readyz via AdminKubeconfig).
	APIHealth func(ctx context.Context) error
	// NewToken makes the random bootstrap token of kubeadm init (default: k8s.io/cluster-bootstrap).
	NewToken func() (string, error)
	// RetryBackoff spaces retries of failed init, token and publish steps.
	RetryBackoff *backoff.Backoff
	// VerifyInterval is how often the agent checks that join.json is still the
	// object it wrote (a conditional GET); default 1m.
	VerifyInterval time.Duration
	// Observer hears the published generation and token expiry (nil: none).
	Observer ControlPlaneObserver
	// Election, when set, makes this node take part in the init election
	// among the cluster's control-plane nodes (issue 14): kubeadm init runs
	// only under the init lock and never once the cluster's initialized
	// marker exists. nil: the single-control-plane behaviour, no S3 objects
	// besides the join info.
	Election *InitElection

	endpoint string
	// pending is a token created in the cluster but not yet published.
	pending *join.Info
	// current is the join info this node published last (nil: not known
	// in this process yet); cpInfo the control-plane join info.
	current *join.Info
	cpInfo  *join.ControlPlaneInfo
	// cpInfoLooked says whether the published control-plane join info was
	// read since this node took the uploader lock.
	cpInfoLooked bool
	// cpInfoProblem is the last failure to refresh cpInfo, or "".
	cpInfoProblem string
	// uploaderSince is when this node last took the uploader lock;
	// uploading says whether it holds it now (HoldsUploaderLock).
	uploaderSince time.Time
	uploading     atomic.Bool
	// failedGeneration is the control-plane join info generation this
	// node's last control-plane join failed with (0: none).
	failedGeneration int64
	// verifyProblem is the class of the last failed verify round, or "".
	verifyProblem string
	// crashPoint, in tests, is called at every step boundary of the
	// lifecycle; a test simulates kill -9 there by never returning.
	crashPoint func(step string)
}

// Step boundaries of the control-plane lifecycle (see crashPoint).
const (
	stepLockAcquired    = "after-lock-acquired"
	stepBeforeInit      = "before-init"
	stepInsideInit      = "inside-init"
	stepAfterInit       = "after-init"
	stepAfterMarker     = "after-marker-written"
	stepAfterTokenMade  = "after-token-create"
	stepAfterPublish    = "after-publish"
	stepAfterStateWrite = "after-state-write"
	stepAfterOldDeleted = "after-old-token-delete"
)

func (c *ControlPlane) step(name string) {
	if c.crashPoint != nil {
		c.crashPoint(name)
	}
}

func (c *ControlPlane) defaults() {
	paths := kubeadm.Paths{Dir: c.Config.Kubeadm.ConfigDir}
	if c.AdminKubeconfig == "" {
		c.AdminKubeconfig = paths.Admin()
	}
	if c.CACert == "" {
		c.CACert = paths.CACert()
	}
	if c.EtcdDataDir == "" {
		c.EtcdDataDir = kubeadm.EtcdDataDir
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
	return filepath.Join(c.Config.StateDir, initConfigName)
}

func (c *ControlPlane) ttl() time.Duration { return c.Config.ControlPlane.TokenTTL.Duration }

// Run initializes the control plane if needed, then publishes join info and
// replaces the token at half-life until ctx ends.
func (c *ControlPlane) Run(ctx context.Context) error {
	c.defaults()
	endpoint, err := kubeadm.ControlPlaneEndpoint(c.Config, c.Node)
	if err != nil {
		return err
	}
	c.endpoint = endpoint
	if st := c.Reporter.State(); st.UploaderLockHolder != "" {
		// What an earlier process saw; this one has not looked yet.
		c.Reporter.Update(func(s *state.State) { s.UploaderLockHolder = "" })
	}
	if err := waitForKubeadmLock(ctx, c.Lock, c.Reporter, c.Progress, orphanLimit(c.Config.Kubeadm)); err != nil {
		return err
	}
	removeLeftovers(c.Log, c.Config.StateDir, initConfigName)
	if err := c.bringUp(ctx); err != nil {
		return err
	}
	if c.cpJoinEnabled() {
		return c.publishAsUploader(ctx)
	}
	c.uploading.Store(true)
	defer c.uploading.Store(false)
	return c.publishLoop(ctx)
}

// HoldsUploaderLock says whether this process publishes join info now: it
// holds the uploader lock (or, without the S3 election, runs its publish
// loop). Safe for concurrent use.
func (c *ControlPlane) HoldsUploaderLock() bool { return c.uploading.Load() }

// bringUp returns once the control plane is initialized and its API server
// answers: it initializes a fresh node, finishes an interrupted init, and
// never runs kubeadm init or reset over a cluster that finished initializing.
func (c *ControlPlane) bringUp(ctx context.Context) error {
	for {
		st := c.Reporter.State()
		adminErr := kubeadm.CheckKubeconfig(c.AdminKubeconfig)
		switch {
		case !st.InitializedAt.IsZero() && adminErr == nil:
			c.Log.Info("control plane already initialized; kubeadm init will not run again",
				zap.String("kubeconfig", c.AdminKubeconfig), zap.Time("initializedAt", st.InitializedAt))
			if c.Election != nil {
				again, err := c.recordInitialized(ctx)
				if err != nil {
					return err
				}
				if again {
					continue
				}
			}
			return c.waitForAPI(ctx)
		case !st.InitializedAt.IsZero():
			c.Reporter.Condition(state.PhaseBlocked, "initialized-without-admin-conf", fmt.Sprintf(
				"blocked: state.json says this control plane was initialized at %s, but %s is not usable (%v); "+
					"kubestrap will not run kubeadm init or reset over a live cluster. Restore it "+
					"(kubeadm init phase kubeconfig admin, or fix kubeadm.configDir); to start over deliberately, "+
					"run kubeadm reset -f and remove %s",
				st.InitializedAt.Format(time.RFC3339), c.AdminKubeconfig, adminErr, state.Path(c.Config.StateDir)))
		case !st.ControlPlaneJoinStartedAt.IsZero():
			// A control-plane join this agent started never finished (crash,
			// reboot, kill): undo it, then look again (and join again).
			if err := c.undoControlPlaneJoin(ctx, fmt.Sprintf("the control-plane join started at %s was interrupted",
				st.ControlPlaneJoinStartedAt.UTC().Format(time.RFC3339))); err != nil {
				return err
			}
			continue
		case !st.InitStartedAt.IsZero():
			// An init this agent started never finished (crash, reboot, kill):
			// no join info was published for it, so nothing joined; redo it.
			if c.Election != nil {
				if done, err := c.electAndInit(ctx); err != nil || done {
					return c.afterInit(ctx, err)
				}
				break // initialized elsewhere, or to be looked at again
			}
			if err := c.initialize(ctx, interruptedInit(st), nil); err != nil {
				return err
			}
			return c.waitForAPI(ctx)
		case adminErr == nil:
			// The state was lost (or written by an older agent): rebuild it
			// from the node.
			c.Log.Warn("state.json has no record of an init, but this node has a usable admin.conf: "+
				"taking the control plane as initialized", zap.String("kubeconfig", c.AdminKubeconfig))
			c.Reporter.Update(func(s *state.State) { s.InitializedAt = modTime(c.AdminKubeconfig, c.Clock.Now()).UTC() })
			continue
		default:
			evidence := c.clusterStateOnNode()
			if len(evidence) == 0 {
				if c.Election != nil {
					if done, err := c.electAndInit(ctx); err != nil || done {
						return c.afterInit(ctx, err)
					}
					break // initialized elsewhere, or to be looked at again
				}
				if err := c.initialize(ctx, "", nil); err != nil {
					return err
				}
				return c.waitForAPI(ctx)
			}
			c.Reporter.Condition(state.PhaseBlocked, "cluster-state-without-record", fmt.Sprintf(
				"blocked: this node holds control-plane state (%s) but %s is not usable (%v) and state.json has no record "+
					"of an init; kubestrap will not run kubeadm init or reset over it. Restore admin.conf (or fix "+
					"kubeadm.configDir); to start over deliberately, run kubeadm reset -f",
				strings.Join(evidence, ", "), c.AdminKubeconfig, adminErr))
		}
		if err := sleep(ctx, c.Clock, c.Progress, BlockedRecheck); err != nil {
			return err
		}
	}
}

// afterInit waits for the API server after this node's init, or returns
// the error that ended it.
func (c *ControlPlane) afterInit(ctx context.Context, err error) error {
	if err != nil {
		return err
	}
	return c.waitForAPI(ctx)
}

// interruptedInit says why an init must be redone when state.json records
// one that started and never finished, else "".
func interruptedInit(st state.State) string {
	if st.InitStartedAt.IsZero() || !st.InitializedAt.IsZero() {
		return ""
	}
	return fmt.Sprintf("kubeadm init started at %s was interrupted before it finished", st.InitStartedAt.Format(time.RFC3339))
}

// clusterStateOnNode lists what on this node belongs to a cluster: etcd
// data, the API server manifest, the CA key.
func (c *ControlPlane) clusterStateOnNode() []string {
	paths := kubeadm.Paths{Dir: filepath.Dir(c.AdminKubeconfig)}
	var found []string
	for _, p := range []string{filepath.Join(c.EtcdDataDir, "member"), paths.APIServerManifest(), paths.CAKey()} {
		if _, err := os.Stat(p); err == nil {
			found = append(found, p)
		}
	}
	return found
}

func modTime(path string, fallback time.Time) time.Time {
	if fi, err := os.Stat(path); err == nil {
		return fi.ModTime()
	}
	return fallback
}

func (c *ControlPlane) waitForAPI(ctx context.Context) error {
	b := backoff.New(time.Second, 30*time.Second)
	for {
		c.Progress.Within(RemoteCallTimeout)
		hctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
		err := c.APIHealth(hctx)
		cancel()
		if err == nil {
			return nil
		}
		c.Reporter.Condition(state.PhaseWaitingAPI, "api-not-ready",
			fmt.Sprintf("control plane already initialized; waiting for the API server to become healthy: %v", err))
		if err := sleep(ctx, c.Clock, c.Progress, b.Next()); err != nil {
			return err
		}
	}
}

// initialize runs kubeadm init until it succeeds. It records that an init
// started before running kubeadm and that it finished after, so a restart
// in between knows. Before a retry (and when interrupted is set, before the
// first attempt) it undoes the unfinished init with kubeadm reset -f. fence,
// when set, is asked right before each kubeadm init whether this node may
// still run it (the init lease); its error is returned as it is.
func (c *ControlPlane) initialize(ctx context.Context, interrupted string, fence func() error) error {
	b := c.RetryBackoff
	resetFirst := interrupted != ""
	for attempt := 1; ; attempt++ {
		if resetFirst {
			msg := "kubeadm init failed; resetting with kubeadm reset -f before the next attempt"
			if attempt == 1 {
				msg = interrupted + "; nothing can have joined before the first publication, so resetting with kubeadm reset -f and initializing again"
			}
			c.Reporter.Phase(state.PhaseInitializing, msg)
			c.Progress.Within(ResetTimeout + kubeadm.GracePeriod)
			rctx, cancel := context.WithTimeout(ctx, ResetTimeout)
			err := c.Kubeadm.Reset(rctx, c.Config.Kubeadm.CRISocket)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				delay := b.Next()
				c.Reporter.Condition(state.PhaseInitFailed, "reset-failed",
					fmt.Sprintf("kubeadm reset -f of an unfinished init failed: %v; retrying in %s", err, delay.Round(time.Second)))
				if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
					return err
				}
				continue
			}
		}
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
		issued := c.Clock.Now()
		c.Reporter.Update(func(s *state.State) {
			s.InitStartedAt, s.InitializedAt = issued.UTC(), time.Time{}
			s.PendingTokenID = join.TokenID(token)
		})
		c.step(stepBeforeInit)
		if fence != nil {
			if err := fence(); err != nil {
				_ = os.Remove(path) // it holds the first token's secret
				return err
			}
		}
		c.Reporter.Phase(state.PhaseInitializing,
			fmt.Sprintf("initializing the control plane with kubeadm init (endpoint %s)", c.endpoint),
			zap.Int("attempt", attempt))
		c.Progress.Within(c.Config.Kubeadm.InitTimeout.Duration + kubeadm.GracePeriod)
		ictx, cancel := context.WithTimeout(ctx, c.Config.Kubeadm.InitTimeout.Duration)
		err = c.Kubeadm.Init(ictx, path, "--skip-token-print")
		cancel()
		c.step(stepInsideInit)
		_ = os.Remove(path) // it holds the first token's secret
		if err == nil {
			c.Reporter.Update(func(s *state.State) { s.InitializedAt = c.Clock.Now().UTC() })
			c.step(stepAfterInit)
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
		resetFirst = true
		if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
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
	reconciled := false
	// nextVerify is when join.json is checked again (every VerifyInterval,
	// also while the loop wakes more often for join requests).
	var nextVerify time.Time
	for {
		if !reconciled {
			if err := c.reconcile(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				delay := b.Next()
				c.Reporter.Condition(state.PhaseDegraded, "reconcile:"+errorClass(err), fmt.Sprintf(
					"degraded: cannot compare join info in %s with the cluster's tokens: %v; retrying in %s",
					c.Store.URL(), err, delay.Round(time.Second)))
				if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
					return err
				}
				continue
			}
			reconciled = true
		}
		st := c.Reporter.State()
		due, at := c.rotationDue(st)
		due = due || c.pending != nil
		if !due && !c.Clock.Now().Before(nextVerify) {
			nextVerify = c.Clock.Now().Add(c.VerifyInterval)
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
				c.Reporter.Condition(state.PhaseDegraded, "refresh:"+errorClass(err), msg)
				if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
					return err
				}
				continue
			}
			b.Reset()
			st = c.Reporter.State()
			_, at = c.rotationDue(st)
		}
		c.deleteRetiredTokens(ctx)
		if c.cpJoinEnabled() {
			c.refreshControlPlaneInfoLogged(ctx)
		}
		st = c.Reporter.State()
		c.observePublished(st.JoinGeneration, st.TokenExpiresAt)
		c.Reporter.Ready(state.PhasePublished,
			fmt.Sprintf("control plane ready; join info generation %d with token %s published to %s, next refresh at %s",
				st.JoinGeneration, st.TokenID, c.Store.URL(), at.UTC().Format(time.RFC3339)),
			zap.Int64("generation", st.JoinGeneration), zap.String("tokenID", st.TokenID))
		if due {
			nextVerify = c.Clock.Now().Add(c.VerifyInterval) // just written
		}
		wait := min(at.Sub(c.Clock.Now()), max(nextVerify.Sub(c.Clock.Now()), 0))
		if c.cpJoinEnabled() {
			wait = min(wait, c.requestCheckEvery())
		}
		for _, r := range st.RetiredTokens {
			wait = min(wait, r.DeleteAfter.Sub(c.Clock.Now()))
		}
		if err := sleep(ctx, c.Clock, c.Progress, max(wait, 0)); err != nil {
			return err
		}
	}
}

// fetch reads join.json with a deadline.
func (c *ControlPlane) fetch(ctx context.Context, etag string) (*join.Fetched, error) {
	c.Progress.Within(RemoteCallTimeout)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	return c.Store.Fetch(ctx, etag)
}

// publish writes join.json with a deadline.
func (c *ControlPlane) publish(ctx context.Context, info *join.Info, prevETag string) (string, error) {
	c.Progress.Within(RemoteCallTimeout)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	return c.Store.Publish(ctx, info, prevETag)
}

// tokenCall runs one kubeadm token command with a deadline.
func tokenCall[T any](ctx context.Context, hb *progress.Heartbeat, fn func(ctx context.Context) (T, error)) (T, error) {
	hb.Within(RemoteCallTimeout + kubeadm.GracePeriod)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	return fn(ctx)
}

func (c *ControlPlane) deleteToken(ctx context.Context, id string) error {
	_, err := tokenCall(ctx, c.Progress, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, c.Kubeadm.TokenDelete(ctx, c.AdminKubeconfig, id)
	})
	return err
}

// reconcile runs once after start-up, before any refresh. It compares what
// S3 holds with the cluster's bootstrap tokens and state.json, so that a
// crash at any point of a refresh converges: join info this node published
// but had not recorded is adopted (not reported as a foreign writer's), and
// kubestrap tokens that no join info names are deleted.
func (c *ControlPlane) reconcile(ctx context.Context) error {
	tokens, err := tokenCall(ctx, c.Progress, func(ctx context.Context) ([]kubeadm.Token, error) {
		return c.Kubeadm.TokenList(ctx, c.AdminKubeconfig)
	})
	if err != nil {
		return fmt.Errorf("list bootstrap tokens: %w", err)
	}
	live := map[string]bool{}
	for _, t := range tokens {
		if kubeadm.IsKubestrapToken(t.Description) {
			live[t.ID] = true
		}
	}
	f, err := c.fetch(ctx, "")
	if err != nil && !errors.Is(err, join.ErrNotFound) {
		return fmt.Errorf("read join info: %w", err)
	}
	st := c.Reporter.State()
	if f != nil && f.ETag != st.PublishedETag {
		if seen := c.ownPublication(f.Body, live); seen != nil {
			c.Log.Info("adopting join info this node published before it restarted",
				zap.String("object", c.Store.URL()), zap.Int64("generation", seen.Generation), zap.String("tokenID", seen.TokenID()))
			c.Reporter.Update(func(s *state.State) {
				if s.TokenID != "" && s.TokenID != seen.TokenID() {
					s.RetiredTokens = append(s.RetiredTokens, c.retire(s.TokenID, s.TokenExpiresAt))
				}
				s.JoinGeneration, s.TokenID, s.TokenExpiresAt = seen.Generation, seen.TokenID(), seen.ExpiresAt
				s.PublishedETag, s.APIEndpoint = f.ETag, seen.APIServerEndpoint
			})
			st = c.Reporter.State()
		}
	}
	keep := map[string]bool{st.TokenID: true}
	if c.pending != nil {
		keep[c.pending.TokenID()] = true
	}
	var retired []state.RetiredToken
	for _, r := range st.RetiredTokens {
		if live[r.ID] {
			keep[r.ID] = true
			retired = append(retired, r)
		}
	}
	var orphans []string
	for id := range live {
		if !keep[id] {
			orphans = append(orphans, id)
		}
	}
	slices.Sort(orphans)
	for _, id := range orphans {
		if err := c.deleteToken(ctx, id); err != nil {
			return fmt.Errorf("delete bootstrap token %s that no join info names: %w", id, err)
		}
		c.Log.Info("deleted a bootstrap token that no published join info names (left by an interrupted refresh)",
			zap.String("tokenID", id))
	}
	c.Reporter.Update(func(s *state.State) {
		s.RetiredTokens = retired
		s.PendingTokenID = ""
		if c.pending != nil {
			s.PendingTokenID = c.pending.TokenID()
		}
	})
	return nil
}

// ownPublication returns the join info in body when it is exactly what this
// node publishes (valid, this cluster, this endpoint, this CA, a kubestrap
// token the cluster holds): published before a crash, before the state
// write. Anything else is not adopted; a hostile writer who copied the live
// token but changed the endpoint or the CA pin is replaced as foreign.
func (c *ControlPlane) ownPublication(body []byte, live map[string]bool) *join.Info {
	seen, err := join.Parse(body, join.Expectations{Cluster: c.Config.Cluster, Now: c.Clock.Now()})
	if err != nil || seen.APIServerEndpoint != c.endpoint || !live[seen.TokenID()] {
		return nil
	}
	hash, err := kubeadm.CACertHash(c.CACert)
	if err != nil || len(seen.CACertHashes) != 1 || seen.CACertHashes[0] != hash {
		return nil
	}
	return seen
}

// retire keeps a superseded token in state.json until it is deleted: after
// the grace of retireDelay, or at its expiry when that comes first, so that
// state.json always knows every kubestrap token in the cluster.
func (c *ControlPlane) retire(id string, expiresAt time.Time) state.RetiredToken {
	deleteAfter := c.Clock.Now().Add(c.retireDelay())
	if !expiresAt.IsZero() && expiresAt.Before(deleteAfter) {
		deleteAfter = expiresAt
	}
	return state.RetiredToken{ID: id, DeleteAfter: deleteAfter.UTC()}
}

// retireDelay is how long a superseded token stays valid after the new
// join info was published: a worker that read the old info just before has
// up to one poll interval and one join to use it.
func (c *ControlPlane) retireDelay() time.Duration {
	return c.Config.Worker.PollInterval.Duration + c.Config.Kubeadm.JoinTimeout.Duration
}

// deleteRetiredTokens deletes the superseded tokens whose grace ended.
func (c *ControlPlane) deleteRetiredTokens(ctx context.Context) {
	now := c.Clock.Now()
	for _, r := range c.Reporter.State().RetiredTokens {
		if now.Before(r.DeleteAfter) {
			continue
		}
		if c.cpInfo != nil && c.cpInfo.TokenID() == r.ID {
			// Its republication with the new token failed so far: the
			// document must not outlive its token.
			if err := c.withdrawControlPlaneInfo(ctx, "the token it names is deleted now"); err != nil {
				c.Log.Warn("cannot withdraw the control-plane join info that names a token deleted now; a control plane "+
					"that joins with it fails once and asks for new info", zap.String("tokenID", r.ID), zap.Error(err))
			}
		}
		if err := c.deleteToken(ctx, r.ID); err != nil {
			c.Log.Warn("cannot delete the superseded bootstrap token; it will expire by itself",
				zap.String("tokenID", r.ID), zap.Error(err))
		} else {
			c.Log.Info("deleted superseded bootstrap token", zap.String("tokenID", r.ID))
		}
		c.step(stepAfterOldDeleted)
		c.Reporter.Update(func(s *state.State) {
			s.RetiredTokens = slices.DeleteFunc(s.RetiredTokens, func(x state.RetiredToken) bool { return x.ID == r.ID })
		})
	}
}

// publishedIsOurs checks with a conditional GET that join.json is still the
// object this agent wrote; it returns why not, or "".
func (c *ControlPlane) publishedIsOurs(ctx context.Context, st state.State) string {
	f, err := c.fetch(ctx, st.PublishedETag)
	switch {
	case errors.Is(err, join.ErrNotFound):
		return "join info in S3 was removed"
	case err != nil:
		// Logged once per kind of failure, not at every verify round.
		if class := errorClass(err); class != c.verifyProblem {
			c.verifyProblem = class
			c.Log.Warn("cannot check the published join info", zap.String("object", c.Store.URL()), zap.Error(err))
		}
		return ""
	case f.NotModified:
		c.verifyProblem = ""
		return ""
	}
	return "join info in S3 was changed by another writer"
}

// rotate creates a new token (unless one is pending), publishes join info
// for it and retires the superseded token.
func (c *ControlPlane) rotate(ctx context.Context) error {
	st := c.Reporter.State()
	now := c.Clock.Now()
	gen, err := join.NextGeneration(st.JoinGeneration)
	if err != nil {
		return fmt.Errorf("next join info generation after %d: %w", st.JoinGeneration, err)
	}
	// A pending token that has lost a quarter of its life is not worth
	// publishing: remove it from the cluster and make a fresh one.
	if c.pending != nil && now.After(c.pending.IssuedAt.Add(c.ttl()/4)) {
		if err := c.deleteToken(ctx, c.pending.TokenID()); err != nil {
			c.Log.Warn("cannot delete an unpublished bootstrap token; it will expire by itself",
				zap.String("tokenID", c.pending.TokenID()), zap.Error(err))
		}
		c.pending = nil
		c.Reporter.Update(func(s *state.State) { s.PendingTokenID = "" })
	}
	if c.pending == nil {
		// A log line, not a phase: during an outage this runs at every
		// retry, and the Degraded report must stay de-duplicated.
		c.Log.Info(fmt.Sprintf("creating a bootstrap token for join info generation %d", gen), zap.Int64("generation", gen))
		token, err := tokenCall(ctx, c.Progress, func(ctx context.Context) (string, error) {
			return c.Kubeadm.TokenCreate(ctx, c.AdminKubeconfig, c.ttl(), kubeadm.TokenDescription(gen))
		})
		if err != nil {
			return fmt.Errorf("create bootstrap token: %w", err)
		}
		c.pending = c.newInfo(token, now)
		c.Reporter.Update(func(s *state.State) { s.PendingTokenID = c.pending.TokenID() })
		c.step(stepAfterTokenMade)
	}
	info := *c.pending
	hash, err := kubeadm.CACertHash(c.CACert)
	if err != nil {
		return err
	}
	info.CACertHashes = []string{hash}
	info.Generation = gen

	etag, err := c.publish(ctx, &info, st.PublishedETag)
	if errors.Is(err, join.ErrNotFound) {
		// Removed since this agent wrote it (an operator's aws s3 rm, a
		// delete marker): the If-Match write has nothing to match.
		c.Log.Warn("join info in S3 was removed; publishing it again", zap.String("object", c.Store.URL()))
		etag, err = c.publish(ctx, &info, "")
	}
	if errors.Is(err, join.ErrConflict) {
		etag, err = c.replaceForeign(ctx, &info, st.PublishedETag)
	}
	if err != nil {
		return fmt.Errorf("publish join info: %w", err)
	}
	c.step(stepAfterPublish)
	c.current = &info
	c.pending = nil
	old := st.TokenID
	c.Reporter.Update(func(s *state.State) {
		s.JoinGeneration, s.TokenID, s.TokenExpiresAt = info.Generation, info.TokenID(), info.ExpiresAt
		s.PublishedETag, s.LastPublish, s.APIEndpoint = etag, c.Clock.Now().UTC(), info.APIServerEndpoint
		s.PendingTokenID = ""
		if old != "" && old != info.TokenID() {
			s.RetiredTokens = append(s.RetiredTokens, c.retire(old, st.TokenExpiresAt))
		}
	})
	c.step(stepAfterStateWrite)
	c.Log.Info("published join info", zap.String("object", c.Store.URL()), zap.Int64("generation", info.Generation),
		zap.String("tokenID", info.TokenID()), zap.Time("expiresAt", info.ExpiresAt))
	return nil
}

// replaceForeign handles a conditional write that lost: someone else wrote
// join.json. The agent is the only legitimate writer, so it says so loudly
// and replaces the object, conditionally on what it now sees.
func (c *ControlPlane) replaceForeign(ctx context.Context, info *join.Info, expected string) (string, error) {
	f, err := c.fetch(ctx, "")
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
			c.followGeneration(info, seen.Generation)
		}
	}
	c.Log.Warn("join info in S3 is not the object this agent last wrote; replacing it",
		zap.String("object", c.Store.URL()), zap.String("expectedETag", expected), zap.String("foundETag", current))
	return c.publish(ctx, info, current)
}

// followGeneration moves info's generation past a foreign one, so workers
// that remember a refused generation accept the replacement; a foreign
// generation too far ahead (near the end of the range, or an implausible
// jump) is logged and ignored.
func (c *ControlPlane) followGeneration(info *join.Info, foreign int64) {
	if foreign-info.Generation > maxGenerationJump {
		c.Log.Warn("ignoring the implausible generation of foreign join info",
			zap.Int64("foreignGeneration", foreign), zap.Int64("generation", info.Generation))
		return
	}
	next, err := join.NextGeneration(foreign)
	if err != nil {
		c.Log.Warn("ignoring the generation of foreign join info", zap.Int64("foreignGeneration", foreign), zap.Error(err))
		return
	}
	info.Generation = next
}
