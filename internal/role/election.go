package role

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/state"
)

// InitElection is a control-plane node's part in choosing the one node that
// runs `kubeadm init` for the cluster (issue 14, first slice):
//
//   - <cluster>/cp/initialized.json (Marker) exists: the cluster was
//     initialized; a node that did not initialize it never runs kubeadm
//     init and waits (phase WaitingToJoinControlPlane; the control-plane
//     join is the next slice).
//   - Otherwise the node takes <cluster>/cp/init-lock.json (Lock), reads the
//     marker again, and runs kubeadm init under the held lease. A lease lost
//     meanwhile (taken over, or not renewed in time) cancels kubeadm; the
//     node undoes its unfinished init with kubeadm reset -f and goes back to
//     the election. After a successful init it creates the marker
//     (If-None-Match), which is what makes the cluster its own, and then
//     releases the lock. Join info is published only after that.
//   - A node initialized before the election existed writes the marker at
//     start; one that finds another instance's marker is Blocked (two
//     clusters for one name).
type InitElection struct {
	// Lock is <cluster>/cp/init-lock.json. Its Holder is this node's EC2
	// instance ID; HolderAlive asks EC2 (lease.EC2HolderAlive); ReclaimOwn
	// is the agent lock's Held, so a restarted agent takes its own lease
	// over at once.
	Lock *lease.Lock
	// Marker is <cluster>/cp/initialized.json.
	Marker *lease.Marker
	// ControlPlaneInfo is <cluster>/cp/join.json, JoinLock
	// <cluster>/cp/join-lock.json and UploaderLock
	// <cluster>/cp/uploader-lock.json (copies of Lock but for the key).
	// With all three set, a node that finds the cluster initialized by
	// another joins it as a control plane, and only the uploader lock's
	// holder publishes join info (cpjoin.go). Any nil: such a node waits.
	ControlPlaneInfo *join.Store
	// JoinRequest is <cluster>/cp/join-request.json (join.ControlPlaneJoinRequestKey).
	JoinRequest  *join.Store
	JoinLock     *lease.Lock
	UploaderLock *lease.Lock
	// CertificatesUploaded says whether the kubeadm-certs Secret exists
	// (nil: not checked; the upload is then renewed by age only).
	CertificatesUploaded func(ctx context.Context) (bool, error)
	// JoinUndoSafe prepares the undo of this node's unfinished
	// control-plane join and says whether kubeadm reset -f may run now:
	// reset deletes the node's etcd member data even when it cannot remove
	// the member, so the member must be gone first, removed only while that
	// keeps the cluster's quorum (a promoted second member whose etcd is
	// down must wait). true once this node has no etcd member; false comes
	// with the reason; nil: always safe.
	JoinUndoSafe func(ctx context.Context) (safe bool, reason string, err error)
}

// errLockConfig wraps an Acquire that ended for a reason other than its
// context: a bad Lock configuration, which retrying does not fix.
var errLockConfig = errors.New("init lock configuration")

// self is this node's instance ID.
func (e *InitElection) self() string { return e.Lock.Holder }

// readMarker reads the initialized marker within RemoteCallTimeout.
func (c *ControlPlane) readMarker(ctx context.Context) (*lease.Initialized, error) {
	c.Progress.Within(RemoteCallTimeout)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	return c.Election.Marker.Read(ctx, c.Clock.Now())
}

// markerURL names the marker in messages.
func (c *ControlPlane) markerURL() string {
	return "s3://" + c.Election.Marker.Bucket + "/" + c.Election.Marker.Key
}

