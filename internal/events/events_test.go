package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	testingclock "k8s.io/utils/clock/testing"
)

// fakeAPI is the part of an API server the recorder talks to.
type fakeAPI struct {
	t  *testing.T
	mu sync.Mutex
	// nodes maps a node name to its UID; a name not in it answers 404.
	nodes map[string]string
	// created and patches are what the recorder sent.
	created []corev1.Event
	patches []patchReq
	// fail, when set, answers every request with this status.
	fail     int
	nodeGets int
	// gone is a set of event names that answer 404 to PATCH.
	gone map[string]bool
	// auth is the bearer token the server wants ("" = any).
	auth string
}

type patchReq struct {
	name, contentType string
	body              map[string]any
}

func newFakeAPI(t *testing.T) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{t: t, nodes: map[string]string{"node-1": "uid-node-1"}, gone: map[string]bool{}}
	// TLS: clientcmd sends a kubeconfig's credentials over TLS only.
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auth != "" && r.Header.Get("Authorization") != "Bearer "+f.auth {
		status(w, 401, "Unauthorized", "Unauthorized")
		return
	}
	if f.fail != 0 {
		status(w, f.fail, "Forbidden", `events is forbidden: User "system:node:node-1" cannot create resource "events"`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/nodes/"):
		f.nodeGets++
		name := strings.TrimPrefix(r.URL.Path, "/api/v1/nodes/")
		uid, ok := f.nodes[name]
		if !ok {
			status(w, 404, "NotFound", fmt.Sprintf("nodes %q not found", name))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"Node","apiVersion":"v1","metadata":{"name":%q,"uid":%q}}`, name, uid)
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/namespaces/default/events":
		var ev corev1.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			f.t.Errorf("create event: bad body: %v", err)
		}
		f.created = append(f.created, ev)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/default/events/"):
		name := strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/default/events/")
		if f.gone[name] {
			status(w, 404, "NotFound", fmt.Sprintf("events %q not found", name))
			return
		}
		var p map[string]any
		if err := json.Unmarshal(body, &p); err != nil {
			f.t.Errorf("patch event: bad body: %v", err)
		}
		f.patches = append(f.patches, patchReq{name: name, contentType: r.Header.Get("Content-Type"), body: p})
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"Event","apiVersion":"v1","metadata":{"name":%q,"namespace":"default"}}`, name)
	default:
		status(w, 404, "NotFound", "no such path "+r.Method+" "+r.URL.Path)
	}
}

var t0 = time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)

func newRecorder(t *testing.T, srv *httptest.Server) (*Recorder, *testingclock.FakeClock) {
	t.Helper()
	clk := testingclock.NewFakeClock(t0)
	r, err := NewRecorderForConfig(&rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}},
		Options{Clock: clk, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

func TestNodeCreatesAnEventAboutTheNode(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, _ := newRecorder(t, srv)
	if err := r.Node(context.Background(), "node-1", Normal, "Joined", "joined the cluster (generation 7)"); err != nil {
		t.Fatal(err)
	}
	if len(api.created) != 1 {
		t.Fatalf("created %d events, want 1", len(api.created))
	}
	ev := api.created[0]
	want := corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: "node-1", UID: "uid-node-1"}
	if ev.InvolvedObject != want {
		t.Errorf("involvedObject %+v, want %+v", ev.InvolvedObject, want)
	}
	if ev.Namespace != "default" || !strings.HasPrefix(ev.Name, "node-1.") {
		t.Errorf("event %s/%s, want default/node-1.<hex>", ev.Namespace, ev.Name)
	}
	if ev.Type != "Normal" || ev.Reason != "Joined" || ev.Message != "joined the cluster (generation 7)" {
		t.Errorf("type/reason/message %q %q %q", ev.Type, ev.Reason, ev.Message)
	}
	if ev.Source.Component != "kubestrap" || ev.Source.Host != "node-1" {
		t.Errorf("source %+v", ev.Source)
	}
	if ev.ReportingController != "kubestrap.dev/agent" || ev.ReportingInstance != "node-1" {
		t.Errorf("reporting %q %q", ev.ReportingController, ev.ReportingInstance)
	}
	if ev.Count != 1 || !ev.FirstTimestamp.Time.Equal(t0) || !ev.LastTimestamp.Time.Equal(t0) {
		t.Errorf("count %d first %v last %v, want 1 and %v", ev.Count, ev.FirstTimestamp, ev.LastTimestamp, t0)
	}
	if !ev.EventTime.IsZero() {
		t.Errorf("eventTime %v set: the core/v1 legacy validation needs it unset with count and timestamps", ev.EventTime)
	}
}

