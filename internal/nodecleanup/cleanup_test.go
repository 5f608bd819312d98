package nodecleanup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/leave"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

const (
	selfID   = "i-0000000000000000c"
	selfNode = "cp"
)

// fakeNodes is Nodes in memory; it records deletions.
type fakeNodes struct {
	mu      sync.Mutex
	nodes   []Node
	deleted []string
	listErr error
}

func (f *fakeNodes) List(context.Context) ([]Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nodes), f.listErr
}

func (f *fakeNodes) Delete(_ context.Context, n Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, n.Name+"/"+n.UID)
	f.nodes = slices.DeleteFunc(f.nodes, func(x Node) bool { return x.Name == n.Name })
	return nil
}

// deletions is what was deleted so far (name/UID).
func (f *fakeNodes) deletions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deleted)
}

// fakeEC2 answers States from a table; it records what it was asked.
type fakeEC2 struct {
	mu     sync.Mutex
	states map[string]string
	err    error
	asked  [][]string
}

func (f *fakeEC2) States(_ context.Context, ids []string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, ids)
	if f.err != nil {
		return nil, f.err
	}
	out := map[string]string{}
	for _, id := range ids {
		if s, ok := f.states[id]; ok {
			out[id] = s
		}
	}
	return out, nil
}

type fakeRecords struct {
	records []leave.StoredRecord
	removed []string
	listErr error
}

func (f *fakeRecords) List(context.Context) ([]leave.StoredRecord, error) {
	return slices.Clone(f.records), f.listErr
}

func (f *fakeRecords) Delete(_ context.Context, key string) error {
	f.removed = append(f.removed, key)
	f.records = slices.DeleteFunc(f.records, func(r leave.StoredRecord) bool { return r.Key == key })
	return nil
}

func node(name, iid string, ready bool, silentFor time.Duration) Node {
	return Node{Name: name, UID: "uid-" + name, InstanceID: iid, Ready: ready, LastHeartbeat: t0.Add(-silentFor)}
}

func record(iid, name string, age time.Duration) leave.StoredRecord {
	r := leave.Record{Schema: leave.RecordSchema, InstanceID: iid, Node: name, Kind: leave.Spot,
		NoticeTime: t0.Add(-age), Deadline: t0.Add(-age + 2*time.Minute)}
	return leave.StoredRecord{Key: leave.RecordKey("c", iid), Record: r, Modified: t0.Add(-age)}
}

func newCleaner(nodes Nodes, ec2 *fakeEC2, recs *fakeRecords) *Cleaner {
	c := &Cleaner{Nodes: nodes, Instances: ec2, SelfInstance: selfID, SelfNode: selfNode,
		Clock: clocktesting.NewFakeClock(t0), GoneAfter: 10 * time.Minute, RecordTTL: 24 * time.Hour}
	if recs != nil {
		c.Records = recs
	}
	return c
}

const (
	idA = "i-0aaaaaaaaaaaaaaaa"
	idB = "i-0bbbbbbbbbbbbbbbb"
	idC = "i-0cccccccccccccccc"
)

// The Node of an instance EC2 reports terminated or shutting down is
// deleted, with its UID as precondition; the control plane's own and those
// of running instances are kept.
func TestDeletesNodesOfTerminatedInstances(t *testing.T) {
	for _, state := range []string{"terminated", "shutting-down"} {
		t.Run(state, func(t *testing.T) {
			nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, time.Minute),
				node("w2", idB, true, 0)}}
			ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: state, idB: "running"}}
			r, err := newCleaner(nodes, ec2, nil).Once(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(nodes.deleted, []string{"w1/uid-w1"}) {
				t.Fatalf("deleted %v, want only w1 (with its UID)", nodes.deleted)
			}
			if len(r.Deleted) != 1 || r.Deleted[0].InstanceID != idA || !strings.Contains(r.Deleted[0].Reason, state) {
				t.Errorf("round's deletions %+v, want w1 with a reason naming %s", r.Deleted, state)
			}
		})
	}
}

