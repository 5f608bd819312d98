package leave

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

const testNode = "ip-10-0-2-7"

// eviction is one eviction request the fake API server received.
type eviction struct {
	pod    string
	grace  *int64
	uid    string
	at     time.Time
	status int
}

// fakeAPI is the part of an API server the Leaver uses, with the Node
// authorizer's rule for pod lists: a list without the field selector
// spec.nodeName=<node> is forbidden.
type fakeAPI struct {
	mu   sync.Mutex
	node string
	pods map[string]*corev1.Pod // namespace/name
	// refuse answers a pod's evictions with 429 that many times; -1: always.
	refuse map[string]int
	// stuck pods stay (terminating) after their eviction is accepted.
	stuck map[string]bool
	// hangUp pods: once their refusals are used up, the connection of each
	// eviction request is dropped (no HTTP answer).
	hangUp map[string]bool
	// evictDelay is how long each eviction request takes.
	evictDelay time.Duration

	requests   []string // "METHOD path?query"
	patches    []string // "content-type body"
	lists      []string // the fieldSelector of each pod list
	evictions  []eviction
	inFlight   int
	maxInFight int
}

func newFakeAPI(t *testing.T, pods ...*corev1.Pod) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{node: testNode, pods: map[string]*corev1.Pod{}, refuse: map[string]int{}, stuck: map[string]bool{}, hangUp: map[string]bool{}}
	for _, p := range pods {
		f.pods[p.Namespace+"/"+p.Name] = p
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func status(code int, reason metav1.StatusReason, msg string) *metav1.Status {
	s := "Failure"
	if code < 300 {
		s = "Success"
	}
	return &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: s, Code: int32(code), Reason: reason, Message: msg}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	f.mu.Unlock()
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.URL.Path == "/api/v1/nodes/"+f.node && (r.Method == http.MethodGet || r.Method == http.MethodPatch):
		f.mu.Lock()
		if r.Method == http.MethodPatch {
			f.patches = append(f.patches, r.Header.Get("Content-Type")+" "+string(body))
		}
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: f.node, UID: "node-uid"}, Spec: corev1.NodeSpec{Unschedulable: r.Method == http.MethodPatch}})
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/pods":
		sel := r.URL.Query().Get("fieldSelector")
		f.mu.Lock()
		f.lists = append(f.lists, sel)
		list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		for _, p := range f.pods {
			list.Items = append(list.Items, *p.DeepCopy())
		}
		f.mu.Unlock()
		if sel != "spec.nodeName="+f.node {
			writeJSON(w, http.StatusForbidden, status(http.StatusForbidden, metav1.StatusReasonForbidden, "can only list/watch pods with spec.nodeName field selector"))
			return
		}
		writeJSON(w, http.StatusOK, list)
	case r.Method == http.MethodPost && len(parts) == 7 && parts[2] == "namespaces" && parts[4] == "pods" && parts[6] == "eviction":
		f.evict(w, parts[3]+"/"+parts[5], body)
	default:
		writeJSON(w, http.StatusNotFound, status(http.StatusNotFound, metav1.StatusReasonNotFound, "not served by the fake"))
	}
}

