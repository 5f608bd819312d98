package addons

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// FieldManager is the server-side apply field manager of every object the
// agent applies: `kubectl get -o yaml --show-managed-fields` names it.
const FieldManager = "kubestrap"

// Applier applies objects to one cluster with server-side apply.
type Applier struct {
	client dynamic.Interface
	http   *http.Client
	host   string

	mu sync.Mutex
	// resources caches, per group/version, each kind's resource.
	resources map[schema.GroupVersion]map[string]metav1.APIResource
}

// NewApplier returns an Applier for the cluster of the kubeconfig file (the
// control plane's admin.conf). Each request is bounded by timeout.
func NewApplier(kubeconfig string, timeout time.Duration) (*Applier, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = timeout
	cfg.UserAgent = "kubestrap"
	return NewApplierForConfig(cfg)
}

// NewApplierForConfig returns an Applier for a REST config.
//
// It finds each kind's resource with one GET of its group/version's
// resource list rather than with client-go's discovery and RESTMapper,
// which would double the agent's binary (OpenAPI and protobuf code it never
// uses).
func NewApplierForConfig(cfg *rest.Config) (*Applier, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("HTTP client: %w", err)
	}
	client, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return &Applier{client: client, http: hc, host: cfg.Host, resources: map[schema.GroupVersion]map[string]metav1.APIResource{}}, nil
}

// Apply applies objs in order with server-side apply (field manager
// kubestrap, conflicts forced: the manifests baked into the node image are
// the declared state of these objects). It stops at the first failure; the
// objects before it stay applied, and applying all of them again is safe.
// A kind the API server does not serve yet (a CustomResourceDefinition
// applied just before) is looked up afresh on the next call.
func (a *Applier) Apply(ctx context.Context, objs []Object) error {
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		res, err := a.resource(ctx, gvk)
		if err != nil {
			return fmt.Errorf("%s: %s %s: %w", o.Source, gvk.Kind, o.GetName(), err)
		}
		gvr := gvk.GroupVersion().WithResource(res.Name)
		var ri dynamic.ResourceInterface = a.client.Resource(gvr)
		if res.Namespaced {
			ns := o.GetNamespace()
			if ns == "" {
				ns = metav1.NamespaceDefault
			}
			ri = a.client.Resource(gvr).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o.Unstructured, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return fmt.Errorf("%s: apply %s %s: %w", o.Source, gvk.Kind, o.GetName(), err)
		}
	}
	return nil
}

// resource returns the resource that serves gvk, from the API server's
// resource list of its group/version (cached; a miss drops the cache entry
// so that a kind served later is found).
func (a *Applier) resource(ctx context.Context, gvk schema.GroupVersionKind) (metav1.APIResource, error) {
	gv := gvk.GroupVersion()
	a.mu.Lock()
	kinds, ok := a.resources[gv]
	a.mu.Unlock()
	if !ok {
		var err error
		if kinds, err = a.listResources(ctx, gv); err != nil {
			return metav1.APIResource{}, err
		}
		a.mu.Lock()
		a.resources[gv] = kinds
		a.mu.Unlock()
	}
	res, ok := kinds[gvk.Kind]
	if !ok {
		a.mu.Lock()
		delete(a.resources, gv)
		a.mu.Unlock()
		return metav1.APIResource{}, fmt.Errorf("the API server does not serve kind %s in %s (yet)", gvk.Kind, gv)
	}
	return res, nil
}

func (a *Applier) listResources(ctx context.Context, gv schema.GroupVersion) (map[string]metav1.APIResource, error) {
	p := path.Join("/apis", gv.Group, gv.Version)
	if gv.Group == "" {
		p = path.Join("/api", gv.Version)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(a.host, "/")+p, nil)
	if err != nil {
		return nil, fmt.Errorf("resource list of %s: %w", gv, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("resource list of %s: %w", gv, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("the API server does not serve %s (yet)", gv)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("resource list of %s: GET %s: %s", gv, p, resp.Status)
	}
	var list metav1.APIResourceList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("resource list of %s: %w", gv, err)
	}
	kinds := map[string]metav1.APIResource{}
	for _, r := range list.APIResources {
		if !strings.Contains(r.Name, "/") { // subresources (pods/status) are not what a manifest applies
			kinds[r.Kind] = r
		}
	}
	return kinds, nil
}