func TestNodeUIDIsFetchedOnceAndTheNameStandsInForAMissingNode(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, clk := newRecorder(t, srv)
	ctx := context.Background()
	if err := r.Node(ctx, "node-2", Normal, "Joining", "a"); err != nil {
		t.Fatal(err)
	}
	if got := api.created[0].InvolvedObject.UID; got != "node-2" {
		t.Errorf("uid of a Node that does not exist yet %q, want the name (kubelet convention)", got)
	}
	api.nodes["node-2"] = "uid-2"
	clk.Step(time.Second)
	if err := r.Node(ctx, "node-2", Normal, "Joined", "b"); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Second)
	if err := r.Node(ctx, "node-2", Normal, "Joined", "c"); err != nil {
		t.Fatal(err)
	}
	if got := api.created[1].InvolvedObject.UID; got != "uid-2" {
		t.Errorf("uid once the Node exists %q, want uid-2", got)
	}
	if api.nodeGets != 2 {
		t.Errorf("GET node %d times, want 2 (the miss, then once)", api.nodeGets)
	}
}

func TestSameEventWithinTheWindowIncrementsTheCount(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, clk := newRecorder(t, srv)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if err := r.Node(ctx, "node-1", Warning, "JoinInfoRefused", "token expired"); err != nil {
			t.Fatal(err)
		}
		clk.Step(4 * time.Minute)
	}
	if len(api.created) != 1 {
		t.Fatalf("created %d events, want 1", len(api.created))
	}
	if len(api.patches) != 2 {
		t.Fatalf("%d patches, want 2", len(api.patches))
	}
	for i, p := range api.patches {
		if p.name != api.created[0].Name {
			t.Errorf("patch %d of %s, want %s", i, p.name, api.created[0].Name)
		}
		if p.contentType != "application/merge-patch+json" {
			t.Errorf("patch content type %q", p.contentType)
		}
		if c := p.body["count"]; c != float64(i+2) {
			t.Errorf("patch %d count %v, want %d", i, c, i+2)
		}
		wantLast := t0.Add(time.Duration(i+1) * 4 * time.Minute).Format(time.RFC3339)
		if l := p.body["lastTimestamp"]; l != wantLast {
			t.Errorf("patch %d lastTimestamp %v, want %s", i, l, wantLast)
		}
	}
	// A different message is a different event.
	if err := r.Node(ctx, "node-1", Warning, "JoinInfoRefused", "cluster name differs"); err != nil {
		t.Fatal(err)
	}
	if len(api.created) != 2 {
		t.Errorf("created %d events after a new message, want 2", len(api.created))
	}
}

func TestSameEventAfterTheWindowIsANewEvent(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, clk := newRecorder(t, srv)
	ctx := context.Background()
	if err := r.Node(ctx, "node-1", Normal, "CertificatesRenewed", "renewed"); err != nil {
		t.Fatal(err)
	}
	clk.Step(10 * time.Minute)
	if err := r.Node(ctx, "node-1", Normal, "CertificatesRenewed", "renewed"); err != nil {
		t.Fatal(err)
	}
	if len(api.created) != 2 || len(api.patches) != 0 {
		t.Fatalf("created %d, patched %d; want 2 created, 0 patched", len(api.created), len(api.patches))
	}
	if api.created[0].Name == api.created[1].Name {
		t.Errorf("both events named %s", api.created[0].Name)
	}
	if !api.created[1].FirstTimestamp.Time.Equal(t0.Add(10 * time.Minute)) {
		t.Errorf("second event first seen %v", api.created[1].FirstTimestamp)
	}
}

func TestADeletedEventIsCreatedAgain(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, clk := newRecorder(t, srv)
	ctx := context.Background()
	if err := r.Node(ctx, "node-1", Normal, "Joined", "x"); err != nil {
		t.Fatal(err)
	}
	api.gone[api.created[0].Name] = true
	clk.Step(time.Minute)
	if err := r.Node(ctx, "node-1", Normal, "Joined", "x"); err != nil {
		t.Fatal(err)
	}
	if len(api.created) != 2 || api.created[1].Count != 1 {
		t.Fatalf("created %d events, want a fresh second one with count 1", len(api.created))
	}
}

func TestAPIErrorsAreReturnedWrapped(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, _ := newRecorder(t, srv)
	api.nodes["node-1"] = "uid"
	// The UID comes first; make it known, then let the create fail.
	if _, err := r.nodeUID(context.Background(), "node-1"); err != nil {
		t.Fatal(err)
	}
	api.fail = http.StatusForbidden
	err := r.Node(context.Background(), "node-1", Normal, "Joined", "x")
	if !apierrors.IsForbidden(err) {
		t.Fatalf("err %v, want a Forbidden API error", err)
	}
	if !strings.Contains(err.Error(), "record event Joined on node node-1") {
		t.Errorf("err %q does not say what failed", err)
	}
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		t.Errorf("err %v does not unwrap to an API status", err)
	}
	// A failed GET of the Node is wrapped too.
	r2, _ := newRecorder(t, srv)
	err = r2.Node(context.Background(), "node-1", Normal, "Joined", "x")
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "get node node-1") {
		t.Errorf("err %v, want a wrapped Forbidden from get node", err)
	}
}