// A Node whose instance is pending, running, stopping or stopped is never
// deleted: not when NotReady for days, not with a leave record.
func TestNeverDeletesANodeWhoseInstanceIsNotGone(t *testing.T) {
	for _, state := range []string{"pending", "running", "stopping", "stopped"} {
		t.Run(state, func(t *testing.T) {
			nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, 72*time.Hour)}}
			ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: state}}
			recs := &fakeRecords{records: []leave.StoredRecord{record(idA, "w1", time.Hour)}}
			if _, err := newCleaner(nodes, ec2, recs).Once(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(nodes.deleted) != 0 {
				t.Errorf("deleted %v although its instance is %s", nodes.deleted, state)
			}
			if len(recs.removed) != 0 {
				t.Errorf("removed leave records %v of an instance that is %s (younger than the TTL)", recs.removed, state)
			}
		})
	}
}

// An instance EC2 no longer knows (terminated over an hour ago): its Node
// goes when it posted a leave record, or when its kubelet has been silent
// for GoneAfter; a Ready Node, or one silent for less, stays.
func TestUnknownInstances(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          Node
		withRecord bool
		deleted    bool
	}{
		{"leave record", node("w1", idA, true, 0), true, true},
		{"silent for GoneAfter", node("w1", idA, false, 10*time.Minute), false, true},
		{"silent for less", node("w1", idA, false, 9*time.Minute), false, false},
		{"Ready", node("w1", idA, true, 0), false, false},
		{"never posted a heartbeat", Node{Name: "w1", UID: "u", InstanceID: idA}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), tc.n}}
			ec2 := &fakeEC2{states: map[string]string{selfID: "running"}}
			recs := &fakeRecords{}
			if tc.withRecord {
				recs.records = []leave.StoredRecord{record(idA, "w1", time.Minute)}
			}
			if _, err := newCleaner(nodes, ec2, recs).Once(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := len(nodes.deleted) == 1; got != tc.deleted {
				t.Errorf("deleted %v, want deleted=%v", nodes.deleted, tc.deleted)
			}
		})
	}
}

// When EC2 does not report this control plane's own instance running (a
// wrong region or endpoint answers "no such instance" for every ID),
// nothing is deleted for being unknown, whatever the records and silence
// say; a terminated instance EC2 does report still goes.
func TestUnknownInstancesAreKeptWhenEC2DoesNotKnowThisInstance(t *testing.T) {
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, 48*time.Hour),
		node("w2", idB, false, time.Minute)}}
	ec2 := &fakeEC2{states: map[string]string{idB: "terminated"}}
	recs := &fakeRecords{records: []leave.StoredRecord{record(idA, "w1", time.Minute)}}
	r, err := newCleaner(nodes, ec2, recs).Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nodes.deleted, []string{"w2/uid-w2"}) {
		t.Errorf("deleted %v, want only w2 (reported terminated)", nodes.deleted)
	}
	if !strings.Contains(r.Kept["w1"], "does not report this instance running") {
		t.Errorf("w1 kept for %q, want the reason", r.Kept["w1"])
	}
	if len(recs.removed) != 0 {
		t.Errorf("removed %v: a record of an instance EC2 does not know is kept while EC2 cannot be trusted", recs.removed)
	}
}

// Without an answer from EC2 nothing is deleted, and the pass fails.
func TestNothingIsDeletedWithoutEC2(t *testing.T) {
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, 48*time.Hour)}}
	recs := &fakeRecords{records: []leave.StoredRecord{record(idA, "w1", time.Minute)}}
	_, err := newCleaner(nodes, &fakeEC2{err: errors.New("RequestLimitExceeded")}, recs).Once(context.Background())
	if err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Errorf("err %v, want EC2's error", err)
	}
	if len(nodes.deleted)+len(recs.removed) != 0 {
		t.Errorf("deleted %v, removed %v without EC2's answer", nodes.deleted, recs.removed)
	}
}

