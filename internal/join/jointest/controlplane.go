package jointest

import (
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
)

// CertificateKey is the certificate key of the valid control-plane document;
// no refusal message may contain it (nor SecretFragment).
var CertificateKey = strings.Repeat("5a", 32)

// SecretFragments are pieces of the secrets in the test documents that must
// never appear in a message: the token secret and the certificate key, in
// both cases.
var SecretFragments = []string{"0123456789abcdef", "5a5a5a5a", "5A5A5A5A"}

// ValidControlPlaneDoc returns a valid control-plane join info document
// (cluster "demo", read with Expect()) as a map, for tests to mutate.
func ValidControlPlaneDoc() map[string]any {
	return map[string]any{
		"apiVersion":             join.APIVersion,
		"kind":                   join.ControlPlaneKind,
		"cluster":                "demo",
		"apiServerEndpoint":      "api.demo.internal:6443",
		"token":                  "abcdef.0123456789abcdef",
		"caCertHashes":           []any{"sha256:" + strings.Repeat("ab", 32)},
		"certificateKey":         CertificateKey,
		"kubernetesVersion":      "v1.37.2",
		"certificatesUploadedAt": Now.Add(-time.Minute).Format(time.RFC3339),
		"issuedAt":               Now.Format(time.RFC3339),
		"expiresAt":              Now.Add(2 * time.Hour).Format(time.RFC3339),
		"generation":             7,
	}
}

// CPWith returns the valid control-plane document with key set to value.
func CPWith(key string, value any) []byte {
	d := ValidControlPlaneDoc()
	d[key] = value
	return MustJSON(d)
}

// CPWithout returns the valid control-plane document without key.
func CPWithout(key string) []byte {
	d := ValidControlPlaneDoc()
	delete(d, key)
	return MustJSON(d)
}

// CPWithDuplicate returns the valid control-plane document with key given a
// second time, with value, after all the others.
func CPWithDuplicate(key string, value any) []byte {
	doc := MustJSON(ValidControlPlaneDoc())
	return append(append(doc[:len(doc)-1:len(doc)-1], ","+string(MustJSON(key))+":"+string(MustJSON(value))...), '}')
}

// CPRenamed returns the valid control-plane document with key from spelled to instead.
func CPRenamed(from, to string) []byte {
	d := ValidControlPlaneDoc()
	d[to] = d[from]
	delete(d, from)
	return MustJSON(d)
}

