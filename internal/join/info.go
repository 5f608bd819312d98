// Package join defines the join info that the control plane publishes in S3 and
// workers consume: its schema and strict validation, the S3 publish and watch
// operations, and the kubeadm JoinConfiguration built from it.
package join

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"
	"unicode"

	sigsjson "sigs.k8s.io/json"

	"github.com/kubestrap/kubestrap/internal/bootstraptoken"
	"github.com/kubestrap/kubestrap/internal/config"
)

// Schema identity and limits of join info.
const (
	APIVersion = "kubestrap.dev/v1alpha1"
	Kind       = "JoinInfo"
	// MaxSize is the largest join info object accepted, in bytes.
	MaxSize = 64 << 10
	// MaxClockSkew is how far in the future issuedAt may be.
	MaxClockSkew = 5 * time.Minute
	// MaxGeneration is the largest generation join info may carry: 2^53-1,
	// the largest integer that every JSON reader (IEEE 754 doubles included)
	// holds exactly, so no reader can see a generation other than the one
	// written. Writers compute the next generation with NextGeneration.
	MaxGeneration int64 = 1<<53 - 1
)

// NextGeneration returns g+1, checked: it fails when g is negative or when
// g+1 would be above MaxGeneration, instead of wrapping or handing out a
// generation that readers refuse.
func NextGeneration(g int64) (int64, error) {
	if g < 0 {
		return 0, fmt.Errorf("join info generation %d is negative: no next generation", g)
	}
	if g >= MaxGeneration {
		return 0, fmt.Errorf("join info generation %d is at or above the largest generation %d (2^53-1): no next generation", g, MaxGeneration)
	}
	return g + 1, nil
}

// Info is the join info document, <cluster>/join.json.
type Info struct {
	APIVersion        string    `json:"apiVersion"`
	Kind              string    `json:"kind"`
	Cluster           string    `json:"cluster"`
	APIServerEndpoint string    `json:"apiServerEndpoint"`
	Token             string    `json:"token"`
	CACertHashes      []string  `json:"caCertHashes"`
	KubernetesVersion string    `json:"kubernetesVersion,omitempty"`
	IssuedAt          time.Time `json:"issuedAt"`
	ExpiresAt         time.Time `json:"expiresAt"`
	Generation        int64     `json:"generation"`
}

// TokenID is the public half of the bootstrap token, safe to log.
func (i *Info) TokenID() string { return TokenID(i.Token) }

// TokenID returns the public ID of a bootstrap token "id.secret", or "" when
// the token is malformed.
func TokenID(token string) string { return bootstraptoken.ID(token) }

