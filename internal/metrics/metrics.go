// Package metrics is the agent's metrics registry and its HTTP listener:
// /metrics in the Prometheus text format, /healthz and /readyz.
//
// The registry is written by hand (see docs/metrics.md for the figures
// behind that choice): a fixed set of families whose every series exists
// from start-up, with label values from fixed sets only, so that nothing an
// observer is handed (a token, a node name, an S3 error message) can become
// a label value. Each Metrics value is its own registry: there is no global
// state.
//
// docs/metrics.md is generated from Descs (go generate ./internal/metrics)
// and a test fails when the two differ.
package metrics

//go:generate go run ./gen -out ../../docs/metrics.md

import (
	"bytes"
	"net/http"
	"slices"
	"time"

	"github.com/kubestrap/kubestrap/internal/role"
)

// Metric names.
const (
	BuildInfo            = "kubestrap_build_info"
	JoinTotal            = "kubestrap_join_total"
	JoinDuration         = "kubestrap_join_duration_seconds"
	JoinInfoFetchTotal   = "kubestrap_joininfo_fetch_total"
	PublishedGeneration  = "kubestrap_joininfo_published_generation"
	PublishedTokenExpiry = "kubestrap_joininfo_token_expiry_timestamp_seconds"
	ECRCredentialsExpiry = "kubestrap_ecr_credentials_expiry_timestamp_seconds"
	S3RequestsTotal      = "kubestrap_s3_requests_total"
	CertificateExpiry    = "kubestrap_certificate_expiry_timestamp_seconds"
	AddonsApplied        = "kubestrap_addons_applied"
	LeaveNoticesTotal    = "kubestrap_leave_notices_total"
	LeaveEvictionsTotal  = "kubestrap_leave_pods_total"
	LeaveDuration        = "kubestrap_leave_duration_seconds"
	NodeCleanupPasses    = "kubestrap_node_cleanup_passes_total"
	NodeCleanupDeleted   = "kubestrap_node_cleanup_deleted_nodes_total"
)

// Node cleanup pass results (NodeCleanupPasses's result label).
var NodeCleanupResults = []string{"ok", "error"}

// Leave notice kinds (LeaveNoticesTotal's kind label), then the catch-all.
var LeaveKinds = []string{"spot", "asg_termination", "rebalance", "other"}

// Leave pod outcomes (LeaveEvictionsTotal's result label).
var LeavePodResults = []string{"evicted", "left", "skipped"}

// MetricsContentType is the content type of /metrics: the Prometheus text
// format, version 0.0.4.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// The catch-all values of S3RequestsTotal's labels.
const (
	s3OperationOther = "other"
	s3ResultOther    = "other"
)

// Certificates are the certificate names of CertificateExpiry: kubeadm's
// own names (kubeadm certs check-expiration) plus the kubelet's client
// certificate.
var Certificates = []string{
	"apiserver", "apiserver-kubelet-client", "front-proxy-client",
	"etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client",
	"admin.conf", "controller-manager.conf", "scheduler.conf", "super-admin.conf",
	"ca", "etcd-ca", "front-proxy-ca", "kubelet-client",
}

// S3Operations are the operation label values of S3RequestsTotal: the
// operations the agent calls, then the catch-all.
var S3Operations = []string{"GetObject", "PutObject", s3OperationOther}

// S3 request results (S3RequestsTotal's result label), by HTTP status.
const (
	S3OK                 = "ok"                  // 2xx
	S3NotModified        = "not_modified"        // 304
	S3NotFound           = "not_found"           // 404
	S3PreconditionFailed = "precondition_failed" // 412
	S3AccessDenied       = "access_denied"       // 403
	S3Other4xx           = "other_4xx"           // any other 4xx
	S3ServerError        = "5xx"                 // 5xx
	S3Network            = "network"             // no HTTP answer
	S3Other              = s3ResultOther         // 1xx, 3xx other than 304
)

// S3Results lists every S3 result class.
var S3Results = []string{S3OK, S3NotModified, S3NotFound, S3PreconditionFailed, S3AccessDenied,
	S3Other4xx, S3ServerError, S3Network, S3Other}

// Roles are the role label values of BuildInfo.
var Roles = []string{"control-plane", "worker"}

