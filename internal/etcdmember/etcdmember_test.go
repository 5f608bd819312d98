package etcdmember

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPKI is a throwaway etcd CA with a server certificate for 127.0.0.1
// and a client certificate.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
	caPEM  []byte
	// clientCertPEM and clientKeyPEM are the client pair as files hold it.
	clientCertPEM, clientKeyPEM []byte
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{pool: x509.NewCertPool(), caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.pool.AddCert(ca)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return pair, certPEM, keyPEM
	}
	p.server, _, _ = issue(2, "etcd-server", x509.ExtKeyUsageServerAuth)
	p.client, p.clientCertPEM, p.clientKeyPEM = issue(3, "kube-apiserver-etcd-client", x509.ExtKeyUsageClientAuth)
	return p
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS12}
}

// startTLS starts h as etcd's client port would serve it: TLS with the
// server certificate, a client certificate of the CA required.
func (p *testPKI) startTLS(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes refused on purpose
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// deadURL is an https URL where nothing listens (connection refused).
func deadURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr
}

// health is how a fake member answers /health.
type health int

const (
	dead      health = iota // nothing listens
	healthy                 // 200 {"health":"true"}
	noLeader                // 503 {"health":"false","reason":"RAFT NO LEADER"}
	hangs                   // accepts, never answers
	peerAlive               // client URL dead, peer URL answers
)

type fakeMember struct {
	id      uint64
	name    string
	learner bool
	health  health
	// unstarted: no name and no client URLs in the list.
	unstarted bool
	peerHost  string
}

// fakeEtcd is the gateway of the local member (the first fake member) plus
// one TLS server per live member answering /health.
type fakeEtcd struct {
	t       *testing.T
	pki     *testPKI
	gateway *httptest.Server

	mu        sync.Mutex
	members   []Member
	removes   []string // bodies of the remove calls
	removeErr func(w http.ResponseWriter)
	listErr   func(w http.ResponseWriter)
}

func newFakeEtcd(t *testing.T, fms ...fakeMember) *fakeEtcd {
	t.Helper()
	f := &fakeEtcd{t: t, pki: newTestPKI(t)}
	for _, fm := range fms {
		m := Member{ID: fm.id, Name: fm.name, IsLearner: fm.learner}
		peer := deadURL(t)
		if fm.peerHost != "" {
			// A loopback host (nothing listens on the port) stands in
			// for a node IP: a probe of it is refused at once.
			peer = "https://" + net.JoinHostPort(fm.peerHost, strings.Split(peer, ":")[2])
		}
		var client string
		switch fm.health {
		case dead, peerAlive:
			client = deadURL(t)
			if fm.health == peerAlive {
				peer = f.pki.startTLS(t, http.NotFoundHandler()).URL
			}
		default:
			h := fm.health
			client = f.pki.startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch h {
				case healthy:
					fmt.Fprint(w, `{"health":"true","reason":""}`)
				case noLeader:
					http.Error(w, `{"health":"false","reason":"RAFT NO LEADER"}`, http.StatusServiceUnavailable)
				case hangs:
					<-r.Context().Done()
				}
			})).URL
		}
		m.PeerURLs = []string{peer}
		if fm.unstarted {
			m.Name = ""
		} else {
			m.ClientURLs = []string{client}
		}
		f.members = append(f.members, m)
	}
	f.gateway = f.pki.startTLS(t, http.HandlerFunc(f.serve))
	return f
}

