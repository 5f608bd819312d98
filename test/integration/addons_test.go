//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/addons"
)

// addonsManifest holds what the packaged add-ons hold, written out of
// order (the DaemonSet first, its Namespace last): Load orders it.
const addonsManifest = `# flannel-like add-on for the integration test
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: addons-test
  labels: {kubestrap-test: addons}
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec:
      hostNetwork: true
      serviceAccountName: flannel
      tolerations: [{operator: Exists, effect: NoSchedule}]
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.27.0
        args: [--ip-masq, --kube-subnet-mgr]
        resources: {requests: {cpu: 100m, memory: 50Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-flannel-cfg
  namespace: addons-test
  labels: {kubestrap-test: addons}
data:
  cni-conf.json: |
    {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [{"type": "flannel"}]}
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {"Type": "vxlan"}
    }
---
# namespaced, without a namespace: goes to default
apiVersion: v1
kind: ConfigMap
metadata:
  name: kubestrap-addons-test
  labels: {kubestrap-test: addons}
data: {hello: world}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: flannel
  namespace: addons-test
  labels: {kubestrap-test: addons}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: addons-test-flannel
  labels: {kubestrap-test: addons}
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [nodes/status]
  verbs: [patch]
---
apiVersion: v1
kind: Namespace
metadata:
  name: addons-test
  labels: {kubestrap-test: addons, pod-security.kubernetes.io/enforce: privileged}
`