// The control plane's own Node, and a Node without an EC2 providerID, are
// never deleted, and only Nodes' and records' instances (and its own) are
// asked about.
func TestOwnNodeAndForeignNodesAreLeftAlone(t *testing.T) {
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), {Name: "bare-metal", UID: "u"}, node("w1", idA, true, 0)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "terminated", idA: "running"}}
	if _, err := newCleaner(nodes, ec2, &fakeRecords{}).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(nodes.deleted) != 0 {
		t.Errorf("deleted %v", nodes.deleted)
	}
	if want := [][]string{{selfID, idA}}; len(ec2.asked) != 1 || !slices.Equal(ec2.asked[0], want[0]) {
		t.Errorf("asked EC2 about %v, want %v", ec2.asked, want)
	}
}

// Leave records: removed once their instance is gone and its Node deleted;
// kept while it runs, until the TTL; a record naming another, running
// instance deletes nothing; one that is not valid is ignored, and removed
// after the TTL.
func TestLeaveRecords(t *testing.T) {
	bad := leave.StoredRecord{Key: "c/leave/junk.json", Invalid: errors.New("not JSON"), Modified: t0.Add(-time.Hour)}
	oldBad := leave.StoredRecord{Key: "c/leave/old.json", Invalid: errors.New("not JSON"), Modified: t0.Add(-25 * time.Hour)}
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, time.Minute),
		node("w2", idB, true, 0), node("w3", idC, true, 0)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated", idB: "running", idC: "running"}}
	recs := &fakeRecords{records: []leave.StoredRecord{
		record(idA, "w1", time.Minute),  // gone: removed with its Node
		record(idB, "w2", time.Hour),    // running, young: kept
		record(idC, "w3", 25*time.Hour), // running, past the TTL: removed, Node kept
		bad, oldBad,
	}}
	r, err := newCleaner(nodes, ec2, recs).Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nodes.deleted, []string{"w1/uid-w1"}) {
		t.Errorf("deleted %v, want w1", nodes.deleted)
	}
	removed := slices.Clone(recs.removed)
	sort.Strings(removed)
	want := []string{"c/leave/old.json", leave.RecordKey("c", idA), leave.RecordKey("c", idC)}
	sort.Strings(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed records %v, want %v", removed, want)
	}
	if !slices.Equal(r.RecordsRemoved, recs.removed) {
		t.Errorf("round reports %v removed, the store %v", r.RecordsRemoved, recs.removed)
	}
}

// A failed delete does not stop the others; the record of a Node that could
// not be deleted stays for the next pass.
func TestRecordStaysWhileItsNodeDoes(t *testing.T) {
	nodes := &failingNodes{fakeNodes: fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, time.Minute),
		node("w2", idB, false, time.Minute)}}, fail: "w1"}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated", idB: "terminated"}}
	recs := &fakeRecords{records: []leave.StoredRecord{record(idA, "w1", time.Minute)}}
	_, err := newCleaner(nodes, ec2, recs).Once(context.Background())
	if err == nil || !strings.Contains(err.Error(), "delete Node w1") {
		t.Errorf("err %v, want the failed delete", err)
	}
	if len(recs.removed) != 0 {
		t.Errorf("removed %v while the Node is still there", recs.removed)
	}
	if !slices.Equal(nodes.deleted, []string{"w2/uid-w2"}) {
		t.Errorf("deleted %v, want w2 despite w1's failure", nodes.deleted)
	}
}

// failingNodes fails the delete of one Node.
type failingNodes struct {
	fakeNodes
	fail string
}

func (f *failingNodes) Delete(ctx context.Context, n Node) error {
	if n.Name == f.fail {
		return errors.New("the server is currently unable to handle the request")
	}
	return f.fakeNodes.Delete(ctx, n)
}

// Unreadable leave records do not stop the cleanup: EC2 still decides.
func TestRecordsUnreadable(t *testing.T) {
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, time.Minute)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated"}}
	if _, err := newCleaner(nodes, ec2, &fakeRecords{listErr: errors.New("AccessDenied")}).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(nodes.deleted, []string{"w1/uid-w1"}) {
		t.Errorf("deleted %v, want w1", nodes.deleted)
	}
}