func (f *fakeEtcd) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || len(r.TLS.PeerCertificates) == 0 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/v3/cluster/member/list":
		if f.listErr != nil {
			f.listErr(w)
			return
		}
		if string(body) != "{}" {
			http.Error(w, "bad body "+string(body), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, f.listJSON())
	case "/v3/cluster/member/remove":
		f.removes = append(f.removes, string(body))
		if f.removeErr != nil {
			f.removeErr(w)
			return
		}
		var req struct {
			ID string `json:"ID"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kept := f.members[:0]
		for _, m := range f.members {
			if fmt.Sprint(m.ID) != req.ID {
				kept = append(kept, m)
			}
		}
		f.members = kept
		fmt.Fprint(w, f.listJSON())
	default:
		http.NotFound(w, r)
	}
}

// listJSON renders the members as etcd's gateway does: protojson, proto
// names, uint64 as strings, unpopulated fields omitted.
func (f *fakeEtcd) listJSON() string {
	var ms []string
	for _, m := range f.members {
		var b strings.Builder
		fmt.Fprintf(&b, `{"ID":"%d"`, m.ID)
		if m.Name != "" {
			fmt.Fprintf(&b, `,"name":%q`, m.Name)
		}
		if len(m.PeerURLs) > 0 {
			j, _ := json.Marshal(m.PeerURLs)
			fmt.Fprintf(&b, `,"peerURLs":%s`, j)
		}
		if len(m.ClientURLs) > 0 {
			j, _ := json.Marshal(m.ClientURLs)
			fmt.Fprintf(&b, `,"clientURLs":%s`, j)
		}
		if m.IsLearner {
			b.WriteString(`,"isLearner":true`)
		}
		b.WriteString("}")
		ms = append(ms, b.String())
	}
	return fmt.Sprintf(`{"header":{"cluster_id":"14841639068965178418","member_id":"%d","raft_term":"2"},"members":[%s]}`,
		f.members[0].ID, strings.Join(ms, ","))
}

func (f *fakeEtcd) client(t *testing.T) *Client {
	t.Helper()
	c, err := New(Config{Endpoints: []string{f.gateway.URL}, TLS: f.pki.clientTLS(),
		Timeout: 5 * time.Second, HealthTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (f *fakeEtcd) removeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.removes...)
}

func TestMembersParsesTheGatewayJSON(t *testing.T) {
	p := newTestPKI(t)
	// As etcd v3.7.3's gateway answered in the integration test: a learner,
	// a member added but never started (no name, no client URLs), IDs above
	// 2^53 as strings.
	const answer = `{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","raft_term":"3"},` +
		`"members":[{"ID":"10276657743932975437","name":"cp-a","peerURLs":["https://10.0.1.10:2380"],"clientURLs":["https://10.0.1.10:2379"]},` +
		`{"ID":"18249187646912138824","name":"cp-b","peerURLs":["https://10.0.1.11:2380"],"clientURLs":["https://10.0.1.11:2379"],"isLearner":true},` +
		`{"ID":"5","peerURLs":["https://10.0.1.12:2380"]}]}`
	var gotBody string
	srv := p.startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody = r.Method + " " + r.URL.Path + " " + string(b)
		fmt.Fprint(w, answer)
	}))
	c, err := New(Config{Endpoints: []string{srv.URL}, TLS: p.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ms, err := c.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if gotBody != "POST /v3/cluster/member/list {}" {
		t.Errorf("request %q", gotBody)
	}
	want := []Member{
		{ID: 10276657743932975437, Name: "cp-a", PeerURLs: []string{"https://10.0.1.10:2380"}, ClientURLs: []string{"https://10.0.1.10:2379"}},
		{ID: 18249187646912138824, Name: "cp-b", PeerURLs: []string{"https://10.0.1.11:2380"}, ClientURLs: []string{"https://10.0.1.11:2379"}, IsLearner: true},
		{ID: 5, PeerURLs: []string{"https://10.0.1.12:2380"}},
	}
	if fmt.Sprintf("%#v", ms) != fmt.Sprintf("%#v", want) {
		t.Errorf("members\n got %#v\nwant %#v", ms, want)
	}
	if s := ms[1].String(); s != "cp-b (ID fd422379fda50e48, peer https://10.0.1.11:2380, learner)" {
		t.Errorf("String() = %q", s)
	}
	if s := ms[2].String(); !strings.HasPrefix(s, "(unstarted) (ID 5,") {
		t.Errorf("String() = %q", s)
	}
}

func TestMembersTriesTheEndpointsInOrder(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy})
	c, err := New(Config{Endpoints: []string{deadURL(t), f.gateway.URL}, TLS: f.pki.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ms, err := c.Members(context.Background())
	if err != nil || len(ms) != 1 || ms[0].Name != "a" {
		t.Fatalf("Members = %v, %v", ms, err)
	}
}

func TestMembersErrorsAreWrapped(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy})
	f.listErr = func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"code":14,"message":"etcdserver: leader changed","details":[]}`)
	}
	_, err := f.client(t).Members(context.Background())
	if err == nil || !strings.Contains(err.Error(), "list etcd members") || !strings.Contains(err.Error(), "/v3/cluster/member/list") ||
		!strings.Contains(err.Error(), "HTTP 503: etcdserver: leader changed (gRPC code 14)") {
		t.Fatalf("err = %v", err)
	}
	f.listErr = func(w http.ResponseWriter) { fmt.Fprint(w, `{"members":[{"ID":"x"}]}`) }
	if _, err := f.client(t).Members(context.Background()); err == nil || !strings.Contains(err.Error(), "decode the answer") {
		t.Fatalf("err = %v", err)
	}
	// A client certificate of another CA is refused by the TLS handshake.
	other := newTestPKI(t)
	c, err := New(Config{Endpoints: []string{f.gateway.URL}, TLS: &tls.Config{RootCAs: f.pki.pool,
		Certificates: []tls.Certificate{other.client}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Members(context.Background()); err == nil {
		t.Fatal("a foreign client certificate was accepted")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	p := newTestPKI(t)
	for _, cfg := range []Config{
		{TLS: p.clientTLS()},
		{Endpoints: []string{"https://127.0.0.1:2379"}},
		{Endpoints: []string{"http://127.0.0.1:2379"}, TLS: p.clientTLS()},
		{Endpoints: []string{"https://127.0.0.1:2379/v3"}, TLS: p.clientTLS()},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestNewKubeadmReadsKubeadmsFiles(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	if _, err := NewKubeadm(dir); err == nil || !strings.Contains(err.Error(), "etcd CA") {
		t.Fatalf("err = %v", err)
	}
	for name, b := range map[string][]byte{"pki/etcd/ca.crt": p.caPEM,
		"pki/apiserver-etcd-client.crt": p.clientCertPEM, "pki/apiserver-etcd-client.key": p.clientKeyPEM} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewKubeadm(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.endpoints[0] != LocalEndpoint || c.timeout != DefaultTimeout || c.healthTimeout != DefaultHealthTimeout {
		t.Errorf("client %+v", c)
	}
}

func TestHealthy(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy}, fakeMember{id: 2, name: "b", health: noLeader},
		fakeMember{id: 3, name: "c", health: dead}, fakeMember{id: 4, name: "d", health: hangs})
	c := f.client(t)
	for i, want := range []bool{true, false, false, false} {
		start := time.Now()
		if got := c.Healthy(context.Background(), f.members[i]); got != want {
			t.Errorf("Healthy(%s) = %v", f.members[i].Name, got)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Healthy(%s) took %s", f.members[i].Name, d)
		}
	}
}

// The quorum arithmetic. The first member answers the list (the local
// member); the target is "x" unless the case says otherwise.
func TestRemoveIfSafeQuorum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []fakeMember
		want    Decision
		// voters and healthy are Result.Voters and Result.Healthy.
		voters, healthy int
		reason          string
	}{
		{
			// 2 healthy of quorum(3)=2 commit the change; 2 voters remain
			// with quorum 2, both healthy.
			name:    "3 voters, the target dead",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}, {id: 3, name: "x"}},
			want:    Removed, voters: 3, healthy: 2, reason: "2 of the other 2 voting members are healthy (quorum 2), 2 voting members remain (quorum 2)",
		},
		{
			// 1 healthy < quorum(3)=2: the cluster has lost quorum, no
			// change can commit.
			name:    "3 voters, the target and another dead",
			members: []fakeMember{{id: 1, name: "a", health: noLeader}, {id: 2, name: "b"}, {id: 3, name: "x"}},
			want:    Refused, voters: 3, healthy: 0, reason: "only 0 of the other voting members are healthy",
		},
		{
			// Even if the other answered healthy: 1 healthy < quorum(2)=2.
			// Removing would leave 1 voter of quorum 1 (safe afterwards),
			// but a 2-member cluster with one dead has no quorum, so the
			// change cannot commit: recovery is an operator's work.
			name:    "2 voters, the target dead",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 3, name: "x"}},
			want:    Refused, voters: 2, healthy: 1, reason: "the quorum of the 2 voting members (2) must commit (1 voting members would remain, quorum 1)",
		},
		{
			name:    "2 voters, the target dead, the other without a leader (as real etcd answers)",
			members: []fakeMember{{id: 1, name: "a", health: noLeader}, {id: 3, name: "x"}},
			want:    Refused, voters: 2, healthy: 0, reason: "not healthy: a: https://",
		},
		{
			// The local member is a learner here only to make the target
			// the one voter.
			name:    "the target is the last voter",
			members: []fakeMember{{id: 1, name: "a", health: healthy, learner: true}, {id: 3, name: "x"}},
			want:    Refused, voters: 1, reason: "it is the last voting member",
		},
		{
			// Learners do not vote: 3 of quorum(3)=2 healthy, 3 remain.
			name:    "a dead learner, 3 healthy voters",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}, {id: 4, name: "c", health: healthy}, {id: 3, name: "x", learner: true}},
			want:    Removed, voters: 3, healthy: 3, reason: "3 of the other 3 voting members are healthy (quorum 2), 3 voting members remain (quorum 2)",
		},
		{
			name:    "a dead learner, voters without quorum",
			members: []fakeMember{{id: 1, name: "a", health: noLeader}, {id: 2, name: "b"}, {id: 4, name: "c"}, {id: 3, name: "x", learner: true}},
			want:    Refused, voters: 3, healthy: 0,
		},
		{
			// 3 healthy of quorum(5)=3.
			name: "5 voters, 2 dead",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}, {id: 4, name: "c", health: healthy},
				{id: 5, name: "d"}, {id: 3, name: "x"}},
			want: Removed, voters: 5, healthy: 3,
		},
		{
			// 2 healthy < quorum(4)=3.
			name: "4 voters, 2 dead",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy},
				{id: 5, name: "d"}, {id: 3, name: "x"}},
			want: Refused, voters: 4, healthy: 2,
		},
		{
			// An alive but unhealthy voter does not count.
			name:    "3 voters, the target dead, another unhealthy",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: noLeader}, {id: 3, name: "x"}},
			want:    Refused, voters: 3, healthy: 1, reason: `b: https://`,
		},
		{
			// A voter that does not answer in time does not count either.
			name:    "3 voters, the target dead, another hanging",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: hangs}, {id: 3, name: "x"}},
			want:    Refused, voters: 3, healthy: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEtcd(t, tc.members...)
			r, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x"})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", r.Decision, r.Reason)
			if r.Decision != tc.want || r.Voters != tc.voters || r.Healthy != tc.healthy || !strings.Contains(r.Reason, tc.reason) {
				t.Errorf("got %s voters=%d healthy=%d %q, want %s voters=%d healthy=%d reason containing %q",
					r.Decision, r.Voters, r.Healthy, r.Reason, tc.want, tc.voters, tc.healthy, tc.reason)
			}
			if r.Member.ID != 3 || r.MatchedBy != "name" {
				t.Errorf("member %v matched by %q", r.Member, r.MatchedBy)
			}
			calls := f.removeCalls()
			switch {
			case tc.want == Removed && (len(calls) != 1 || calls[0] != `{"ID":"3"}`):
				t.Errorf("remove calls %q", calls)
			case tc.want != Removed && len(calls) != 0:
				t.Errorf("remove called when refused: %q", calls)
			}
		})
	}
}

