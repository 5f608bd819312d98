package config

import (
	"sort"
	"strings"
)

// The kubelet configuration is carried as a plain document so that the agent
// does not link k8s.io/kubelet/config/v1beta1 (84 more packages, Prometheus
// and OpenTelemetry among them, and about 3 MiB of resident memory). Its field
// names are still checked strictly against kubeletFieldKinds, a table
// generated from the real type (kubeletschema_gen.go; a test keeps it equal
// to k8s.io/kubelet/config/v1beta1.KubeletConfiguration).

// Field kinds in kubeletFieldKinds.
const (
	fieldLeaf   = 'l' // a scalar, or a value with its own JSON form (durations, quantities)
	fieldStruct = 's' // an object with fixed field names
	fieldSlice  = 'a' // a list; element fields are under path+"[]"
	fieldMap    = 'm' // an object with free keys; value fields are under path+"{}"
)

// kubeletConfigProblems lists the unknown field paths in a KubeletConfiguration document.
func kubeletConfigProblems(doc map[string]any) []string {
	var problems []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				child := k
				if path != "" {
					child = path + "." + k
				}
				kind, ok := kubeletFieldKinds[child]
				if !ok {
					problems = append(problems, child)
					continue
				}
				walkValue(child, kind, x[k], walk)
			}
		}
	}
	walk("", doc)
	return problems
}

func walkValue(path string, kind byte, v any, walk func(string, any)) {
	switch kind {
	case fieldStruct:
		walk(path, v)
	case fieldSlice:
		if items, ok := v.([]any); ok {
			elemKind := kubeletFieldKinds[path+"[]"]
			for _, it := range items {
				walkValue(path+"[]", elemKind, it, walk)
			}
		}
	case fieldMap:
		if m, ok := v.(map[string]any); ok {
			elemKind := kubeletFieldKinds[path+"{}"]
			for _, it := range m {
				walkValue(path+"{}", elemKind, it, walk)
			}
		}
	}
}

// displayPath shows a free map key as ".*" in messages.
func displayPath(p string) string { return strings.ReplaceAll(p, "{}", ".*") }

func kubeletConfigErrors(doc map[string]any) []error {
	var errs []error
	for _, k := range []string{"apiVersion", "kind"} {
		if _, ok := doc[k]; ok {
			errs = append(errs, &FieldError{Field: "kubeadm.kubeletConfiguration." + k,
				Reason: "is set by kubestrap (kubelet.config.k8s.io/v1beta1 KubeletConfiguration); remove it"})
		}
	}
	for _, p := range kubeletConfigProblems(doc) {
		if p == "apiVersion" || p == "kind" {
			continue
		}
		errs = append(errs, &FieldError{Field: "kubeadm.kubeletConfiguration." + displayPath(p),
			Reason: "unknown field in KubeletConfiguration v1beta1: remove it or check its spelling"})
	}
	return errs
}
