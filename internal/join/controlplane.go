package join

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/kubestrap/kubestrap/internal/bootstraptoken"
)

// Control-plane join info: what a node needs to join the control plane, kept
// in <cluster>/cp/join.json, readable by the control-plane role only. Besides
// what a worker gets it holds the certificate key that decrypts kubeadm's
// kubeadm-certs Secret, so its String and log forms never show the token
// secret or the key.
const (
	ControlPlaneKind = "ControlPlaneJoinInfo"
	// CertificateKeyBytes is the size of kubeadm's certificate key, an AES-256
	// key written as 64 lowercase hex digits (kubeadm v1.37.2
	// constants.CertificateKeySize, copycerts.CreateCertificateKey).
	CertificateKeyBytes = 32
	// CertificatesLifetime is how long kubeadm keeps the kubeadm-certs Secret
	// after an upload: its owner is a bootstrap token with this TTL (kubeadm
	// v1.37.2 constants.DefaultCertTokenDuration).
	CertificatesLifetime = 2 * time.Hour
)

// ControlPlaneKey returns the S3 key of a cluster's control-plane join info.
func ControlPlaneKey(cluster string) string { return cluster + "/cp/join.json" }

// ControlPlaneJoinRequestKey returns the S3 key of a cluster's control-plane
// join request: a control plane that wants to join and finds no usable
// control-plane join info writes it, and the uploader then uploads the
// certificates and publishes fresh info. Without a request nothing is
// uploaded: a cluster nobody joins keeps no kubeadm-certs Secret.
func ControlPlaneJoinRequestKey(cluster string) string { return cluster + "/cp/join-request.json" }

// ControlPlaneJoinRequestKind is the request's kind.
const ControlPlaneJoinRequestKind = "ControlPlaneJoinRequest"

// ControlPlaneJoinRequest asks the uploader for usable control-plane join
// info. It carries no secret and grants nothing: the uploader only decides
// whether to upload again.
type ControlPlaneJoinRequest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Requester is the EC2 instance ID of the node that wants to join.
	Requester   string    `json:"requester"`
	RequestedAt time.Time `json:"requestedAt"`
	// FailedGeneration, when set, is the generation of control-plane join
	// info a join failed with (say, its kubeadm-certs Secret was gone).
	FailedGeneration int64 `json:"failedGeneration,omitempty"`
}

// ControlPlaneInfo is the control-plane join info document.
type ControlPlaneInfo struct {
	APIVersion        string   `json:"apiVersion"`
	Kind              string   `json:"kind"`
	Cluster           string   `json:"cluster"`
	APIServerEndpoint string   `json:"apiServerEndpoint"`
	Token             string   `json:"token"`
	CACertHashes      []string `json:"caCertHashes"`
	// CertificateKey decrypts the kubeadm-certs Secret: 64 lowercase hex digits.
	CertificateKey    string `json:"certificateKey"`
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// CertificatesUploadedAt is when the upload of the certificates began
	// (taken before `kubeadm init phase upload-certs` started, so that the
	// Secret lives at least until CertificatesUploadedAt+CertificatesLifetime).
	CertificatesUploadedAt time.Time `json:"certificatesUploadedAt"`
	IssuedAt               time.Time `json:"issuedAt"`
	// ExpiresAt is the token's expiry.
	ExpiresAt  time.Time `json:"expiresAt"`
	Generation int64     `json:"generation"`
}

// TokenID is the public half of the bootstrap token, safe to log.
func (i *ControlPlaneInfo) TokenID() string { return TokenID(i.Token) }

// CertificatesExpireAt is when kubeadm deletes the kubeadm-certs Secret this
// document's key decrypts.
func (i *ControlPlaneInfo) CertificatesExpireAt() time.Time {
	return i.CertificatesUploadedAt.Add(CertificatesLifetime)
}