func TestRemoveIfSafeNeverRemovesALiveMember(t *testing.T) {
	for _, h := range []struct {
		name   string
		health health
		reason string
	}{
		{"healthy", healthy, "/health answered healthy"},
		{"without a leader", noLeader, "/health answered HTTP 503"},
		{"hanging", hangs, "completed a TLS handshake but /health failed"},
		{"answering on its peer URL only", peerAlive, "its peer URL"},
	} {
		t.Run(h.name, func(t *testing.T) {
			f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy}, fakeMember{id: 2, name: "b", health: healthy},
				fakeMember{id: 3, name: "x", health: h.health})
			start := time.Now()
			r, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Decision != Refused || !strings.Contains(r.Reason, "it is alive") || !strings.Contains(r.Reason, h.reason) {
				t.Errorf("got %s %q", r.Decision, r.Reason)
			}
			if len(f.removeCalls()) != 0 {
				t.Error("remove called")
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestRemoveIfSafeRefusesTheLocalMember(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: dead}, fakeMember{id: 2, name: "b", health: healthy},
		fakeMember{id: 3, name: "c", health: healthy})
	r, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Decision != Refused || !strings.Contains(r.Reason, "local member") || r.Member.ID != 1 {
		t.Errorf("got %+v", r)
	}
	if len(f.removeCalls()) != 0 {
		t.Error("remove called")
	}
}

func TestRemoveIfSafeNotFound(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy, peerHost: "10.0.1.10"}, fakeMember{id: 2, name: "b", health: healthy})
	r, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x", PeerHost: "10.0.1.99"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Decision != NotFound || !strings.Contains(r.Reason, "already removed") || r.Member.ID != 0 {
		t.Errorf("got %+v", r)
	}
	if len(f.removeCalls()) != 0 {
		t.Error("remove called")
	}
	if _, err := f.client(t).RemoveIfSafe(context.Background(), Target{}); err == nil {
		t.Error("an empty target was accepted")
	}
}

