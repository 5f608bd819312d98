package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
)

// Target names the member of a terminated control plane: kubeadm names the
// member after the node and gives it the peer URL https://<node IP>:2380.
// Either field may be empty, not both. A member that was added but never
// started has no name: only its peer URL host finds it.
type Target struct {
	// Name is the node name (the member name).
	Name string
	// PeerHost is the node's IP (the host of the member's peer URL).
	PeerHost string
}

// String names the target for logs and errors.
func (t Target) String() string {
	switch {
	case t.Name != "" && t.PeerHost != "":
		return fmt.Sprintf("%s (peer host %s)", t.Name, t.PeerHost)
	case t.Name != "":
		return t.Name
	default:
		return "peer host " + t.PeerHost
	}
}

// Decision is what RemoveIfSafe did.
type Decision string

// The decisions.
const (
	// Removed: the member was removed.
	Removed Decision = "removed"
	// NotFound: no member matches (already removed): nothing to do.
	NotFound Decision = "not-found"
	// Refused: a member matches but removing it is not safe now (see
	// Result.Reason); try again later.
	Refused Decision = "refused"
)

// Result is what RemoveIfSafe decided and why, for the log.
type Result struct {
	Decision Decision
	// Member is the member found (zero for NotFound).
	Member Member
	// MatchedBy says how it was found: "name", "peer host" or
	// "name and peer host".
	MatchedBy string
	// Reason explains the decision in plain words.
	Reason string
	// Voters is the number of voting members before the removal and
	// Healthy how many of them, the target excluded, answered /health
	// healthy (both 0 when no quorum check was made).
	Voters, Healthy int
}

// quorum is the majority of n voting members.
func quorum(n int) int { return n/2 + 1 }

