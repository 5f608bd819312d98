package lease

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/kubestrap/kubestrap/internal/config"
)

// Schema identity and limits of the initialized marker.
const (
	MarkerKind = "ClusterInitialized"
	// MaxMarkerSize is the largest marker object accepted, in bytes.
	MaxMarkerSize = 16 << 10
	// maxMarkerClockSkew is how far in the future initializedAt may be.
	maxMarkerClockSkew = 5 * time.Minute
)

// MarkerKey returns the S3 key of a cluster's initialized marker:
// <cluster>/cp/initialized.json.
func MarkerKey(cluster string) string { return cluster + "/cp/initialized.json" }

// Initialized is the marker's document: the cluster was initialized, by
// whom, and how to reach it. Once it exists no node runs `kubeadm init` for
// the cluster again; recovering from the loss of every control plane is an
// explicit operator action.
type Initialized struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Cluster    string `json:"cluster"`
	// InitializedBy is the EC2 instance ID of the node that ran kubeadm init.
	InitializedBy string    `json:"initializedBy"`
	InitializedAt time.Time `json:"initializedAt"`
	// Endpoint is the cluster's controlPlaneEndpoint, host:port.
	Endpoint     string   `json:"endpoint"`
	CACertHashes []string `json:"caCertHashes"`
	// Generation is the init lock's generation under which init ran.
	Generation int64 `json:"generation"`
}

var caHashPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Validate checks every field against the schema, for cluster, at now.
func (m *Initialized) Validate(cluster string, now time.Time) error {
	bad := func(field, format string, args ...any) error {
		return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case m.APIVersion != APIVersion:
		return bad("apiVersion", "must be %q, got %s", APIVersion, quote(m.APIVersion))
	case m.Kind != MarkerKind:
		return bad("kind", "must be %q, got %s", MarkerKind, quote(m.Kind))
	case m.Cluster != cluster:
		return bad("cluster", "is %s, this node belongs to %q", quote(m.Cluster), cluster)
	case !ValidHolder(m.InitializedBy):
		return bad("initializedBy", "%s is not an EC2 instance ID", quote(m.InitializedBy))
	case m.InitializedAt.IsZero():
		return bad("initializedAt", "is required")
	case m.InitializedAt.After(now.Add(maxMarkerClockSkew)):
		return bad("initializedAt", "%s is in the future", m.InitializedAt.UTC().Format(time.RFC3339))
	case m.Generation < 1 || m.Generation > MaxGeneration:
		return bad("generation", "%d is not between 1 and %d", m.Generation, MaxGeneration)
	case len(m.CACertHashes) == 0 || len(m.CACertHashes) > 16:
		return bad("caCertHashes", "must hold 1 to 16 hashes, has %d", len(m.CACertHashes))
	}
	if reason := config.EndpointProblem(m.Endpoint); reason != "" {
		return bad("endpoint", "%s: %s", quote(m.Endpoint), reason)
	}
	for n, h := range m.CACertHashes {
		if !caHashPattern.MatchString(h) {
			return bad(fmt.Sprintf("caCertHashes[%d]", n), "%s is not of the form sha256:<64 lowercase hex>", quote(h))
		}
	}
	return nil
}

// ParseInitialized decodes and validates a marker read from url, with the
// same strictness as ParseRecord.
func ParseInitialized(url string, data []byte, cluster string, now time.Time) (*Initialized, error) {
	var m Initialized
	if err := decodeStrict(url, data, MaxMarkerSize, &m); err != nil {
		return nil, err
	}
	if err := m.Validate(cluster, now); err != nil {
		var inv *InvalidError
		if errors.As(err, &inv) {
			inv.URL = url
		}
		return nil, err
	}
	return &m, nil
}

// ErrNotInitialized means there is no marker: the cluster was never
// initialized (or the marker was removed by hand).
var ErrNotInitialized = errors.New("cluster is not initialized")

// ErrAlreadyInitialized means Create found a marker written by another
// init; the error is a *AlreadyInitializedError.
var ErrAlreadyInitialized = errors.New("cluster was already initialized")

// AlreadyInitializedError carries the marker that exists.
type AlreadyInitializedError struct {
	URL      string
	Existing *Initialized
}

func (e *AlreadyInitializedError) Error() string {
	return fmt.Sprintf("%s says the cluster was already initialized by %s at %s (generation %d); do not init it again, join it",
		e.URL, e.Existing.InitializedBy, e.Existing.InitializedAt.UTC().Format(time.RFC3339), e.Existing.Generation)
}

// Unwrap makes errors.Is(err, ErrAlreadyInitialized) true.
func (e *AlreadyInitializedError) Unwrap() error { return ErrAlreadyInitialized }

// Marker is a cluster's initialized marker object.
type Marker struct {
	Client S3API
	Bucket string
	// Key is MarkerKey(cluster).
	Key string
	// Cluster is checked against the marker's cluster.
	Cluster string
	// KMSKeyID, when set, makes Create use SSE-KMS with this key.
	KMSKeyID string
	// CallTimeout bounds each S3 call (default DefaultCallTimeout).
	CallTimeout time.Duration
}

func (mk *Marker) object() *object {
	return &object{client: mk.Client, bucket: mk.Bucket, key: mk.Key, kmsKeyID: mk.KMSKeyID, callTimeout: mk.CallTimeout}
}

// Read returns the marker, ErrNotInitialized when there is none, or an
// *InvalidError (ErrInvalid) when the object is not a valid marker for this
// cluster. now is this machine's time, for the future-time check.
func (mk *Marker) Read(ctx context.Context, now time.Time) (*Initialized, error) {
	o := mk.object()
	f, err := o.get(ctx, MaxMarkerSize)
	if errors.Is(err, errNoObject) {
		return nil, fmt.Errorf("%s: %w", o.url(), ErrNotInitialized)
	}
	if err != nil {
		return nil, fmt.Errorf("read initialized marker: %w", err)
	}
	return ParseInitialized(o.url(), f.body, mk.Cluster, now)
}

// Create writes the marker once (If-None-Match: *). When a marker exists
// already it returns nil if that marker is m itself (same instance and
// generation: an earlier attempt whose answer was lost), else an
// *AlreadyInitializedError. m is validated first.
func (mk *Marker) Create(ctx context.Context, m *Initialized) error {
	o := mk.object()
	if err := m.Validate(mk.Cluster, m.InitializedAt); err != nil {
		return fmt.Errorf("initialized marker to write: %w", err)
	}
	_, err := o.put(ctx, m, writeCond{})
	if err == nil {
		return nil
	}
	if !errors.Is(err, errPrecondition) && !errors.Is(err, errConcurrent) {
		return fmt.Errorf("create initialized marker: %w", err)
	}
	existing, rerr := mk.Read(ctx, m.InitializedAt)
	if rerr != nil {
		return fmt.Errorf("create initialized marker: it exists, but reading it failed: %w", rerr)
	}
	if existing.InitializedBy == m.InitializedBy && existing.Generation == m.Generation {
		return nil
	}
	return &AlreadyInitializedError{URL: o.url(), Existing: existing}
}