func (f *fakeAPI) evict(w http.ResponseWriter, key string, body []byte) {
	var ev policyv1.Eviction
	_ = json.Unmarshal(body, &ev)
	rec := eviction{pod: key, at: time.Now()}
	if ev.DeleteOptions != nil {
		rec.grace = ev.DeleteOptions.GracePeriodSeconds
		if ev.DeleteOptions.Preconditions != nil && ev.DeleteOptions.Preconditions.UID != nil {
			rec.uid = string(*ev.DeleteOptions.Preconditions.UID)
		}
	}
	f.mu.Lock()
	f.inFlight++
	f.maxInFight = max(f.maxInFight, f.inFlight)
	f.mu.Unlock()
	time.Sleep(f.evictDelay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inFlight--
	p, ok := f.pods[key]
	switch {
	case !ok:
		rec.status = http.StatusNotFound
		writeJSON(w, rec.status, status(rec.status, metav1.StatusReasonNotFound, "pods not found"))
	case f.refuse[key] == 0 && f.hangUp[key]:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		rec.status = http.StatusInternalServerError
		w.WriteHeader(rec.status)
	case f.refuse[key] != 0:
		if f.refuse[key] > 0 {
			f.refuse[key]--
		}
		rec.status = http.StatusTooManyRequests
		// As the API server's PDB refusal: client-go would wait and retry
		// inside the request on its own (pkg/registry/core/pod/storage/eviction.go:419).
		w.Header().Set("Retry-After", "10")
		writeJSON(w, rec.status, status(rec.status, metav1.StatusReasonTooManyRequests, "Cannot evict pod as it would violate the pod's disruption budget."))
	default:
		if f.stuck[key] {
			now := metav1.Now()
			p.DeletionTimestamp = &now
		} else {
			delete(f.pods, key)
		}
		rec.status = http.StatusCreated
		writeJSON(w, rec.status, status(rec.status, "", ""))
	}
	f.evictions = append(f.evictions, rec)
}

func (f *fakeAPI) snapshot() (requests, patches, lists []string, evictions []eviction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests), slices.Clone(f.patches), slices.Clone(f.lists), slices.Clone(f.evictions)
}

func (f *fakeAPI) evictionsOf(key string) []eviction {
	_, _, _, evs := f.snapshot()
	var out []eviction
	for _, e := range evs {
		if e.pod == key {
			out = append(out, e)
		}
	}
	return out
}

// pod is a running pod bound to the test node, owned by a ReplicaSet.
func pod(name string, mods ...func(*corev1.Pod)) *corev1.Pod {
	isController := true
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps", UID: types.UID("uid-" + name),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8", UID: "rs", Controller: &isController}}},
		Spec:   corev1.PodSpec{NodeName: testNode},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	for _, m := range mods {
		m(p)
	}
	return p
}

func daemonSetPod(p *corev1.Pod) {
	p.OwnerReferences[0].Kind, p.OwnerReferences[0].Name = "DaemonSet", "kube-proxy"
}
func mirrorPod(p *corev1.Pod) {
	p.OwnerReferences[0].APIVersion, p.OwnerReferences[0].Kind = "v1", "Node"
	p.Annotations = map[string]string{MirrorPodAnnotation: "hash"}
}
func terminatingPod(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
func finishedPod(p *corev1.Pod)    { p.Status.Phase = corev1.PodSucceeded }
func grace(s int64) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &s }
}

// fakeEvents records the Events.
type fakeEvents struct {
	mu     sync.Mutex
	events []string // "node type reason"
}

func (e *fakeEvents) Node(_ context.Context, node, typ, reason, _ string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, node+" "+typ+" "+reason)
	return nil
}

// fakeLifecycle records heartbeats and completions in order, with times.
type fakeLifecycle struct {
	mu    sync.Mutex
	calls []string
	times []time.Time
}

func (l *fakeLifecycle) record(call string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, call)
	l.times = append(l.times, time.Now())
}

func (l *fakeLifecycle) Heartbeat(context.Context) error { l.record("heartbeat"); return nil }
func (l *fakeLifecycle) Complete(_ context.Context, result string) error {
	l.record("complete " + result)
	return nil
}

// fast are options scaled down for tests.
func fast(o Options) Options {
	o.RetryInterval, o.PollInterval, o.RequestTimeout = 50*time.Millisecond, 20*time.Millisecond, 5*time.Second
	if o.GraceMargin == 0 {
		o.GraceMargin = 500 * time.Millisecond
	}
	return o
}

func leave(t *testing.T, srv *httptest.Server, n Notice, opts Options) *Result {
	t.Helper()
	l, err := New(&rest.Config{Host: srv.URL}, testNode, fast(opts))
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Leave(context.Background(), n)
	if err != nil {
		t.Fatalf("Leave: %v", err)
	}
	return res
}

func spotIn(d time.Duration) Notice {
	now := time.Now()
	return Notice{Kind: Spot, NoticeTime: now, Deadline: now.Add(d), Action: "terminate"}
}

