package role

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/progress"
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
	// Progress is this part's watchdog heartbeat (nil: none).
	Progress *progress.Heartbeat
	// Lock serializes kubeadm runs across agent processes; Run waits for an
	// orphaned kubeadm before it looks at the node (nil: no lock).
	Lock *kubeadm.Lock
	// Observer hears every join attempt and join info poll (nil: none).
	Observer WorkerObserver

	etag string
	// body is the last object read; it is validated again at every poll, so
	// a refusal for a time-dependent reason (issuedAt ahead of a clock that
	// was behind at boot) does not outlive its cause.
	body []byte
	// crashPoint, in tests, is called at step boundaries (see ControlPlane).
	crashPoint func(step string)
}

// Step boundaries of the worker lifecycle (see crashPoint).
const (
	stepInsideJoin = "inside-join"
	stepAfterJoin  = "after-join"
)

func (w *Worker) step(name string) {
	if w.crashPoint != nil {
		w.crashPoint(name)
	}
}

// joinConfigName is the JoinConfiguration file in the state directory.
const joinConfigName = "kubeadm-join.yaml"

func (w *Worker) defaults() {
	if w.KubeletKubeconfig == "" {
		w.KubeletKubeconfig = kubeadm.Paths{Dir: w.Config.Kubeadm.ConfigDir}.Kubelet()
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
	return filepath.Join(w.Config.StateDir, joinConfigName)
}

// Run joins the node and keeps it joined until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	w.defaults()
	if err := waitForKubeadmLock(ctx, w.Lock, w.Reporter, w.Progress, orphanLimit(w.Config.Kubeadm)); err != nil {
		return err
	}
	removeLeftovers(w.Log, w.Config.StateDir, joinConfigName)
	// refused is the generation whose token the API server refused; only a
	// newer one is worth a join (0: none refused).
	var refused int64
	for {
		if err := kubeadm.CheckKubeconfig(w.KubeletKubeconfig); err == nil {
			if err := w.stayJoined(ctx); err != nil {
				return err
			}
			// Membership is gone: fetch join info afresh.
			w.etag, w.body, refused = "", nil, 0
			continue
		}
		info, err := w.waitForJoinInfo(ctx, refused)
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
			refused = info.Generation
			w.Reporter.Phase(state.PhaseWaitingJoinInfo,
				fmt.Sprintf("token %s was refused by %s (expired or unknown); waiting for newer join info in %s",
					info.TokenID(), info.APIServerEndpoint, w.Source.URL()),
				zap.String("tokenID", info.TokenID()), zap.Int64("generation", info.Generation), zap.Error(err))
		case !w.Reporter.State().JoinedAt.IsZero():
			// kubeadm join succeeded on this node before: whatever is wrong
			// now, a reset would tear down a member of the cluster.
			delay := w.RetryBackoff.Next()
			w.Reporter.Condition(state.PhaseBlocked, "joined-without-kubeconfig:"+errorClass(err), fmt.Sprintf(
				"blocked: this node joined the cluster at %s but %s is not usable, and %v; kubestrap will not reset a node "+
					"that joined. Check kubeadm.configDir; to join afresh, run kubeadm reset -f. Checking again in %s",
				w.Reporter.State().JoinedAt.Format(time.RFC3339), w.KubeletKubeconfig, err, delay.Round(time.Second)))
			if err := sleep(ctx, w.Clock, w.Progress, delay); err != nil {
				return err
			}
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
			w.Progress.Within(ResetTimeout + kubeadm.GracePeriod)
			rctx, cancel := context.WithTimeout(ctx, ResetTimeout)
			if rerr := w.Kubeadm.Reset(rctx, w.Config.Kubeadm.CRISocket); rerr != nil {
				w.Log.Warn("kubeadm reset after failed join failed", zap.Error(rerr))
			}
			cancel()
			if err := sleep(ctx, w.Clock, w.Progress, delay); err != nil {
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
		if err := sleep(ctx, w.Clock, w.Progress, w.MembershipCheckInterval); err != nil {
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
// join info newer than the refused generation.
func (w *Worker) waitForJoinInfo(ctx context.Context, refused int64) (*join.Info, error) {
	if w.Reporter.State().Phase != state.PhaseBlocked {
		// A blocked node retries with the join info it has; its Blocked
		// report stays until something changes.
		w.Reporter.Waiting(state.PhaseWaitingJoinInfo, "not-found", "waiting for join info in "+w.Source.URL())
	}
	for {
		info, p := w.poll(ctx, refused)
		if info != nil {
			return info, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch {
		case p.msg == "":
		case p.expected:
			w.Reporter.Waiting(state.PhaseWaitingJoinInfo, p.meaning, p.msg, p.fields...)
		default:
			// Reported by meaning: a repeat of the same problem (an S3
			// outage, the same refused object) neither rewrites state.json
			// nor logs another warning.
			w.Reporter.Condition(state.PhaseWaitingJoinInfo, p.meaning, p.msg, p.fields...)
		}
		if err := sleep(ctx, w.Clock, w.Progress, w.pollDelay()); err != nil {
			return nil, err
		}
	}
}

// pollProblem is why a poll gave no usable join info.
type pollProblem struct {
	// meaning identifies the problem for de-duplication; msg is for STATUS.
	meaning, msg string
	fields       []zap.Field
	// expected marks an ordinary wait (nothing published yet), not a problem.
	expected bool
}

// poll makes one conditional GET and returns usable join info, or what is
// wrong for STATUS.
func (w *Worker) poll(ctx context.Context, refused int64) (*join.Info, pollProblem) {
	url := w.Source.URL()
	w.Progress.Within(RemoteCallTimeout)
	fctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	fetched, err := w.Source.Fetch(fctx, w.etag)
	cancel()
	switch {
	case errors.Is(err, join.ErrNotFound):
		w.observeFetch(FetchNotFound)
		w.etag, w.body = "", nil
		return nil, pollProblem{meaning: "not-found", msg: "waiting for join info in " + url, expected: true}
	case errors.Is(err, join.ErrAccessDenied):
		w.observeFetch(FetchAccessDenied)
		w.etag, w.body = "", nil
		return nil, pollProblem{meaning: "access-denied", expected: true, msg: fmt.Sprintf("waiting for join info in %s (S3 denies access: not published yet, "+
			"or the instance role lacks s3:GetObject on it)", url)}
	case err != nil:
		if ctx.Err() == nil {
			w.observeFetch(FetchError)
		}
		return nil, pollProblem{meaning: "read-error:" + errorClass(err), msg: fmt.Sprintf("cannot read join info from %s: %v; retrying", url, err)}
	}
	result := FetchNotModified
	if !fetched.NotModified {
		w.etag, w.body = fetched.ETag, fetched.Body
		result = FetchChanged
	}
	if w.body == nil {
		w.observeFetch(FetchNotFound)
		return nil, pollProblem{meaning: "not-found", msg: "waiting for join info in " + url, expected: true}
	}
	// Validated at every poll, also when unchanged: expiry and clock skew
	// depend on the time.
	info, err := join.Parse(w.body, w.expectations())
	if err != nil {
		w.observeFetch(refusedResult(err))
		return nil, pollProblem{meaning: "refused:" + w.etag + ":" + refusalField(err), msg: refusal(url, err),
			fields: []zap.Field{zap.String("etag", w.etag)}}
	}
	if info.Generation <= refused {
		w.observeFetch(FetchRefusedGeneration)
		return nil, pollProblem{meaning: fmt.Sprintf("generation-refused:%d", info.Generation),
			msg: fmt.Sprintf("join info generation %d was already refused by the API server; waiting for newer join info in %s",
				info.Generation, url)}
	}
	w.observeFetch(result)
	return info, pollProblem{}
}

func refusalField(err error) string {
	var r *join.Rejection
	if errors.As(err, &r) {
		return r.Field
	}
	return ""
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
	// The file holds the token secret: keep it only while kubeadm needs it
	// (a leftover of a killed agent is removed at the next start).
	defer os.Remove(path)

	w.Reporter.Update(func(s *state.State) {
		s.JoinGeneration, s.TokenID, s.TokenExpiresAt = info.Generation, info.TokenID(), info.ExpiresAt
		s.APIEndpoint = info.APIServerEndpoint
	})
	msg := fmt.Sprintf("joining %s with token %s", info.APIServerEndpoint, info.TokenID())
	fields := []zap.Field{zap.String("tokenID", info.TokenID()), zap.Int64("generation", info.Generation)}
	if w.Reporter.State().Phase == state.PhaseBlocked {
		// A retry while blocked: the Blocked STATUS stays until it is resolved.
		w.Log.Info(msg, fields...)
	} else {
		w.Reporter.Phase(state.PhaseJoining, msg, fields...)
	}
	w.Progress.Within(w.Config.Kubeadm.JoinTimeout.Duration + kubeadm.GracePeriod)
	jctx, cancel := context.WithTimeout(ctx, w.Config.Kubeadm.JoinTimeout.Duration)
	defer cancel()
	started := w.Clock.Now()
	err = w.Kubeadm.Join(jctx, path)
	took := w.Clock.Since(started)
	w.step(stepInsideJoin)
	if err != nil {
		if ctx.Err() == nil { // not an attempt that failed: the agent is stopping
			w.observeJoin(joinResult(err), took)
		}
		return fmt.Errorf("kubeadm join: %w", err)
	}
	w.Reporter.Update(func(s *state.State) { s.JoinedAt = w.Clock.Now().UTC() })
	w.step(stepAfterJoin)
	if err := kubeadm.CheckKubeconfig(w.KubeletKubeconfig); err != nil {
		w.observeJoin(JoinFailure, took)
		return fmt.Errorf("kubeadm join succeeded but the node kubeconfig is not usable: %w", err)
	}
	w.observeJoin(JoinSuccess, took)
	if w.OnJoined != nil {
		w.OnJoined()
	}
	return nil
}
