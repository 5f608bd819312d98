package role

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/state"
)

// JoinRunner is the part of kubeadm a worker runs.
type JoinRunner interface {
	Join(ctx context.Context, configFile string) error
	Reset(ctx context.Context, criSocket string) error
}

// NodeStillRegisteredRetry is the wait before joining again when the API
// server still lists this node as Ready.
const NodeStillRegisteredRetry = 10 * time.Second

// Worker waits for join info, joins the node and watches that it stays joined.
type Worker struct {
	Config   *config.AgentConfig
	Node     kubeadm.Node
	Source   JoinSource
	Kubeadm  JoinRunner
	Clock    clock.Clock
	Reporter *Reporter
	Log      *zap.Logger
	// KubeletKubeconfig marks a joined node (default /etc/kubernetes/kubelet.conf).
	KubeletKubeconfig string
	// MembershipCheckInterval is how often a joined node checks it still is (default 10s).
	MembershipCheckInterval time.Duration
	// RetryBackoff spaces retries after failed joins (default 5s doubling to 5m).
	RetryBackoff *backoff.Backoff
	// Rand returns floats in [0,1) for jitter (default math/rand/v2).
	Rand func() float64
	// OnJoined, when set, runs after every successful join (the agent
	// refreshes the kubelet's ECR credentials, which kubeadm reset removes).
	OnJoined func()

	etag   string
	cached *join.Info
}

func (w *Worker) defaults() {
	if w.KubeletKubeconfig == "" {
		w.KubeletKubeconfig = kubeadm.KubeletKubeconfig
	}
	if w.MembershipCheckInterval == 0 {
		w.MembershipCheckInterval = 10 * time.Second
	}
	if w.RetryBackoff == nil {
		w.RetryBackoff = backoff.New(5*time.Second, 5*time.Minute)
	}
	if w.Rand == nil {
		w.Rand = rand.Float64
	}
}

// JoinConfigPath is where the worker writes its JoinConfiguration (0600).
func (w *Worker) JoinConfigPath() string {
	return filepath.Join(w.Config.StateDir, "kubeadm-join.yaml")
}

// Run joins the node and keeps it joined until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	w.defaults()
	var minGeneration int64
	for {
		if err := kubeadm.CheckKubeconfig(w.KubeletKubeconfig); err == nil {
			if err := w.stayJoined(ctx); err != nil {
				return err
			}
			// Membership is gone: fetch join info afresh.
			w.etag, w.cached, minGeneration = "", nil, 0
			continue
		}
		info, err := w.waitForJoinInfo(ctx, minGeneration)
		if err != nil {
			return err
		}
		err = w.join(ctx, info)
		switch {
		case err == nil:
			w.RetryBackoff.Reset()
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case kubeadm.IsTokenRejected(err):
			minGeneration = info.Generation + 1
			w.Reporter.Phase(state.PhaseWaitingJoinInfo,
				fmt.Sprintf("token %s was refused by %s (expired or unknown); waiting for newer join info in %s",
					info.TokenID(), info.APIServerEndpoint, w.Source.URL()),
				zap.String("tokenID", info.TokenID()), zap.Int64("generation", info.Generation), zap.Error(err))
		default:
			delay := w.RetryBackoff.Next()
			msg := fmt.Sprintf("join failed: %v; cleaning up with kubeadm reset, retrying in %s", err, delay.Round(time.Second))
			if kubeadm.IsNodeStillRegistered(err) {
				// Bounded by the node monitor grace period: retry steadily, not with a growing backoff.
				w.RetryBackoff.Reset()
				delay = NodeStillRegisteredRetry
				msg = fmt.Sprintf("the cluster still lists %s as a Ready node (it was joined before a reset); "+
					"waiting for it to turn NotReady, retrying in %s", w.Node.Name, delay)
			}
			w.Reporter.Phase(state.PhaseJoinFailed, msg,
				zap.String("tokenID", info.TokenID()), zap.Int64("generation", info.Generation))
			if rerr := w.Kubeadm.Reset(ctx, w.Config.Kubeadm.CRISocket); rerr != nil {
				w.Log.Warn("kubeadm reset after failed join failed", zap.Error(rerr))
			}
			if err := sleep(ctx, w.Clock, delay); err != nil {
				return err
			}
		}
	}
}

// stayJoined reports the steady state and returns once the node's membership
// is gone (kubelet.conf removed by kubeadm reset). It makes no S3 requests.
func (w *Worker) stayJoined(ctx context.Context) error {
	st := w.Reporter.State()
	w.Reporter.Update(func(s *state.State) {
		if s.JoinedAt.IsZero() {
			s.JoinedAt = w.Clock.Now().UTC()
		}
	})
	w.Reporter.Ready(state.PhaseJoined, fmt.Sprintf("joined as %s", w.Node.Name),
		zap.Int64("generation", st.JoinGeneration))
	for {
		if err := sleep(ctx, w.Clock, w.MembershipCheckInterval); err != nil {
			return err
		}
		if err := kubeadm.CheckKubeconfig(w.KubeletKubeconfig); err != nil {
			w.Reporter.Update(func(s *state.State) { s.JoinedAt = time.Time{} })
			w.Reporter.Phase(state.PhaseWaitingJoinInfo,
				fmt.Sprintf("node is no longer joined (%v); waiting for join info in %s", err, w.Source.URL()))
			return nil
		}
	}
}

