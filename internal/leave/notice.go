package leave

import (
	"fmt"
	"time"
)

// Kind is what kind of notice the instance received.
type Kind string

// The notice kinds.
const (
	// Spot is an EC2 spot interruption (spot/instance-action): the instance
	// is terminated, stopped or hibernated about two minutes later.
	Spot Kind = "Spot"
	// ASGTermination is an Auto Scaling termination held by a lifecycle hook
	// (autoscaling/target-lifecycle-state = Terminated): the instance waits
	// in Terminating:Wait until the hook is completed or times out.
	ASGTermination Kind = "ASGTermination"
	// Rebalance is an EC2 rebalance recommendation
	// (events/recommendations/rebalance): the spot instance is at elevated
	// risk of interruption. The node is cordoned, nothing is evicted.
	Rebalance Kind = "Rebalance"
)

// Notice is one leave signal, emitted once by the Watcher.
type Notice struct {
	Kind Kind
	// NoticeTime is when the signal was given: the rebalance recommendation's
	// noticeTime, or, for a spot or ASG notice (which carry none), when the
	// watcher first saw it.
	NoticeTime time.Time
	// Deadline is when the leave must be over, whatever is left: for a spot
	// notice the action time or NoticeTime plus the spot budget, whichever is
	// earlier; for an ASG notice NoticeTime plus the caller's budget (from the
	// hook's heartbeat timeout); for a rebalance NoticeTime plus the
	// rebalance budget (it bounds the cordon's retries).
	Deadline time.Time
	// Action is the spot action (terminate, stop, hibernate), the ASG target
	// lifecycle state (Terminated), or empty for a rebalance.
	Action string
}

// Terminates says whether the notice means the node goes away (pods are
// evicted), rather than a recommendation (cordon only).
func (n Notice) Terminates() bool { return n.Kind == Spot || n.Kind == ASGTermination }

// String is the notice for a log line or STATUS.
func (n Notice) String() string {
	switch n.Kind {
	case Spot:
		return fmt.Sprintf("spot interruption (%s), deadline %s", n.Action, n.Deadline.UTC().Format(time.RFC3339))
	case ASGTermination:
		return fmt.Sprintf("Auto Scaling termination (target lifecycle state %s), deadline %s", n.Action, n.Deadline.UTC().Format(time.RFC3339))
	case Rebalance:
		return fmt.Sprintf("rebalance recommendation of %s", n.NoticeTime.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s notice", n.Kind)
}
