//go:build integration

package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/leave"
)

var (
	leaveGVRPods       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	leaveGVRPDBs       = schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}
	leaveGVRDaemonSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	leaveNode          = "leave-node"
	leaveOtherNode     = "leave-other"
)

// leaveCreate creates obj with admin credentials, retrying while the
// namespace's default ServiceAccount does not exist yet (a pod needs it).
func leaveCreate(t *testing.T, dyn dynamic.Interface, gvr schema.GroupVersionResource, obj map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	waitFor(t, "create "+gvr.Resource+" "+u.GetName(), time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u.DeepCopy(), metav1.CreateOptions{})
		return err
	})
}

func leavePod(name, node string, labels map[string]any) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "default", "labels": labels},
		"spec": map[string]any{"nodeName": node, "automountServiceAccountToken": false,
			"containers": []any{map[string]any{"name": "pause", "image": "registry.k8s.io/pause:3.10"}}}}
}

// leaveSetRunning sets a pod's phase to Running (admin credentials).
func leaveSetRunning(t *testing.T, dyn dynamic.Interface, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dyn.Resource(leaveGVRPods).Namespace("default").Patch(ctx, name, types.MergePatchType,
		[]byte(`{"status":{"phase":"Running"}}`), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("set pod %s running: %v", name, err)
	}
}

