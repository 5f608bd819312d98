// Package etcdmember lists and removes the members of kubeadm's stacked etcd
// without the etcd Go client (and the gRPC it brings): it speaks to etcd's
// JSON gRPC gateway over net/http with the etcd CA and a client certificate
// that CA signed.
//
// The control plane's node cleanup uses it to remove the etcd member of a
// terminated control-plane instance once its Node is deleted, but only while
// quorum stays safe: see Client.RemoveIfSafe.
//
// The gateway's JSON (etcd v3.5 to v3.7, protojson with the proto field
// names, unpopulated fields omitted, 64-bit integers as strings):
//
//	POST /v3/cluster/member/list   {}
//	  {"header":{"cluster_id":"…","member_id":"…","raft_term":"…"},
//	   "members":[{"ID":"…","name":"…","peerURLs":["…"],"clientURLs":["…"],"isLearner":true}]}
//	POST /v3/cluster/member/remove {"ID":"…"}
//	  {"header":{…},"members":[…the remaining members…]}
//	an error: HTTP 4xx/5xx and {"code":<gRPC code>,"message":"…"}, e.g.
//	  404 {"code":5,"message":"etcdserver: member not found"}
//	  503 {"code":14,"message":"etcdserver: unhealthy cluster"}
//	GET  /health (on each member's client URL)
//	  200 {"health":"true","reason":""}, 503 {"health":"false","reason":"RAFT NO LEADER"}
//
// A member that never started has no name and no client URLs; a false
// isLearner is omitted.
package etcdmember

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Default timeouts.
const (
	// DefaultTimeout bounds one gateway call (member list, member remove).
	DefaultTimeout = 10 * time.Second
	// DefaultHealthTimeout bounds one probe of one member.
	DefaultHealthTimeout = 3 * time.Second
	// LocalEndpoint is the local member's client endpoint on a kubeadm
	// control plane (kubeadm's etcd listens on 127.0.0.1:2379 as well as
	// on the node's IP).
	LocalEndpoint = "https://127.0.0.1:2379"
)

// maxBody bounds what is read of an answer.
const maxBody = 1 << 20

// Member is one etcd member as the member list reports it.
type Member struct {
	// ID is the member's ID (etcdctl prints it in hex).
	ID uint64
	// Name is the member's name (kubeadm: the node name); "" for a member
	// that was added but never started.
	Name string
	// PeerURLs are the member's peer URLs (kubeadm: https://<node IP>:2380).
	PeerURLs []string
	// ClientURLs are the member's client URLs (kubeadm:
	// https://<node IP>:2379); none for a member that never started.
	ClientURLs []string
	// IsLearner is true for a raft learner (a member that does not vote).
	IsLearner bool
}

// String names the member for logs: name, hex ID (as etcdctl prints it)
// and peer URLs.
func (m Member) String() string {
	name := m.Name
	if name == "" {
		name = "(unstarted)"
	}
	s := fmt.Sprintf("%s (ID %x, peer %s", name, m.ID, strings.Join(m.PeerURLs, ","))
	if m.IsLearner {
		s += ", learner"
	}
	return s + ")"
}

// Config configures a Client.
type Config struct {
	// Endpoints are the gateway endpoints (https://host:port), the local
	// member first. RemoveIfSafe uses the first only; Members tries them in
	// order.
	Endpoints []string
	// TLS carries the etcd CA (RootCAs) and the client certificate; see
	// TLSFromFiles.
	TLS *tls.Config
	// Timeout bounds each gateway call (default DefaultTimeout).
	Timeout time.Duration
	// HealthTimeout bounds each probe of a member (default
	// DefaultHealthTimeout).
	HealthTimeout time.Duration
}