func TestCordonPatchesOnlyUnschedulable(t *testing.T) {
	f, srv := newFakeAPI(t)
	res := leave(t, srv, spotIn(10*time.Second), Options{})
	_, patches, _, _ := f.snapshot()
	if !slices.Equal(patches, []string{`application/merge-patch+json {"spec":{"unschedulable":true}}`}) || !res.Cordoned {
		t.Errorf("patches %q, cordoned %v; want one merge patch of spec.unschedulable", patches, res.Cordoned)
	}
}

func TestPodsAreListedWithTheNodeNameSelector(t *testing.T) {
	f, srv := newFakeAPI(t, pod("web-1"))
	leave(t, srv, spotIn(10*time.Second), Options{})
	_, _, lists, _ := f.snapshot()
	if len(lists) == 0 {
		t.Fatal("no pod list")
	}
	for _, sel := range lists {
		if sel != "spec.nodeName="+testNode {
			t.Errorf("pod list with fieldSelector %q, want spec.nodeName=%s", sel, testNode)
		}
	}
}

func TestDaemonSetMirrorAndFinishedPodsAreNeverEvicted(t *testing.T) {
	f, srv := newFakeAPI(t, pod("web-1"), pod("kube-proxy-x", daemonSetPod), pod("etcd-cp", mirrorPod),
		pod("going", terminatingPod), pod("job-done", finishedPod))
	res := leave(t, srv, spotIn(10*time.Second), Options{})
	requests, _, _, evs := f.snapshot()
	var evicted []string
	for _, e := range evs {
		evicted = append(evicted, e.pod)
	}
	if !slices.Equal(evicted, []string{"apps/web-1"}) {
		t.Errorf("evictions of %v, want only apps/web-1", evicted)
	}
	for _, r := range requests {
		if strings.Contains(r, "/apis/apps/") || strings.Contains(r, "daemonsets") {
			t.Errorf("request %s: a node may not read DaemonSets", r)
		}
	}
	want := []string{"apps/etcd-cp: mirror pod (a static pod the kubelet runs)", "apps/going: already terminating",
		"apps/job-done: finished (Succeeded)", "apps/kube-proxy-x: DaemonSet pod"}
	if !slices.Equal(res.Skipped, want) {
		t.Errorf("skipped %q, want %q", res.Skipped, want)
	}
}

func TestNoPodIsDeleted(t *testing.T) {
	f, srv := newFakeAPI(t, pod("web-1"), pod("web-2"))
	leave(t, srv, spotIn(10*time.Second), Options{})
	requests, _, _, _ := f.snapshot()
	for _, r := range requests {
		if strings.HasPrefix(r, http.MethodDelete) {
			t.Errorf("request %s: pods leave through the Eviction API only", r)
		}
	}
}

func TestGraceIsCappedByTheDeadline(t *testing.T) {
	f, srv := newFakeAPI(t, pod("slow", grace(300)), pod("quick", grace(3)))
	start := time.Now()
	n := spotIn(10 * time.Second)
	leave(t, srv, n, Options{GraceMargin: 2 * time.Second})
	slow, quick := f.evictionsOf("apps/slow"), f.evictionsOf("apps/quick")
	if len(slow) != 1 || len(quick) != 1 {
		t.Fatalf("evictions: slow %d, quick %d; want one each", len(slow), len(quick))
	}
	// 10 s to the deadline minus the 2 s margin, less the time the test took.
	limit := int64((n.Deadline.Sub(start) - 2*time.Second) / time.Second)
	if g := slow[0].grace; g == nil || *g > limit || *g < limit-1 {
		t.Errorf("300 s pod evicted with gracePeriodSeconds %v, want %d (capped)", g, limit)
	}
	if g := quick[0].grace; g == nil || *g != 3 {
		t.Errorf("3 s pod evicted with gracePeriodSeconds %v, want its own 3", g)
	}
	if slow[0].uid != "uid-slow" {
		t.Errorf("eviction precondition UID %q, want uid-slow", slow[0].uid)
	}
}

