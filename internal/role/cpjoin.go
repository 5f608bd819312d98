package role

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/kubestrap/kubestrap/internal/fsutil"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/state"
)

// Control-plane join through S3 (issue 14, second slice):
//
//   - The uploader: the control plane that holds <cluster>/cp/uploader-lock.json
//     (at first the one that initialized the cluster) is the only one that
//     publishes join info. Besides join.json it keeps <cluster>/cp/join.json
//     (join.ControlPlaneInfo, readable by the control-plane role only) fresh:
//     the same bootstrap token, and a certificate key of its own for every
//     upload of the cluster's certificates (kubeadm init phase upload-certs
//     --upload-certs --config, the key in a 0600 file, never on a command
//     line). Asked, it uploads again when the upload is older than
//     CertificatesLifetime less certificatesMargin, when the kubeadm-certs
//     Secret is gone (an operator deleted it) or when a join failed with
//     what is published. Whenever it replaces the join token it publishes
//     cp/join.json again with the new token (and the same key while the
//     upload is usable), asked or not, so that the document never names a
//     token the agent is about to delete.
//   - The joiners: a control-plane node that finds the cluster initialized
//     by another instance reads cp/join.json, checks it against the
//     initialized marker (same endpoint, same CA pin), takes
//     <cluster>/cp/join-lock.json (one join at a time) and runs kubeadm join
//     --control-plane with the key in its 0600 configuration file. A join
//     that fails, or that a crash interrupts (controlPlaneJoinStartedAt), is
//     undone with kubeadm reset -f before the next attempt.
//   - A joined control plane stands by (phase Standby) until it gets the
//     uploader lock: when the uploader's lease expired and EC2 says its
//     instance is not running.

// certificatesMargin is how long before kubeadm deletes the kubeadm-certs
// Secret the uploader uploads the certificates again.
const certificatesMargin = 30 * time.Minute

// cpJoinConfigName and uploadCertsConfigName are the kubeadm configuration
// files of a control-plane join and of a certificate upload in the state
// directory; both hold secrets and are removed after the run.
const (
	cpJoinConfigName      = "kubeadm-join-control-plane.yaml"
	uploadCertsConfigName = "kubeadm-upload-certs.yaml"
)

// cpJoinEnabled says whether this control plane joins through S3 and takes
// part in the uploader election.
func (c *ControlPlane) cpJoinEnabled() bool {
	e := c.Election
	return e != nil && e.ControlPlaneInfo != nil && e.JoinRequest != nil && e.JoinLock != nil && e.UploaderLock != nil
}

// requestCheckInterval is how often the uploader looks for a join request;
// requestCheckBurst how often during the first requestBurstWindow after it
// took the uploader lock, when the control planes that booted with it are
// about to ask (a simultaneous boot).
const (
	requestCheckInterval = 15 * time.Second
	requestCheckBurst    = 3 * time.Second
	requestBurstWindow   = 10 * time.Minute
)

// requestCheckEvery is how long the uploader's publish loop sleeps at most
// before it looks for a join request again.
func (c *ControlPlane) requestCheckEvery() time.Duration {
	if c.Clock.Now().Before(c.uploaderSince.Add(requestBurstWindow)) {
		return requestCheckBurst
	}
	return requestCheckInterval
}