func TestEveryRequestHasADeadline(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	r, err := NewRecorderForConfig(&rest.Config{Host: srv.URL}, Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = r.Node(context.Background(), "node-1", Normal, "Joined", "x")
	if err == nil {
		t.Fatal("no error from a server that never answers")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s with a 200ms timeout", d)
	}
}

func TestInvalidArgumentsAreRefusedWithoutARequest(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, _ := newRecorder(t, srv)
	for _, c := range []struct{ node, typ, reason string }{
		{"", Normal, "Joined"}, {"node-1", "Info", "Joined"}, {"node-1", Normal, ""},
		{"node-1", Normal, strings.Repeat("R", 129)},
	} {
		if err := r.Node(context.Background(), c.node, c.typ, c.reason, "m"); err == nil {
			t.Errorf("Node(%q, %q, %q): no error", c.node, c.typ, c.reason)
		}
	}
	if len(api.created) != 0 || api.nodeGets != 0 {
		t.Errorf("requests were sent for invalid arguments")
	}
}

func TestSanitizeReplacesBootstrapTokens(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"join with abcdef.0123456789abcdef failed", "join with <redacted token> failed"},
		{"token=abcdef.0123456789abcdef,next", "token=<redacted token>,next"},
		{"glued xabcdef.0123456789abcdefx", "glued x<redacted token>x"},
		{"two 111111.aaaaaaaaaaaaaaaa 222222.bbbbbbbbbbbbbbbb", "two <redacted token> <redacted token>"},
		{"token ID abcdef only", "token ID abcdef only"},
		{"endpoint 10.0.1.10:6443, generation 7", "endpoint 10.0.1.10:6443, generation 7"},
		{"short abcdef.0123456789abcde", "short abcdef.0123456789abcde"},
	} {
		if got := Sanitize(c.in); got != c.want {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestMessagesAndReasonsAreSanitizedBeforeTheyLeave(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, _ := newRecorder(t, srv)
	secret := "abcdef.0123456789abcdef"
	if err := r.Node(context.Background(), "node-1", Warning, "Refused"+secret, "token "+secret+" was refused"); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(api.created[0])
	if strings.Contains(string(b), "0123456789abcdef") {
		t.Fatalf("the event carries the token secret: %s", b)
	}
	if api.created[0].Message != "token <redacted token> was refused" {
		t.Errorf("message %q", api.created[0].Message)
	}
}

func TestLongMessagesAreCut(t *testing.T) {
	api, srv := newFakeAPI(t)
	r, _ := newRecorder(t, srv)
	msg := strings.Repeat("é", 1000) // 2000 bytes
	if err := r.Node(context.Background(), "node-1", Normal, "Joined", msg); err != nil {
		t.Fatal(err)
	}
	got := api.created[0].Message
	if len(got) > MaxMessage || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "éé") {
		t.Errorf("message of %d bytes, want at most %d ending in ...", len(got), MaxMessage)
	}
	if strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("message was cut inside a UTF-8 sequence")
	}
}

// writeKubeconfig writes a kubeconfig with a bearer token for server.
func writeKubeconfig(t *testing.T, path, server, token string) {
	t.Helper()
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, server, token)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestAChangedKubeconfigIsReadAgain(t *testing.T) {
	api, srv := newFakeAPI(t)
	api.auth = "old-credential"
	path := filepath.Join(t.TempDir(), "admin.conf")
	writeKubeconfig(t, path, srv.URL, "old-credential")
	clk := testingclock.NewFakeClock(t0)
	r := NewRecorder(path, Options{Clock: clk, Timeout: 5 * time.Second})
	ctx := context.Background()
	if err := r.Node(ctx, "node-1", Normal, "Joined", "a"); err != nil {
		t.Fatal(err)
	}
	// kubeadm certs renew all rewrote the kubeconfig; the old credential
	// is no longer accepted.
	api.auth = "new-credential"
	writeKubeconfig(t, path, srv.URL, "new-credential-")
	writeKubeconfig(t, path, srv.URL, "new-credential") // another size/mtime than the first write
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Second)
	if err := r.Node(ctx, "node-1", Normal, "CertificatesRenewed", "b"); err != nil {
		t.Fatalf("after the kubeconfig changed: %v", err)
	}
	if len(api.created) != 2 {
		t.Errorf("created %d events, want 2", len(api.created))
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := r.Node(ctx, "node-1", Normal, "Joined", "c"); err == nil {
		t.Error("no error with the kubeconfig gone")
	}
}