func TestEvictionRetriesTooManyRequests(t *testing.T) {
	f, srv := newFakeAPI(t, pod("pdb-protected"))
	f.refuse["apps/pdb-protected"] = 3
	res := leave(t, srv, spotIn(10*time.Second), Options{})
	evs := f.evictionsOf("apps/pdb-protected")
	var codes []int
	for i, e := range evs {
		codes = append(codes, e.status)
		if i > 0 && e.at.Sub(evs[i-1].at) < 50*time.Millisecond {
			t.Errorf("retry %d came %s after the one before, sooner than the retry interval", i, e.at.Sub(evs[i-1].at))
		}
	}
	if !slices.Equal(codes, []int{429, 429, 429, 201}) {
		t.Errorf("eviction answers %v, want three 429 then 201", codes)
	}
	if !slices.Equal(res.Evicted, []string{"apps/pdb-protected"}) || len(res.Left) != 0 {
		t.Errorf("evicted %v, left %v", res.Evicted, res.Left)
	}
}

func TestEvictionsRunConcurrentlyBounded(t *testing.T) {
	var pods []*corev1.Pod
	for i := range 6 {
		pods = append(pods, pod(fmt.Sprintf("web-%d", i)))
	}
	f, srv := newFakeAPI(t, pods...)
	f.evictDelay = 100 * time.Millisecond
	res := leave(t, srv, spotIn(10*time.Second), Options{Concurrency: 2})
	f.mu.Lock()
	peak := f.maxInFight
	f.mu.Unlock()
	if peak != 2 || len(res.Evicted) != 6 {
		t.Errorf("evictions in flight at most %d (want 2), evicted %d (want 6)", peak, len(res.Evicted))
	}
}

func TestLeaveStopsAtTheDeadline(t *testing.T) {
	f, srv := newFakeAPI(t, pod("blocked"), pod("stuck"), pod("fine"))
	f.refuse["apps/blocked"] = -1
	f.stuck["apps/stuck"] = true
	n := spotIn(1500 * time.Millisecond)
	res := leave(t, srv, n, Options{})
	if late := time.Since(n.Deadline); late > time.Second {
		t.Errorf("Leave returned %s after the deadline", late)
	}
	want := []string{
		"apps/blocked: eviction refused (429: Cannot evict pod as it would violate the pod's disruption budget.) until the deadline came",
		"apps/stuck: evicted, still terminating: the deadline came",
	}
	if !slices.Equal(res.Left, want) || !slices.Equal(res.Evicted, []string{"apps/fine"}) || !res.DeadlineHit {
		t.Errorf("left %q\nwant %q\nevicted %v, deadline hit %v", res.Left, want, res.Evicted, res.DeadlineHit)
	}
}

// A pod the API server refused (PDB) and then could not be reached about is
// reported with the refusal, the last answer the API server gave.
func TestLeaveReportsTheLastRefusalNotAFailureAfterIt(t *testing.T) {
	f, srv := newFakeAPI(t, pod("guarded"))
	f.refuse["apps/guarded"] = 2
	f.hangUp["apps/guarded"] = true
	n := spotIn(1500 * time.Millisecond)
	res := leave(t, srv, n, Options{})
	want := []string{"apps/guarded: eviction refused (429: Cannot evict pod as it would violate the pod's disruption budget.) until the deadline came"}
	if !slices.Equal(res.Left, want) {
		t.Errorf("left %q, want %q", res.Left, want)
	}
}

func TestLifecycleHeartbeatsWhileDrainingThenCompletes(t *testing.T) {
	f, srv := newFakeAPI(t, pod("pdb-protected"))
	f.refuse["apps/pdb-protected"] = 8 // 8 retries × 50 ms of draining
	lc := &fakeLifecycle{}
	now := time.Now()
	n := Notice{Kind: ASGTermination, NoticeTime: now, Deadline: now.Add(10 * time.Second), Action: "Terminated"}
	res := leave(t, srv, n, Options{Lifecycle: lc, LifecycleHeartbeat: 100 * time.Millisecond})
	evs := f.evictionsOf("apps/pdb-protected")
	drainStart, drainEnd := evs[0].at, evs[len(evs)-1].at
	lc.mu.Lock()
	defer lc.mu.Unlock()
	during := 0
	for i, c := range lc.calls {
		if c == "heartbeat" && lc.times[i].After(drainStart) && lc.times[i].Before(drainEnd) {
			during++
		}
	}
	if during < 2 {
		t.Errorf("%d heartbeats while draining (%s), want at least 2; calls %v", during, drainEnd.Sub(drainStart), lc.calls)
	}
	if last := lc.calls[len(lc.calls)-1]; last != "complete CONTINUE" || slices.Index(lc.calls, "complete CONTINUE") != len(lc.calls)-1 {
		t.Errorf("calls %v, want one complete CONTINUE, last", lc.calls)
	}
	if !res.LifecycleCompleted || res.LifecycleHeartbeats != len(lc.calls)-1 {
		t.Errorf("result: completed %v, heartbeats %d; calls %v", res.LifecycleCompleted, res.LifecycleHeartbeats, lc.calls)
	}
}