// joinControlPlane joins this node to the control plane of the cluster m
// names. It returns true once joined; false when it must be looked at
// again (the caller waits and looks at the node again).
func (c *ControlPlane) joinControlPlane(ctx context.Context, m *lease.Initialized) (bool, error) {
	if c.endpoint != m.Endpoint {
		// Joined, this node could one day publish join info: with its own
		// endpoint it would send workers to one instance.
		c.Reporter.Condition(state.PhaseBlocked, "endpoint-mismatch:"+m.Endpoint, fmt.Sprintf(
			"blocked: cluster %s was initialized by %s with the control-plane endpoint %s, but this node's is %s; set "+
				"kubeadm.controlPlaneEndpoint to %s on every control-plane node (a load balancer in front of them) and restart kubestrap",
			c.Config.Cluster, m.InitializedBy, m.Endpoint, c.endpoint, m.Endpoint))
		return false, nil
	}
	info, err := c.awaitControlPlaneInfo(ctx, m, c.failedGeneration)
	if info == nil {
		return false, err
	}
	lk := *c.Election.JoinLock
	lk.OnWait = func(err error) {
		var held *lease.HeldError
		if errors.As(err, &held) {
			c.Reporter.Waiting(state.PhaseWaitingToJoin, "join-lock-held:"+held.Status.Holder, fmt.Sprintf(
				"waiting for control-plane node %s, which holds the join lock, to finish its join: %v", held.Status.Holder, err))
		} else {
			c.Reporter.Condition(state.PhaseDegraded, "join-lock:"+errorClass(err), fmt.Sprintf(
				"degraded: cannot take the control-plane join lock: %v; retrying", err))
		}
		c.Progress.Within(lk.AttemptBudget())
	}
	c.Progress.Within(lk.AttemptBudget())
	ls, err := lk.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("control-plane join: %w: %w", errLockConfig, err)
	}
	defer c.releaseLock(ctx, ls, "join")
	// The info may have been refreshed while this node waited.
	if fresh, err := c.readControlPlaneInfo(ls.Context(), m); err == nil {
		info = fresh
	}
	return c.joinUnderLease(ctx, ls, info, m)
}

// requestWait is how long a joiner waits for control-plane join info after
// it asked for it, polling every requestPoll.
const (
	requestWait = 3 * time.Minute
	requestPoll = 2 * time.Second
)

// awaitControlPlaneInfo returns usable control-plane join info: what is
// published, or, when that is missing, stale, or the generation a join just
// failed with (failed > 0), what the uploader publishes after this node's
// join request. nil (and no error) when none came within requestWait.
func (c *ControlPlane) awaitControlPlaneInfo(ctx context.Context, m *lease.Initialized, failed int64) (*join.ControlPlaneInfo, error) {
	info, err := c.readControlPlaneInfo(ctx, m)
	if err == nil && info.Generation > failed {
		return info, nil
	}
	if err == nil {
		err = fmt.Errorf("a join with its generation %d failed", failed)
	}
	req := &join.ControlPlaneJoinRequest{APIVersion: join.APIVersion, Kind: join.ControlPlaneJoinRequestKind,
		Requester: c.Election.self(), RequestedAt: c.Clock.Now().UTC().Truncate(time.Second), FailedGeneration: failed}
	c.Progress.Within(RemoteCallTimeout)
	rctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	rerr := c.Election.JoinRequest.RequestControlPlaneInfo(rctx, req)
	cancel()
	if rerr != nil {
		c.Reporter.Condition(state.PhaseDegraded, "cp-join-request:"+errorClass(rerr), fmt.Sprintf(
			"degraded: cannot ask for control-plane join info (%v): %v; retrying", err, rerr))
		return nil, nil
	}
	c.Reporter.Waiting(state.PhaseWaitingToJoin, "cp-join-info:"+errorClass(err), fmt.Sprintf(
		"cluster %s was initialized by %s at %s (endpoint %s); asked the control plane that publishes join info for "+
			"control-plane join info (%v) and waiting for it", c.Config.Cluster, m.InitializedBy,
		m.InitializedAt.UTC().Format(time.RFC3339), m.Endpoint, err), zap.String("initializedBy", m.InitializedBy))
	for waited := time.Duration(0); waited < requestWait; waited += requestPoll {
		if err := sleep(ctx, c.Clock, c.Progress, requestPoll); err != nil {
			return nil, err
		}
		if info, err := c.readControlPlaneInfo(ctx, m); err == nil && info.Generation > failed {
			return info, nil
		}
	}
	return nil, nil
}