const widgetsManifest = `apiVersion: addons.kubestrap.test/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.addons.kubestrap.test}
spec:
  group: addons.kubestrap.test
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

var (
	gvrNamespaces      = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvrServiceAccounts = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
	gvrConfigMaps      = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	gvrClusterRoles    = schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}
	gvrDaemonSets      = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	gvrWidgets         = schema.GroupVersionResource{Group: "addons.kubestrap.test", Version: "v1", Resource: "widgets"}
)

// liveObject names one object the add-on manifest creates.
type liveObject struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

func (o liveObject) String() string {
	return fmt.Sprintf("%s %s/%s", o.gvr.Resource, o.namespace, o.name)
}

var addonObjects = []liveObject{
	{gvrNamespaces, "", "addons-test"},
	{gvrServiceAccounts, "addons-test", "flannel"},
	{gvrClusterRoles, "", "addons-test-flannel"},
	{gvrConfigMaps, "addons-test", "kube-flannel-cfg"},
	{gvrConfigMaps, "default", "kubestrap-addons-test"},
	{gvrDaemonSets, "addons-test", "kube-flannel-ds"},
}

func TestAddonsApplyToARealAPIServer(t *testing.T) {
	cp := startHostControlPlane(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.admin)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	get := func(t *testing.T, o liveObject) *unstructured.Unstructured {
		t.Helper()
		u, err := dyn.Resource(o.gvr).Namespace(o.namespace).Get(ctx, o.name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get %s: %v", o, err)
		}
		return u
	}

	t.Run("idempotent and restores operator edits", func(t *testing.T) {
		objs, err := addons.Load([]string{writeTemp(t, "flannel.yaml", []byte(addonsManifest))}, "10.50.0.0/16")
		if err != nil {
			t.Fatal(err)
		}
		applier, err := addons.NewApplier(cp.admin, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatalf("first apply: %v", err)
		}
		for _, o := range addonObjects {
			u := get(t, o)
			if !managedBy(u, addons.FieldManager, metav1.ManagedFieldsOperationApply) {
				t.Errorf("%s: not applied by field manager %s: %v", o, addons.FieldManager, managers(u))
			}
		}
		if nc := netConfOf(t, get(t, addonObjects[3])); nc["Network"] != "10.50.0.0/16" {
			t.Errorf("live net-conf.json Network %v, want the podSubnet 10.50.0.0/16", nc["Network"])
		}
		counts := func() map[string]int {
			c := map[string]int{}
			for _, gvr := range []schema.GroupVersionResource{gvrNamespaces, gvrServiceAccounts, gvrClusterRoles, gvrConfigMaps, gvrDaemonSets} {
				l, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: "kubestrap-test=addons"})
				if err != nil {
					t.Fatalf("list %s: %v", gvr.Resource, err)
				}
				c[gvr.Resource] = len(l.Items)
			}
			return c
		}
		want := map[string]int{"namespaces": 1, "serviceaccounts": 1, "clusterroles": 1, "configmaps": 2, "daemonsets": 1}
		if got := counts(); !maps.Equal(got, want) {
			t.Errorf("objects after the first apply %v, want %v", got, want)
		}

		// The controllers settle (the DaemonSet's status is written once);
		// then a second apply writes nothing.
		versions := func() map[string]string {
			v := map[string]string{}
			for _, o := range addonObjects {
				v[o.String()] = get(t, o).GetResourceVersion()
			}
			return v
		}
		var before map[string]string
		waitFor(t, "the objects to settle", 60*time.Second, func() error {
			a := versions()
			time.Sleep(time.Second)
			if before = versions(); !maps.Equal(a, before) {
				return fmt.Errorf("still changing: %v -> %v", a, before)
			}
			return nil
		})
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatalf("second apply: %v", err)
		}
		if after := versions(); !maps.Equal(before, after) {
			t.Errorf("the second apply changed resourceVersions: %v -> %v", before, after)
		}
		if got := counts(); !maps.Equal(got, want) {
			t.Errorf("objects after the second apply %v, want %v", got, want)
		}

		// An operator edits two fields with another field manager (kubectl
		// edit, kubectl set image: an update, not an apply).
		ds := get(t, addonObjects[5])
		containers, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
		containers[0].(map[string]any)["image"] = "ghcr.io/flannel-io/flannel:v0.26.0-operator"
		if err := unstructured.SetNestedSlice(ds.Object, containers, "spec", "template", "spec", "containers"); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(gvrDaemonSets).Namespace("addons-test").Update(ctx, ds, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatalf("operator update of the DaemonSet: %v", err)
		}
		cm := get(t, addonObjects[3])
		if err := unstructured.SetNestedField(cm.Object, `{"Network": "10.99.0.0/16", "Backend": {"Type": "host-gw"}}`, "data", "net-conf.json"); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(gvrConfigMaps).Namespace("addons-test").Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatalf("operator update of the ConfigMap: %v", err)
		}
		if img := imageOf(t, get(t, addonObjects[5])); img != "ghcr.io/flannel-io/flannel:v0.26.0-operator" {
			t.Fatalf("operator edit not live: image %s", img)
		}
		// Without force the manifest's apply conflicts with the operator's
		// fields: the Applier's forced apply is what takes them back.
		var dsObj addons.Object
		for _, o := range objs {
			if o.GetKind() == "DaemonSet" {
				dsObj = o
			}
		}
		_, err = dyn.Resource(gvrDaemonSets).Namespace("addons-test").Apply(ctx, dsObj.GetName(), dsObj.Unstructured,
			metav1.ApplyOptions{FieldManager: addons.FieldManager})
		if !apierrors.IsConflict(err) {
			t.Errorf("unforced apply over the operator's edit: %v, want a conflict", err)
		}
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatalf("apply after the operator's edit: %v", err)
		}
		if img := imageOf(t, get(t, addonObjects[5])); img != "ghcr.io/flannel-io/flannel:v0.27.0" {
			t.Errorf("image after re-apply %s, want the manifest's ghcr.io/flannel-io/flannel:v0.27.0", img)
		}
		nc := netConfOf(t, get(t, addonObjects[3]))
		if backend, _ := nc["Backend"].(map[string]any); nc["Network"] != "10.50.0.0/16" || backend["Type"] != "vxlan" {
			t.Errorf("net-conf.json after re-apply %v, want Network 10.50.0.0/16 and Backend vxlan", nc)
		}
		if got := counts(); !maps.Equal(got, want) {
			t.Errorf("objects after the re-apply %v, want %v", got, want)
		}
	})

	t.Run("custom resource with its definition converges", func(t *testing.T) {
		objs, err := addons.Load([]string{writeTemp(t, "widgets.yaml", []byte(widgetsManifest))}, "10.50.0.0/16")
		if err != nil {
			t.Fatal(err)
		}
		applier, err := addons.NewApplier(cp.admin, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		const maxAttempts = 30 // one a second
		attempts := 0
		for {
			attempts++
			err := applier.Apply(ctx, objs)
			if err == nil {
				break
			}
			if !strings.Contains(err.Error(), "Widget") || !strings.Contains(err.Error(), "does not serve") || !strings.Contains(err.Error(), "(yet)") {
				t.Fatalf("attempt %d: %v; want only 'does not serve ... (yet)' for the Widget", attempts, err)
			}
			t.Logf("attempt %d: %v", attempts, err)
			if attempts == maxAttempts {
				t.Fatalf("no convergence after %d attempts", attempts)
			}
			time.Sleep(time.Second)
		}
		t.Logf("converged after %d attempt(s)", attempts)
		w := get(t, liveObject{gvrWidgets, "default", "w1"})
		if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 3 {
			t.Errorf("Widget spec.size %d, want 3", size)
		}
		// Applying again is a no-op.
		rv := w.GetResourceVersion()
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatalf("apply again: %v", err)
		}
		if w := get(t, liveObject{gvrWidgets, "default", "w1"}); w.GetResourceVersion() != rv {
			t.Errorf("Widget resourceVersion %s -> %s on a repeated apply", rv, w.GetResourceVersion())
		}
	})

	t.Run("packaged manifests apply", func(t *testing.T) {
		dir := filepath.Join(repoRoot(), "packaging", "addons")
		paths := []string{filepath.Join(dir, "flannel.yaml"), filepath.Join(dir, "metrics-server.yaml")}
		for _, p := range paths {
			if _, err := os.Stat(p); err != nil {
				t.Skipf("packaged manifest not there: %v", err)
			}
		}
		objs, err := addons.Load(paths, "10.50.0.0/16")
		if err != nil {
			t.Fatal(err)
		}
		applier, err := addons.NewApplier(cp.admin, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatalf("apply the packaged manifests: %v", err)
		}
		flannel := 0
		for _, o := range objs {
			if _, ok, _ := unstructured.NestedString(o.Object, "data", "net-conf.json"); ok && o.GetKind() == "ConfigMap" {
				flannel++
				live := get(t, liveObject{gvrConfigMaps, o.GetNamespace(), o.GetName()})
				if nc := netConfOf(t, live); nc["Network"] != "10.50.0.0/16" {
					t.Errorf("live flannel Network %v, want 10.50.0.0/16", nc["Network"])
				}
			}
		}
		if flannel != 1 {
			t.Errorf("%d ConfigMaps with net-conf.json in the packaged manifests, want 1", flannel)
		}
	})
}

func managers(u *unstructured.Unstructured) []string {
	var out []string
	for _, m := range u.GetManagedFields() {
		out = append(out, m.Manager+"/"+string(m.Operation))
	}
	return out
}

func managedBy(u *unstructured.Unstructured, manager string, op metav1.ManagedFieldsOperationType) bool {
	for _, m := range u.GetManagedFields() {
		if m.Manager == manager && m.Operation == op {
			return true
		}
	}
	return false
}

func netConfOf(t *testing.T, cm *unstructured.Unstructured) map[string]any {
	t.Helper()
	s, _, err := unstructured.NestedString(cm.Object, "data", "net-conf.json")
	if err != nil {
		t.Fatal(err)
	}
	var nc map[string]any
	if err := json.Unmarshal([]byte(s), &nc); err != nil {
		t.Fatalf("live net-conf.json is not JSON: %v\n%s", err, s)
	}
	return nc
}

func imageOf(t *testing.T, ds *unstructured.Unstructured) string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) == 0 {
		t.Fatalf("DaemonSet containers: %v (%d)", err, len(containers))
	}
	img, _ := containers[0].(map[string]any)["image"].(string)
	return img
}
