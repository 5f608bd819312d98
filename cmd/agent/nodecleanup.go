package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/leave"
	"github.com/kubestrap/kubestrap/internal/metrics"
	"github.com/kubestrap/kubestrap/internal/nodecleanup"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/supervisor"
)

// addNodeCleanup adds the control plane's "nodecleanup" part: once the
// cluster is initialized, it deletes the Nodes of instances EC2 reports
// gone (internal/nodecleanup), with admin.conf, and records an Event on this
// control plane's Node for each. Only while active says so (this control
// plane holds the uploader lock) does it make its passes.
func addNodeCleanup(parts *supervisor.Supervisor, cfg *config.AgentConfig, admin string, node kubeadm.Node,
	ec2Client *ec2.Client, s3Client *s3.Client, initialized, active func() bool, ev *nodeEvents, m *metrics.Metrics, clk clock.Clock, log *zap.Logger) {
	parts.Add("nodecleanup", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
		for !initialized() {
			if err := wait(ctx, clk, hb, 2*cfg.ControlPlane.NodeCleanup.Interval.Duration); err != nil {
				return err
			}
		}
		nodes, err := nodecleanup.WaitForKubeNodes(ctx, admin, clk, cfg.ControlPlane.NodeCleanup.Interval.Duration, hb, log)
		if err != nil {
			return err
		}
		instances := &nodecleanup.EC2Instances{Client: ec2Client}
		etcd := nodecleanup.KubeadmEtcd{ConfigDir: cfg.Kubeadm.ConfigDir}
		c := &nodecleanup.Cleaner{Nodes: nodes, Instances: instances, InstancesByIP: instances,
			Etcd: etcd, Members: etcd,
			Records:      &leave.RecordStore{Client: s3Client, Bucket: cfg.Bucket, Cluster: cfg.Cluster},
			SelfInstance: lease.InstanceIDFromProviderID(node.ProviderID), SelfNode: node.Name, Active: active,
			Clock: clk, Log: log, Interval: cfg.ControlPlane.NodeCleanup.Interval.Duration,
			GoneAfter: cfg.ControlPlane.NodeCleanup.GoneAfter.Duration, Progress: hb,
			OnRound: func(r nodecleanup.Round, err error) { m.NodeCleanupPass(len(r.Deleted), err) },
			OnDeleted: func(d nodecleanup.Deletion) {
				ev.add(events.Normal, "NodeDeleted", fmt.Sprintf("kubestrap deleted Node %s: %s", d.Node, d.Reason))
			},
			OnMemberRemoved: func(member, peerHost, reason string) {
				ev.add(events.Normal, "EtcdMemberRemoved", fmt.Sprintf("kubestrap removed the etcd member %s (peer host %s): %s",
					member, peerHost, reason))
			},
		}
		return c.Run(ctx)
	})
}
