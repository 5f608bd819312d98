package addons

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// names returns "Kind/name" of each object, in order.
func names(objs []Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func mustParse(t *testing.T, name, data string) []Object {
	t.Helper()
	objs, err := Parse(name, []byte(data))
	if err != nil {
		t.Fatalf("Parse %s: %v", name, err)
	}
	return objs
}

func TestParseSkipsEmptyAndCommentOnlyDocuments(t *testing.T) {
	doc := `---
# flannel, for the pod network
# (comments only in this document)
---
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel # trailing comment
---

---
~
---
# a comment before the object
apiVersion: v1
kind: ServiceAccount
metadata: {name: flannel, namespace: kube-flannel}
---
`
	objs := mustParse(t, "flannel.yaml", doc)
	if got, want := names(objs), []string{"Namespace/kube-flannel", "ServiceAccount/flannel"}; !slices.Equal(got, want) {
		t.Fatalf("objects %v, want %v", got, want)
	}
	// Source counts every document, skipped ones included.
	if objs[0].Source != "flannel.yaml#2" || objs[1].Source != "flannel.yaml#5" {
		t.Errorf("sources %q %q, want flannel.yaml#2 and flannel.yaml#5", objs[0].Source, objs[1].Source)
	}
	if objs[1].GetNamespace() != "kube-flannel" {
		t.Errorf("namespace %q", objs[1].GetNamespace())
	}
	if objs := mustParse(t, "empty.yaml", "# nothing here\n---\n\n"); len(objs) != 0 {
		t.Errorf("a manifest of comments gave %v", names(objs))
	}
}

func TestParseRefusesIncompleteObjectsNamingFileAndDocument(t *testing.T) {
	const first = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n"
	cases := []struct{ name, doc, says string }{
		{"no kind", "apiVersion: v1\nmetadata: {name: cfg}\ndata: {a: b}\n", "without apiVersion or kind"},
		{"no apiVersion", "kind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n", "without apiVersion or kind"},
		{"no metadata.name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: default}\ndata: {a: b}\n", "ConfigMap without metadata.name"},
		{"no metadata", "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n", "ConfigMap without metadata.name"},
		{"not a mapping", "- apiVersion: v1\n  kind: ConfigMap\n", "not a Kubernetes object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/usr/share/kubestrap/addons/x.yaml", []byte(first+tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "/usr/share/kubestrap/addons/x.yaml#2: ") || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not name x.yaml#2 with %q", err, tc.says)
			}
		})
	}
}

