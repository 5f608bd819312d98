package nodecleanup

import (
	"context"
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"
)

// Member is an etcd member as the orphan sweep sees it: kubeadm names a
// member after its node and gives it the peer URL https://<node IP>:2380.
// A member added by a join that never started has no name.
type Member struct {
	Name     string
	PeerHost string
}

// MemberList is the etcd seam of the orphan sweep.
type MemberList interface {
	Members(ctx context.Context) ([]Member, error)
}

// InstancesByIP is the EC2 seam of the orphan sweep.
type InstancesByIP interface {
	// StatesByPrivateIP returns, for each of ips that an instance EC2 knows
	// has as its private IP, that instance's state (a live one first);
	// an IP no instance has is absent.
	StatesByPrivateIP(ctx context.Context, ips []string) (map[string]string, error)
}

// sweepOrphans removes the etcd members that no Node names (by name or by
// InternalIP) and whose instance is gone: EC2 reports the instance with
// that private IP shutting down or terminated, or, while EC2 reports this
// instance running, no instance has that IP for GoneAfter in a row (a
// terminated instance soon loses its address). Such a member is left by a
// control plane whose Node was deleted by hand, or that died inside its
// kubeadm join before it registered (an unstarted learner blocks every
// later join: etcd allows one learner). Each removal goes through Etcd
// (only while quorum stays safe, never a member that answers). nodes is
// this pass's Node list; trustAbsent says whether EC2 shows this instance
// running.
func (c *Cleaner) sweepOrphans(ctx context.Context, nodes []Node, trustAbsent bool) ([]string, error) {
	if c.Etcd == nil || c.Members == nil || c.InstancesByIP == nil {
		return nil, nil
	}
	members, err := c.Members.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("list etcd members: %w", err)
	}
	named, addressed := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		named[n.Name] = true
		if n.InternalIP != "" {
			addressed[n.InternalIP] = true
		}
	}
	orphans := map[string]Member{}
	for _, m := range members {
		if m.PeerHost == "" || (m.Name != "" && named[m.Name]) || addressed[m.PeerHost] || m.Name == c.SelfNode {
			continue
		}
		orphans[m.PeerHost] = m
	}
	for ip := range c.orphanSince {
		if _, ok := orphans[ip]; !ok {
			delete(c.orphanSince, ip) // gone, or a Node names it again
		}
	}
	if len(orphans) == 0 {
		return nil, nil
	}
	ips := make([]string, 0, len(orphans))
	for ip := range orphans {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	states, err := c.InstancesByIP.StatesByPrivateIP(ctx, ips)
	if err != nil {
		return nil, fmt.Errorf("ask EC2 about the addresses of %d etcd members no Node names: %w", len(ips), err)
	}
	now := c.Clock.Now()
	var removed []string
	var failed error
	for _, ip := range ips {
		m := orphans[ip]
		label := m.Name
		if label == "" {
			label = "an unstarted member"
		}
		state, known := states[ip]
		var reason string
		switch {
		case known && gone(state):
			reason = fmt.Sprintf("no Node names it and EC2 reports the instance with its address %s %s", ip, state)
		case known, !trustAbsent:
			delete(c.orphanSince, ip)
			continue
		default:
			since, seen := c.orphanSince[ip]
			if !seen {
				c.orphanSince[ip] = now
				since = now
			}
			if now.Sub(since) < c.GoneAfter {
				continue
			}
			reason = fmt.Sprintf("no Node names it and no EC2 instance has its address %s since %s", ip,
				since.UTC().Format(time.RFC3339))
		}
		ok, why, err := c.Etcd.RemoveMember(ctx, Node{Name: m.Name, InternalIP: ip})
		switch {
		case err != nil:
			failed = fmt.Errorf("remove the etcd member %s (%s): %w", label, ip, err)
			continue
		case !ok:
			if !c.warned["orphan:"+ip] {
				c.warned["orphan:"+ip] = true
				c.Log.Warn("keeping an etcd member that no Node names: it cannot be removed now",
					zap.String("member", label), zap.String("peerHost", ip), zap.String("why", reason), zap.String("reason", why))
			}
			continue
		}
		delete(c.orphanSince, ip)
		delete(c.warned, "orphan:"+ip)
		removed = append(removed, label+" ("+ip+")")
		c.Log.Info("removed an etcd member that no Node names", zap.String("member", label), zap.String("peerHost", ip),
			zap.String("reason", reason), zap.String("etcd", why))
		if c.OnMemberRemoved != nil {
			c.OnMemberRemoved(label, ip, reason)
		}
	}
	return removed, failed
}
