package etcdmember

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// Safe is OwnRemovalSafe's decision that removing the member keeps quorum.
const Safe Decision = "safe"

// OwnRemovalSafe says whether the member t names, this node's own, added by
// a control-plane join that did not finish, may be removed now (kubeadm
// reset -f removes it, and deletes the member's data even when the removal
// fails) without the cluster losing quorum. It lists the members at the
// endpoints in order (the local member may be down), probes the voting
// members and decides:
//
//   - NotFound: no member matches: there is nothing to remove;
//   - Safe: it is a learner (it does not vote), or the healthy voting
//     members, it counted when it answers healthy, reach the quorum of the
//     voting membership (they commit the removal) and the healthy others
//     the quorum of the membership left after it (the cluster goes on);
//   - Refused otherwise (several members match, or the counts fall short),
//     with the reason: a member of two voters that is down is the case, and
//     the kubelet starts it again from its static Pod manifest.
//
// An error means no endpoint answered the member list: nothing can be said.
func (c *Client) OwnRemovalSafe(ctx context.Context, t Target) (Result, error) {
	if t.Name == "" && t.PeerHost == "" {
		return Result{}, errors.New("own etcd member: the target has neither a name nor a peer host")
	}
	members, err := c.Members(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("own etcd member %s: %w", t, err)
	}
	var found []Result
	for _, m := range members {
		byName := t.Name != "" && m.Name == t.Name
		byHost := t.PeerHost != "" && peerHostIs(m, t.PeerHost)
		if byName || byHost {
			found = append(found, Result{Member: m})
		}
	}
	switch len(found) {
	case 0:
		return Result{Decision: NotFound, Reason: fmt.Sprintf("no etcd member matches %s among %d members", t, len(members))}, nil
	case 1:
	default:
		return Result{Decision: Refused, Reason: fmt.Sprintf("%d etcd members match %s; not choosing one", len(found), t)}, nil
	}
	r := found[0]
	target := r.Member
	if target.IsLearner {
		r.Decision, r.Reason = Safe, "it is a learner: it does not vote, the voting members decide its removal"
		return r, nil
	}
	probes := c.probeAll(ctx, members, func(m Member) bool { return !m.IsLearner })
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("own etcd member %s: probe the members: %w", target, err)
	}
	selfHealthy := false
	var unhealthy []string
	for i, m := range members {
		switch {
		case m.IsLearner:
		case m.ID == target.ID:
			r.Voters++
			selfHealthy = probes[i].healthy
			if !selfHealthy {
				unhealthy = append(unhealthy, "this node's: "+probes[i].detail)
			}
		default:
			r.Voters++
			if probes[i].healthy {
				r.Healthy++
			} else {
				unhealthy = append(unhealthy, m.Name+": "+probes[i].detail)
			}
		}
	}
	commit := r.Healthy + boolInt(selfHealthy)
	if commit >= quorum(r.Voters) && r.Healthy >= quorum(r.Voters-1) {
		r.Decision = Safe
		r.Reason = fmt.Sprintf("it is one of %d voting members; %d healthy (quorum %d) commit its removal and %d healthy "+
			"others keep the quorum (%d) of the %d left", r.Voters, commit, quorum(r.Voters), r.Healthy,
			quorum(r.Voters-1), r.Voters-1)
		return r, nil
	}
	r.Decision = Refused
	r.Reason = fmt.Sprintf("it is one of %d voting members and only %d are healthy (%d of them others): removing it needs "+
		"%d healthy to commit and leaves %d voting members that need %d healthy", r.Voters, commit, r.Healthy,
		quorum(r.Voters), r.Voters-1, quorum(r.Voters-1))
	if len(unhealthy) > 0 {
		r.Reason += "; not healthy: " + strings.Join(unhealthy, "; ")
	}
	return r, nil
}

// ManifestPeers returns the client endpoints (https://<host>:2379) of the
// other members named in the --initial-cluster flag of kubeadm's etcd static
// Pod manifest at path (a joining member's manifest lists the members it
// joined), leaving out the one whose peer host is self. A missing manifest
// is an error that wraps fs.ErrNotExist.
func ManifestPeers(path, self string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the etcd manifest: %w", err)
	}
	var pod struct {
		Spec struct {
			Containers []struct {
				Command []string `json:"command"`
			} `json:"containers"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, fmt.Errorf("etcd manifest %s: %w", path, err)
	}
	var eps []string
	for _, ctr := range pod.Spec.Containers {
		for _, arg := range ctr.Command {
			v, ok := strings.CutPrefix(arg, "--initial-cluster=")
			if !ok {
				continue
			}
			for _, kv := range strings.Split(v, ",") {
				_, peer, ok := strings.Cut(kv, "=")
				u, err := url.Parse(peer)
				if !ok || err != nil || u.Hostname() == "" {
					return nil, fmt.Errorf("etcd manifest %s: --initial-cluster entry %q is not name=https://host:port", path, kv)
				}
				if ip := net.ParseIP(u.Hostname()); u.Hostname() == self || (ip != nil && ip.Equal(net.ParseIP(self))) {
					continue
				}
				eps = append(eps, "https://"+net.JoinHostPort(u.Hostname(), "2379"))
			}
		}
	}
	return eps, nil
}

// NewKubeadmWithPeers is NewKubeadm whose member list falls back on the
// other members of the local manifest's --initial-cluster (see
// ManifestPeers; self is this node's IP), for a node whose own member may be
// down.
func NewKubeadmWithPeers(configDir, self string) (*Client, error) {
	peers, err := ManifestPeers(filepath.Join(configDir, "manifests", "etcd.yaml"), self)
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(configDir, "pki")
	cfg, err := TLSFromFiles(filepath.Join(pki, "etcd", "ca.crt"),
		filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key"))
	if err != nil {
		return nil, err
	}
	return New(Config{Endpoints: append([]string{LocalEndpoint}, peers...), TLS: cfg})
}

// RemoveByID removes the member id, asking the endpoints in order until one
// answers; a member that is already gone (etcd answers "member not found")
// is not an error. Only for this node's own member once OwnRemovalSafe said
// Safe: it checks nothing itself.
func (c *Client) RemoveByID(ctx context.Context, id uint64) error {
	var errs []error
	for _, ep := range c.endpoints {
		_, err := c.remove(ctx, ep, id)
		var ge *gatewayError
		switch {
		case err == nil, errors.As(err, &ge) && ge.Code == grpcNotFound:
			return nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("remove etcd member %x: %w", id, errors.Join(errs...))
}