// readControlPlaneInfo reads and checks <cluster>/cp/join.json against the
// marker: the same endpoint and CA pin, and at least certificatesMargin of
// usable life left.
func (c *ControlPlane) readControlPlaneInfo(ctx context.Context, m *lease.Initialized) (*join.ControlPlaneInfo, error) {
	store := c.Election.ControlPlaneInfo
	f, err := c.fetchControlPlaneInfo(ctx)
	if err != nil {
		return nil, err
	}
	// A join takes minutes: at least that much usable life must be left
	// (less with a short token life, as in tests).
	margin := min(10*time.Minute, c.ttl()/4)
	info, err := join.ParseControlPlane(f.Body, join.Expectations{Cluster: c.Config.Cluster, Now: c.Clock.Now(), Margin: margin})
	if err != nil {
		return nil, fmt.Errorf("refusing %s: %w", store.URL(), err)
	}
	switch {
	case info.APIServerEndpoint != m.Endpoint:
		return nil, fmt.Errorf("refusing %s: endpoint %s is not the cluster's (%s, in the initialized marker)",
			store.URL(), info.APIServerEndpoint, m.Endpoint)
	case !slices.Equal(info.CACertHashes, m.CACertHashes):
		return nil, fmt.Errorf("refusing %s: its CA pin is not the cluster's (in the initialized marker)", store.URL())
	}
	return info, nil
}