func TestRemoveIfSafeMatching(t *testing.T) {
	// The target (id) is dead, the others healthy; the unstarted member
	// (4) cannot answer: it counts as an unhealthy voter.
	members := func(id uint64) []fakeMember {
		ms := []fakeMember{{id: 1, name: "a"}, {id: 2, name: "b"},
			{id: 3, name: "x", peerHost: "127.0.0.12"}, {id: 4, peerHost: "127.0.0.13", unstarted: true},
			{id: 5, name: "y", peerHost: "::1"}}
		for i := range ms {
			if ms[i].id != id {
				ms[i].health = healthy
			}
		}
		return ms
	}
	for _, tc := range []struct {
		target  Target
		want    Decision
		id      uint64
		matched string
	}{
		{Target{Name: "x"}, Removed, 3, "name"},
		{Target{PeerHost: "127.0.0.12"}, Removed, 3, "peer host"},
		{Target{Name: "x", PeerHost: "127.0.0.12"}, Removed, 3, "name and peer host"},
		// A member added by a join that never started has no name.
		{Target{Name: "ip-127-0-0-13", PeerHost: "127.0.0.13"}, Removed, 4, "peer host"},
		{Target{PeerHost: "0:0::1"}, Removed, 5, "peer host"},
		// The name names one member, the IP another: not choosing.
		{Target{Name: "x", PeerHost: "127.0.0.13"}, Refused, 0, ""},
	} {
		t.Run(tc.target.String(), func(t *testing.T) {
			f := newFakeEtcd(t, members(tc.id)...)
			r, err := f.client(t).RemoveIfSafe(context.Background(), tc.target)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", r.Decision, r.Reason)
			if r.Decision != tc.want || r.Member.ID != tc.id || r.MatchedBy != tc.matched {
				t.Errorf("got %s %v by %q (%s)", r.Decision, r.Member, r.MatchedBy, r.Reason)
			}
			if tc.want == Refused && !strings.Contains(r.Reason, "several etcd members match") {
				t.Errorf("reason %q", r.Reason)
			}
		})
	}
}

