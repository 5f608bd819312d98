// Package nodecleanup deletes the Nodes that nothing else would: a kubeadm
// cluster has no cloud controller manager, so the Node of a terminated EC2
// instance stays NotReady forever. The control-plane agent's Cleaner
// compares the Nodes (by their providerID aws:///<zone>/<instance-id>) and
// the workers' leave records (internal/leave.Record) with what EC2 says,
// and deletes a Node only after EC2 confirms its instance is gone:
//
//   - EC2 reports it shutting-down or terminated: deleted;
//   - EC2 no longer knows it (terminated instances drop out of
//     DescribeInstances after about an hour): deleted only if the node posted
//     a leave record or its kubelet has been silent for GoneAfter, and only
//     while EC2 reports this control plane's own instance running (a wrong
//     region or endpoint makes every instance look unknown);
//   - pending, running, stopping or stopped: never deleted.
//
// The delete carries the Node's UID as a precondition, so a new Node that
// took the same name is never deleted in its place. A control plane's Node
// goes only after its etcd member was removed (Etcd; internal/etcdmember
// refuses while the removal would endanger quorum, or while the member
// answers): while that is refused the Node stays, which keeps the removal
// due at the next pass. A leave record is
// removed once its instance is gone and no Node names it, or after
// RecordTTL if the instance kept running (the notice did not end in a
// termination).
//
// Credentials: the control plane's admin.conf (deleting a Node is beyond
// what a node's own credentials may do: the Node authorizer grants
// system:nodes no delete) and the control-plane instance role's
// ec2:DescribeInstances and S3 access to <cluster>/*.
package nodecleanup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/errclass"
	"github.com/kubestrap/kubestrap/internal/leave"
	"github.com/kubestrap/kubestrap/internal/progress"
)

// Node is what the cleanup needs of a Node.
type Node struct {
	Name string
	UID  string
	// InstanceID is from the providerID; "" when it names no EC2 instance.
	InstanceID string
	// Ready is the Ready condition's status being True.
	Ready bool
	// LastHeartbeat is the Ready condition's lastHeartbeatTime (zero: none).
	LastHeartbeat time.Time
	// ControlPlane: the Node has the node-role.kubernetes.io/control-plane
	// label (it runs an etcd member). InternalIP is its InternalIP address
	// (the host of its etcd peer URL).
	ControlPlane bool
	InternalIP   string
}

// Nodes is the Kubernetes API seam.
type Nodes interface {
	// List returns every Node.
	List(ctx context.Context) ([]Node, error)
	// Delete deletes n if its UID is still n.UID; a Node already gone is
	// not an error.
	Delete(ctx context.Context, n Node) error
}

// Instances is the EC2 seam.
type Instances interface {
	// States returns the EC2 state name (pending, running, shutting-down,
	// terminated, stopping, stopped) of each of ids that EC2 knows; an ID
	// EC2 does not know is absent from the map.
	States(ctx context.Context, ids []string) (map[string]string, error)
}

// EtcdMembers is the etcd seam: it removes the etcd member of a control
// plane whose instance is gone, but only while quorum stays safe
// (internal/etcdmember). removed is true when the member is gone (removed
// now or before); otherwise reason says why it stays.
type EtcdMembers interface {
	RemoveMember(ctx context.Context, n Node) (removed bool, reason string, err error)
}

// Records is the leave record seam (leave.RecordStore).
type Records interface {
	List(ctx context.Context) ([]leave.StoredRecord, error)
	Delete(ctx context.Context, key string) error
}

// Deletion is one Node deleted and why.
type Deletion struct {
	Node       string
	InstanceID string
	Reason     string
}

// Round is what one pass found and did.
type Round struct {
	Deleted []Deletion
	// Kept names, per Node not deleted whose instance is not running, why.
	Kept           map[string]string
	RecordsRemoved []string
	// MembersRemoved names the etcd members the orphan sweep removed.
	MembersRemoved []string
}