// ControlPlaneHostileCases are the malformed and hostile control-plane
// documents every reader must refuse, each the valid document with one thing
// changed (but for the whole-document cases).
func ControlPlaneHostileCases() []HostileCase {
	const (
		ck     = "certificateKey"
		badKey = "lowercase hex digits"
		up     = "certificatesUploadedAt"
		ep     = "apiServerEndpoint"
		badTok = "is not of the form"
	)
	valid := MustJSON(ValidControlPlaneDoc())
	otherKey := strings.Repeat("6b", 32)
	cases := []HostileCase{
		{"certificate key one digit short", CPWith(ck, CertificateKey[:63]), ck, badKey},
		{"certificate key one byte long", CPWith(ck, CertificateKey+"5a"), ck, badKey},
		{"certificate key 16 bytes", CPWith(ck, CertificateKey[:32]), ck, badKey},
		{"uppercase certificate key", CPWith(ck, strings.ToUpper(CertificateKey)), ck, badKey},
		{"certificate key with 0x prefix", CPWith(ck, "0x"+CertificateKey[2:]), ck, badKey},
		{"certificate key not hex", CPWith(ck, "g"+CertificateKey[1:]), ck, badKey},
		{"flag injection in certificate key", CPWith(ck, "--certificate-key="+CertificateKey), ck, badKey},
		{"newline in certificate key", CPWith(ck, CertificateKey+"\n"), ck, badKey},
		{"shell in certificate key", CPWith(ck, CertificateKey+";id"), ck, badKey},
		{"empty certificate key", CPWith(ck, ""), ck, badKey},
		{"certificate key as number", CPWith(ck, 5), "", "not valid control-plane join info JSON"},
		{"duplicate certificate key", CPWithDuplicate(ck, otherKey), ck, "given twice"},
		{"case-variant duplicate certificate key", CPWithDuplicate("CertificateKey", otherKey), ck, "differ only by case"},
		{"certificate key spelled with another case", CPRenamed(ck, "certificatekey"), ck, "must be spelled"},
		{"certificates uploaded after issuedAt", CPWith(up, Now.Add(time.Minute).Format(time.RFC3339)), up, "is after issuedAt"},
		{"certificates about to be deleted", CPWith(up, Now.Add(-2*time.Hour+2*time.Minute).Format(time.RFC3339)), up, "deleted by kubeadm"},
		{"certificates already deleted", CPWith(up, Now.Add(-3*time.Hour).Format(time.RFC3339)), up, "deleted by kubeadm"},
		{"duplicate uploadedAt key", CPWithDuplicate(up, Now.Add(-2*time.Minute).Format(time.RFC3339)), up, "given twice"},
		{"worker join info kind", CPWith("kind", join.Kind), "kind", "must be"},
		{"unknown apiVersion", CPWith("apiVersion", "kubestrap.dev/v2"), "apiVersion", "must be"},
		{"wrong cluster", CPWith("cluster", "prod"), "cluster", "this node belongs to"},
		{"shell metacharacters in token", CPWith("token", "abcdef.0123456789abcdef;id"), "token", badTok},
		{"uppercase token", CPWith("token", "ABCDEF.0123456789ABCDEF"), "token", badTok},
		{"duplicate token key", CPWithDuplicate("token", "zzzzzz.0123456789abcdef"), "token", "given twice"},
		{"case-variant duplicate token key", CPWithDuplicate("Token", "zzzzzz.0123456789abcdef"), "token", "differ only by case"},
		{"URL instead of host:port", CPWith(ep, "https://api.demo.internal:6443"), ep, "must be host:port"},
		{"IPv4 octet with a leading zero", CPWith(ep, "010.0.1.10:6443"), ep, "not a canonical IPv4 address"},
		{"no CA hashes", CPWith("caCertHashes", []any{}), "caCertHashes", "at least one"},
		{"bad CA hash", CPWith("caCertHashes", []any{"md5:" + strings.Repeat("ab", 16)}), "caCertHashes[0]", "is not of the form sha256:"},
		{"token expired", CPWith("expiresAt", Now.Add(30*time.Second).Format(time.RFC3339)), "expiresAt", "token expired"},
		{"issued in the future", CPWith("issuedAt", Now.Add(time.Hour).Format(time.RFC3339)), "issuedAt", "in the future"},
		{"zero generation", CPWith("generation", 0), "generation", "positive"},
		{"generation above 2^53-1", CPWith("generation", join.MaxGeneration+1), "generation", "above the largest generation"},
		{"unknown field", CPWith("command", "kubeadm join --certificate-key x"), "", "unknown field"},
		{"nested duplicate key", append(append(valid[:len(valid)-1:len(valid)-1], `,"x":{"a":1,"a":2}`...), '}'), "", `key "x.a" is given twice`},
		{"oversize object", append(valid, []byte(strings.Repeat(" ", join.MaxSize))...), "", "larger than"},
		{"trailing garbage", append(valid, []byte(" {}")...), "", "not valid control-plane join info JSON"},
		{"JSON array around the document", append(append([]byte("["), valid...), ']'), "", "not valid control-plane join info JSON"},
		{"not JSON", []byte("kubeadm join api:6443 --control-plane --certificate-key " + CertificateKey + "\n"), "", "not valid control-plane join info JSON"},
		{"empty body", []byte(""), "", "empty"},
	}
	missing := map[string]string{
		"apiVersion": "must be", "kind": "must be", "cluster": "this node belongs to", ep: "must be host:port", "token": badTok,
		"caCertHashes": "at least one", ck: badKey, up: "is required", "issuedAt": "is required", "expiresAt": "is required", "generation": "positive",
	}
	for _, key := range sortedKeys(ValidControlPlaneDoc()) {
		if key != "kubernetesVersion" {
			cases = append(cases, HostileCase{"missing " + key, CPWithout(key), key, missing[key]})
		}
	}
	return cases
}
