// Package lease is a lock in S3 held by a renewed, fenced lease: among any
// number of control-plane nodes exactly one holds it, so exactly one runs
// `kubeadm init` (and, with other lock names, refreshes the join info or joins
// the control plane). It uses nothing but S3's conditional writes and a check
// whether the holder's EC2 instance still runs.
//
// Protocol (object <cluster>/cp/<name>-lock.json, a Record):
//
//   - Acquire: PUT If-None-Match: * with generation 1. 412 (or 409) means
//     someone holds it: the object is read and reported.
//   - Renew: every RenewInterval, PUT If-Match: <the ETag of our last write>.
//     A 412 or 404 means the lock was taken or removed: the lease is lost and
//     the holder's context is cancelled at once. A holder that has not
//     renewed successfully for LeaseDuration-Margin after sending its last
//     successful write (its own monotonic clock) cancels its context too: by
//     then another node may take the lock.
//   - Age: S3's Last-Modified of the object against the Date header of the
//     same response, both S3's own clock; no local clock is compared with
//     another machine's.
//   - Take over ("steal"): only when the age exceeds the holder's
//     leaseSeconds AND HolderAlive says the holder's instance is not running
//     (or the holder is this very instance, i.e. an earlier run of this
//     agent); one atomic PUT If-Match: <the stale ETag> with generation+1.
//     Never delete-then-create. With Lock.ReclaimOwn reporting that no other
//     agent process runs on this instance (its flock on agent.lock), a lock
//     held in this instance's own name is taken over at once, the same way,
//     without waiting for its lease to expire: a restarted agent goes on
//     with an init it was running.
//   - Release: DELETE If-Match: <our ETag>, so a release never removes a lock
//     someone else holds now.
//
// Every write carries a fresh random nonce, so every write has its own ETag
// (S3's ETag of a single-part object without SSE-KMS is the MD5 of its body):
// an If-Match on an ETag we wrote can only match our own write.
package lease

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	sigsjson "sigs.k8s.io/json"
)

// Schema identity and limits of a lock object.
const (
	APIVersion = "kubestrap.dev/v1alpha1"
	LockKind   = "Lock"
	// MaxRecordSize is the largest lock object accepted, in bytes.
	MaxRecordSize = 4 << 10
	// MinLeaseDuration and MaxLeaseDuration bound a lease. S3's times have
	// whole seconds, so a lease is a whole number of seconds.
	MinLeaseDuration = 5 * time.Second
	MaxLeaseDuration = time.Hour
	// MaxGeneration is the largest generation: 2^53-1, which every JSON
	// reader holds exactly.
	MaxGeneration int64 = 1<<53 - 1
)

// Names of the control-plane locks.
const (
	// InitLock is held by the node that runs `kubeadm init`.
	InitLock = "init"
	// UploaderLock is held by the node that refreshes the control-plane join
	// info (certificate key, token).
	UploaderLock = "uploader"
	// JoinLock is held by the node that joins the control plane, one at a time.
	JoinLock = "join"
)

// LockKey returns the S3 key of a cluster's lock called name:
// <cluster>/cp/<name>-lock.json.
func LockKey(cluster, name string) string { return cluster + "/cp/" + name + "-lock.json" }

// Record is the lock object's document.
type Record struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Holder is the EC2 instance ID of the holder.
	Holder string `json:"holder"`
	// Generation is 1 when the lock object was created and goes up by one at
	// every takeover; a renewal keeps it. It is informational: the fencing is
	// the ETag.
	Generation int64 `json:"generation"`
	// LeaseSeconds is how long after its last write (S3's clock) the holder's
	// claim lasts.
	LeaseSeconds int64 `json:"leaseSeconds"`
	// AcquiredAt and RenewedAt are the holder's own clock, for humans only.
	AcquiredAt time.Time `json:"acquiredAt"`
	RenewedAt  time.Time `json:"renewedAt"`
	// Nonce is random per write (32 lowercase hex digits).
	Nonce string `json:"nonce"`
}