// electAndInit runs the election for a node that holds no cluster, and
// kubeadm init if it wins. It returns true once this node initialized the
// cluster and recorded it in the marker; false when the cluster was
// initialized by another node or something must be looked at again later
// (the caller waits BlockedRecheck and looks at the node again). An init
// of this node's own that never finished (initStartedAt) is undone before
// kubeadm init runs again.
func (c *ControlPlane) electAndInit(ctx context.Context) (bool, error) {
	e := c.Election
	self := e.self()
	if !lease.ValidHolder(self) {
		return false, fmt.Errorf("init election: this node's EC2 instance ID is unknown (%q; the instance metadata service did not "+
			"answer at start-up), and a control plane cannot take part in the election without it; exiting so that the "+
			"agent restarts and asks again", self)
	}
	b := c.RetryBackoff
	for {
		st := c.Reporter.State()
		m, err := c.readMarker(ctx)
		switch {
		case err == nil:
			return c.initializedElsewhere(ctx, m)
		case errors.Is(err, lease.ErrNotInitialized):
			if st.InitializedBy != "" && st.InitializedBy != self {
				c.Reporter.Condition(state.PhaseBlocked, "marker-removed", fmt.Sprintf(
					"blocked: this node saw cluster %s initialized by %s, but %s is gone; kubestrap will not run kubeadm init "+
						"for a cluster that exists. Restore the marker, or, to start a new cluster deliberately, remove "+
						"initializedBy from %s", c.Config.Cluster, st.InitializedBy, c.markerURL(), state.Path(c.Config.StateDir)))
				return false, nil
			}
		case errors.Is(err, lease.ErrInvalid):
			c.Reporter.Condition(state.PhaseBlocked, "marker-invalid", "blocked: "+err.Error())
			return false, nil
		default:
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			delay := b.Next()
			c.Reporter.Condition(state.PhaseDegraded, "marker:"+errorClass(err), fmt.Sprintf(
				"degraded: cannot read %s to learn whether the cluster was initialized: %v; retrying in %s",
				c.markerURL(), err, delay.Round(time.Second)))
			if err := sleep(ctx, c.Clock, c.Progress, delay); err != nil {
				return false, err
			}
			continue
		}

		ls, seen, err := c.acquireInitLock(ctx)
		if err != nil {
			return false, err
		}
		if seen {
			continue // the marker appeared while this node waited
		}
		done, err := c.initUnderLease(ctx, ls, interruptedInit(c.Reporter.State()))
		if err != nil || done {
			return done, err
		}
		b.Reset()
	}
}

// acquireInitLock waits for the init lock. While it waits it reports who
// holds it and reads the marker before each attempt; seen is true when the
// marker appeared meanwhile (then no lease is held).
func (c *ControlPlane) acquireInitLock(ctx context.Context) (ls *lease.Lease, seen bool, err error) {
	lk := *c.Election.Lock
	actx, cancel := context.WithCancel(ctx)
	lk.OnWait = func(err error) {
		c.onInitLockWait(err)
		if _, merr := c.readMarker(actx); merr == nil {
			seen = true
			cancel()
			return
		}
		c.Progress.Within(lk.AttemptBudget())
	}
	c.Progress.Within(lk.AttemptBudget())
	ls, err = lk.Acquire(actx)
	if err != nil {
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil, false, ctx.Err()
		case seen:
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("init election: %w: %w", errLockConfig, err)
	}
	// actx lives as long as the lease: its end stops the renewals. The
	// lease's Release ends it; cancel frees the context once it did.
	context.AfterFunc(ls.Context(), cancel)
	return ls, false, nil
}

// onInitLockWait reports a failed attempt to take the init lock.
func (c *ControlPlane) onInitLockWait(err error) {
	var held *lease.HeldError
	switch {
	case errors.As(err, &held):
		if c.Reporter.State().InitLockHolder != held.Status.Holder {
			c.Reporter.Update(func(s *state.State) { s.InitLockHolder = held.Status.Holder })
		}
		c.Reporter.Waiting(state.PhaseWaitingInitLock, "init-lock-held:"+held.Status.Holder, fmt.Sprintf(
			"waiting for control-plane node %s, which holds the init lock, to initialize cluster %s: %v",
			held.Status.Holder, c.Config.Cluster, err), zap.String("initLockHolder", held.Status.Holder))
	case errors.Is(err, lease.ErrInvalid):
		c.Reporter.Condition(state.PhaseBlocked, "init-lock-invalid", "blocked: "+err.Error())
	default:
		c.Reporter.Condition(state.PhaseDegraded, "init-lock:"+errorClass(err), fmt.Sprintf(
			"degraded: cannot take part in the init election: %v; retrying", err))
	}
}