// A lasting failure to read the leave records is logged once per kind of
// error, not at every pass (each pass's error names its own request ID), and
// once more when the records are readable again.
func TestRecordsUnreadableIsLoggedOncePerKind(t *testing.T) {
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, true, 0)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "running"}}
	recs := &fakeRecords{}
	c := newCleaner(nodes, ec2, recs)
	core, logs := observer.New(zapcore.InfoLevel)
	c.Log = zap.New(core)
	pass := 0
	apiErr := func(code string) error {
		pass++
		return fmt.Errorf("list s3://b/c/leave/: operation error S3: ListObjectsV2, RequestID: req-%d, %w",
			pass, &smithy.GenericAPIError{Code: code, Message: "no"})
	}
	passes := func(n int, err func() error) {
		t.Helper()
		for range n {
			recs.listErr = nil
			if err != nil {
				recs.listErr = err()
			}
			if _, err := c.Once(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	type line struct {
		level zapcore.Level
		msg   string
		class string
	}
	got := func() []line {
		var out []line
		for _, e := range logs.TakeAll() {
			class, _ := e.ContextMap()["class"].(string)
			out = append(out, line{e.Level, e.Message, class})
		}
		return out
	}
	const unreadable = "cannot read the leave records; going on without them, and logging this again only when the error changes"
	const readable = "the leave records are readable again"

	passes(5, func() error { return apiErr("SignatureDoesNotMatch") })
	if l := got(); !slices.Equal(l, []line{{zapcore.WarnLevel, unreadable, "api:SignatureDoesNotMatch"}}) {
		t.Errorf("five failing passes logged %v, want one warning", l)
	}
	passes(3, nil)
	if l := got(); !slices.Equal(l, []line{{zapcore.InfoLevel, readable, ""}}) {
		t.Errorf("three passes that read the records logged %v, want one %q", l, readable)
	}
	// Another kind of failure is logged, once; a change of kind again.
	passes(2, func() error { return apiErr("AccessDenied") })
	passes(2, func() error { return context.DeadlineExceeded })
	want := []line{{zapcore.WarnLevel, unreadable, "api:AccessDenied"}, {zapcore.WarnLevel, unreadable, "timeout"}}
	if l := got(); !slices.Equal(l, want) {
		t.Errorf("two failing passes of each of two kinds logged %v, want %v", l, want)
	}
	// A pass cut short by the end of the agent's context logs nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	recs.listErr = context.Canceled
	_, _ = c.Once(ctx)
	if l := got(); len(l) != 0 {
		t.Errorf("a pass after the context ended logged %v", l)
	}
}

// Run passes every Interval on its clock and stops with its context.
func TestRunPassesEveryInterval(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, true, 0)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "running"}}
	c := newCleaner(nodes, ec2, nil)
	c.Clock, c.Interval = clk, 20*time.Second
	rounds := make(chan error, 10)
	c.OnRound = func(_ Round, err error) { rounds <- err }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-rounds
	// The instance is terminated between two passes.
	ec2.mu.Lock()
	ec2.states = map[string]string{selfID: "running", idA: "terminated"}
	ec2.mu.Unlock()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(19 * time.Second)
	select {
	case <-rounds:
		t.Fatal("a pass before the interval")
	case <-time.After(50 * time.Millisecond):
	}
	clk.Step(time.Second)
	if err := <-rounds; err != nil {
		t.Fatal(err)
	}
	if deleted := nodes.deletions(); !slices.Equal(deleted, []string{"w1/uid-w1"}) {
		t.Errorf("deleted %v after the second pass, want w1", deleted)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
}