// joinUnderLease runs kubeadm join --control-plane while ls is held.
func (c *ControlPlane) joinUnderLease(ctx context.Context, ls *lease.Lease, info *join.ControlPlaneInfo, m *lease.Initialized) (bool, error) {
	doc, err := kubeadm.JoinConfig(c.Config, c.Node, kubeadm.JoinOptions{APIServerEndpoint: info.APIServerEndpoint,
		Token: info.Token, CACertHashes: info.CACertHashes, ControlPlane: true, CertificateKey: info.CertificateKey})
	if err != nil {
		return false, fmt.Errorf("build the control-plane join configuration: %w", err)
	}
	path := filepath.Join(c.Config.StateDir, cpJoinConfigName)
	if err := fsutil.WriteFileAtomic(path, doc, 0o600); err != nil {
		return false, fmt.Errorf("write the control-plane join configuration: %w", err)
	}
	defer os.Remove(path) // it holds the token secret and the certificate key
	c.Reporter.Update(func(s *state.State) {
		s.ControlPlaneJoinStartedAt, s.InitializedAt = c.Clock.Now().UTC(), time.Time{}
		s.InitializedBy, s.InitLockHolder = m.InitializedBy, ""
	})
	c.Reporter.Phase(state.PhaseJoiningControlPlane, fmt.Sprintf(
		"joining the control plane of cluster %s (initialized by %s) through %s with kubeadm join --control-plane "+
			"(control-plane join info generation %d, token %s)", c.Config.Cluster, m.InitializedBy, info.APIServerEndpoint,
		info.Generation, info.TokenID()))
	c.Progress.Within(c.Config.Kubeadm.JoinTimeout.Duration + kubeadm.GracePeriod)
	jctx, cancel := context.WithTimeout(ls.Context(), c.Config.Kubeadm.JoinTimeout.Duration)
	err = c.Kubeadm.Join(jctx, path)
	cancel()
	_ = os.Remove(path)
	if err == nil {
		now := c.Clock.Now().UTC()
		c.Reporter.Update(func(s *state.State) {
			s.InitializedAt, s.ControlPlaneJoinedAt, s.ControlPlaneJoinStartedAt = now, now, time.Time{}
		})
		c.Log.Info("joined the control plane", zap.String("initializedBy", m.InitializedBy),
			zap.String("endpoint", info.APIServerEndpoint), zap.Int64("controlPlaneInfoGeneration", info.Generation))
		return true, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	cause := err
	if ls.Context().Err() != nil {
		cause = fmt.Errorf("%w (this node lost the join lock: %v)", err, context.Cause(ls.Context()))
	}
	if err := c.undoControlPlaneJoin(ctx, fmt.Sprintf("kubeadm join --control-plane failed: %v", cause)); err != nil {
		return false, err
	}
	// The info may be what failed (its kubeadm-certs Secret deleted, its
	// token retired): ask for new info before the next attempt.
	c.failedGeneration = info.Generation
	return false, nil
}

// undoControlPlaneJoin resets an unfinished control-plane join (kubeadm
// reset -f, which also removes this node's etcd member if it was added).
// Until the reset succeeded controlPlaneJoinStartedAt stays, so a restart in
// between undoes it too.
func (c *ControlPlane) undoControlPlaneJoin(ctx context.Context, why string) error {
	if err := c.awaitSafeJoinUndo(ctx, why); err != nil {
		return err
	}
	if err := c.resetUntilDone(ctx, state.PhaseJoinFailed, "control-plane join",
		why+"; undoing this node's unfinished control-plane join with kubeadm reset -f"); err != nil {
		return err
	}
	c.Reporter.Update(func(s *state.State) { s.ControlPlaneJoinStartedAt, s.InitializedAt = time.Time{}, time.Time{} })
	c.Log.Info("undid this node's unfinished control-plane join")
	return nil
}

// joinUndoRecheck is how often an unfinished control-plane join whose undo
// would cost the cluster its quorum is looked at again; joinUndoCheckTimeout
// bounds one look (the member list and the health probes).
const (
	joinUndoRecheck      = 10 * time.Second
	joinUndoCheckTimeout = 30 * time.Second
)

// awaitSafeJoinUndo returns once undoing this node's unfinished
// control-plane join keeps the cluster's quorum (Election.JoinUndoSafe), or
// when ctx ends. Meanwhile the node is JoinFailed and says why it waits:
// typically its own etcd member, already a voter of two, is down until the
// kubelet starts it again from its manifest.
func (c *ControlPlane) awaitSafeJoinUndo(ctx context.Context, why string) error {
	if c.Election == nil || c.Election.JoinUndoSafe == nil {
		return nil
	}
	for {
		c.Progress.Within(joinUndoCheckTimeout)
		cctx, cancel := context.WithTimeout(ctx, joinUndoCheckTimeout)
		safe, reason, err := c.Election.JoinUndoSafe(cctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && safe {
			c.Log.Info("undoing the unfinished control-plane join keeps the etcd quorum", zap.String("reason", reason))
			return nil
		}
		class := "unsafe"
		if err != nil {
			class, reason = "unknown:"+errorClass(err), fmt.Sprintf("cannot tell whether it keeps the etcd quorum: %v", err)
		}
		c.Reporter.Condition(state.PhaseJoinFailed, "undo-waits:"+class, fmt.Sprintf(
			"%s; not undoing it yet (kubeadm reset -f would remove this node's etcd member and delete its data): %s; "+
				"looking again every %s (the kubelet starts this node's etcd again from its manifest; if the cluster "+
				"is gone for good, see \"Losing every control plane\" in docs/deploy.md)", why, reason, joinUndoRecheck))
		if err := sleep(ctx, c.Clock, c.Progress, joinUndoRecheck); err != nil {
			return err
		}
	}
}

// releaseLock gives a lock up; a failure only costs the others the rest of
// the lease.
func (c *ControlPlane) releaseLock(ctx context.Context, ls *lease.Lease, name string) {
	c.Progress.Within(RemoteCallTimeout)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RemoteCallTimeout)
	defer cancel()
	switch err := ls.Release(rctx); {
	case errors.Is(err, lease.ErrNotHolder):
		c.Log.Info("the "+name+" lock is no longer this node's; nothing to release", zap.Error(err))
	case err != nil:
		c.Log.Warn("cannot release the "+name+" lock; it expires by itself", zap.Error(err))
	}
}

// publishAsUploader publishes join info only while this node holds the
// uploader lock; without it, the node stands by and takes the lock over
// when its holder's lease expired and EC2 says the holder is not running.
func (c *ControlPlane) publishAsUploader(ctx context.Context) error {
	self := c.Election.self()
	for {
		lk := *c.Election.UploaderLock
		lk.OnWait = func(err error) {
			var held *lease.HeldError
			if errors.As(err, &held) {
				if c.Reporter.State().UploaderLockHolder != held.Status.Holder {
					c.Reporter.Update(func(s *state.State) { s.UploaderLockHolder = held.Status.Holder })
				}
				c.Reporter.Ready(state.PhaseStandby, fmt.Sprintf(
					"control plane up; standing by: %s holds the uploader lock and publishes join info; this node takes over "+
						"if that node's lease expires and EC2 says it is not running", held.Status.Holder),
					zap.String("uploaderLockHolder", held.Status.Holder))
			} else {
				c.Reporter.Condition(state.PhaseDegraded, "uploader-lock:"+errorClass(err), fmt.Sprintf(
					"degraded: cannot take part in the uploader election: %v; retrying", err))
			}
			c.Progress.Within(lk.AttemptBudget())
		}
		c.Progress.Within(lk.AttemptBudget())
		ls, err := lk.Acquire(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("uploader election: %w: %w", errLockConfig, err)
		}
		c.uploaderSince = c.Clock.Now()
		c.Reporter.Update(func(s *state.State) { s.UploaderLockHolder = self })
		c.Log.Info("holding the uploader lock: this node publishes join info", zap.Int64("lockGeneration", ls.Generation()))
		c.uploading.Store(true)
		err = c.publishLoop(ls.Context())
		c.uploading.Store(false)
		c.releaseLock(ctx, ls, "uploader")
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.Log.Warn("lost the uploader lock; standing by", zap.Error(err), zap.NamedError("cause", context.Cause(ls.Context())))
		c.Reporter.Update(func(s *state.State) { s.UploaderLockHolder = "" })
		c.cpInfo, c.cpInfoLooked = nil, false
	}
}

// refreshControlPlaneInfo keeps <cluster>/cp/join.json usable. Asked (a
// join request), it uploads the certificates with a fresh key and publishes
// the document again when there is none from this node, a join failed with
// it, the upload is about to expire, or the kubeadm-certs Secret is gone.
// Asked or not, it publishes the document again when it names a token other
// than the one in join.json (the uploader replaced it), keeping the key
// while the upload is usable.
func (c *ControlPlane) refreshControlPlaneInfo(ctx context.Context) error {
	reqStore := c.Election.JoinRequest
	c.Progress.Within(RemoteCallTimeout)
	qctx, qcancel := context.WithTimeout(ctx, RemoteCallTimeout)
	reqObj, err := reqStore.Fetch(qctx, "")
	qcancel()
	asked := true
	switch {
	case errors.Is(err, join.ErrNotFound):
		asked = false
	case err != nil:
		return fmt.Errorf("read %s: %w", reqStore.URL(), err)
	}
	if !c.cpInfoLooked {
		// Once per uploader lease: what an earlier uploader (or this node
		// before a restart) published, so that its token is kept current.
		if err := c.adoptPublishedControlPlaneInfo(ctx); err != nil {
			return err
		}
		c.cpInfoLooked = true
	}
	if !asked && c.cpInfo == nil {
		return nil // nobody asked and nothing is published: nothing is uploaded
	}
	// Only the failed generation matters; an unreadable request still asks.
	var req join.ControlPlaneJoinRequest
	if asked {
		_ = json.Unmarshal(reqObj.Body, &req)
	}
	st := c.Reporter.State()
	current, err := c.currentJoinInfo(ctx, st)
	if err != nil {
		return err
	}
	now := c.Clock.Now()
	reason, upload := "", true
	switch {
	case c.cpInfo == nil:
		reason = fmt.Sprintf("%s asked to join and none was published by this node yet", req.Requester)
	case asked && req.FailedGeneration >= c.cpInfo.Generation:
		reason = fmt.Sprintf("%s failed to join with generation %d", req.Requester, req.FailedGeneration)
	case (asked || c.cpInfo.Token != current.Token) && now.After(c.cpInfo.CertificatesExpireAt().Add(-certificatesMargin)):
		reason = "the uploaded certificates expire soon"
	case (asked || c.cpInfo.Token != current.Token) && c.Election.CertificatesUploaded != nil:
		c.Progress.Within(RemoteCallTimeout)
		sctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
		ok, err := c.Election.CertificatesUploaded(sctx)
		cancel()
		if err != nil {
			return fmt.Errorf("look for the kubeadm-certs Secret: %w", err)
		}
		if !ok {
			reason = "the kubeadm-certs Secret is gone"
		}
	}
	if reason == "" && c.cpInfo.Token != current.Token {
		// The upload is usable: the same key with the new token.
		reason, upload = "the join token changed", false
	}
	if reason == "" && asked {
		// What is published answers the request if it is still there.
		if reason, err = c.publishedIsNotOurs(ctx); err != nil {
			return err
		}
		upload = false
	}
	if reason == "" {
		if !asked {
			return nil
		}
		return c.deleteRequest(ctx, reqObj.ETag)
	}
	if upload && !asked {
		// Certificates are uploaded only on request: instead of a new
		// upload for a document nobody asked for, withdraw the one that
		// names the old token; the next joiner asks.
		return c.withdrawControlPlaneInfo(ctx, reason)
	}
	key, uploadedAt := "", time.Time{}
	if upload {
		if key, uploadedAt, err = c.uploadCertificates(ctx, reason); err != nil {
			return err
		}
	} else {
		key, uploadedAt = c.cpInfo.CertificateKey, c.cpInfo.CertificatesUploadedAt
	}
	if err := c.publishControlPlaneInfo(ctx, current, key, uploadedAt, reason, req.FailedGeneration); err != nil {
		return err
	}
	if !asked {
		return nil
	}
	return c.deleteRequest(ctx, reqObj.ETag)
}

// fetchControlPlaneInfo reads <cluster>/cp/join.json within
// RemoteCallTimeout; an error names the object (join.ErrNotFound stays
// matchable).
func (c *ControlPlane) fetchControlPlaneInfo(ctx context.Context) (*join.Fetched, error) {
	store := c.Election.ControlPlaneInfo
	c.Progress.Within(RemoteCallTimeout)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	f, err := store.Fetch(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store.URL(), err)
	}
	return f, nil
}