// initUnderLease runs kubeadm init while ls is held and records the result
// in the marker. It returns true when this node initialized the cluster;
// false when it must go back to the election (the marker appeared, or the
// lease was lost and the unfinished init was undone).
func (c *ControlPlane) initUnderLease(ctx context.Context, ls *lease.Lease, interrupted string) (bool, error) {
	self := c.Election.self()
	c.Reporter.Update(func(s *state.State) { s.InitLockHolder, s.InitLockGeneration = self, ls.Generation() })
	c.step(stepLockAcquired)
	c.Log.Info("holding the init lock", zap.String("lock", c.Election.Lock.Key), zap.Int64("lockGeneration", ls.Generation()))
	// Someone may have finished an init between this node's look at the
	// marker and its taking the lock.
	if m, err := c.readMarker(ls.Context()); err == nil {
		c.releaseInitLock(ctx, ls)
		c.Log.Info("the cluster was initialized while this node waited for the init lock",
			zap.String("initializedBy", m.InitializedBy))
		return false, nil
	} else if !errors.Is(err, lease.ErrNotInitialized) {
		c.releaseInitLock(ctx, ls)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		c.Reporter.Condition(state.PhaseDegraded, "marker:"+errorClass(err), fmt.Sprintf(
			"degraded: holding the init lock, but cannot read %s: %v; released the lock and looking again", c.markerURL(), err))
		return false, sleep(ctx, c.Clock, c.Progress, c.RetryBackoff.Next())
	}

	err := c.initialize(ls.Context(), interrupted, ls.Check)
	if err == nil {
		err = ls.Check() // lost after kubeadm finished: the marker decides
	}
	if err == nil {
		err = c.createMarker(ctx, ls)
	}
	switch {
	case err == nil:
		c.step(stepAfterMarker)
		c.Reporter.Update(func(s *state.State) { s.InitializedBy = self })
		c.releaseInitLock(ctx, ls)
		return true, nil
	case ctx.Err() != nil:
		return false, ctx.Err()
	case ls.Context().Err() == nil && !errors.Is(err, lease.ErrAlreadyInitialized) &&
		!errors.Is(err, lease.ErrLost) && !errors.Is(err, lease.ErrExpired):
		c.releaseInitLock(ctx, ls)
		return false, err
	}
	// Fenced: another node may be initializing now. This node's init is
	// not the cluster's, and nothing can have joined it (no join info was
	// published): undo it.
	cause := err
	if ls.Context().Err() != nil {
		cause = context.Cause(ls.Context())
	}
	c.releaseInitLock(ctx, ls)
	return false, c.undoInit(ctx, fmt.Sprintf("this node lost the init lock while it initialized the cluster (%v)", cause))
}

// createMarker writes the initialized marker while the lease is held,
// retrying S3 failures with backoff until it is written, the lease is lost
// or another node's marker exists (*lease.AlreadyInitializedError).
func (c *ControlPlane) createMarker(ctx context.Context, ls *lease.Lease) error {
	b := c.RetryBackoff
	for {
		if err := ls.Check(); err != nil {
			return err
		}
		err := c.writeMarker(ctx, ls.Generation(), c.Reporter.State().InitializedAt)
		var exists *lease.AlreadyInitializedError
		if errors.As(err, &exists) && exists.Existing.InitializedBy == c.Election.self() {
			return nil // this instance's own, from an attempt whose answer was lost
		}
		if err == nil || errors.Is(err, lease.ErrAlreadyInitialized) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := b.Next()
		c.Reporter.Condition(state.PhaseDegraded, "marker-write:"+errorClass(err), fmt.Sprintf(
			"degraded: initialized the control plane, but cannot record it in %s: %v; retrying in %s (join info is published only after that)",
			c.markerURL(), err, delay.Round(time.Second)))
		if err := sleep(ls.Context(), c.Clock, c.Progress, delay); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return context.Cause(ls.Context())
		}
	}
}

// writeMarker creates the marker in this node's name.
func (c *ControlPlane) writeMarker(ctx context.Context, generation int64, initializedAt time.Time) error {
	hash, err := kubeadm.CACertHash(c.CACert)
	if err != nil {
		return fmt.Errorf("initialized marker: %w", err)
	}
	if initializedAt.IsZero() {
		initializedAt = c.Clock.Now()
	}
	m := &lease.Initialized{APIVersion: lease.APIVersion, Kind: lease.MarkerKind, Cluster: c.Config.Cluster,
		InitializedBy: c.Election.self(), InitializedAt: initializedAt.UTC().Truncate(time.Second),
		Endpoint: c.endpoint, CACertHashes: []string{hash}, Generation: max(generation, 1)}
	c.Progress.Within(RemoteCallTimeout)
	ctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	if err := c.Election.Marker.Create(ctx, m); err != nil {
		return err
	}
	c.Log.Info("recorded in S3 that this node initialized the cluster", zap.String("marker", c.markerURL()),
		zap.Int64("lockGeneration", m.Generation))
	return nil
}