// Descs returns every metric family the agent exposes, sorted by name.
func Descs() []Desc {
	ds := []Desc{
		{Name: BuildInfo, Type: Gauge, Help: "Always 1; its labels say which agent build runs and in which role.",
			Labels: []Label{
				{Name: "version", Doc: "the agent's version (`kubestrap version`); one value per process"},
				{Name: "role", Values: Roles, Doc: "the node's role (`role` in the configuration); one value per process"},
			}},
		{Name: JoinTotal, Type: Counter, Help: "kubeadm join runs by result (worker).",
			Labels: []Label{{Name: "result", Values: role.JoinResults,
				Doc: "`success`; `token_rejected`: the API server refused the token (expired or deleted), the worker waits for newer join info; " +
					"`node_still_registered`: the cluster still lists this node as Ready; `timeout`: kubeadm.joinTimeout passed; " +
					"`failure`: any other failure (the log and STATUS say why)"}},
			Fallback: []string{role.JoinFailure}},
		{Name: JoinDuration, Type: Histogram, Help: "Duration of each kubeadm join run, whatever its result (worker).",
			Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600}},
		{Name: JoinInfoFetchTotal, Type: Counter, Help: "Polls of the join info in S3 by result (worker; none once joined).",
			Labels: []Label{{Name: "result", Values: role.FetchResults,
				Doc: "`changed`: new join info read and valid; `not_modified`: unchanged (conditional GET) and still valid; " +
					"`not_found`: nothing published yet; `access_denied`: S3 answered 403 (not published yet, or no s3:GetObject); " +
					"`refused_expired`: the token expires within worker.expiryMargin; `refused_cluster`: join info of another cluster; " +
					"`refused_generation`: a generation whose token the API server already refused; `refused_invalid`: any other validation failure; " +
					"`error`: S3 could not be read. A refusal is counted instead of changed / not_modified"}},
			Fallback: []string{role.FetchError}},
		{Name: PublishedGeneration, Type: Gauge, Help: "Generation of the join info this control plane last published or verified; 0 before the first."},
		{Name: PublishedTokenExpiry, Type: Gauge, Help: "Expiry (Unix seconds) of the bootstrap token in the join info this control plane published; 0 before the first publication."},
		{Name: ECRCredentialsExpiry, Type: Gauge, Help: "Expiry (Unix seconds) of the ECR pull credentials last written for the kubelet; 0 before the first (or with ecr.enabled false)."},
		{Name: S3RequestsTotal, Type: Counter, Help: "HTTP requests to S3 by operation and result; every attempt counts, retries included.",
			Labels: []Label{
				{Name: "operation", Values: S3Operations, Doc: "the S3 API operation; `other` for any operation the agent does not normally call"},
				{Name: "result", Values: S3Results, Doc: "`ok` 2xx, `not_modified` 304, `not_found` 404, `precondition_failed` 412, `access_denied` 403, " +
					"`other_4xx` any other 4xx, `5xx`, `network`: no HTTP answer (connection failure, timeout), `other`: 1xx or a 3xx other than 304"},
			},
			Fallback: []string{s3OperationOther, s3ResultOther}},
		{Name: CertificateExpiry, Type: Gauge, Help: "Expiry (Unix seconds) of each kubeadm-managed certificate, as last checked; 0 where not checked or absent (workers hold only kubelet-client).",
			Labels: []Label{{Name: "cert", Values: Certificates,
				Doc: "kubeadm's certificate names (`kubeadm certs check-expiration`), the CAs, and `kubelet-client`"}}},
		{Name: AddonsApplied, Type: Gauge, Help: "1 when this agent process last applied every add-on manifest successfully, else 0 (control plane)."},
		{Name: LeaveNoticesTotal, Type: Counter, Help: "Notices from the instance metadata service that the node acted on (worker).",
			Labels: []Label{{Name: "kind", Values: LeaveKinds,
				Doc: "`spot`: a spot interruption; `asg_termination`: an Auto Scaling termination (target lifecycle state Terminated); " +
					"`rebalance`: a rebalance recommendation (cordon only); `other`: anything else"}},
			Fallback: []string{"other"}},
		{Name: LeaveEvictionsTotal, Type: Counter, Help: "Pods of the node when it left, by outcome (worker).",
			Labels: []Label{{Name: "result", Values: LeavePodResults,
				Doc: "`evicted`: through the Eviction API before the deadline; `left`: still there at the deadline (a PodDisruptionBudget, an error); " +
					"`skipped`: DaemonSet, mirror, finished or terminating pods"}}},
		{Name: NodeCleanupPasses, Type: Counter, Help: "Passes of the node cleanup, which deletes the Nodes of instances EC2 reports gone (control plane).",
			Labels: []Label{{Name: "result", Values: NodeCleanupResults,
				Doc: "`ok`; `error`: the Nodes, EC2 or a delete failed (the journal says why, once per distinct error); nothing unconfirmed is deleted"}}},
		{Name: NodeCleanupDeleted, Type: Counter, Help: "Nodes deleted by the node cleanup because EC2 reports their instances gone (control plane)."},
		{Name: LeaveDuration, Type: Histogram, Help: "Duration of each leave, from the notice's handling to its end (worker).",
			Buckets: []float64{1, 5, 10, 30, 60, 90, 120, 300, 600}},
	}
	slices.SortFunc(ds, func(a, b Desc) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return ds
}