// UsableUntil is when the document stops being usable for a join: the
// earlier of the token's expiry and the certificates' removal.
func (i *ControlPlaneInfo) UsableUntil() time.Time {
	if c := i.CertificatesExpireAt(); c.Before(i.ExpiresAt) {
		return c
	}
	return i.ExpiresAt
}

// String describes the document without its secrets.
func (i *ControlPlaneInfo) String() string {
	if i == nil {
		return "<nil control-plane join info>"
	}
	return fmt.Sprintf("control-plane join info cluster=%q generation=%d endpoint=%q token=%s certificateKey=<redacted> issuedAt=%s usableUntil=%s",
		i.Cluster, i.Generation, i.APIServerEndpoint, redactedToken(i.Token),
		i.IssuedAt.UTC().Format(time.RFC3339), i.UsableUntil().UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing the secrets.
func (i *ControlPlaneInfo) GoString() string { return i.String() }

// MarshalLogObject makes zap.Object and zap.Any log the document without its
// secrets.
func (i *ControlPlaneInfo) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("cluster", i.Cluster)
	enc.AddInt64("generation", i.Generation)
	enc.AddString("apiServerEndpoint", i.APIServerEndpoint)
	enc.AddString("tokenId", i.TokenID())
	enc.AddTime("issuedAt", i.IssuedAt)
	enc.AddTime("expiresAt", i.ExpiresAt)
	enc.AddTime("certificatesExpireAt", i.CertificatesExpireAt())
	return nil
}

func redactedToken(token string) string {
	if id := TokenID(token); id != "" {
		return id + ".<redacted>"
	}
	return "<redacted>"
}

var certificateKeyPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidCertificateKey reports whether key is a certificate key as kubeadm
// makes them: 32 bytes as 64 lowercase hex digits.
func ValidCertificateKey(key string) bool { return certificateKeyPattern.MatchString(key) }

// NewCertificateKey returns a fresh certificate key from crypto/rand, in
// kubeadm's format. Never log it or pass it on a command line.
func NewCertificateKey() (string, error) {
	b := make([]byte, CertificateKeyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a certificate key: read random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// controlPlaneKeys maps the folded spelling of each key of the control-plane
// schema to the key.
var controlPlaneKeys = func() map[string]string {
	keys := map[string]string{}
	for _, name := range []string{"apiVersion", "kind", "cluster", "apiServerEndpoint", "token", "caCertHashes",
		"certificateKey", "kubernetesVersion", "certificatesUploadedAt", "issuedAt", "expiresAt", "generation"} {
		keys[foldKey(name)] = name
	}
	return keys
}()

// ParseControlPlane decodes and validates control-plane join info, as
// strictly as Parse does worker join info: size bound, no key given twice at
// any level (also in spellings that differ only by case), no key spelled
// other than the schema does, no unknown key, no trailing data. Refusals are
// *Rejection errors that never contain the token secret or the certificate
// key.
func ParseControlPlane(data []byte, want Expectations) (*ControlPlaneInfo, error) {
	info, err := parseControlPlane(data, want)
	if err != nil {
		return nil, redactRejection(err)
	}
	return info, nil
}

func parseControlPlane(data []byte, want Expectations) (*ControlPlaneInfo, error) {
	if r := sizeProblem(data); r != nil {
		return nil, r
	}
	// Top-level keys against this schema first, so the rejection names the
	// field; then duplicates at any nested level.
	if r := controlPlaneKeyProblem(data); r != nil {
		return nil, r
	}
	if r := keyProblem(data); r != nil {
		return nil, r
	}
	var info ControlPlaneInfo
	if r := decodeStrict(data, "control-plane join info", &info); r != nil {
		return nil, r
	}
	if err := info.Validate(want); err != nil {
		return nil, err
	}
	return &info, nil
}

// controlPlaneKeyProblem refuses a top-level key given twice (also in
// spellings that differ only by case) and a key spelled like a schema key but
// for case. Anything that is not a JSON object is left to the decoder.
func controlPlaneKeyProblem(data []byte) *Rejection {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	seen := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := tok.(string)
		folded := foldKey(key)
		field := controlPlaneKeys[folded]
		if prev, ok := seen[folded]; ok {
			if prev == key {
				return &Rejection{Field: field, Reason: fmt.Sprintf("key %s is given twice", quoteKey(key))}
			}
			return &Rejection{Field: field, Reason: fmt.Sprintf("keys %s and %s differ only by case: a reader that matches names case-insensitively sees one key given twice", quoteKey(prev), quoteKey(key))}
		}
		seen[folded] = key
		if field != "" && field != key {
			return &Rejection{Field: field, Reason: fmt.Sprintf("key %s must be spelled %q", quoteKey(key), field)}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// hexRun is anything that could be a certificate key (or part of one).
var hexRun = regexp.MustCompile(`[0-9a-fA-F]{32,}`)

// redactRejection removes anything shaped like a token or a certificate key
// from a rejection's message.
func redactRejection(err error) error {
	var r *Rejection
	if !errors.As(err, &r) {
		return err
	}
	return &Rejection{Field: r.Field, Reason: hexRun.ReplaceAllString(bootstraptoken.Redact(r.Reason), "<redacted>")}
}

// Validate checks every field against the schema and want. want.Margin is
// the least remaining usable life (UsableUntil) accepted.
func (i *ControlPlaneInfo) Validate(want Expectations) error {
	reject := func(field, format string, args ...any) error {
		return &Rejection{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case i.APIVersion != APIVersion:
		return reject("apiVersion", "must be %q, got %s", APIVersion, quote(i.APIVersion))
	case i.Kind != ControlPlaneKind:
		return reject("kind", "must be %q, got %s", ControlPlaneKind, quote(i.Kind))
	case i.Cluster != want.Cluster:
		return reject("cluster", "is %s, this node belongs to %q", quote(i.Cluster), want.Cluster)
	case !bootstraptoken.Valid(i.Token):
		return reject("token", "is not of the form [a-z0-9]{6}.[a-z0-9]{16}")
	case !ValidCertificateKey(i.CertificateKey):
		// Never echo the key, not even a malformed one.
		return reject("certificateKey", "is not %d bytes as %d lowercase hex digits", CertificateKeyBytes, 2*CertificateKeyBytes)
	case len(i.CACertHashes) == 0:
		return reject("caCertHashes", "at least one CA certificate hash is required")
	case len(i.CACertHashes) > 16:
		return reject("caCertHashes", "more than 16 hashes")
	}
	if err := validateCommon(i.CACertHashes, i.APIServerEndpoint, i.KubernetesVersion, i.Generation); err != nil {
		return err
	}
	for _, t := range []struct {
		field string
		at    time.Time
	}{{"certificatesUploadedAt", i.CertificatesUploadedAt}, {"issuedAt", i.IssuedAt}, {"expiresAt", i.ExpiresAt}} {
		if t.at.IsZero() {
			return reject(t.field, "is required")
		}
	}
	if i.IssuedAt.After(want.Now.Add(MaxClockSkew)) {
		return reject("issuedAt", "%s is in the future", i.IssuedAt.UTC().Format(time.RFC3339))
	}
	if i.CertificatesUploadedAt.After(i.IssuedAt) {
		return reject("certificatesUploadedAt", "is after issuedAt: the key cannot be published before the certificates were uploaded")
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
	if left := i.CertificatesExpireAt().Sub(want.Now); left < want.Margin {
		return reject("certificatesUploadedAt", "the certificates uploaded at %s are deleted by kubeadm at %s (%s after the upload), less than the %s safety margin from now",
			i.CertificatesUploadedAt.UTC().Format(time.RFC3339), i.CertificatesExpireAt().UTC().Format(time.RFC3339), CertificatesLifetime, want.Margin)
	}
	return nil
}