// Client talks to etcd's JSON gateway. It holds no state beyond its
// configuration and idle connections (see Close); it is safe for concurrent
// use.
type Client struct {
	endpoints     []string
	timeout       time.Duration
	healthTimeout time.Duration
	http          *http.Client
	// probeHTTP keeps no connection alive: a probe's TLS handshake is
	// always with the member probed now.
	probeHTTP *http.Client
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints")
	}
	if cfg.TLS == nil {
		return nil, errors.New("etcd client: no TLS configuration (etcd's client port requires a client certificate)")
	}
	eps := make([]string, 0, len(cfg.Endpoints))
	for _, ep := range cfg.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("etcd client: endpoint %q is not https://host:port", ep)
		}
		eps = append(eps, "https://"+u.Host)
	}
	c := &Client{endpoints: eps, timeout: cfg.Timeout, healthTimeout: cfg.HealthTimeout}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.healthTimeout <= 0 {
		c.healthTimeout = DefaultHealthTimeout
	}
	tr := &http.Transport{
		// etcd is reached directly, never through an HTTPS_PROXY of the
		// environment.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     cfg.TLS.Clone(),
		TLSHandshakeTimeout: c.timeout,
		MaxIdleConns:        8,
		IdleConnTimeout:     30 * time.Second,
	}
	c.http = &http.Client{Transport: tr, Timeout: c.timeout}
	ptr := tr.Clone()
	ptr.DisableKeepAlives = true
	c.probeHTTP = &http.Client{Transport: ptr, Timeout: c.healthTimeout}
	return c, nil
}

// TLSFromFiles builds the TLS configuration of a Client: the etcd CA in
// caFile as the only root, and the client certificate and key in certFile
// and keyFile (signed by that CA).
func TLSFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read etcd CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("etcd CA %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load etcd client certificate %s: %w", certFile, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// NewKubeadm returns a Client for the local member of kubeadm's stacked etcd
// (LocalEndpoint), with the files kubeadm writes under configDir
// (/etc/kubernetes): pki/etcd/ca.crt and the API server's etcd client
// certificate pki/apiserver-etcd-client.crt and .key, the certificate
// kubeadm itself uses to add and remove members. The files are read once:
// make a new Client per use so that renewed certificates are picked up.
func NewKubeadm(configDir string) (*Client, error) {
	pki := filepath.Join(configDir, "pki")
	cfg, err := TLSFromFiles(filepath.Join(pki, "etcd", "ca.crt"),
		filepath.Join(pki, "apiserver-etcd-client.crt"), filepath.Join(pki, "apiserver-etcd-client.key"))
	if err != nil {
		return nil, err
	}
	return New(Config{Endpoints: []string{LocalEndpoint}, TLS: cfg})
}

// Close closes the Client's idle connections.
func (c *Client) Close() {
	c.http.CloseIdleConnections()
}

// Members lists the members, asking the endpoints in order until one
// answers.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var errs []error
	for _, ep := range c.endpoints {
		ms, _, err := c.list(ctx, ep)
		if err == nil {
			return ms, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("list etcd members: %w", errors.Join(errs...))
}

// Healthy says whether m answers GET /health on one of its client URLs with
// {"health":"true"} within the health timeout: it serves reads through a
// leader, so the cluster has quorum from its point of view.
func (c *Client) Healthy(ctx context.Context, m Member) bool {
	return c.probe(ctx, m).healthy
}

// uint64String is a protojson uint64: a JSON string of digits (a number is
// accepted too).
type uint64String uint64

func (u *uint64String) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*u = 0
		return nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a uint64: %s", b)
	}
	*u = uint64String(v)
	return nil
}

type jsonHeader struct {
	ClusterID uint64String `json:"cluster_id"`
	MemberID  uint64String `json:"member_id"`
}

type jsonMember struct {
	ID         uint64String `json:"ID"`
	Name       string       `json:"name"`
	PeerURLs   []string     `json:"peerURLs"`
	ClientURLs []string     `json:"clientURLs"`
	IsLearner  bool         `json:"isLearner"`
}

type jsonMembers struct {
	Header  *jsonHeader  `json:"header"`
	Members []jsonMember `json:"members"`
}