// Of several control planes only the active one (the uploader lock's
// holder) makes passes: an inactive one lists nothing and deletes nothing,
// and starts at the next interval once it is active.
func TestOnlyTheActiveControlPlaneMakesPasses(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), node("w1", idA, false, time.Hour)}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated"}}
	c := newCleaner(nodes, ec2, nil)
	c.Clock, c.Interval = clk, 20*time.Second
	var active atomic.Bool
	c.Active = active.Load
	rounds := make(chan error, 10)
	c.OnRound = func(_ Round, err error) { rounds <- err }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for i := 0; i < 3; i++ {
		for !clk.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		clk.Step(20 * time.Second)
	}
	select {
	case <-rounds:
		t.Fatal("a pass while another control plane holds the uploader lock")
	case <-time.After(50 * time.Millisecond):
	}
	ec2.mu.Lock()
	asked := len(ec2.asked)
	ec2.mu.Unlock()
	if asked != 0 {
		t.Errorf("EC2 asked %d times while inactive", asked)
	}
	active.Store(true)
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	clk.Step(20 * time.Second)
	if err := <-rounds; err != nil {
		t.Fatal(err)
	}
	if deleted := nodes.deletions(); !slices.Equal(deleted, []string{"w1/uid-w1"}) {
		t.Errorf("deleted %v once active, want w1", deleted)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
}

// fakeEtcd answers RemoveMember from a table and records the calls.
type fakeEtcd struct {
	removed bool
	reason  string
	err     error
	calls   []string
}

func (f *fakeEtcd) RemoveMember(_ context.Context, n Node) (bool, string, error) {
	f.calls = append(f.calls, n.Name+"@"+n.InternalIP)
	return f.removed, f.reason, f.err
}

// The Node of a terminated control plane goes only after its etcd member:
// removed (or already gone) first, then the Node; while the removal is
// refused (quorum) or fails, the Node stays, with the reason, and the next
// pass tries again. A worker's Node never touches etcd.
func TestControlPlaneNodeGoesAfterItsEtcdMember(t *testing.T) {
	cp2 := node("cp-2", idA, false, time.Minute)
	cp2.ControlPlane, cp2.InternalIP = true, "10.0.1.12"
	for _, tc := range []struct {
		name    string
		etcd    *fakeEtcd
		deleted bool
		kept    string
		failed  bool
	}{
		{"removed", &fakeEtcd{removed: true, reason: "removed member cp-2"}, true, "", false},
		{"refused", &fakeEtcd{reason: "2 voters, 1 healthy besides it: no quorum"}, false, "no quorum", false},
		{"error", &fakeEtcd{err: errors.New("context deadline exceeded")}, false, "deadline", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), cp2, node("w1", idB, false, time.Minute)}}
			ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated", idB: "terminated"}}
			c := newCleaner(nodes, ec2, nil)
			c.Etcd = tc.etcd
			r, err := c.Once(context.Background())
			if (err != nil) != tc.failed {
				t.Errorf("err %v, want failed=%v", err, tc.failed)
			}
			if !slices.Equal(tc.etcd.calls, []string{"cp-2@10.0.1.12"}) {
				t.Errorf("etcd asked about %v, want only cp-2 at its InternalIP", tc.etcd.calls)
			}
			if got := slices.Contains(nodes.deleted, "cp-2/uid-cp-2"); got != tc.deleted {
				t.Errorf("cp-2 deleted %v, want %v", got, tc.deleted)
			}
			if !slices.Contains(nodes.deleted, "w1/uid-w1") {
				t.Errorf("the worker's Node was not deleted: %v", nodes.deleted)
			}
			if tc.kept != "" && !strings.Contains(r.Kept["cp-2"], tc.kept) {
				t.Errorf("cp-2 kept for %q, want the reason %q", r.Kept["cp-2"], tc.kept)
			}
		})
	}
	// Without an etcd seam, a control plane's Node is never deleted.
	nodes := &fakeNodes{nodes: []Node{node(selfNode, selfID, true, 0), cp2}}
	c := newCleaner(nodes, &fakeEC2{states: map[string]string{selfID: "running", idA: "terminated"}}, nil)
	if _, err := c.Once(context.Background()); err != nil || len(nodes.deleted) != 0 {
		t.Errorf("without etcd: deleted %v, err %v", nodes.deleted, err)
	}
}