// Metrics is the agent's registry. Its methods are safe for concurrent use.
type Metrics struct {
	families []*family
	byName   map[string]*family
}

// New returns a registry with every series at zero and build info set for
// version and role (a role outside Roles is exposed as given: it comes from
// the validated configuration).
func New(version, roleName string) *Metrics {
	m := &Metrics{byName: map[string]*family{}}
	for _, d := range Descs() {
		var sets [][]string
		for _, l := range d.Labels {
			sets = append(sets, l.Values)
		}
		if d.Name == BuildInfo {
			sets = [][]string{{version}, {roleName}}
		}
		f := newFamily(d, sets)
		m.families = append(m.families, f)
		m.byName[d.Name] = f
	}
	m.byName[BuildInfo].series[0].set(1)
	return m
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// JoinAttempt counts one kubeadm join run by result class (role.JoinResults;
// anything else counts as role.JoinFailure) and records its duration.
func (m *Metrics) JoinAttempt(result string, d time.Duration) {
	m.byName[JoinTotal].lookup(result).add(1)
	m.byName[JoinDuration].series[0].observe(m.byName[JoinDuration].Buckets, d.Seconds())
}

// Fetch counts one join info poll by result class (role.FetchResults;
// anything else counts as role.FetchError).
func (m *Metrics) Fetch(result string) {
	m.byName[JoinInfoFetchTotal].lookup(result).add(1)
}

// Published sets the published join info generation and its token's expiry.
func (m *Metrics) Published(generation int64, tokenExpires time.Time) {
	m.byName[PublishedGeneration].series[0].set(float64(generation))
	m.byName[PublishedTokenExpiry].series[0].set(unixSeconds(tokenExpires))
}

// SetECRExpiry sets the expiry of the ECR credentials last written.
func (m *Metrics) SetECRExpiry(t time.Time) {
	m.byName[ECRCredentialsExpiry].series[0].set(unixSeconds(t))
}

// SetCertificateExpiry sets the expiry of the certificate name (one of
// Certificates; other names are ignored).
func (m *Metrics) SetCertificateExpiry(name string, t time.Time) {
	if s := m.byName[CertificateExpiry].lookup(name); s != nil {
		s.set(unixSeconds(t))
	}
}

// SetAddonsApplied records whether the last apply of every add-on succeeded.
func (m *Metrics) SetAddonsApplied(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.byName[AddonsApplied].series[0].set(v)
}

// Left records one leave: the notice's kind (internal/leave's Kind: Spot,
// ASGTermination, Rebalance), how many pods were evicted, left and skipped,
// and how long it took.
func (m *Metrics) Left(kind string, evicted, left, skipped int, d time.Duration) {
	k := map[string]string{"Spot": "spot", "ASGTermination": "asg_termination", "Rebalance": "rebalance"}[kind]
	m.byName[LeaveNoticesTotal].lookup(k).add(1)
	for result, n := range map[string]int{"evicted": evicted, "left": left, "skipped": skipped} {
		m.byName[LeaveEvictionsTotal].lookup(result).add(float64(n))
	}
	m.byName[LeaveDuration].series[0].observe(m.byName[LeaveDuration].Buckets, d.Seconds())
}

// NodeCleanupPass records one node cleanup pass: whether it failed and how
// many Nodes it deleted.
func (m *Metrics) NodeCleanupPass(deleted int, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.byName[NodeCleanupPasses].lookup(result).add(1)
	m.byName[NodeCleanupDeleted].series[0].add(float64(deleted))
}

// s3Request counts one S3 HTTP request.
func (m *Metrics) s3Request(operation, result string) {
	m.byName[S3RequestsTotal].lookup(operation, result).add(1)
}

// Expose returns the whole registry in the Prometheus text format.
func (m *Metrics) Expose() []byte {
	var b bytes.Buffer
	_ = writeAll(&b, m.families) // a bytes.Buffer does not fail
	return b.Bytes()
}

// Handler serves the registry (GET or HEAD).
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body := m.Expose()
		w.Header().Set("Content-Type", MetricsContentType)
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	})
}