// pollDelay is the jittered wait between two GETs: 75-100% of the interval,
// so that pickup latency stays within one interval while many workers spread out.
func (w *Worker) pollDelay() time.Duration {
	return backoff.Jitter(w.Config.Worker.PollInterval.Duration, 0.25, w.Rand())
}

// waitForJoinInfo polls join.json with conditional GETs until it holds valid
// join info of at least minGeneration.
func (w *Worker) waitForJoinInfo(ctx context.Context, minGeneration int64) (*join.Info, error) {
	url := w.Source.URL()
	lastProblem := "waiting for join info in " + url
	w.Reporter.Phase(state.PhaseWaitingJoinInfo, lastProblem)
	report := func(msg string, fields ...zap.Field) {
		if msg == lastProblem {
			return
		}
		lastProblem = msg
		if strings.HasPrefix(msg, "waiting for join info") {
			w.Reporter.Phase(state.PhaseWaitingJoinInfo, msg, fields...)
		} else {
			w.Reporter.Problem(state.PhaseWaitingJoinInfo, msg, fields...)
		}
	}
	for {
		info, problem, fields := w.poll(ctx, minGeneration)
		if info != nil {
			return info, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if problem != "" {
			report(problem, fields...)
		}
		if err := sleep(ctx, w.Clock, w.pollDelay()); err != nil {
			return nil, err
		}
	}
}

// poll makes one conditional GET and returns usable join info, or what is
// wrong for STATUS.
func (w *Worker) poll(ctx context.Context, minGeneration int64) (*join.Info, string, []zap.Field) {
	url := w.Source.URL()
	fetched, err := w.Source.Fetch(ctx, w.etag)
	switch {
	case errors.Is(err, join.ErrNotFound):
		w.etag, w.cached = "", nil
		return nil, "waiting for join info in " + url, nil
	case errors.Is(err, join.ErrAccessDenied):
		w.etag, w.cached = "", nil
		return nil, fmt.Sprintf("waiting for join info in %s (S3 denies access: not published yet, "+
			"or the instance role lacks s3:GetObject on it)", url), nil
	case err != nil:
		return nil, fmt.Sprintf("cannot read join info from %s: %v; retrying", url, err), nil
	}
	info := w.cached
	if !fetched.NotModified {
		w.etag, w.cached = fetched.ETag, nil
		parsed, err := join.Parse(fetched.Body, w.expectations())
		if err != nil {
			return nil, refusal(url, err), []zap.Field{zap.String("etag", fetched.ETag)}
		}
		w.cached, info = parsed, parsed
	}
	if info == nil {
		// Unchanged since it was refused.
		return nil, "", nil
	}
	if err := info.Validate(w.expectations()); err != nil {
		return nil, refusal(url, err), nil
	}
	if info.Generation < minGeneration {
		return nil, fmt.Sprintf("join info generation %d was already refused by the API server; waiting for newer join info in %s",
			info.Generation, url), nil
	}
	return info, "", nil
}

// refusal words a validation failure for STATUS. Stale join info usually
// means the control-plane agent is not refreshing it, so say so.
func refusal(url string, err error) string {
	var r *join.Rejection
	if errors.As(err, &r) && r.Field == "expiresAt" {
		return fmt.Sprintf("refusing join info in %s: %s; waiting for the control plane to publish fresh join info", url, r.Reason)
	}
	return fmt.Sprintf("refusing join info in %s: %v; waiting for valid join info", url, err)
}

func (w *Worker) expectations() join.Expectations {
	return join.Expectations{Cluster: w.Config.Cluster, Now: w.Clock.Now(), Margin: w.Config.Worker.ExpiryMargin.Duration}
}

// join writes the JoinConfiguration built from validated info and runs kubeadm join.
func (w *Worker) join(ctx context.Context, info *join.Info) error {
	doc, err := kubeadm.JoinConfig(w.Config, w.Node, kubeadm.JoinOptions{
		APIServerEndpoint: info.APIServerEndpoint,
		Token:             info.Token,
		CACertHashes:      info.CACertHashes,
	})
	if err != nil {
		return err
	}
	path := w.JoinConfigPath()
	if err := fsutil.WriteFileAtomic(path, doc, 0o600); err != nil {
		return fmt.Errorf("write join configuration: %w", err)
	}
	// The file holds the token secret: keep it only while kubeadm needs it.
	defer os.Remove(path)

	w.Reporter.Update(func(s *state.State) {
		s.JoinGeneration, s.TokenID, s.TokenExpiresAt = info.Generation, info.TokenID(), info.ExpiresAt
		s.APIEndpoint = info.APIServerEndpoint
	})
	w.Reporter.Phase(state.PhaseJoining,
		fmt.Sprintf("joining %s with token %s", info.APIServerEndpoint, info.TokenID()),
		zap.String("tokenID", info.TokenID()), zap.Int64("generation", info.Generation))
	jctx, cancel := context.WithTimeout(ctx, w.Config.Kubeadm.JoinTimeout.Duration)
	defer cancel()
	if err := w.Kubeadm.Join(jctx, path); err != nil {
		return fmt.Errorf("kubeadm join: %w", err)
	}
	if err := kubeadm.CheckKubeconfig(w.KubeletKubeconfig); err != nil {
		return fmt.Errorf("kubeadm join succeeded but the node kubeconfig is not usable: %w", err)
	}
	w.Reporter.Update(func(s *state.State) { s.JoinedAt = w.Clock.Now().UTC() })
	if w.OnJoined != nil {
		w.OnJoined()
	}
	return nil
}