var (
	hashPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// Rejection explains why join info was refused. Its message never contains
// the token secret and quotes untrusted values only in escaped, shortened form.
type Rejection struct {
	Field  string
	Reason string
}

func (r *Rejection) Error() string {
	if r.Field == "" {
		return "join info rejected: " + r.Reason
	}
	return "join info rejected: " + r.Field + ": " + r.Reason
}

// Expectations are what the reader checks join info against.
type Expectations struct {
	Cluster string
	Now     time.Time
	// Margin is the least remaining token life accepted.
	Margin time.Duration
}

// Parse decodes and validates join info. Anything that is not exactly the
// documented schema with sane values is refused with a *Rejection: among
// others a key given twice at any level (also when the two spellings differ
// only by case) and a key spelled differently from the schema only by case.
func Parse(data []byte, want Expectations) (*Info, error) {
	if r := sizeProblem(data); r != nil {
		return nil, r
	}
	if r := keyProblem(data); r != nil {
		return nil, r
	}
	var info Info
	if r := decodeStrict(data, "join info", &info); r != nil {
		return nil, r
	}
	if err := info.Validate(want); err != nil {
		return nil, err
	}
	return &info, nil
}

// sizeProblem refuses an object that is too large or empty.
func sizeProblem(data []byte) *Rejection {
	if len(data) > MaxSize {
		return &Rejection{Reason: fmt.Sprintf("object is larger than %d bytes", MaxSize)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &Rejection{Reason: "object is empty"}
	}
	return nil
}

// decodeStrict decodes data into v, refusing duplicate and unknown fields;
// what names the document in the rejection.
func decodeStrict(data []byte, what string, v any) *Rejection {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err == nil && len(strictErrs) > 0 {
		err = strictErrs[0]
	}
	if err != nil {
		return &Rejection{Reason: "not valid " + what + " JSON: " + describeJSONError(err)}
	}
	return nil
}

// validateCommon checks the fields worker and control-plane join info share:
// the CA pins, the endpoint, the Kubernetes version and the generation.
func validateCommon(hashes []string, endpoint, version string, generation int64) error {
	reject := func(field, format string, args ...any) error {
		return &Rejection{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	for n, h := range hashes {
		if !hashPattern.MatchString(h) {
			return reject(fmt.Sprintf("caCertHashes[%d]", n), "%s is not of the form sha256:<64 lowercase hex>", quote(h))
		}
	}
	if reason := config.EndpointProblem(endpoint); reason != "" {
		return reject("apiServerEndpoint", "%s: %s", quote(endpoint), reason)
	}
	if version != "" && !config.IsKubernetesVersion(version) {
		return reject("kubernetesVersion", "%s is not a version such as v1.37.2", quote(version))
	}
	if generation < 1 {
		return reject("generation", "must be a positive number, got %d", generation)
	}
	if generation > MaxGeneration {
		return reject("generation", "%d is above the largest generation %d (2^53-1), which every JSON reader holds exactly", generation, MaxGeneration)
	}
	return nil
}

// Validate checks every field of the join info against the schema and want.
func (i *Info) Validate(want Expectations) error {
	reject := func(field, format string, args ...any) error {
		return &Rejection{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case i.APIVersion != APIVersion:
		return reject("apiVersion", "must be %q, got %s", APIVersion, quote(i.APIVersion))
	case i.Kind != Kind:
		return reject("kind", "must be %q, got %s", Kind, quote(i.Kind))
	case i.Cluster != want.Cluster:
		return reject("cluster", "is %s, this node belongs to %q", quote(i.Cluster), want.Cluster)
	case !bootstraptoken.Valid(i.Token):
		// Never echo the token: it may hold a real secret.
		return reject("token", "is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
	case len(i.CACertHashes) == 0:
		return reject("caCertHashes", "at least one CA certificate hash is required")
	case len(i.CACertHashes) > 16:
		return reject("caCertHashes", "more than 16 hashes")
	}
	if err := validateCommon(i.CACertHashes, i.APIServerEndpoint, i.KubernetesVersion, i.Generation); err != nil {
		return err
	}
	if i.IssuedAt.IsZero() {
		return reject("issuedAt", "is required")
	}
	if i.ExpiresAt.IsZero() {
		return reject("expiresAt", "is required")
	}
	if i.IssuedAt.After(want.Now.Add(MaxClockSkew)) {
		return reject("issuedAt", "%s is in the future", i.IssuedAt.UTC().Format(time.RFC3339))
	}
	if !i.ExpiresAt.After(i.IssuedAt) {
		return reject("expiresAt", "is not after issuedAt")
	}
	if left := i.ExpiresAt.Sub(want.Now); left < want.Margin {
		if left <= 0 {
			return reject("expiresAt", "token expired at %s", i.ExpiresAt.UTC().Format(time.RFC3339))
		}
		return reject("expiresAt", "token expires at %s, less than the %s safety margin away", i.ExpiresAt.UTC().Format(time.RFC3339), want.Margin)
	}
	return nil
}

// schemaKeys maps the folded spelling of each key of the schema to the key.
var schemaKeys = func() map[string]string {
	keys := map[string]string{}
	t := reflect.TypeFor[Info]()
	for n := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(n).Tag.Get("json"), ",")
		keys[foldKey(name)] = name
	}
	return keys
}()

// foldKey folds a key the way Go's encoding/json matches names to fields
// (case-insensitively, Unicode simple folding included: "\u212Aind" is
// "kind" to it), so that two keys one reader tells apart and another merges
// are caught.
func foldKey(key string) string {
	return strings.Map(func(r rune) rune { return unicode.ToUpper(unicode.ToLower(r)) }, key)
}

// keyFrame is one open object or array while keyProblem walks a document.
type keyFrame struct {
	object  bool
	wantKey bool              // the next token of this object is a key or '}'
	keys    map[string]string // folded key -> key as written
	lastKey string
}

// keyPath names where the innermost container of stack is, for messages.
// It is built only for a rejection: a path kept per level would cost memory
// quadratic in the nesting depth.
func keyPath(stack []*keyFrame) string {
	var b strings.Builder
	for n, f := range stack[:len(stack)-1] {
		if f.object {
			if n > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.lastKey)
		} else {
			b.WriteString("[]")
		}
		if b.Len() > 256 {
			return b.String()[:256] + "..."
		}
	}
	return b.String()
}

// keyProblem walks the first JSON value in data and refuses any object that
// gives a key twice, also when the two spellings differ only by case (a Go
// reader with encoding/json sees them as one field given twice, and the last
// value wins), and any top-level key that differs from a schema key only by
// case. Syntax errors are left to the decoder that runs next, and so is
// anything after the first value.
func keyProblem(data []byte) *Rejection {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*keyFrame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		n := len(stack)
		var top *keyFrame
		if n > 0 {
			top = stack[n-1]
		}
		switch {
		case top != nil && top.object && top.wantKey && tok != json.Delim('}'):
			key, _ := tok.(string) // the decoder allows only a string here
			if r := top.addKey(key, n == 1, func() string { return keyPath(stack) }); r != nil {
				return r
			}
			top.wantKey, top.lastKey = false, key
			continue
		case tok == json.Delim('{'):
			stack = append(stack, &keyFrame{object: true, wantKey: true, keys: map[string]string{}})
			continue
		case tok == json.Delim('['):
			stack = append(stack, &keyFrame{})
			continue
		case tok == json.Delim('}') || tok == json.Delim(']'):
			stack = stack[:n-1]
		}
		// A value ended: a scalar, or the container just closed.
		if len(stack) == 0 {
			return nil
		}
		if parent := stack[len(stack)-1]; parent.object {
			parent.wantKey = true
		}
	}
}

// addKey records key in the object f, refusing a repeated or case-variant key;
// path says where f is.
func (f *keyFrame) addKey(key string, topLevel bool, path func() string) *Rejection {
	folded := foldKey(key)
	field := ""
	if topLevel {
		field = schemaKeys[folded]
	}
	if prev, seen := f.keys[folded]; seen {
		if prev == key {
			return &Rejection{Field: field, Reason: fmt.Sprintf("key %s is given twice", quoteKey(joinKeyPath(path(), key)))}
		}
		return &Rejection{Field: field, Reason: fmt.Sprintf("keys %s and %s differ only by case: a reader that matches names case-insensitively sees one key given twice",
			quoteKey(joinKeyPath(path(), prev)), quoteKey(joinKeyPath(path(), key)))}
	}
	f.keys[folded] = key
	if field != "" && field != key {
		return &Rejection{Field: field, Reason: fmt.Sprintf("key %s must be spelled %q", quoteKey(key), field)}
	}
	return nil
}

func joinKeyPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// quoteKey quotes an untrusted key for a message; a key may be anything,
// a token included.
func quoteKey(key string) string {
	return quote(bootstraptoken.Redact(key))
}

// IsRejection reports whether err is a validation refusal.
func IsRejection(err error) bool {
	var r *Rejection
	return errors.As(err, &r)
}

// quote renders an untrusted string for a log line or STATUS: escaped and
// shortened, so that it cannot forge log lines or flood them.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q (%d bytes)", s[:max]+"...", len(s))
	}
	return fmt.Sprintf("%q", s)
}

// describeJSONError shortens decoder errors, which may quote input, and makes
// sure they never include a token-like value.
func describeJSONError(err error) string {
	msg := err.Error()
	msg = bootstraptoken.Redact(msg)
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}