func TestParseRefusesLists(t *testing.T) {
	cases := map[string]string{
		// As `kubectl get -o yaml` writes it: no metadata.name.
		"v1 List": `apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
`,
		"typed list": `apiVersion: v1
kind: ConfigMapList
metadata: {name: all}
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("list.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), "list.yaml#1") || !strings.Contains(err.Error(), "a List is not accepted") {
				t.Errorf("want a list.yaml#1 error saying a List is not accepted, got %v", err)
			}
		})
	}
}

func TestParseRefusesDuplicateKeys(t *testing.T) {
	cases := map[string]string{
		"top level": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: \"1\"}\ndata: {x: \"2\"}\n",
		"nested":    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\ndata: {x: \"1\"}\n",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("dup.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), "dup.yaml#1") || !strings.Contains(err.Error(), "already set") {
				t.Errorf("want a dup.yaml#1 duplicate-key error, got %v", err)
			}
		})
	}
}

func TestParseAcceptsJSON(t *testing.T) {
	doc := `{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {"name": "metrics-server", "namespace": "kube-system"},
  "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "m", "image": "registry.k8s.io/metrics-server/metrics-server:v0.8.0"}]}}}
}
`
	objs := mustParse(t, "ms.json", doc)
	if len(objs) != 1 || objs[0].GetKind() != "Deployment" || objs[0].GetName() != "metrics-server" ||
		objs[0].GetNamespace() != "kube-system" || objs[0].Source != "ms.json#1" {
		t.Fatalf("objects %v (%+v)", names(objs), objs)
	}
	replicas, _, err := unstructured.NestedFieldNoCopy(objs[0].Object, "spec", "replicas")
	if err != nil {
		t.Fatal(err)
	}
	// Whatever number type the decoder chose, it encodes back as 2.
	if b, _ := json.Marshal(replicas); string(b) != "2" {
		t.Errorf("replicas encodes as %s", b)
	}
}

const flannelConfigMap = `apiVersion: v1
kind: ConfigMap
metadata: {name: kube-flannel-cfg, namespace: kube-flannel}
data:
  cni-conf.json: |
    {"name": "cbr0", "cniVersion": "0.3.1"}
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "EnableNFTables": false,
      "Backend": {
        "Type": "vxlan",
        "VNI": 1
      }
    }
`

func netConf(t *testing.T, o Object) map[string]any {
	t.Helper()
	s, _, err := unstructured.NestedString(o.Object, "data", "net-conf.json")
	if err != nil {
		t.Fatal(err)
	}
	var nc map[string]any
	if err := json.Unmarshal([]byte(s), &nc); err != nil {
		t.Fatalf("net-conf.json is not JSON: %v\n%s", err, s)
	}
	return nc
}

func TestSetPodNetworkSetsNetworkAndKeepsTheRest(t *testing.T) {
	objs := mustParse(t, "flannel.yaml", flannelConfigMap)
	cni, _, _ := unstructured.NestedString(objs[0].Object, "data", "cni-conf.json")
	if err := SetPodNetwork(objs, "10.50.0.0/16"); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"Network": "10.50.0.0/16", "EnableNFTables": false,
		"Backend": map[string]any{"Type": "vxlan", "VNI": float64(1)},
	}
	if got := netConf(t, objs[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("net-conf.json %v, want %v", got, want)
	}
	if got, _, _ := unstructured.NestedString(objs[0].Object, "data", "cni-conf.json"); got != cni {
		t.Errorf("cni-conf.json changed: %q, was %q", got, cni)
	}
	if objs[0].GetName() != "kube-flannel-cfg" || objs[0].GetNamespace() != "kube-flannel" {
		t.Errorf("metadata changed: %v", objs[0].Object["metadata"])
	}
}

func TestSetPodNetworkLeavesOtherObjectsAlone(t *testing.T) {
	doc := `apiVersion: v1
kind: ConfigMap
metadata: {name: other}
data: {config.json: '{"Network": "10.244.0.0/16"}'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: binary}
binaryData: {blob: AAEC}
---
apiVersion: v1
kind: Secret
metadata: {name: not-a-configmap}
stringData: {net-conf.json: '{"Network": "10.244.0.0/16"}'}
---
apiVersion: example.com/v1
kind: ConfigMap
metadata: {name: not-core}
data: {net-conf.json: '{"Network": "10.244.0.0/16"}'}
`
	objs := mustParse(t, "other.yaml", doc)
	before := make([]map[string]any, len(objs))
	for i, o := range objs {
		before[i] = o.DeepCopy().Object
	}
	if err := SetPodNetwork(objs, "10.50.0.0/16"); err != nil {
		t.Fatal(err)
	}
	for i, o := range objs {
		if !reflect.DeepEqual(o.Object, before[i]) {
			t.Errorf("%s changed: %v, was %v", o.Source, o.Object, before[i])
		}
	}
}

func TestSetPodNetworkRefusesInvalidNetConfNamingTheSource(t *testing.T) {
	doc := strings.Replace(flannelConfigMap, `"EnableNFTables": false,`, `"EnableNFTables": false,,`, 1)
	objs := mustParse(t, "flannel.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n---\n"+doc)
	err := SetPodNetwork(objs, "10.50.0.0/16")
	if err == nil || !strings.Contains(err.Error(), "flannel.yaml#2") || !strings.Contains(err.Error(), "net-conf.json is not JSON") {
		t.Errorf("want a flannel.yaml#2 error saying net-conf.json is not JSON, got %v", err)
	}
}

func TestOrderRanksKindsAndIsStable(t *testing.T) {
	var doc strings.Builder
	for _, kn := range []string{
		"DaemonSet/flannel", "Service/ms", "ConfigMap/cfg", "ClusterRoleBinding/crb", "RoleBinding/rb",
		"ClusterRole/cr", "ServiceAccount/sa", "Deployment/ms", "CustomResourceDefinition/widgets", "Namespace/a",
		"APIService/v1beta1.metrics", "Secret/s", "Role/r", "Namespace/b", "ServiceAccount/sa2", "PriorityClass/p",
	} {
		kind, name, _ := strings.Cut(kn, "/")
		doc.WriteString("---\napiVersion: v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\n")
	}
	objs := mustParse(t, "all.yaml", doc.String())
	Order(objs)
	want := []string{
		"CustomResourceDefinition/widgets", "Namespace/a", "Namespace/b", "PriorityClass/p",
		"ClusterRole/cr", "ServiceAccount/sa", "Role/r", "ServiceAccount/sa2",
		"ClusterRoleBinding/crb", "RoleBinding/rb",
		"ConfigMap/cfg", "Secret/s",
		"Service/ms",
		"DaemonSet/flannel", "Deployment/ms", "APIService/v1beta1.metrics",
	}
	if got := names(objs); !slices.Equal(got, want) {
		t.Errorf("order\n got %v\nwant %v", got, want)
	}
}

func TestLoadReadsFilesInOrderAndPreparesObjects(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	if err := os.WriteFile(a, []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: flannel}\n---\n"+flannelConfigMap), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := Load([]string{a, b}, "10.50.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"Namespace/kube-flannel", "ConfigMap/kube-flannel-cfg", "DaemonSet/flannel"}; !slices.Equal(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
	if objs[0].Source != b+"#1" || objs[1].Source != a+"#2" {
		t.Errorf("sources %q %q", objs[0].Source, objs[1].Source)
	}
	if nc := netConf(t, objs[1]); nc["Network"] != "10.50.0.0/16" {
		t.Errorf("Network %v", nc["Network"])
	}
	if _, err := Load([]string{a, filepath.Join(dir, "missing.yaml")}, "10.50.0.0/16"); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestPackagedManifests checks the add-on manifests the package ships.
func TestPackagedManifests(t *testing.T) {
	dir := filepath.Join("..", "..", "packaging", "addons")
	paths := []string{filepath.Join(dir, "flannel.yaml"), filepath.Join(dir, "metrics-server.yaml")}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("packaged manifest not there yet: %v", err)
		}
	}
	objs, err := Load(paths, "10.50.0.0/16")
	if err != nil {
		t.Fatalf("packaged manifests do not load: %v", err)
	}

	var flannel []Object
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" {
			if _, ok, _ := unstructured.NestedString(o.Object, "data", "net-conf.json"); ok {
				flannel = append(flannel, o)
			}
		}
	}
	if len(flannel) != 1 {
		t.Fatalf("%d ConfigMaps with net-conf.json, want flannel's one", len(flannel))
	}
	nc := netConf(t, flannel[0])
	if nc["Network"] != "10.50.0.0/16" {
		t.Errorf("flannel Network %v, want 10.50.0.0/16", nc["Network"])
	}
	if backend, _ := nc["Backend"].(map[string]any); backend == nil || backend["Type"] != "vxlan" {
		t.Errorf("flannel Backend %v, want Type vxlan", nc["Backend"])
	}

	var images int
	for _, o := range objs {
		for _, img := range imagesOf(o.Object) {
			images++
			if problem := imagePinProblem(img); problem != "" {
				t.Errorf("%s: %s %s: image %q %s", o.Source, o.GetKind(), o.GetName(), img, problem)
			}
		}
	}
	if images == 0 {
		t.Error("no container image found in the packaged manifests")
	}

	// Namespaces come before every object that is not itself a namespace or API type.
	lastNamespace, firstOther := -1, len(objs)
	for i, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			lastNamespace = i
		case "CustomResourceDefinition", "PriorityClass":
		default:
			firstOther = min(firstOther, i)
		}
	}
	if lastNamespace < 0 {
		t.Error("no Namespace in the packaged manifests (flannel's kube-flannel expected)")
	}
	if lastNamespace > firstOther {
		t.Errorf("Namespace at %d after %s at %d: %v", lastNamespace, objs[firstOther].GetKind(), firstOther, names(objs))
	}
}

// imagesOf returns every string value of a key "image" in v.
func imagesOf(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "image" {
				out = append(out, s)
			} else {
				out = append(out, imagesOf(e)...)
			}
		}
	case []any:
		for _, e := range v {
			out = append(out, imagesOf(e)...)
		}
	}
	return out
}

// imagePinProblem says why img is not pinned (a tag other than latest, or a
// digest), or "".
func imagePinProblem(img string) string {
	name, digest, hasDigest := strings.Cut(img, "@")
	if hasDigest && !strings.HasPrefix(digest, "sha256:") {
		return "has a malformed digest"
	}
	last := name[strings.LastIndex(name, "/")+1:] // a registry port is not in the last segment
	_, tag, hasTag := strings.Cut(last, ":")
	switch {
	case hasTag && (tag == "" || tag == "latest"):
		return "is not pinned (tag " + tag + ")"
	case !hasTag && !hasDigest:
		return "is untagged"
	}
	return ""
}

func TestImagePinProblem(t *testing.T) {
	for img, pinned := range map[string]bool{
		"ghcr.io/flannel-io/flannel:v0.27.0":                      true,
		"registry.k8s.io/metrics-server/metrics-server:v0.8.0":    true,
		"localhost:5000/flannel:v1":                               true,
		"flannel@sha256:" + strings.Repeat("a", 64):               true,
		"ghcr.io/flannel-io/flannel:latest":                       false,
		"ghcr.io/flannel-io/flannel":                              false,
		"localhost:5000/flannel":                                  false,
		"registry.k8s.io/metrics-server/metrics-server:":          false,
		"ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1":   true,
		"docker.io/library/busybox:1.37@sha256:" + "0123456789ab": true,
	} {
		if got := imagePinProblem(img) == ""; got != pinned {
			t.Errorf("%s: pinned %v, want %v (%s)", img, got, pinned, imagePinProblem(img))
		}
	}
}