func TestLifecycleCompletedWhenTheDeadlineHits(t *testing.T) {
	f, srv := newFakeAPI(t, pod("blocked"))
	f.refuse["apps/blocked"] = -1
	lc := &fakeLifecycle{}
	now := time.Now()
	n := Notice{Kind: ASGTermination, NoticeTime: now, Deadline: now.Add(time.Second), Action: "Terminated"}
	res := leave(t, srv, n, Options{Lifecycle: lc})
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if c := lc.calls[len(lc.calls)-1]; c != "complete CONTINUE" || lc.times[len(lc.times)-1].Before(n.Deadline) {
		t.Errorf("calls %v; want complete CONTINUE last, after the deadline", lc.calls)
	}
	if !res.DeadlineHit || !res.LifecycleCompleted {
		t.Errorf("deadline hit %v, lifecycle completed %v", res.DeadlineHit, res.LifecycleCompleted)
	}
}

func TestLifecycleNotCompletedWhenTheAgentStops(t *testing.T) {
	f, srv := newFakeAPI(t, pod("blocked"))
	f.refuse["apps/blocked"] = -1
	lc := &fakeLifecycle{}
	l, err := New(&rest.Config{Host: srv.URL}, testNode, fast(Options{Lifecycle: lc}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	now := time.Now()
	res, err := l.Leave(ctx, Notice{Kind: ASGTermination, NoticeTime: now, Deadline: now.Add(time.Minute), Action: "Terminated"})
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if slices.Contains(lc.calls, "complete CONTINUE") || res.LifecycleCompleted || !res.Interrupted || err == nil {
		t.Errorf("calls %v, completed %v, interrupted %v, err %v; want no completion and an error", lc.calls, res.LifecycleCompleted, res.Interrupted, err)
	}
}

func TestRebalanceOnlyCordons(t *testing.T) {
	f, srv := newFakeAPI(t, pod("web-1"))
	ev, lc := &fakeEvents{}, &fakeLifecycle{}
	now := time.Now()
	res := leave(t, srv, Notice{Kind: Rebalance, NoticeTime: now, Deadline: now.Add(time.Minute)}, Options{Events: ev, Lifecycle: lc})
	requests, _, _, _ := f.snapshot()
	if !slices.Equal(requests, []string{"PATCH /api/v1/nodes/" + testNode + "?"}) {
		t.Errorf("requests %q, want the cordon PATCH only", requests)
	}
	if !slices.Equal(ev.events, []string{testNode + " Normal RebalanceRecommendation"}) || len(lc.calls) != 0 || !res.Cordoned {
		t.Errorf("events %q, lifecycle calls %v, cordoned %v", ev.events, lc.calls, res.Cordoned)
	}
}

func TestTerminationRecordsEventsOnTheNode(t *testing.T) {
	_, srv := newFakeAPI(t, pod("web-1"))
	ev := &fakeEvents{}
	leave(t, srv, spotIn(10*time.Second), Options{Events: ev})
	want := []string{testNode + " Warning Spot", testNode + " Normal Drained"}
	if !slices.Equal(ev.events, want) {
		t.Errorf("events %q, want %q", ev.events, want)
	}
}

func TestResultNamesTheClientCertificateIdentity(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		Subject: pkix.Name{CommonName: "system:node:" + testNode, Organization: []string{"system:nodes"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}}
	if got, want := describeCredentials(cfg), "user system:node:"+testNode+", groups [system:nodes] (client certificate)"; got != want {
		t.Errorf("credentials %q, want %q", got, want)
	}
}