// releaseInitLock gives the init lock up; a failure only costs the other
// nodes the rest of the lease (they also read the marker while they wait).
func (c *ControlPlane) releaseInitLock(ctx context.Context, ls *lease.Lease) {
	c.Progress.Within(RemoteCallTimeout)
	rctx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	defer cancel()
	switch err := ls.Release(rctx); {
	case errors.Is(err, lease.ErrNotHolder):
		c.Log.Info("the init lock is no longer this node's; nothing to release", zap.Error(err))
	case err != nil:
		c.Log.Warn("cannot release the init lock; it expires by itself", zap.Error(err))
	}
	c.Reporter.Update(func(s *state.State) { s.InitLockHolder = "" })
}

// undoInit resets this node's unfinished init (kubeadm reset -f) after it
// lost the election or the cluster turned out to be someone else's. Until
// the reset succeeded, initStartedAt stays, so a restart in between undoes
// it too.
func (c *ControlPlane) undoInit(ctx context.Context, why string) error {
	c.pending = nil
	c.Reporter.Update(func(s *state.State) { s.InitializedAt, s.InitLockHolder = time.Time{}, "" })
	if err := c.resetUntilDone(ctx, state.PhaseInitFailed, "init", why+"; undoing this node's unfinished init with kubeadm reset -f "+
		"(nothing can have joined it: no join info was published for it)"); err != nil {
		return err
	}
	c.Reporter.Update(func(s *state.State) {
		s.InitStartedAt, s.PendingTokenID, s.InitLockGeneration = time.Time{}, "", 0
	})
	c.Log.Info("undid this node's unfinished init")
	return nil
}

// initializedElsewhere handles a marker found by a node that holds no
// cluster: it never runs kubeadm init. An unfinished init of its own is
// undone first.
func (c *ControlPlane) initializedElsewhere(ctx context.Context, m *lease.Initialized) (bool, error) {
	st := c.Reporter.State()
	self := c.Election.self()
	if m.InitializedBy == self {
		c.Reporter.Condition(state.PhaseBlocked, "own-marker-without-cluster", fmt.Sprintf(
			"blocked: %s says this instance (%s) initialized cluster %s at %s, but this node has no usable %s and state.json "+
				"no record of a finished init; kubestrap will not run kubeadm init again. Restore %s, or, to start a new "+
				"cluster deliberately, remove the marker once no node uses the old cluster",
			c.markerURL(), self, c.Config.Cluster, m.InitializedAt.UTC().Format(time.RFC3339), c.AdminKubeconfig,
			c.Config.Kubeadm.ConfigDir))
		return false, nil
	}
	if !st.InitStartedAt.IsZero() {
		why := fmt.Sprintf("cluster %s was initialized by %s while this node's own kubeadm init (started at %s) had not finished",
			c.Config.Cluster, m.InitializedBy, st.InitStartedAt.UTC().Format(time.RFC3339))
		if err := c.undoInit(ctx, why); err != nil {
			return false, err
		}
	}
	if st.InitializedBy != m.InitializedBy || st.InitLockHolder != "" {
		c.Reporter.Update(func(s *state.State) { s.InitializedBy, s.InitLockHolder = m.InitializedBy, "" })
	}
	if c.cpJoinEnabled() {
		return c.joinControlPlane(ctx, m)
	}
	c.Reporter.Waiting(state.PhaseWaitingToJoin, "initialized-by:"+m.InitializedBy, fmt.Sprintf(
		"cluster %s was initialized by %s at %s (endpoint %s); joining as an additional control plane is not implemented "+
			"yet (issue 14): this node will not run kubeadm init and looks again every %s",
		c.Config.Cluster, m.InitializedBy, m.InitializedAt.UTC().Format(time.RFC3339), m.Endpoint, BlockedRecheck),
		zap.String("initializedBy", m.InitializedBy))
	return false, nil
}

