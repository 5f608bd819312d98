package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/etcdmember"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/role"
)

// newElection is the control plane's part in the S3 coordination of issue
// 14: the init lock and marker, and the control-plane join (join info for
// control planes, join requests, the join and uploader locks).
func newElection(cfg *config.AgentConfig, node kubeadm.Node, s3Client *s3.Client, ec2Client *ec2.Client,
	reclaimOwn func() bool, admin string, log *zap.Logger) *role.InitElection {
	lock := func(name string) *lease.Lock {
		return &lease.Lock{Client: s3Client, Bucket: cfg.Bucket, Key: lease.LockKey(cfg.Cluster, name),
			Holder: role.InstanceIDFromProviderID(node.ProviderID), KMSKeyID: cfg.ControlPlane.KMSKeyID,
			HolderAlive: lease.EC2HolderAlive(ec2Client), ReclaimOwn: reclaimOwn, LeaseDuration: cfg.ControlPlane.LockLease.Duration,
			OnRenewFailure: func(err error) { log.Warn("cannot renew the "+name+" lock", zap.Error(err)) }}
	}
	store := func(key string) *join.Store {
		return &join.Store{Client: s3Client, Bucket: cfg.Bucket, Key: key, KMSKeyID: cfg.ControlPlane.KMSKeyID}
	}
	return &role.InitElection{
		Lock: lock(lease.InitLock),
		Marker: &lease.Marker{Client: s3Client, Bucket: cfg.Bucket, Key: lease.MarkerKey(cfg.Cluster), Cluster: cfg.Cluster,
			KMSKeyID: cfg.ControlPlane.KMSKeyID},
		ControlPlaneInfo:     store(join.ControlPlaneKey(cfg.Cluster)),
		JoinRequest:          store(join.ControlPlaneJoinRequestKey(cfg.Cluster)),
		JoinLock:             lock(lease.JoinLock),
		UploaderLock:         lock(lease.UploaderLock),
		CertificatesUploaded: func(ctx context.Context) (bool, error) { return certificatesSecretExists(ctx, admin) },
		JoinUndoSafe: func(ctx context.Context) (bool, string, error) {
			return joinUndoSafe(ctx, cfg, node)
		},
	}
}

// joinUndoSafe prepares kubeadm reset -f of this node's unfinished
// control-plane join. kubeadm reset removes the etcd member through the
// API server and deletes the member's data even when that removal fails,
// so the agent removes the member itself first, through etcd, and only
// while that keeps the quorum (etcdmember.OwnRemovalSafe, asking the local
// member and then the members its etcd manifest joined): true once this
// node has no member left. Without the etcd client certificate or the etcd
// manifest the join never started an etcd member of this node (kubeadm
// writes both before), so there is no voter to lose.
func joinUndoSafe(ctx context.Context, cfg *config.AgentConfig, node kubeadm.Node) (bool, string, error) {
	configDir := cfg.Kubeadm.ConfigDir
	for _, f := range []string{filepath.Join(configDir, "pki", "apiserver-etcd-client.key"),
		filepath.Join(configDir, "manifests", "etcd.yaml")} {
		switch _, err := os.Stat(f); {
		case errors.Is(err, fs.ErrNotExist):
			return true, "the join wrote no " + f + ": it never started an etcd member of this node", nil
		case err != nil:
			return false, "", fmt.Errorf("look for %s: %w", f, err)
		}
	}
	// The member's peer host is the advertise address.
	self := node.IP
	if cfg.Kubeadm.AdvertiseAddress != "" {
		self = cfg.Kubeadm.AdvertiseAddress
	}
	c, err := etcdmember.NewKubeadmWithPeers(configDir, self)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	r, err := c.OwnRemovalSafe(ctx, etcdmember.Target{Name: node.Name, PeerHost: self})
	switch {
	case err != nil:
		return false, "", err
	case r.Decision == etcdmember.NotFound:
		return true, "this node has no etcd member: " + r.Reason, nil
	case r.Decision != etcdmember.Safe:
		return false, "this node's etcd member " + r.Member.String() + ": " + r.Reason, nil
	}
	if err := c.RemoveByID(ctx, r.Member.ID); err != nil {
		return false, "", err
	}
	return true, "removed this node's etcd member " + r.Member.String() + " through etcd: " + r.Reason, nil
}

var secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// certificatesSecretExists says whether kubeadm's kubeadm-certs Secret (the
// cluster's certificates, encrypted with the last certificate key) is in
// kube-system, asking the API server with admin.conf.
func certificatesSecretExists(ctx context.Context, admin string) (bool, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", admin)
	if err != nil {
		return false, fmt.Errorf("kubeconfig %s: %w", admin, err)
	}
	client, err := dynamic.NewForConfig(rc)
	if err != nil {
		return false, fmt.Errorf("API client: %w", err)
	}
	_, err = client.Resource(secretsResource).Namespace("kube-system").Get(ctx, "kubeadm-certs", metav1.GetOptions{})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	}
	return false, fmt.Errorf("get Secret kube-system/kubeadm-certs: %w", err)
}