// leaveFakeKubelet stands in for the kubelet of node: it finishes the deletion
// of the node's terminating pods (admin credentials), as a kubelet does
// once their containers stopped.
func leaveFakeKubelet(ctx context.Context, dyn dynamic.Interface, node string) {
	zero := int64(0)
	for ctx.Err() == nil {
		list, err := dyn.Resource(leaveGVRPods).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err == nil {
			for _, p := range list.Items {
				if p.GetDeletionTimestamp() != nil {
					_ = dyn.Resource(leaveGVRPods).Namespace(p.GetNamespace()).Delete(ctx, p.GetName(), metav1.DeleteOptions{GracePeriodSeconds: &zero})
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestLeaveWithKubeletCredentials runs what internal/leave does with a
// kubelet identity (system:node:leave-node in system:nodes) against the
// harness's API server (--authorization-mode=Node,RBAC).
func TestLeaveWithKubeletCredentials(t *testing.T) {
	cp := startHostControlPlane(t)
	adminCfg, err := clientcmd.BuildConfigFromFlags("", cp.admin)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := dynamic.NewForConfig(adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	createNode(t, admin, leaveNode)
	createNode(t, admin, leaveOtherNode)
	kc := nodeKubeconfig(t, cp, leaveNode)
	nodeCfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	kubelet, err := dynamic.NewForConfig(nodeCfg)
	if err != nil {
		t.Fatal(err)
	}

	leaveCreate(t, admin, leaveGVRPods, leavePod("mine", leaveNode, map[string]any{"app": "mine"}))
	leaveCreate(t, admin, leaveGVRPods, leavePod("guarded", leaveNode, map[string]any{"app": "guarded"}))
	leaveCreate(t, admin, leaveGVRPods, leavePod("theirs", leaveOtherNode, map[string]any{"app": "theirs"}))
	// The pods run (as a kubelet would report it): the Eviction API ignores
	// budgets for Pending pods. No pod of "guarded" is ready, so its budget
	// refuses every eviction (429).
	for _, name := range []string{"mine", "guarded", "theirs"} {
		leaveSetRunning(t, admin, name)
	}
	leaveCreate(t, admin, leaveGVRPDBs, map[string]any{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
		"metadata": map[string]any{"name": "guarded", "namespace": "default"},
		"spec":     map[string]any{"minAvailable": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": "guarded"}}}})
	// A DaemonSet that runs nowhere: it exists, for the GET below.
	leaveCreate(t, admin, leaveGVRDaemonSets, map[string]any{"apiVersion": "apps/v1", "kind": "DaemonSet",
		"metadata": map[string]any{"name": "node-agent", "namespace": "default"},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "node-agent"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "node-agent"}},
				"spec": map[string]any{"nodeSelector": map[string]any{"kubestrap.dev/nowhere": "true"},
					"containers": []any{map[string]any{"name": "pause", "image": "registry.k8s.io/pause:3.10"}}}}}})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("listing pods works with the spec.nodeName selector only", func(t *testing.T) {
		list, err := kubelet.Resource(leaveGVRPods).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + leaveNode})
		if err != nil {
			t.Fatalf("list with spec.nodeName=%s: %v", leaveNode, err)
		}
		var names []string
		for _, p := range list.Items {
			names = append(names, p.GetName())
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"guarded", "mine"}) {
			t.Errorf("pods listed %v, want [guarded mine]", names)
		}
		if _, err := kubelet.Resource(leaveGVRPods).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list without the selector: %v, want forbidden", err)
		}
	})

	t.Run("GET of a DaemonSet is forbidden", func(t *testing.T) {
		if _, err := admin.Resource(leaveGVRDaemonSets).Namespace("default").Get(ctx, "node-agent", metav1.GetOptions{}); err != nil {
			t.Fatalf("the DaemonSet does not exist: %v", err)
		}
		_, err := kubelet.Resource(leaveGVRDaemonSets).Namespace("default").Get(ctx, "node-agent", metav1.GetOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("kubelet GET daemonsets/node-agent: %v, want forbidden (kubectl drain's DaemonSet lookup fails so)", err)
		}
	})

	t.Run("eviction of a pod on another node is forbidden", func(t *testing.T) {
		ev := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "policy/v1", "kind": "Eviction",
			"metadata": map[string]any{"name": "theirs", "namespace": "default"}}}
		_, err := kubelet.Resource(leaveGVRPods).Namespace("default").Create(ctx, ev, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}, "eviction")
		if err == nil {
			// The Node authorizer allows pods/eviction create for any pod;
			// only the NodeRestriction admission plugin (kubeadm enables it)
			// limits a node to its own pods, and startHostControlPlane runs
			// the API server without it and takes no extra flags.
			t.Skip("the harness's API server runs without NodeRestriction: the Node authorizer alone allowed the (dry-run) eviction of a pod on another node")
		}
		if !apierrors.IsForbidden(err) {
			t.Errorf("evict a pod of %s: %v, want forbidden", leaveOtherNode, err)
		}
	})

	t.Run("leave cordons and evicts with kubelet credentials until the deadline", func(t *testing.T) {
		kctx, stopKubelet := context.WithCancel(ctx)
		defer stopKubelet()
		go leaveFakeKubelet(kctx, admin, leaveNode)

		l, err := leave.NewFromKubeconfig(kc, leaveNode, leave.Options{
			Events:        events.NewRecorder(kc, events.Options{}),
			RetryInterval: time.Second, PollInterval: 500 * time.Millisecond, GraceMargin: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		n := leave.Notice{Kind: leave.Spot, NoticeTime: now, Deadline: now.Add(10 * time.Second), Action: "terminate"}
		res, err := l.Leave(ctx, n)
		if err != nil {
			t.Fatalf("Leave: %v (result %s)", err, res.Summary())
		}
		t.Logf("result: %s; evicted %v; left %v", res.Summary(), res.Evicted, res.Left)

		node, err := admin.Resource(gvrNodes).Get(ctx, leaveNode, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if u, _, _ := unstructured.NestedBool(node.Object, "spec", "unschedulable"); !u || !res.Cordoned {
			t.Errorf("node spec.unschedulable %v, result cordoned %v; want both true", u, res.Cordoned)
		}
		if !slices.Equal(res.Evicted, []string{"default/mine"}) {
			t.Errorf("evicted %v, want [default/mine]", res.Evicted)
		}
		if len(res.Left) != 1 || !strings.HasPrefix(res.Left[0], "default/guarded: eviction refused (429") || !res.DeadlineHit {
			t.Errorf("left %q, deadline hit %v; want default/guarded refused by its PodDisruptionBudget until the deadline", res.Left, res.DeadlineHit)
		}
		if !strings.Contains(res.Credentials, "user system:node:"+leaveNode+", groups [system:nodes]") {
			t.Errorf("credentials %q, want the kubelet identity", res.Credentials)
		}
		theirs, err := admin.Resource(leaveGVRPods).Namespace("default").Get(ctx, "theirs", metav1.GetOptions{})
		if err != nil || theirs.GetDeletionTimestamp() != nil {
			t.Errorf("the pod of another node was touched: %v", err)
		}
		rows := strings.Join(eventRows(t, cp.admin, leaveNode), "\n")
		for _, want := range []string{"Warning Spot 1 Node", "Warning DrainIncomplete 1 Node"} {
			if !strings.Contains(rows, want) {
				t.Errorf("events of %s lack %q:\n%s", leaveNode, want, rows)
			}
		}
	})
}