// recordInitialized makes sure an initialized node's cluster is recorded in
// the marker as its own: it writes a missing marker (a node initialized
// before the election existed, or a crash between init and marker), and
// is Blocked by another instance's marker. again is true when the caller
// must look at the node again at once (this node's init turned out to be a
// lost one and is to be undone).
func (c *ControlPlane) recordInitialized(ctx context.Context) (again bool, err error) {
	self := c.Election.self()
	if !lease.ValidHolder(self) {
		c.Log.Warn("this node's EC2 instance ID is unknown, so it cannot check or write the cluster's initialized marker",
			zap.String("marker", c.markerURL()))
		return false, nil
	}
	b := c.RetryBackoff
	for {
		st := c.Reporter.State()
		m, err := c.readMarker(ctx)
		if errors.Is(err, lease.ErrNotInitialized) {
			err = c.writeMarker(ctx, st.InitLockGeneration, st.InitializedAt)
			if errors.Is(err, lease.ErrAlreadyInitialized) {
				continue // read it and decide
			}
			if err == nil {
				m = &lease.Initialized{InitializedBy: self}
			}
		}
		var wait time.Duration
		switch {
		case err == nil && m.InitializedBy == self:
			if st.InitializedBy != self {
				c.Reporter.Update(func(s *state.State) { s.InitializedBy = self })
			}
			c.releaseOwnInitLock(ctx)
			return false, nil
		case err == nil && !st.ControlPlaneJoinedAt.IsZero() && m.InitializedBy == st.InitializedBy:
			// A control plane that joined the cluster this marker names.
			return false, nil
		case err == nil && st.InitLockGeneration > 0 && st.JoinGeneration == 0 && st.PublishedETag == "":
			// This node's init finished under the election, but another
			// node's marker won before this one recorded its own, and no
			// join info was ever published for it: it is a lost init.
			c.Log.Warn("another node's initialized marker exists; this node's finished but unrecorded init is undone",
				zap.String("initializedBy", m.InitializedBy))
			c.Reporter.Update(func(s *state.State) { s.InitializedAt = time.Time{} })
			return true, nil
		case err == nil:
			c.Reporter.Condition(state.PhaseBlocked, "foreign-marker", fmt.Sprintf(
				"blocked: %s says cluster %s was initialized by %s at %s, but this node (%s) initialized a cluster of its own "+
					"at %s: two clusters for one name. kubestrap publishes no join info for it. Give one of them another "+
					"cluster name, or remove the marker if it is stale",
				c.markerURL(), c.Config.Cluster, m.InitializedBy, m.InitializedAt.UTC().Format(time.RFC3339), self,
				st.InitializedAt.UTC().Format(time.RFC3339)))
			wait = BlockedRecheck
		case errors.Is(err, lease.ErrInvalid):
			c.Reporter.Condition(state.PhaseBlocked, "marker-invalid", "blocked: "+err.Error())
			wait = BlockedRecheck
		default:
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			wait = b.Next()
			c.Reporter.Condition(state.PhaseDegraded, "marker:"+errorClass(err), fmt.Sprintf(
				"degraded: cannot record in %s that this node initialized the cluster: %v; retrying in %s "+
					"(join info is published only after that)", c.markerURL(), err, wait.Round(time.Second)))
		}
		if err := sleep(ctx, c.Clock, c.Progress, wait); err != nil {
			return false, err
		}
	}
}

// releaseOwnInitLock releases an init lock an earlier run of this agent left
// in this instance's name (it died after the marker, before the release),
// so other nodes need not wait for its lease. Only with ReclaimOwn: without
// the agent lock another agent process might hold it.
func (c *ControlPlane) releaseOwnInitLock(ctx context.Context) {
	lk := *c.Election.Lock
	if lk.ReclaimOwn == nil || !lk.ReclaimOwn() {
		return
	}
	c.Progress.Within(RemoteCallTimeout)
	ictx, cancel := context.WithTimeout(ctx, RemoteCallTimeout)
	st, err := lk.Inspect(ictx)
	cancel()
	if err != nil || !st.Held || st.Holder != lk.Holder {
		return
	}
	c.Progress.Within(lk.AttemptBudget())
	ls, err := lk.TryAcquire(ctx)
	if err != nil {
		c.Log.Warn("cannot release the init lock an earlier run of this agent left", zap.Error(err))
		return
	}
	c.releaseInitLock(ctx, ls)
	c.Log.Info("released the init lock an earlier run of this agent left", zap.String("lock", strings.TrimPrefix(lk.Key, "/")))
}

// InstanceIDFromProviderID returns the EC2 instance ID at the end of a
// providerID (aws:///<zone>/<instance ID>), or "" when there is none.
func InstanceIDFromProviderID(providerID string) string {
	return lease.InstanceIDFromProviderID(providerID)
}
