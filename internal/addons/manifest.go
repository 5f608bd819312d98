// Package addons installs the cluster add-ons baked into the node image (the
// pod network, metrics-server) on a freshly initialized control plane: it
// reads their manifests from local files, sets the pod network's CIDR from
// the agent's configuration, and applies every object with server-side
// apply, so that applying again (after a restart) changes nothing and never
// duplicates an object.
package addons

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one Kubernetes object of a manifest, with where it came from.
type Object struct {
	*unstructured.Unstructured
	// Source is "file.yaml#3": the file and the object's position in it.
	Source string
}

// Load reads the manifest files in order and returns their objects sorted
// for applying (see Order), with flannel's network set to podSubnet.
func Load(paths []string, podSubnet string) ([]Object, error) {
	var all []Object
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read add-on manifest: %w", err)
		}
		objs, err := Parse(p, b)
		if err != nil {
			return nil, err
		}
		all = append(all, objs...)
	}
	if err := SetPodNetwork(all, podSubnet); err != nil {
		return nil, err
	}
	Order(all)
	return all, nil
}

// Parse splits a multi-document YAML (or JSON) manifest into objects. Every
// object needs apiVersion, kind and metadata.name; empty documents are
// skipped; a List is not accepted (nothing is applied as a List).
func Parse(name string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		src := fmt.Sprintf("%s#%d", name, i)
		var m map[string]any
		if err := yaml.UnmarshalStrict(doc, &m); err != nil {
			return nil, fmt.Errorf("%s: not a Kubernetes object: %w", src, err)
		}
		if m == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		switch {
		case u.GetAPIVersion() == "" || u.GetKind() == "":
			return nil, fmt.Errorf("%s: object without apiVersion or kind", src)
		case u.IsList() || u.GetKind() == "List":
			// Before the name check: a List (kubectl get -o yaml) has no
			// metadata.name, and "without metadata.name" would mislead.
			return nil, fmt.Errorf("%s: %s: a List is not accepted; write its items as documents", src, u.GetKind())
		case u.GetName() == "":
			return nil, fmt.Errorf("%s: %s without metadata.name", src, u.GetKind())
		}
		objs = append(objs, Object{Unstructured: u, Source: src})
	}
}

// flannelNetConf is the key of flannel's network configuration in its ConfigMap.
const flannelNetConf = "net-conf.json"

// SetPodNetwork sets "Network" in every ConfigMap key net-conf.json (the
// flannel configuration) to podSubnet, the cluster's kubeadm.podSubnet, so
// that the pod network and the node CIDRs the controller manager hands out
// agree. Other keys of net-conf.json are kept.
func SetPodNetwork(objs []Object, podSubnet string) error {
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" || o.GetAPIVersion() != "v1" {
			continue
		}
		data, found, err := unstructured.NestedStringMap(o.Object, "data")
		if err != nil {
			return fmt.Errorf("%s: ConfigMap data: %w", o.Source, err)
		}
		conf, ok := data[flannelNetConf]
		if !found || !ok {
			continue
		}
		var nc map[string]any
		if err := json.Unmarshal([]byte(conf), &nc); err != nil {
			return fmt.Errorf("%s: %s is not JSON: %w", o.Source, flannelNetConf, err)
		}
		nc["Network"] = podSubnet
		b, err := json.MarshalIndent(nc, "", "  ")
		if err != nil {
			return fmt.Errorf("%s: %s: %w", o.Source, flannelNetConf, err)
		}
		data[flannelNetConf] = string(b) + "\n"
		if err := unstructured.SetNestedStringMap(o.Object, data, "data"); err != nil {
			return fmt.Errorf("%s: %w", o.Source, err)
		}
	}
	return nil
}

// applyRank orders kinds so that what others need exists first: namespaces
// and API types, then identities and permissions, then configuration, then
// workloads and the rest.
var applyRank = map[string]int{
	"Namespace": 0, "CustomResourceDefinition": 0, "PriorityClass": 0,
	"ServiceAccount": 1, "ClusterRole": 1, "Role": 1,
	"ClusterRoleBinding": 2, "RoleBinding": 2,
	"ConfigMap": 3, "Secret": 3,
	"Service": 4,
}

// Order sorts objects for applying, stably: by kind rank (Namespace first,
// workloads last), otherwise keeping the manifests' order.
func Order(objs []Object) {
	rank := func(o Object) int {
		if r, ok := applyRank[o.GetKind()]; ok {
			return r
		}
		return 5
	}
	slices.SortStableFunc(objs, func(a, b Object) int { return rank(a) - rank(b) })
}

// stripComments drops YAML comment lines, so that a document holding only
// comments counts as empty.
func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