var (
	instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)
	noncePattern      = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// ValidHolder reports whether holder is an EC2 instance ID (i-<8 to 17 hex>).
func ValidHolder(holder string) bool { return instanceIDPattern.MatchString(holder) }

// InstanceIDFromProviderID returns the EC2 instance ID at the end of a
// providerID (aws:///<zone>/<instance ID>), or "" when there is none.
func InstanceIDFromProviderID(providerID string) string {
	if !strings.HasPrefix(providerID, "aws://") {
		return ""
	}
	id := providerID[strings.LastIndex(providerID, "/")+1:]
	if !ValidHolder(id) {
		return ""
	}
	return id
}

// ErrInvalid means an object in S3 is not a valid lock or marker document.
// Nothing overwrites it on its own: an operator must look at it.
var ErrInvalid = errors.New("invalid object")

// InvalidError says why an object was refused; it wraps ErrInvalid.
type InvalidError struct {
	URL    string
	Field  string
	Reason string
}

func (e *InvalidError) Error() string {
	where := e.URL
	if e.Field != "" {
		where += ": " + e.Field
	}
	return fmt.Sprintf("%s is not valid: %s; remove or fix the object by hand once you know no node relies on it", where, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

// ParseRecord decodes and validates a lock object read from url (named in
// errors). Unknown keys, keys given twice, keys spelled with another case,
// trailing data and bodies above MaxRecordSize are refused.
func ParseRecord(url string, data []byte) (*Record, error) {
	var r Record
	if err := decodeStrict(url, data, MaxRecordSize, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			inv.URL = url
		}
		return nil, err
	}
	return &r, nil
}

// Validate checks every field of the record.
func (r *Record) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case r.APIVersion != APIVersion:
		return bad("apiVersion", "must be %q, got %s", APIVersion, quote(r.APIVersion))
	case r.Kind != LockKind:
		return bad("kind", "must be %q, got %s", LockKind, quote(r.Kind))
	case !ValidHolder(r.Holder):
		return bad("holder", "%s is not an EC2 instance ID (i-<8 to 17 lowercase hex>)", quote(r.Holder))
	case r.Generation < 1 || r.Generation > MaxGeneration:
		return bad("generation", "%d is not between 1 and %d", r.Generation, MaxGeneration)
	case r.LeaseSeconds < int64(MinLeaseDuration/time.Second) || r.LeaseSeconds > int64(MaxLeaseDuration/time.Second):
		return bad("leaseSeconds", "%d is not between %d and %d", r.LeaseSeconds, int64(MinLeaseDuration/time.Second), int64(MaxLeaseDuration/time.Second))
	case r.AcquiredAt.IsZero():
		return bad("acquiredAt", "is required")
	case r.RenewedAt.IsZero():
		return bad("renewedAt", "is required")
	case !noncePattern.MatchString(r.Nonce):
		return bad("nonce", "is not 32 lowercase hex digits")
	}
	return nil
}

// LeaseDuration is LeaseSeconds as a duration.
func (r *Record) LeaseDuration() time.Duration { return time.Duration(r.LeaseSeconds) * time.Second }

// decodeStrict decodes data into v refusing oversize bodies, unknown keys,
// duplicate keys and (the decoder matching names case-sensitively) keys
// spelled with another case.
func decodeStrict(url string, data []byte, max int, v any) error {
	if len(data) > max {
		return &InvalidError{URL: url, Reason: fmt.Sprintf("object is larger than %d bytes", max)}
	}
	strictErrs, err := sigsjson.UnmarshalStrict(data, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err == nil && len(strictErrs) > 0 {
		err = strictErrs[0]
	}
	if err != nil {
		return &InvalidError{URL: url, Reason: "not valid JSON of the expected schema: " + shorten(err.Error(), 200)}
	}
	return nil
}

// newNonce returns 16 random bytes in hex.
func newNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// quote renders an untrusted string for a message: escaped and shortened.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q (%d bytes)", s[:max]+"...", len(s))
	}
	return fmt.Sprintf("%q", s)
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
