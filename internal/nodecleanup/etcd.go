package nodecleanup

import (
	"context"
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
	c, err := etcdmember.NewKubeadm(k.ConfigDir)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	timeout := k.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := c.RemoveIfSafe(ctx, etcdmember.Target{Name: n.Name, PeerHost: n.InternalIP})
	if err != nil {
		return false, "", err
	}
	switch res.Decision {
	case etcdmember.Removed, etcdmember.NotFound:
		return true, res.Reason, nil
	}
	return false, res.Reason, nil
}