func (r jsonMembers) members() []Member {
	out := make([]Member, 0, len(r.Members))
	for _, m := range r.Members {
		out = append(out, Member{ID: uint64(m.ID), Name: m.Name, PeerURLs: m.PeerURLs,
			ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
	}
	return out
}

// gatewayError is the gateway's error answer.
type gatewayError struct {
	Status  int
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *gatewayError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d: %s (gRPC code %d)", e.Status, e.Message, e.Code)
}

// grpcNotFound is codes.NotFound, which the gateway answers for a member
// remove of an unknown ID ("etcdserver: member not found").
const grpcNotFound = 5

// list asks ep for the member list; it also returns the ID of the member
// that answered (the header's member_id).
func (c *Client) list(ctx context.Context, ep string) ([]Member, uint64, error) {
	var r jsonMembers
	if err := c.post(ctx, ep, "/v3/cluster/member/list", struct{}{}, &r); err != nil {
		return nil, 0, err
	}
	if r.Header == nil || r.Header.MemberID == 0 {
		return nil, 0, fmt.Errorf("member list from %s: the answer has no header member_id", ep)
	}
	return r.members(), uint64(r.Header.MemberID), nil
}

// remove asks ep to remove the member id and returns the remaining members.
func (c *Client) remove(ctx context.Context, ep string, id uint64) ([]Member, error) {
	var r jsonMembers
	body := map[string]string{"ID": strconv.FormatUint(id, 10)}
	if err := c.post(ctx, ep, "/v3/cluster/member/remove", body, &r); err != nil {
		return nil, err
	}
	return r.members(), nil
}

// post sends a JSON request to the gateway at ep+path and decodes the
// answer into out; every call is bounded by the Client's timeout.
func (c *Client) post(ctx context.Context, ep, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", path, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s at %s: %w", path, ep, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s at %s: %w", path, ep, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s at %s: read the answer: %w", path, ep, err)
	}
	if resp.StatusCode != http.StatusOK {
		ge := &gatewayError{Status: resp.StatusCode}
		if json.Unmarshal(data, ge) != nil || ge.Message == "" {
			ge.Message = strings.TrimSpace(string(truncate(data, 200)))
		}
		return fmt.Errorf("%s at %s: %w", path, ep, ge)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s at %s: decode the answer: %w", path, ep, err)
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// probeResult is what a probe of one member found.
type probeResult struct {
	// alive: a server with a certificate of the etcd CA completed a TLS
	// handshake at one of its client or peer URLs (whatever it answered
	// then, or if it did not answer in time).
	alive bool
	// healthy: GET /health answered 200 {"health":"true"}.
	healthy bool
	// detail says what answered (or what failed), for the log.
	detail string
}

// probe asks m's client URLs for /health; if none answers, its peer URLs
// for /version (etcd's peer listener serves it). Each request is bounded by
// the health timeout.
func (c *Client) probe(ctx context.Context, m Member) probeResult {
	var fails []string
	for _, cu := range m.ClientURLs {
		a := c.get(ctx, cu, "/health")
		if a.err != nil {
			if a.handshake {
				return probeResult{alive: true, detail: fmt.Sprintf("%s completed a TLS handshake but /health failed: %v", cu, a.err)}
			}
			fails = append(fails, a.err.Error())
			continue
		}
		var h struct {
			Health string `json:"health"`
		}
		_ = json.Unmarshal(a.body, &h)
		if a.status == http.StatusOK && h.Health == "true" {
			return probeResult{alive: true, healthy: true, detail: fmt.Sprintf("%s/health answered healthy", cu)}
		}
		return probeResult{alive: true, detail: fmt.Sprintf("%s/health answered HTTP %d %s", cu, a.status,
			strings.TrimSpace(string(truncate(a.body, 200))))}
	}
	if len(m.ClientURLs) == 0 {
		fails = append(fails, "no client URL (never started)")
	}
	for _, pu := range m.PeerURLs {
		a := c.get(ctx, pu, "/version")
		if a.err == nil || a.handshake {
			return probeResult{alive: true, detail: fmt.Sprintf("its peer URL %s completed a TLS handshake (HTTP %d, error %v)", pu, a.status, a.err)}
		}
		fails = append(fails, a.err.Error())
	}
	return probeResult{detail: strings.Join(fails, "; ")}
}

// answer is what a GET found.
type answer struct {
	// handshake: a TLS handshake with the server completed (probes use no
	// kept-alive connection, so this is the server of this probe).
	handshake bool
	status    int
	body      []byte
	err       error
}

// get sends GET base+path bounded by the health timeout.
func (c *Client) get(ctx context.Context, base, path string) answer {
	ctx, cancel := context.WithTimeout(ctx, c.healthTimeout)
	defer cancel()
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return answer{err: fmt.Errorf("%q is not an https URL", base)}
	}
	var mu sync.Mutex
	var a answer
	trace := &httptrace.ClientTrace{
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				mu.Lock()
				a.handshake = true
				mu.Unlock()
			}
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, "https://"+u.Host+path, nil)
	if err != nil {
		return answer{err: fmt.Errorf("GET %s%s: %w", base, path, err)}
	}
	resp, err := c.probeHTTP.Do(req)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		a.err = err // a *url.Error: it names the method and the URL
		return a
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	if a.body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err != nil {
		a.err = fmt.Errorf("GET %s%s: read the answer: %w", base, path, err)
	}
	return a
}