func TestRemoveIfSafeRemoveAnswers(t *testing.T) {
	members := []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}, {id: 3, name: "x"}}
	t.Run("member not found: removed meanwhile", func(t *testing.T) {
		f := newFakeEtcd(t, members...)
		f.removeErr = func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"code":5,"message":"etcdserver: member not found","details":[]}`)
		}
		r, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x"})
		if err != nil || r.Decision != NotFound || !strings.Contains(r.Reason, "removed meanwhile") {
			t.Errorf("got %+v, %v", r, err)
		}
	})
	t.Run("etcd refuses", func(t *testing.T) {
		f := newFakeEtcd(t, members...)
		f.removeErr = func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"code":14,"message":"etcdserver: unhealthy cluster","details":[]}`)
		}
		_, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x"})
		if err == nil || !strings.Contains(err.Error(), "remove etcd member x (ID 3") ||
			!strings.Contains(err.Error(), "HTTP 503: etcdserver: unhealthy cluster (gRPC code 14)") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("the list fails", func(t *testing.T) {
		f := newFakeEtcd(t, members...)
		f.listErr = func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) }
		_, err := f.client(t).RemoveIfSafe(context.Background(), Target{Name: "x"})
		if err == nil || !strings.Contains(err.Error(), "list the members at the local endpoint") || !strings.Contains(err.Error(), "HTTP 500: boom") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestDeadlines(t *testing.T) {
	p := newTestPKI(t)
	release := make(chan struct{})
	srv := p.startTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // before the server's Close
	t.Run("the client's timeout", func(t *testing.T) {
		c, err := New(Config{Endpoints: []string{srv.URL}, TLS: p.clientTLS(), Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, err = c.Members(context.Background())
		if err == nil || time.Since(start) > 3*time.Second {
			t.Errorf("err = %v after %s", err, time.Since(start))
		}
		start = time.Now()
		if _, err = c.RemoveIfSafe(context.Background(), Target{Name: "x"}); err == nil || time.Since(start) > 3*time.Second {
			t.Errorf("err = %v after %s", err, time.Since(start))
		}
	})
	t.Run("the caller's deadline", func(t *testing.T) {
		c, err := New(Config{Endpoints: []string{srv.URL}, TLS: p.clientTLS(), Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = c.Members(ctx)
		if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 3*time.Second {
			t.Errorf("err = %v after %s", err, time.Since(start))
		}
	})
}