// Cleaner is the control plane's node cleanup.
type Cleaner struct {
	Nodes     Nodes
	Instances Instances
	// Records may be nil (no leave records read).
	Records Records
	// Etcd removes the etcd member of a control plane before its Node is
	// deleted; the Node stays while that is refused or fails (so the removal
	// is tried again next pass). nil: control-plane Nodes are never deleted.
	Etcd EtcdMembers
	// SelfInstance is this control plane's instance ID; SelfNode its Node
	// (never deleted).
	SelfInstance, SelfNode string
	Clock                  clock.Clock
	Log                    *zap.Logger
	// Interval spaces the passes (default 20s).
	Interval time.Duration
	// GoneAfter is how long a Node whose instance EC2 no longer knows must
	// have been silent (no Ready heartbeat) before it is deleted without a
	// leave record (default 10m).
	GoneAfter time.Duration
	// RecordTTL is how long a leave record of a running instance is kept
	// (default 24h).
	RecordTTL time.Duration
	// Members and InstancesByIP, with Etcd, enable the sweep of etcd
	// members that no Node names (see sweepOrphans); nil: no sweep.
	Members       MemberList
	InstancesByIP InstancesByIP
	// OnMemberRemoved hears each member the sweep removed.
	OnMemberRemoved func(member, peerHost, reason string)
	// Active, when set, says whether this control plane makes the passes
	// now: of several control planes only the one holding the uploader
	// lock does, so that two never delete the same Node or etcd member. A
	// pass that finds it false is skipped: nothing is listed or deleted.
	Active func() bool
	// OnDeleted hears each deletion; OnRound each pass (err: why it failed).
	OnDeleted func(Deletion)
	OnRound   func(Round, error)
	Progress  *progress.Heartbeat

	warned map[string]bool
	// recordsProblem is the kind (errorClass) of the last failure to read
	// the leave records, or "" while they are readable: a lasting failure is
	// logged once, not at every pass.
	recordsProblem string
	// orphanSince is when the sweep first saw, by peer host, an etcd member
	// that no Node names and whose address no EC2 instance has.
	orphanSince map[string]time.Time
}

