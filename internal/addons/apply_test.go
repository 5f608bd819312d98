package addons

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// patch is one PATCH the fake API server received.
type patch struct {
	path, contentType string
	query             url.Values
	body              map[string]any
}

// fakeAPI is an API server that serves resource lists and answers every
// PATCH with the object it was sent.
type fakeAPI struct {
	mu sync.Mutex
	// lists are the resource lists by path (/api/v1, /apis/apps/v1); a path
	// not here is 404.
	lists map[string][]metav1.APIResource
	// fail answers a PATCH of this path with a 422 Status.
	fail    map[string]bool
	gets    map[string]int
	patches []patch
	bad     []string // requests the fake does not expect
}

func newFakeAPI() *fakeAPI {
	return &fakeAPI{
		lists: map[string][]metav1.APIResource{
			"/api/v1": {
				{Name: "namespaces", Kind: "Namespace"},
				{Name: "namespaces/status", Kind: "Namespace"},
				{Name: "configmaps", Kind: "ConfigMap", Namespaced: true},
				{Name: "serviceaccounts", Kind: "ServiceAccount", Namespaced: true},
				{Name: "serviceaccounts/token", Kind: "TokenRequest", Namespaced: true},
				{Name: "services", Kind: "Service", Namespaced: true},
			},
			"/apis/apps/v1": {
				{Name: "daemonsets", Kind: "DaemonSet", Namespaced: true},
				{Name: "daemonsets/status", Kind: "DaemonSet", Namespaced: true},
				{Name: "deployments", Kind: "Deployment", Namespaced: true},
			},
			"/apis/rbac.authorization.k8s.io/v1": {
				{Name: "clusterroles", Kind: "ClusterRole"},
				{Name: "rolebindings", Kind: "RoleBinding", Namespaced: true},
			},
		},
		fail: map[string]bool{},
		gets: map[string]int{},
	}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		f.gets[r.URL.Path]++
		res, ok := f.lists[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		gv := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/apis/"), "/api/")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(metav1.APIResourceList{
			TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv, APIResources: res})
	case http.MethodPatch:
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			f.bad = append(f.bad, "PATCH "+r.URL.Path+": body not JSON: "+err.Error())
		}
		f.patches = append(f.patches, patch{path: r.URL.Path, contentType: r.Header.Get("Content-Type"), query: r.URL.Query(), body: body})
		w.Header().Set("Content-Type", "application/json")
		if f.fail[r.URL.Path] {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
				Status: metav1.StatusFailure, Reason: metav1.StatusReasonInvalid, Code: http.StatusUnprocessableEntity,
				Message: "spec.template: Invalid value: the fake refuses it"})
			return
		}
		_, _ = w.Write(b)
	default:
		f.bad = append(f.bad, r.Method+" "+r.URL.String())
		http.Error(w, "unexpected", http.StatusMethodNotAllowed)
	}
}

func (f *fakeAPI) snapshot() (map[string]int, []patch, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gets := map[string]int{}
	for k, v := range f.gets {
		gets[k] = v
	}
	return gets, append([]patch(nil), f.patches...), append([]string(nil), f.bad...)
}

func (f *fakeAPI) serve(path string, res ...metav1.APIResource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[path] = append(f.lists[path], res...)
}

// startPlain serves f over plain HTTP and returns an Applier for it.
func startPlain(t *testing.T, f *fakeAPI) *Applier {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	a, err := NewApplierForConfig(&rest.Config{Host: srv.URL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func paths(ps []patch) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.path)
	}
	return out
}

const applyManifest = `apiVersion: v1
kind: Namespace
metadata: {name: kube-flannel}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: flannel, namespace: kube-flannel}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: flannel}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: no-namespace}
data: {a: b}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kube-flannel-ds, namespace: kube-flannel}
spec:
  selector: {matchLabels: {app: flannel}}
  template:
    metadata: {labels: {app: flannel}}
    spec:
      containers: [{name: flannel, image: "ghcr.io/flannel-io/flannel:v0.27.0"}]
`

