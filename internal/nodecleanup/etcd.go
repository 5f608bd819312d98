package nodecleanup

import (
	"context"
	"net"
	"net/url"
	"time"

	"github.com/kubestrap/kubestrap/internal/etcdmember"
)

// KubeadmEtcd is EtcdMembers through this control plane's own etcd member
// (kubeadm's stacked etcd, https://127.0.0.1:2379, with kubeadm's
// apiserver-etcd-client certificate under ConfigDir/pki), a new client
// every call so that renewed certificates are picked up.
type KubeadmEtcd struct {
	// ConfigDir is kubeadm's configuration directory (/etc/kubernetes).
	ConfigDir string
	// Timeout bounds one removal: the member list, the health probes and
	// the remove (default 30s).
	Timeout time.Duration
}

// RemoveMember removes n's etcd member (matched by its name and the host of
// its peer URL, its InternalIP) if that keeps quorum safe; a member that is
// already gone counts as removed.
func (k KubeadmEtcd) RemoveMember(ctx context.Context, n Node) (bool, string, error) {
	var res etcdmember.Result
	err := k.withClient(ctx, func(ctx context.Context, c *etcdmember.Client) (err error) {
		res, err = c.RemoveIfSafe(ctx, etcdmember.Target{Name: n.Name, PeerHost: n.InternalIP})
		return err
	})
	if err != nil {
		return false, "", err
	}
	switch res.Decision {
	case etcdmember.Removed, etcdmember.NotFound:
		return true, res.Reason, nil
	}
	return false, res.Reason, nil
}

// Members lists the etcd members through this control plane's own member,
// within Timeout: each one's name and the host of its first peer URL.
func (k KubeadmEtcd) Members(ctx context.Context) ([]Member, error) {
	var ms []etcdmember.Member
	err := k.withClient(ctx, func(ctx context.Context, c *etcdmember.Client) (err error) {
		ms, err = c.Members(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]Member, 0, len(ms))
	for _, m := range ms {
		host := ""
		if len(m.PeerURLs) > 0 {
			if u, err := url.Parse(m.PeerURLs[0]); err == nil {
				host = u.Hostname()
				if ip := net.ParseIP(host); ip != nil {
					host = ip.String()
				}
			}
		}
		out = append(out, Member{Name: m.Name, PeerHost: host})
	}
	return out, nil
}

// withClient runs fn with a new client of the local member (renewed
// certificates are picked up) and a context bounded by Timeout.
func (k KubeadmEtcd) withClient(ctx context.Context, fn func(context.Context, *etcdmember.Client) error) error {
	c, err := etcdmember.NewKubeadm(k.ConfigDir)
	if err != nil {
		return err
	}
	defer c.Close()
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return fn(ctx, c)
}