func (c *Cleaner) defaults() {
	if c.Interval <= 0 {
		c.Interval = 20 * time.Second
	}
	if c.GoneAfter <= 0 {
		c.GoneAfter = 10 * time.Minute
	}
	if c.RecordTTL <= 0 {
		c.RecordTTL = 24 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	if c.orphanSince == nil {
		c.orphanSince = map[string]time.Time{}
	}
}

// callBudget is promised to the progress board for one pass: a list of
// Nodes, of records and their reads, the EC2 calls and the deletes, each
// bounded by its own deadline.
const callBudget = 3 * time.Minute

// Run makes a pass every Interval until ctx ends. A failed pass is retried
// at the next one; nothing is deleted without an answer from EC2.
func (c *Cleaner) Run(ctx context.Context) error {
	c.defaults()
	var lastErr string
	wasActive := true
	for {
		active := c.Active == nil || c.Active()
		switch {
		case active && !wasActive:
			c.Log.Info("this control plane runs the node cleanup now (it holds the uploader lock)")
		case !active && wasActive:
			c.Log.Info("another control plane runs the node cleanup (the holder of the uploader lock); this one skips its passes")
		}
		wasActive = active
		if active {
			if err := c.pass(ctx, &lastErr); err != nil {
				return err
			}
		}
		if c.Progress != nil {
			c.Progress.Within(c.Interval + time.Minute)
		}
		t := c.Clock.NewTimer(c.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// pass makes one pass for Run and logs a failure once per kind (lastErr);
// it returns an error only when ctx ended.
func (c *Cleaner) pass(ctx context.Context, lastErr *string) error {
	if c.Progress != nil {
		c.Progress.Within(callBudget)
	}
	r, err := c.Once(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// A lasting failure (say, AccessDenied) is logged once, not at every
	// pass.
	switch {
	case err != nil && err.Error() != *lastErr:
		c.Log.Warn("node cleanup pass failed; retrying at every pass, logged again when the error changes", zap.Error(err))
		*lastErr = err.Error()
	case err == nil && *lastErr != "":
		c.Log.Info("node cleanup passes succeed again")
		*lastErr = ""
	}
	if c.OnRound != nil {
		c.OnRound(r, err)
	}
	return nil
}

// gone says whether an EC2 state means the instance will not come back.
func gone(state string) bool { return state == "shutting-down" || state == "terminated" }

// Once makes one pass.
func (c *Cleaner) Once(ctx context.Context) (Round, error) {
	c.defaults()
	r := Round{Kept: map[string]string{}}
	nodes, err := c.Nodes.List(ctx)
	if err != nil {
		return r, fmt.Errorf("list Nodes: %w", err)
	}
	var records []leave.StoredRecord
	if c.Records != nil {
		if records, err = c.Records.List(ctx); err != nil {
			// Records are hints: go on with EC2 alone.
			c.recordsFailed(ctx, err)
			records = nil
		} else if c.recordsProblem != "" {
			c.recordsProblem = ""
			c.Log.Info("the leave records are readable again")
		}
	}
	recorded := map[string]leave.StoredRecord{}
	ids := map[string]bool{}
	if c.SelfInstance != "" {
		ids[c.SelfInstance] = true
	}
	for _, n := range nodes {
		if n.InstanceID != "" {
			ids[n.InstanceID] = true
		}
	}
	for _, rec := range records {
		if rec.Invalid != nil {
			if !c.warned[rec.Key] {
				c.warned[rec.Key] = true
				c.Log.Warn("ignoring an object under the leave prefix that is not a valid leave record; it is removed after the record TTL",
					zap.String("key", rec.Key), zap.Error(rec.Invalid))
			}
			continue
		}
		recorded[rec.Record.InstanceID] = rec
		ids[rec.Record.InstanceID] = true
	}
	if len(ids) == 0 {
		return r, nil
	}
	states, err := c.Instances.States(ctx, sortedKeys(ids))
	if err != nil {
		return r, fmt.Errorf("ask EC2 about %d instances: %w", len(ids), err)
	}
	// An instance EC2 does not know counts as gone only while EC2 shows
	// this instance running: otherwise the answer may come from the wrong
	// region or account.
	selfState := states[c.SelfInstance]
	trustAbsent := selfState == "running" || selfState == "pending"
	if !trustAbsent && !c.warned["self"] {
		c.warned["self"] = true
		c.Log.Warn("EC2 does not report this instance running; Nodes of instances EC2 does not know are kept",
			zap.String("instance", c.SelfInstance), zap.String("state", selfState))
	}
	now := c.Clock.Now()
	remaining := map[string]bool{}
	var failed []error
	for _, n := range nodes {
		if n.InstanceID == "" || n.Name == c.SelfNode || n.InstanceID == c.SelfInstance {
			continue
		}
		state, known := states[n.InstanceID]
		_, hasRecord := recorded[n.InstanceID]
		var reason string
		switch {
		case known && gone(state):
			reason = fmt.Sprintf("EC2 reports its instance %s %s", n.InstanceID, state)
		case known:
			if state != "running" && state != "pending" {
				r.Kept[n.Name] = fmt.Sprintf("instance %s is %s", n.InstanceID, state)
			}
		case !trustAbsent:
			r.Kept[n.Name] = fmt.Sprintf("EC2 does not know instance %s, but does not report this instance running either", n.InstanceID)
		case hasRecord:
			reason = fmt.Sprintf("it posted a leave record and EC2 no longer knows its instance %s", n.InstanceID)
		case !n.Ready && !n.LastHeartbeat.IsZero() && now.Sub(n.LastHeartbeat) >= c.GoneAfter:
			reason = fmt.Sprintf("EC2 no longer knows its instance %s and its kubelet has been silent since %s",
				n.InstanceID, n.LastHeartbeat.UTC().Format(time.RFC3339))
		default:
			r.Kept[n.Name] = fmt.Sprintf("EC2 does not know instance %s; waiting until its kubelet has been silent for %s", n.InstanceID, c.GoneAfter)
		}
		if reason == "" {
			remaining[n.InstanceID] = true
			continue
		}
		if n.ControlPlane {
			kept, err := c.removeEtcdMember(ctx, n)
			if err != nil {
				failed = append(failed, err)
			}
			if kept != "" {
				r.Kept[n.Name] = kept
				remaining[n.InstanceID] = true
				continue
			}
			reason += "; its etcd member is gone"
		}
		if err := c.Nodes.Delete(ctx, n); err != nil {
			// The others are still done; this one is tried again next pass.
			remaining[n.InstanceID] = true
			failed = append(failed, fmt.Errorf("delete Node %s (%s): %w", n.Name, reason, err))
			continue
		}
		d := Deletion{Node: n.Name, InstanceID: n.InstanceID, Reason: reason}
		r.Deleted = append(r.Deleted, d)
		c.Log.Info("deleted the Node of a terminated instance", zap.String("node", n.Name),
			zap.String("instance", n.InstanceID), zap.String("reason", reason))
		if c.OnDeleted != nil {
			c.OnDeleted(d)
		}
	}
	for _, rec := range records {
		stale := now.Sub(rec.Modified) >= c.RecordTTL
		if rec.Invalid == nil {
			state, known := states[rec.Record.InstanceID]
			instanceGone := (known && gone(state)) || (!known && trustAbsent)
			if !(instanceGone && !remaining[rec.Record.InstanceID]) && !stale {
				continue
			}
		} else if !stale {
			continue
		}
		if err := c.Records.Delete(ctx, rec.Key); err != nil {
			failed = append(failed, fmt.Errorf("remove leave record: %w", err))
			continue
		}
		r.RecordsRemoved = append(r.RecordsRemoved, rec.Key)
		delete(c.warned, rec.Key)
	}
	removed, err := c.sweepOrphans(ctx, nodes, trustAbsent)
	r.MembersRemoved = removed
	if err != nil {
		failed = append(failed, err)
	}
	return r, errors.Join(failed...)
}

// recordsFailed logs a failure to read the leave records once per kind:
// the same failure at every pass (say, AccessDenied) is not logged again
// until it changes or the records are readable again.
func (c *Cleaner) recordsFailed(ctx context.Context, err error) {
	class := errclass.Of(err)
	if ctx.Err() != nil || class == c.recordsProblem {
		return
	}
	c.recordsProblem = class
	c.Log.Warn("cannot read the leave records; going on without them, and logging this again only when the error changes",
		zap.String("class", class), zap.Error(err))
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// removeEtcdMember removes the etcd member of control plane n first; kept
// says why its Node stays ("" when the member is gone).
func (c *Cleaner) removeEtcdMember(ctx context.Context, n Node) (kept string, err error) {
	if c.Etcd == nil {
		return "a control plane, and this cleanup cannot remove etcd members", nil
	}
	removed, why, err := c.Etcd.RemoveMember(ctx, n)
	switch {
	case err != nil:
		return "its etcd member could not be removed (tried again next pass): " + err.Error(),
			fmt.Errorf("remove the etcd member of %s: %w", n.Name, err)
	case !removed:
		if !c.warned["etcd:"+n.Name] {
			c.warned["etcd:"+n.Name] = true
			c.Log.Warn("keeping the Node of a terminated control plane: its etcd member is not removed yet",
				zap.String("node", n.Name), zap.String("instance", n.InstanceID), zap.String("reason", why))
		}
		return "its etcd member stays for now: " + why, nil
	}
	c.Log.Info("removed the etcd member of a terminated control plane", zap.String("node", n.Name),
		zap.String("instance", n.InstanceID), zap.String("etcd", why))
	return "", nil
}