// publishedIsNotOurs says why <cluster>/cp/join.json is not the document
// this node published last (removed, or replaced), or "" when it is.
func (c *ControlPlane) publishedIsNotOurs(ctx context.Context) (string, error) {
	f, err := c.fetchControlPlaneInfo(ctx)
	switch {
	case errors.Is(err, join.ErrNotFound):
		return "the published control-plane join info was removed", nil
	case err != nil:
		return "", err
	}
	if g := generationOf(f.Body); g != c.cpInfo.Generation {
		return fmt.Sprintf("the published control-plane join info has generation %d, not this node's %d", g, c.cpInfo.Generation), nil
	}
	return "", nil
}

// generationOf is the generation field of a document, 0 when it has none
// that is plausible.
func generationOf(body []byte) int64 {
	var g struct {
		Generation int64 `json:"generation"`
	}
	if json.Unmarshal(body, &g) == nil && g.Generation > 0 && g.Generation < lease.MaxGeneration {
		return g.Generation
	}
	return 0
}

// withdrawControlPlaneInfo deletes <cluster>/cp/join.json (if it is still
// the document this node published) instead of uploading the certificates
// again when nobody asked: why says what made it unusable.
func (c *ControlPlane) withdrawControlPlaneInfo(ctx context.Context, why string) error {
	store := c.Election.ControlPlaneInfo
	f, err := c.fetchControlPlaneInfo(ctx)
	switch {
	case errors.Is(err, join.ErrNotFound):
	case err != nil:
		return err
	case generationOf(f.Body) == c.cpInfo.Generation:
		c.Progress.Within(RemoteCallTimeout)
		dctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
		err := store.Delete(dctx, f.ETag)
		cancel()
		if err != nil && !errors.Is(err, join.ErrNotFound) {
			return fmt.Errorf("withdraw %s: %w", store.URL(), err)
		}
	}
	c.Log.Info("withdrew the control-plane join info instead of uploading the certificates again: nobody asked to join; "+
		"the next control plane to join asks for new info", zap.String("object", store.URL()), zap.String("reason", why))
	c.cpInfo = nil
	return nil
}

