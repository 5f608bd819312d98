package nodecleanup

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/progress"
)

var nodesResource = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}

// KubeNodes is Nodes over the Kubernetes API (the dynamic client, as the
// rest of the agent: the typed clientset would add megabytes).
type KubeNodes struct {
	client dynamic.Interface
	// CallTimeout bounds each request (default 30s).
	CallTimeout time.Duration
}

// NewKubeNodes talks to the API server with the kubeconfig at path (the
// control plane's admin.conf).
func NewKubeNodes(path string) (*KubeNodes, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("node cleanup: kubeconfig %s: %w", path, err)
	}
	cfg.UserAgent = "kubestrap/nodecleanup"
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("node cleanup: API client: %w", err)
	}
	return &KubeNodes{client: client}, nil
}

func (k *KubeNodes) timeout() time.Duration {
	if k.CallTimeout > 0 {
		return k.CallTimeout
	}
	return 30 * time.Second
}

// List returns every Node, 500 a page.
func (k *KubeNodes) List(ctx context.Context) ([]Node, error) {
	var out []Node
	opts := metav1.ListOptions{Limit: 500}
	for range 1000 { // bounded: 500,000 Nodes
		lctx, cancel := context.WithTimeout(ctx, k.timeout())
		list, err := k.client.Resource(nodesResource).List(lctx, opts)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list Nodes: %w", err)
		}
		for _, item := range list.Items {
			var n corev1.Node
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &n); err != nil {
				return nil, fmt.Errorf("decode Node %s: %w", item.GetName(), err)
			}
			out = append(out, fromNode(&n))
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return out, nil
		}
	}
	return out, nil
}

func fromNode(n *corev1.Node) Node {
	out := Node{Name: n.Name, UID: string(n.UID), InstanceID: lease.InstanceIDFromProviderID(n.Spec.ProviderID)}
	_, out.ControlPlane = n.Labels["node-role.kubernetes.io/control-plane"]
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && out.InternalIP == "" {
			out.InternalIP = a.Address
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Ready = c.Status == corev1.ConditionTrue
			out.LastHeartbeat = c.LastHeartbeatTime.Time
		}
	}
	return out
}

// Delete deletes n, only if its UID is still n.UID.
func (k *KubeNodes) Delete(ctx context.Context, n Node) error {
	ctx, cancel := context.WithTimeout(ctx, k.timeout())
	defer cancel()
	uid := types.UID(n.UID)
	err := k.client.Resource(nodesResource).Delete(ctx, n.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		return fmt.Errorf("the Node %s is no longer the one of instance %s (its UID changed): %w", n.Name, n.InstanceID, err)
	}
	return fmt.Errorf("delete Node %s: %w", n.Name, err)
}

// WaitForKubeNodes returns KubeNodes for the kubeconfig at path, waiting
// (every interval, logged once) while it is not usable: an admin.conf being
// restored or renewed must not end the agent. Only ctx ends the wait.
func WaitForKubeNodes(ctx context.Context, path string, clk clock.Clock, interval time.Duration,
	hb *progress.Heartbeat, log *zap.Logger) (*KubeNodes, error) {
	for warned := false; ; {
		nodes, err := NewKubeNodes(path)
		if err == nil {
			return nodes, nil
		}
		if !warned {
			log.Warn("node cleanup waits for a usable admin kubeconfig", zap.Error(err))
			warned = true
		}
		if hb != nil {
			hb.Within(interval + time.Minute)
		}
		t := clk.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C():
		}
	}
}