// RemoveIfSafe removes the member t names, but only when that is safe. It
// asks the first endpoint (the local member) for the member list, finds the
// member by name and/or by the host of its peer URL, and
//
//   - does nothing (NotFound, no error) when no member matches: it was
//     already removed;
//   - refuses (Refused, no error) when several members match, when it is
//     the member that answered (the local member), when it is alive (it
//     answers on a client URL, even unhealthy, or on a peer URL: a live
//     member is never removed), when it is the last voting member, or when
//     the healthy voting members, the target excluded, are fewer than the
//     quorum of the current voting membership: a member remove is a raft
//     configuration change that this quorum must commit, and it is at least
//     the quorum of the voting membership left after the removal (so
//     3 voters with 1 dead: 2 healthy of quorum 2, removed; 3 voters with
//     2 dead, or 2 voters with 1 dead: the cluster has no quorum, refused; a
//     learner does not vote, so a dead learner is removed while the voters
//     have quorum);
//   - otherwise removes it (Removed). A remove answered "member not found"
//     (removed meanwhile) is NotFound.
//
// An error means no decision could be made (the local member did not
// answer the list) or the remove failed; nothing was removed then.
func (c *Client) RemoveIfSafe(ctx context.Context, t Target) (Result, error) {
	if t.Name == "" && t.PeerHost == "" {
		return Result{}, errors.New("remove etcd member: the target has neither a name nor a peer host")
	}
	ep := c.endpoints[0]
	members, self, err := c.list(ctx, ep)
	if err != nil {
		return Result{}, fmt.Errorf("remove etcd member %s: list the members at the local endpoint: %w", t, err)
	}
	var found []Result
	for _, m := range members {
		byName := t.Name != "" && m.Name == t.Name
		byHost := t.PeerHost != "" && peerHostIs(m, t.PeerHost)
		switch {
		case byName && byHost:
			found = append(found, Result{Member: m, MatchedBy: "name and peer host"})
		case byName:
			found = append(found, Result{Member: m, MatchedBy: "name"})
		case byHost:
			found = append(found, Result{Member: m, MatchedBy: "peer host"})
		}
	}
	switch len(found) {
	case 0:
		return Result{Decision: NotFound, Reason: fmt.Sprintf("no etcd member matches %s among %d members: already removed", t, len(members))}, nil
	case 1:
	default:
		var names []string
		for _, f := range found {
			names = append(names, f.Member.String()+" by "+f.MatchedBy)
		}
		return Result{Decision: Refused, Reason: fmt.Sprintf("several etcd members match %s: %s; not choosing one",
			t, strings.Join(names, "; "))}, nil
	}
	r := found[0]
	target := r.Member
	if target.ID == self {
		r.Decision, r.Reason = Refused, "it is the member that answered at "+ep+" (the local member)"
		return r, nil
	}

	// A learner other than the target neither votes nor is the target.
	probes := c.probeAll(ctx, members, func(m Member) bool { return !m.IsLearner || m.ID == target.ID })
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("remove etcd member %s: probe the members: %w", target, err)
	}
	var unhealthy []string
	var targetProbe probeResult
	for i, m := range members {
		switch {
		case m.ID == target.ID:
			targetProbe = probes[i]
			if p := probes[i]; p.alive {
				r.Decision, r.Reason = Refused, "it is alive: "+p.detail+"; a live member is never removed"
				return r, nil
			}
		case m.IsLearner:
		default:
			r.Voters++
			if probes[i].healthy {
				r.Healthy++
			} else {
				label := m.Name
				if label == "" {
					label = fmt.Sprintf("unstarted %x", m.ID)
				}
				unhealthy = append(unhealthy, label+": "+probes[i].detail)
			}
		}
	}
	if !target.IsLearner {
		r.Voters++
	}
	if !target.IsLearner && r.Voters == 1 {
		r.Decision, r.Reason = Refused, "it is the last voting member"
		return r, nil
	}
	need := quorum(r.Voters)
	after := r.Voters
	if !target.IsLearner {
		after--
	}
	if r.Healthy < need {
		r.Decision = Refused
		r.Reason = fmt.Sprintf("it does not answer, but only %d of the other voting members are healthy: removing it is a change "+
			"the quorum of the %d voting members (%d) must commit (%d voting members would remain, quorum %d)",
			r.Healthy, r.Voters, need, after, quorum(after))
		if len(unhealthy) > 0 {
			r.Reason += "; not healthy: " + strings.Join(unhealthy, "; ")
		}
		return r, nil
	}
	if _, err := c.remove(ctx, ep, target.ID); err != nil {
		var ge *gatewayError
		if errors.As(err, &ge) && ge.Code == grpcNotFound {
			r.Decision, r.Reason = NotFound, "it was removed meanwhile (etcd answered member not found)"
			return r, nil
		}
		return r, fmt.Errorf("remove etcd member %s: %w", target, err)
	}
	r.Decision = Removed
	r.Reason = fmt.Sprintf("it did not answer on its client or peer URLs (%s); %d of the other %d voting members are healthy "+
		"(quorum %d), %d voting members remain (quorum %d)",
		targetProbe.detail, r.Healthy, r.Voters-boolInt(!target.IsLearner), need, after, quorum(after))
	return r, nil
}

// probeAll probes the members for which want is true, all at once, each
// bounded by the health timeout; the others' results are zero.
func (c *Client) probeAll(ctx context.Context, members []Member, want func(Member) bool) []probeResult {
	probes := make([]probeResult, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		if !want(m) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i] = c.probe(ctx, m)
		}()
	}
	wg.Wait()
	return probes
}

// peerHostIs says whether one of m's peer URLs has host as its host (an IP
// compared as an IP).
func peerHostIs(m Member, host string) bool {
	want := net.ParseIP(host)
	for _, pu := range m.PeerURLs {
		u, err := url.Parse(pu)
		if err != nil {
			continue
		}
		h := u.Hostname()
		if h == host {
			return true
		}
		if ip := net.ParseIP(h); ip != nil && want != nil && ip.Equal(want) {
			return true
		}
	}
	return false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