// adoptPublishedControlPlaneInfo makes what <cluster>/cp/join.json holds
// (valid, for this cluster's endpoint and CA) this node's cpInfo; nothing
// when there is none or it is unusable (a joiner asks for new info then).
func (c *ControlPlane) adoptPublishedControlPlaneInfo(ctx context.Context) error {
	store := c.Election.ControlPlaneInfo
	f, err := c.fetchControlPlaneInfo(ctx)
	switch {
	case errors.Is(err, join.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	info, err := join.ParseControlPlane(f.Body, join.Expectations{Cluster: c.Config.Cluster, Now: c.Clock.Now()})
	if err == nil && info.APIServerEndpoint != c.endpoint {
		err = fmt.Errorf("its endpoint %s is not this node's %s", info.APIServerEndpoint, c.endpoint)
	}
	if err == nil {
		if hash, herr := kubeadm.CACertHash(c.CACert); herr != nil || !slices.Contains(info.CACertHashes, hash) {
			err = fmt.Errorf("its CA pin is not this cluster's CA (%s)", c.CACert)
		}
	}
	if err != nil {
		c.Log.Info("the published control-plane join info is not usable; it is replaced at the next join request",
			zap.String("object", store.URL()), zap.NamedError("reason", err))
		return nil
	}
	c.cpInfo = info
	return nil
}

// uploadCertificates uploads the cluster's certificates into the
// kubeadm-certs Secret with a fresh key (kubeadm init phase upload-certs,
// the key in a 0600 file that is removed) and returns the key and when.
func (c *ControlPlane) uploadCertificates(ctx context.Context, reason string) (string, time.Time, error) {
	key, err := join.NewCertificateKey()
	if err != nil {
		return "", time.Time{}, err
	}
	doc, err := kubeadm.UploadCertsConfig(c.Config, c.Node, key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("build the upload-certs configuration: %w", err)
	}
	path := filepath.Join(c.Config.StateDir, uploadCertsConfigName)
	if err := fsutil.WriteFileAtomic(path, doc, 0o600); err != nil {
		return "", time.Time{}, fmt.Errorf("write the upload-certs configuration: %w", err)
	}
	uploadedAt := c.Clock.Now()
	c.Progress.Within(RemoteCallTimeout + kubeadm.GracePeriod)
	uctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	err = c.Kubeadm.UploadCerts(uctx, path, c.AdminKubeconfig)
	cancel()
	_ = os.Remove(path) // it holds the certificate key
	if err != nil {
		return "", time.Time{}, fmt.Errorf("upload the certificates (%s): %w", reason, err)
	}
	return key, uploadedAt, nil
}

// publishControlPlaneInfo publishes <cluster>/cp/join.json for the token of
// current with key (an upload at uploadedAt), under the next generation.
func (c *ControlPlane) publishControlPlaneInfo(ctx context.Context, current *join.Info, key string, uploadedAt time.Time,
	reason string, failed int64) error {
	st := c.Reporter.State()
	store := c.Election.ControlPlaneInfo
	c.Progress.Within(RemoteCallTimeout)
	pctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	prev, prevGen := "", int64(0)
	switch f, err := store.Fetch(pctx, ""); {
	case err == nil:
		// The generation goes on from the last one, whoever wrote it
		// (another control plane before this one took the uploader lock).
		prev, prevGen = f.ETag, generationOf(f.Body)
	case !errors.Is(err, join.ErrNotFound):
		return fmt.Errorf("read %s: %w", store.URL(), err)
	}
	// Past a failed generation too: a joiner accepts only newer info.
	if failed < 0 || failed >= lease.MaxGeneration {
		failed = 0
	}
	gen, err := join.NextGeneration(max(st.ControlPlaneInfoGeneration, prevGen, failed))
	if err != nil {
		return err
	}
	info := &join.ControlPlaneInfo{APIVersion: join.APIVersion, Kind: join.ControlPlaneKind, Cluster: c.Config.Cluster,
		APIServerEndpoint: current.APIServerEndpoint, Token: current.Token, CACertHashes: current.CACertHashes,
		CertificateKey: key, KubernetesVersion: current.KubernetesVersion,
		CertificatesUploadedAt: uploadedAt.UTC().Truncate(time.Second), IssuedAt: c.Clock.Now().UTC().Truncate(time.Second),
		ExpiresAt: current.ExpiresAt, Generation: gen}
	if _, err := store.PublishControlPlane(pctx, info, prev); err != nil {
		return fmt.Errorf("publish control-plane join info: %w", err)
	}
	c.cpInfo = info
	c.Reporter.Update(func(s *state.State) {
		s.ControlPlaneInfoGeneration, s.CertificatesUploadedAt = gen, info.CertificatesUploadedAt
	})
	c.Log.Info("published control-plane join info", zap.String("object", store.URL()), zap.String("reason", reason),
		zap.Int64("generation", gen), zap.String("tokenID", info.TokenID()), zap.Time("certificatesExpireAt", info.CertificatesExpireAt()))
	return nil
}

// deleteRequest removes the join request if it is still the one answered.
func (c *ControlPlane) deleteRequest(ctx context.Context, etag string) error {
	c.Progress.Within(RemoteCallTimeout)
	dctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	return c.Election.JoinRequest.Delete(dctx, etag)
}

// currentJoinInfo is the join info this node published last (its token is
// what control planes join with too).
func (c *ControlPlane) currentJoinInfo(ctx context.Context, st state.State) (*join.Info, error) {
	if c.current != nil && c.current.TokenID() == st.TokenID {
		return c.current, nil
	}
	f, err := c.fetch(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("read join info: %w", err)
	}
	info, err := join.Parse(f.Body, join.Expectations{Cluster: c.Config.Cluster, Now: c.Clock.Now()})
	if err != nil || info.TokenID() != st.TokenID {
		return nil, fmt.Errorf("the join info in %s is not the one this node published last (token %s)", c.Store.URL(), st.TokenID)
	}
	c.current = info
	return info, nil
}

// refreshControlPlaneInfoLogged runs refreshControlPlaneInfo; a failure is
// logged once per kind and tried again at the next round of the publish
// loop (at most VerifyInterval later).
func (c *ControlPlane) refreshControlPlaneInfoLogged(ctx context.Context) {
	err := c.refreshControlPlaneInfo(ctx)
	switch {
	case err == nil && c.cpInfoProblem != "":
		c.Log.Info("control-plane join info is published again")
		c.cpInfoProblem = ""
	case err != nil && ctx.Err() == nil && errorClass(err) != c.cpInfoProblem:
		c.cpInfoProblem = errorClass(err)
		c.Log.Warn("cannot refresh the control-plane join info; control planes cannot join until it is; retrying every minute",
			zap.Error(err))
	}
}

// resetUntilDone runs kubeadm reset -f until it succeeds (or ctx ends),
// reporting msg in phase p first and each failure with backoff; what names
// the unfinished run it undoes.
func (c *ControlPlane) resetUntilDone(ctx context.Context, p state.Phase, what, msg string) error {
	b := c.RetryBackoff
	for {
		c.Reporter.Problem(p, msg)
		c.Progress.Within(ResetTimeout + kubeadm.GracePeriod)
		rctx, cancel := context.WithTimeout(ctx, ResetTimeout)
		err := c.Kubeadm.Reset(rctx, c.Config.Kubeadm.CRISocket)
		cancel()
		if err == nil {
			b.Reset()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := b.Next()
		c.Reporter.Condition(p, "reset-failed",
			fmt.Sprintf("kubeadm reset -f of an unfinished %s failed: %v; retrying in %s", what, err, delay.Round(time.Second)))
		if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
			return err
		}
	}
}