// TestApplierServerSideAppliesOverTLSWithAKubeconfig: NewApplier reads a
// kubeconfig, and each object is sent as an apply patch (field manager
// kubestrap, forced) to its namespaced or cluster path.
func TestApplierServerSideAppliesOverTLSWithAKubeconfig(t *testing.T) {
	f := newFakeAPI()
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	kubeconfig := filepath.Join(t.TempDir(), "admin.conf")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+srv.URL+`", certificate-authority: "`+writeFile(t, "ca.crt", ca)+`"}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := NewApplier(kubeconfig, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	objs := mustParse(t, "flannel.yaml", applyManifest)
	if err := a.Apply(context.Background(), objs); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	gets, patches, bad := f.snapshot()
	if len(bad) > 0 {
		t.Fatalf("unexpected requests: %v", bad)
	}
	want := []string{
		"/api/v1/namespaces/kube-flannel",
		"/api/v1/namespaces/kube-flannel/serviceaccounts/flannel",
		"/apis/rbac.authorization.k8s.io/v1/clusterroles/flannel",
		"/api/v1/namespaces/default/configmaps/no-namespace",
		"/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds",
	}
	if got := paths(patches); !reflect.DeepEqual(got, want) {
		t.Fatalf("PATCH paths\n got %v\nwant %v", got, want)
	}
	for i, p := range patches {
		if p.contentType != "application/apply-patch+yaml" {
			t.Errorf("%s: Content-Type %q", p.path, p.contentType)
		}
		if p.query.Get("fieldManager") != "kubestrap" || p.query.Get("force") != "true" {
			t.Errorf("%s: query %v, want fieldManager=kubestrap force=true", p.path, p.query)
		}
		if !reflect.DeepEqual(p.body, jsonRoundTrip(t, objs[i].Object)) {
			t.Errorf("%s: body %v, want the manifest's object %v", p.path, p.body, objs[i].Object)
		}
	}
	for _, gv := range []string{"/api/v1", "/apis/apps/v1", "/apis/rbac.authorization.k8s.io/v1"} {
		if gets[gv] != 1 {
			t.Errorf("GET %s %d times, want 1", gv, gets[gv])
		}
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestApplierFetchesEachResourceListOnce(t *testing.T) {
	f := newFakeAPI()
	a := startPlain(t, f)
	objs := mustParse(t, "flannel.yaml", applyManifest)
	for i := 0; i < 2; i++ { // 10 PATCHes: within client-go's default burst
		if err := a.Apply(context.Background(), objs); err != nil {
			t.Fatalf("Apply %d: %v", i+1, err)
		}
	}
	gets, patches, _ := f.snapshot()
	want := map[string]int{"/api/v1": 1, "/apis/apps/v1": 1, "/apis/rbac.authorization.k8s.io/v1": 1}
	if !reflect.DeepEqual(gets, want) {
		t.Errorf("GETs %v, want %v", gets, want)
	}
	if len(patches) != 2*len(objs) {
		t.Errorf("%d PATCHes, want %d", len(patches), 2*len(objs))
	}
}

const widgetManifest = `apiVersion: v1
kind: ConfigMap
metadata: {name: before, namespace: kube-system}
data: {a: b}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: kube-system}
spec: {size: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: after, namespace: kube-system}
data: {a: b}
`

// TestApplierLooksUpAMissingKindAgain: a kind absent from its group/version's
// list stops Apply with an error naming the object; the next Apply fetches
// the list afresh and finds it.
func TestApplierLooksUpAMissingKindAgain(t *testing.T) {
	f := newFakeAPI()
	f.serve("/apis/example.com/v1", metav1.APIResource{Name: "gadgets", Kind: "Gadget", Namespaced: true})
	a := startPlain(t, f)
	objs := mustParse(t, "widgets.yaml", widgetManifest)

	err := a.Apply(context.Background(), objs)
	if err == nil || !strings.Contains(err.Error(), "widgets.yaml#2") ||
		!strings.Contains(err.Error(), "does not serve kind Widget in example.com/v1 (yet)") {
		t.Fatalf("want a widgets.yaml#2 error saying Widget is not served yet, got %v", err)
	}
	_, patches, _ := f.snapshot()
	if got := paths(patches); !reflect.DeepEqual(got, []string{"/api/v1/namespaces/kube-system/configmaps/before"}) {
		t.Errorf("PATCHes %v: want only the object before the missing kind", got)
	}

	f.serve("/apis/example.com/v1", metav1.APIResource{Name: "widgets", Kind: "Widget", Namespaced: true})
	if err := a.Apply(context.Background(), objs); err != nil {
		t.Fatalf("Apply once the kind is served: %v", err)
	}
	gets, patches, _ := f.snapshot()
	if gets["/apis/example.com/v1"] != 2 {
		t.Errorf("GET /apis/example.com/v1 %d times, want 2 (the miss is not cached)", gets["/apis/example.com/v1"])
	}
	if gets["/api/v1"] != 1 {
		t.Errorf("GET /api/v1 %d times, want 1 (a miss in another group/version keeps it)", gets["/api/v1"])
	}
	if p := patches[len(patches)-2]; p.path != "/apis/example.com/v1/namespaces/kube-system/widgets/w1" {
		t.Errorf("Widget patched at %s", p.path)
	}
}

// TestApplierGroupVersionNotServedYet: a 404 resource list (the group of a
// CRD not yet established) is an error saying so, and is asked again.
func TestApplierGroupVersionNotServedYet(t *testing.T) {
	f := newFakeAPI()
	a := startPlain(t, f)
	objs := mustParse(t, "widgets.yaml", widgetManifest)

	err := a.Apply(context.Background(), objs)
	if err == nil || !strings.Contains(err.Error(), "widgets.yaml#2") ||
		!strings.Contains(err.Error(), "the API server does not serve example.com/v1 (yet)") {
		t.Fatalf("want a widgets.yaml#2 error saying example.com/v1 is not served yet, got %v", err)
	}
	f.serve("/apis/example.com/v1", metav1.APIResource{Name: "widgets", Kind: "Widget", Namespaced: true})
	if err := a.Apply(context.Background(), objs); err != nil {
		t.Fatalf("Apply once the group/version is served: %v", err)
	}
	if gets, _, _ := f.snapshot(); gets["/apis/example.com/v1"] != 2 {
		t.Errorf("GET /apis/example.com/v1 %d times, want 2", gets["/apis/example.com/v1"])
	}
}

func TestApplierErrorNamesTheObjectAndStops(t *testing.T) {
	f := newFakeAPI()
	f.fail["/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds"] = true
	a := startPlain(t, f)
	objs := mustParse(t, "flannel.yaml", applyManifest+`---
apiVersion: v1
kind: Service
metadata: {name: after, namespace: kube-flannel}
spec: {ports: [{port: 443}]}
`)
	err := a.Apply(context.Background(), objs)
	if err == nil || !strings.Contains(err.Error(), "flannel.yaml#5: apply DaemonSet kube-flannel-ds: ") ||
		!strings.Contains(err.Error(), "the fake refuses it") {
		t.Fatalf("want an error naming flannel.yaml#5 and the server's reason, got %v", err)
	}
	_, patches, _ := f.snapshot()
	if n := len(patches); n != 5 || patches[n-1].path != "/apis/apps/v1/namespaces/kube-flannel/daemonsets/kube-flannel-ds" {
		t.Errorf("PATCHes %v: want the five up to the failing DaemonSet, not the Service after it", paths(patches))
	}
}

func TestApplierResourceListErrorNamesTheObject(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	a, err := NewApplierForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Apply(context.Background(), mustParse(t, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"))
	if err == nil || !strings.Contains(err.Error(), "ns.yaml#1: Namespace a: ") || !strings.Contains(err.Error(), "403") {
		t.Errorf("want an error naming ns.yaml#1 and the 403, got %v", err)
	}
}
