package role

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

// haEndpoint is the control-plane endpoint every node of the HA tests is
// configured with (a load balancer in front of them).
const haEndpoint = "10.0.1.5:6443"

// haNode is one control-plane node of a cluster whose S3 and kubeadm
// "cluster" (tokens, kubeadm-certs Secret, CA) it shares with the others.
type haNode struct {
	h    *harness
	clk  *testingclock.FakeClock
	cp   *ControlPlane
	stop func() error
}

// newHANode makes control-plane node i; fk is the cluster's fake kubeadm
// (nil: the first node, which makes it).
func newHANode(t *testing.T, s3 *testutil.FakeS3, fk *testutil.FakeKubeadm, i int) *haNode {
	t.Helper()
	clk := testingclock.NewFakeClock(t0)
	h := newHarnessWithClock(t, config.RoleControlPlane, clk)
	if s3 != nil {
		h.s3 = s3
		h.store.Client = s3.Client
	}
	if fk != nil {
		h.kubeadm = fk.Node(t)
	}
	h.instanceID = "i-00000000000000b" + string(rune('1'+i))
	h.cfg.Kubeadm.ControlPlaneEndpoint = haEndpoint
	cp := h.controlPlane()
	cp.Node = kubeadm.Node{Name: "cp-" + string(rune('1'+i)), IP: "10.0.1." + string(rune('1'+i))}
	e := cp.Election
	e.ControlPlaneInfo = &join.Store{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: join.ControlPlaneKey(h.cfg.Cluster)}
	e.JoinRequest = &join.Store{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: join.ControlPlaneJoinRequestKey(h.cfg.Cluster)}
	for _, l := range []**lease.Lock{&e.JoinLock, &e.UploaderLock} {
		lk := *e.Lock
		lk.RetryInterval = 50 * time.Millisecond
		*l = &lk
	}
	e.JoinLock.Key = lease.LockKey(h.cfg.Cluster, lease.JoinLock)
	e.UploaderLock.Key = lease.LockKey(h.cfg.Cluster, lease.UploaderLock)
	secret := filepath.Join(h.kubeadm.Dir, "kubeadm-certs")
	e.CertificatesUploaded = func(context.Context) (bool, error) {
		_, err := os.Stat(secret)
		return err == nil, nil
	}
	return &haNode{h: h, clk: clk, cp: cp}
}

func (n *haNode) state() state.State { return n.h.reporter.State() }

// advance moves n's clock by d, 5 s at a time, each time once the node
// sleeps on it, and returns when it sleeps again.
func (n *haNode) advance(t *testing.T, d time.Duration) {
	t.Helper()
	for end := n.clk.Now().Add(d); n.clk.Now().Before(end); {
		eventually(t, "the node to sleep", n.clk.HasWaiters)
		n.clk.Step(5 * time.Second)
	}
	eventually(t, "the node to sleep", n.clk.HasWaiters)
}

// cpInfo reads and validates the control-plane join info in S3.
func (n *haNode) cpInfo(t *testing.T) *join.ControlPlaneInfo {
	t.Helper()
	f, err := n.cp.Election.ControlPlaneInfo.Fetch(context.Background(), "")
	if err != nil {
		t.Fatalf("fetch control-plane join info: %v", err)
	}
	info, err := join.ParseControlPlane(f.Body, join.Expectations{Cluster: "demo", Now: n.clk.Now()})
	if err != nil {
		t.Fatalf("control-plane join info is not valid: %v", err)
	}
	return info
}

// assertNoKey fails if key is anywhere in the fake kubeadm's argument log
// (the command lines), the node's logs or its state directory.
func assertNoKey(t *testing.T, key string, nodes ...*haNode) {
	t.Helper()
	for _, n := range nodes {
		for _, c := range n.h.kubeadm.Calls() {
			if strings.Contains(c, key) {
				t.Errorf("the certificate key is on a kubeadm command line: %q", c)
			}
		}
		if strings.Contains(allLogText(n.h.logs), key) {
			t.Errorf("%s: the certificate key is in the log", n.h.instanceID)
		}
		entries, _ := os.ReadDir(n.h.cfg.StateDir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(n.h.cfg.StateDir, e.Name()))
			if strings.Contains(string(b), key) {
				t.Errorf("%s: the certificate key is left in %s", n.h.instanceID, e.Name())
			}
		}
	}
}

// startHA starts the first node and waits until it published join info.
func startHA(t *testing.T) *haNode {
	t.Helper()
	a := newHANode(t, nil, nil, 0)
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first node to publish", func() bool {
		return a.state().Phase == state.PhasePublished && a.clk.HasWaiters()
	})
	return a
}

// drive moves the clocks of the nodes that wait on them, 5 s at a time,
// until cond holds (bounded: 20 s of wall time).
func drive(t *testing.T, what string, cond func() bool, nodes ...*haNode) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		for _, n := range nodes {
			if n.clk.HasWaiters() {
				n.clk.Step(5 * time.Second)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// request puts a control-plane join request as a joiner would.
func (n *haNode) request(t *testing.T, failed int64) {
	t.Helper()
	err := n.cp.Election.JoinRequest.RequestControlPlaneInfo(context.Background(), &join.ControlPlaneJoinRequest{
		APIVersion: join.APIVersion, Kind: join.ControlPlaneJoinRequestKind, Requester: "i-0000000000000abc",
		RequestedAt: n.clk.Now(), FailedGeneration: failed})
	if err != nil {
		t.Fatal(err)
	}
}

func (n *haNode) requestPending() bool {
	_, err := n.cp.Election.JoinRequest.Fetch(context.Background(), "")
	return err == nil
}

// A second control plane finds the cluster initialized by the first, joins
// it with kubeadm join --control-plane through the control-plane join info
// (the first node's token and a fresh certificate key, never on a command
// line, in a log or left in a file) and stands by while the first holds the
// uploader lock; it never runs kubeadm init.
func TestSecondControlPlaneJoinsThroughS3(t *testing.T) {
	a := startHA(t)
	if st := a.state(); st.UploaderLockHolder != a.h.instanceID {
		t.Errorf("first node: uploaderLockHolder %q", st.UploaderLockHolder)
	}
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	start(t, b.cp.Run)
	drive(t, "the second node to stand by", func() bool { return b.state().Phase == state.PhaseStandby }, a, b)
	info := a.cpInfo(t)
	worker := a.h.published(t)
	if info.Token != worker.Token || info.APIServerEndpoint != haEndpoint || info.CACertHashes[0] != worker.CACertHashes[0] {
		t.Errorf("control-plane join info %s does not match join info generation %d", info, worker.Generation)
	}
	if n := len(a.h.kubeadm.CallsOf("init phase upload-certs")); n != 1 {
		t.Errorf("%d certificate uploads, want 1", n)
	}
	if a.requestPending() {
		t.Error("the join request is still there after the upload")
	}
	st := b.state()
	if st.ControlPlaneJoinedAt.IsZero() || st.InitializedAt.IsZero() || !st.ControlPlaneJoinStartedAt.IsZero() ||
		st.InitializedBy != a.h.instanceID || st.UploaderLockHolder != a.h.instanceID {
		t.Errorf("second node's state: %+v", st)
	}
	if !strings.Contains(st.Message, a.h.instanceID+" holds the uploader lock") {
		t.Errorf("second node's STATUS %q does not name the uploader", st.Message)
	}
	var inits, joins int
	for _, c := range b.h.kubeadm.Calls() {
		switch {
		case strings.HasPrefix(c, "init --config"):
			inits++
		case strings.HasPrefix(c, "join --config "+filepath.Join(b.h.cfg.StateDir, cpJoinConfigName)):
			joins++
		}
	}
	if inits != 1 || joins != 1 { // the shared log holds the first node's init
		t.Errorf("kubeadm calls in the cluster: %q; want the first node's init and one control-plane join", b.h.kubeadm.Calls())
	}
	if _, err := os.Stat(filepath.Join(b.h.kubeadm.Etc, "manifests", "kube-apiserver.yaml")); err != nil {
		t.Errorf("the second node runs no API server: %v", err)
	}
	if l := b.lock(t, lease.JoinLock); l.Held {
		t.Errorf("join lock still held: %+v", l)
	}
	if _, n := b.h.notifier.snapshot(); n == 0 {
		t.Error("no READY from the joined control plane")
	}
	// Only the uploader publishes.
	if got := a.h.published(t).Generation; got != worker.Generation {
		t.Errorf("join info generation moved to %d while nothing was due", got)
	}
	assertNoKey(t, info.CertificateKey, a, b)
}

func (n *haNode) lock(t *testing.T, name string) lease.Status {
	t.Helper()
	st, err := (&lease.Lock{Client: n.h.s3.Client, Bucket: n.h.cfg.Bucket, Key: lease.LockKey(n.h.cfg.Cluster, name),
		Holder: "i-0000000000000999"}).Inspect(context.Background())
	if err != nil {
		t.Fatalf("inspect %s lock: %v", name, err)
	}
	return st
}

// The kubeadm-certs Secret deleted (or expired): the uploader notices at
// its next round, uploads the certificates again with a new key and
// publishes it; the next control-plane join succeeds with it.
func TestDeletedCertificatesSecretIsUploadedAgain(t *testing.T) {
	a := startHA(t)
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	start(t, b.cp.Run)
	drive(t, "the second node to join", func() bool { return !b.state().ControlPlaneJoinedAt.IsZero() }, a, b)
	first := a.cpInfo(t)
	if err := os.Remove(filepath.Join(a.h.kubeadm.Dir, "kubeadm-certs")); err != nil {
		t.Fatal(err)
	}
	c := newHANode(t, a.h.s3, a.h.kubeadm, 2)
	start(t, c.cp.Run)
	drive(t, "the third node to join", func() bool { return !c.state().ControlPlaneJoinedAt.IsZero() }, a, b, c)
	second := a.cpInfo(t)
	if second.CertificateKey == first.CertificateKey || second.Generation != first.Generation+1 {
		t.Errorf("generation %d after %d, new key: %v", second.Generation, first.Generation, second.CertificateKey != first.CertificateKey)
	}
	var resets int
	for _, call := range c.h.kubeadm.Calls() {
		if strings.HasPrefix(call, "reset") {
			resets++
		}
	}
	if resets != 1 {
		t.Errorf("%d resets, want 1 (the failed first join undone)", resets)
	}
	assertNoKey(t, second.CertificateKey, a, b, c)
	assertNoKey(t, first.CertificateKey, a, b, c)
}

// Nothing is uploaded until a control plane asks (a cluster nobody joins
// keeps no kubeadm-certs Secret); a request is answered by what is
// published while it is fresh, and by a new upload once the certificates
// are within certificatesMargin of kubeadm's two hours.
func TestCertificatesUploadedOnlyOnRequest(t *testing.T) {
	a := newHANode(t, nil, nil, 0)
	a.h.cfg.ControlPlane.TokenTTL.Duration = 24 * time.Hour // one token throughout
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first publication", func() bool { return a.state().Phase == state.PhasePublished && a.clk.HasWaiters() })
	uploads := func() int { return len(a.h.kubeadm.CallsOf("init phase upload-certs")) }
	step := func(d time.Duration) { a.advance(t, d) }
	step(2 * time.Hour)
	if n := uploads(); n != 0 {
		t.Fatalf("%d uploads without a request", n)
	}
	if _, err := a.cp.Election.ControlPlaneInfo.Fetch(context.Background(), ""); err == nil {
		t.Fatal("control-plane join info published without a request")
	}
	a.request(t, 0)
	step(20 * time.Second)
	if n := uploads(); n != 1 || a.requestPending() {
		t.Fatalf("after a request: %d uploads (want 1), request pending %v", n, a.requestPending())
	}
	step(80 * time.Minute)
	a.request(t, 0) // fresh info (80 min old) answers it
	step(20 * time.Second)
	if n := uploads(); n != 1 || a.requestPending() {
		t.Fatalf("a request answered by fresh info: %d uploads (want 1), request pending %v", n, a.requestPending())
	}
	step(15 * time.Minute)
	a.request(t, 0) // 95 min old: kubeadm deletes the Secret at 120
	step(20 * time.Second)
	if n := uploads(); n != 2 {
		t.Errorf("%d uploads after a request 95 minutes after the first, want 2", n)
	}
	if st := a.state(); st.ControlPlaneInfoGeneration != 2 || st.JoinGeneration != 1 {
		t.Errorf("generations: control-plane join info %d (want 2), join info %d (want 1: same token)",
			st.ControlPlaneInfoGeneration, st.JoinGeneration)
	}
}

// A control-plane join interrupted by a crash (controlPlaneJoinStartedAt
// recorded, files half written): at the next start the agent undoes it with
// kubeadm reset -f before anything else, then joins again.
func TestInterruptedControlPlaneJoinIsRedone(t *testing.T) {
	a := startHA(t)
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	// What a kill -9 inside kubeadm join --control-plane leaves: the state
	// write before the run, and an admin.conf from its kubeconfig phase.
	b.h.reporter.Update(func(s *state.State) { s.ControlPlaneJoinStartedAt = t0 })
	if err := os.WriteFile(b.h.kubeadm.AdminConf(), []byte("half\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, b.cp.Run)
	drive(t, "the second node to stand by", func() bool { return b.state().Phase == state.PhaseStandby }, a, b)
	var seq []string
	for _, c := range b.h.kubeadm.Calls() {
		if strings.HasPrefix(c, "reset") || strings.HasPrefix(c, "join") {
			seq = append(seq, strings.Fields(c)[0])
		}
	}
	if strings.Join(seq, ",") != "reset,join" {
		t.Errorf("kubeadm runs %v, want reset then join", seq)
	}
	if st := b.state(); st.ControlPlaneJoinedAt.IsZero() || !st.ControlPlaneJoinStartedAt.IsZero() {
		t.Errorf("state after the redone join: %+v", st)
	}
}

// An interrupted control-plane join whose undo would cost the cluster its
// etcd quorum (this node's member a voter of two, its etcd down) is not
// undone: the node is JoinFailed, says why, and looks again until the undo
// is safe (its etcd back); only then kubeadm reset -f, and the join again.
func TestUnsafeJoinUndoWaitsForQuorum(t *testing.T) {
	a := startHA(t)
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	b.h.reporter.Update(func(s *state.State) { s.ControlPlaneJoinStartedAt = t0 })
	var mu sync.Mutex
	looks, safe := 0, false
	b.cp.Election.JoinUndoSafe = func(context.Context) (bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		looks++
		if looks == 2 {
			return false, "", errors.New("list etcd members: connection refused")
		}
		if !safe {
			return false, "its member is one of 2 voting members and only 1 are healthy", nil
		}
		return true, "its member is one of 2 voting members; 2 healthy", nil
	}
	resets := func() int { return len(b.h.kubeadm.CallsOf("reset")) }
	start(t, b.cp.Run)
	eventually(t, "the unsafe undo to be reported", func() bool {
		return b.h.notifier.sawStatus("only 1 are healthy") && b.state().Phase == state.PhaseJoinFailed
	})
	for i := 0; i < 6; i++ { // a minute of looks
		eventually(t, "the node to wait", b.clk.HasWaiters)
		b.clk.Step(joinUndoRecheck)
	}
	eventually(t, "the node to wait", b.clk.HasWaiters)
	if n := resets(); n != 0 {
		t.Fatalf("%d kubeadm resets while the undo would cost the quorum", n)
	}
	if !b.h.notifier.sawStatus("cannot tell whether it keeps the etcd quorum: list etcd members: connection refused") {
		t.Error("a failed look was not reported")
	}
	mu.Lock()
	safe = true
	mu.Unlock()
	drive(t, "the second node to stand by", func() bool { return b.state().Phase == state.PhaseStandby }, a, b)
	if n := resets(); n != 1 {
		t.Errorf("%d kubeadm resets, want 1 once the undo was safe", n)
	}
	if st := b.state(); st.ControlPlaneJoinedAt.IsZero() {
		t.Errorf("not joined after the undo: %+v", st)
	}
}

// The uploader stops: the standby control plane takes the uploader lock,
// adopts the published join info (same endpoint, CA and a live token) and
// the control-plane join info (the upload is usable: a request is answered
// by it, without a new upload) and keeps both kinds fresh.
func TestStandbyTakesOverPublishing(t *testing.T) {
	a := startHA(t)
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	start(t, b.cp.Run)
	drive(t, "the second node to stand by", func() bool { return b.state().Phase == state.PhaseStandby }, a, b)
	if !a.cp.HoldsUploaderLock() || b.cp.HoldsUploaderLock() {
		t.Errorf("HoldsUploaderLock: first node %v (want true), standby %v (want false)", a.cp.HoldsUploaderLock(), b.cp.HoldsUploaderLock())
	}
	gen := a.h.published(t).Generation
	// The first node's agent stops (it releases the lock on its way out).
	_ = a.stop()
	drive(t, "the second node to publish", func() bool {
		st := b.state()
		return st.Phase == state.PhasePublished && st.UploaderLockHolder == b.h.instanceID
	}, b)
	if got := b.h.published(t).Generation; got < gen {
		t.Errorf("join info generation went back from %d to %d", gen, got)
	}
	if a.cp.HoldsUploaderLock() || !b.cp.HoldsUploaderLock() {
		t.Errorf("HoldsUploaderLock after the takeover: stopped node %v (want false), new uploader %v (want true)",
			a.cp.HoldsUploaderLock(), b.cp.HoldsUploaderLock())
	}
	first := b.cpInfo(t)
	uploads := len(b.h.kubeadm.CallsOf("init phase upload-certs")) // the cluster's, the first node's included
	b.request(t, 0)
	drive(t, "the new uploader to answer a request", func() bool { return !b.requestPending() }, b)
	if info := b.cpInfo(t); info.APIServerEndpoint != haEndpoint || info.Generation != first.Generation ||
		info.CertificateKey != first.CertificateKey {
		t.Errorf("control-plane join info endpoint %s generation %d (want %s and the first node's generation %d, "+
			"its key kept)", info.APIServerEndpoint, info.Generation, haEndpoint, first.Generation)
	}
	if n := len(b.h.kubeadm.CallsOf("init phase upload-certs")) - uploads; n != 0 {
		t.Errorf("the new uploader uploaded the certificates %d times, want 0 (the published upload is usable)", n)
	}
	// The first node's Secret is deleted: the next request gets a new upload.
	if err := os.Remove(filepath.Join(b.h.kubeadm.Dir, "kubeadm-certs")); err != nil {
		t.Fatal(err)
	}
	b.request(t, 0)
	drive(t, "the new uploader to answer a request", func() bool { return !b.requestPending() }, b)
	if info := b.cpInfo(t); info.Generation != first.Generation+1 || info.CertificateKey == first.CertificateKey {
		t.Errorf("after the Secret was deleted: generation %d (want %d), new key %v", info.Generation,
			first.Generation+1, info.CertificateKey != first.CertificateKey)
	}
}

// A control plane whose controlPlaneEndpoint is not the one the cluster was
// initialized with is Blocked, saying which to set, and never joins (it
// could later publish its own address to workers).
func TestControlPlaneWithAnotherEndpointIsBlocked(t *testing.T) {
	a := startHA(t)
	b := newHANode(t, a.h.s3, a.h.kubeadm, 1)
	b.h.cfg.Kubeadm.ControlPlaneEndpoint = "10.0.1.6:6443"
	start(t, b.cp.Run)
	eventually(t, "the second node to be Blocked", func() bool { return b.state().Phase == state.PhaseBlocked })
	if msg := b.state().Message; !strings.Contains(msg, "set kubeadm.controlPlaneEndpoint to "+haEndpoint) {
		t.Errorf("STATUS %q does not say which endpoint to set", msg)
	}
	for _, c := range b.h.kubeadm.Calls() {
		if strings.HasPrefix(c, "join") || strings.HasPrefix(c, "reset") {
			t.Errorf("kubeadm %s on a node with another endpoint", c)
		}
	}
	if a.requestPending() {
		t.Error("the blocked node asked for control-plane join info")
	}
}

// The uploader looks for join requests every 15 s, but checks that
// join.json is still its own (a conditional GET) only every
// VerifyInterval (1 min), as a single control plane does.
func TestUploaderVerifiesJoinInfoAtItsOwnCadence(t *testing.T) {
	a := newHANode(t, nil, nil, 0)
	a.h.cfg.ControlPlane.TokenTTL.Duration = 24 * time.Hour // no refresh in the window
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first publication", func() bool { return a.state().Phase == state.PhasePublished && a.clk.HasWaiters() })
	before := a.h.s3.Counts.Snapshot()
	for end := a.clk.Now().Add(5 * time.Minute); a.clk.Now().Before(end); {
		eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
		a.clk.Step(5 * time.Second)
	}
	eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
	verifies := a.h.s3.Counts.Snapshot().Conditional - before.Conditional
	if verifies < 4 || verifies > 6 {
		t.Errorf("%d conditional GETs of join.json in 5 minutes, want one a minute", verifies)
	}
	// The join requests are still seen within 15 s.
	a.request(t, 0)
	for i := 0; i < 3; i++ {
		eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
		a.clk.Step(5 * time.Second)
	}
	eventually(t, "the request to be answered", func() bool { return !a.requestPending() })
}

// When the uploader replaces the join token, it publishes the control-plane
// join info again with the new token, asked or not, so the document never
// names a token that is about to be deleted: with the same key while the
// upload is usable. Once it is about to expire, nobody having asked, the
// document is withdrawn instead of uploading again (certificates go up only
// on request); the next request gets a new upload.
func TestControlPlaneInfoFollowsTheJoinToken(t *testing.T) {
	a := newHANode(t, nil, nil, 0)
	a.h.cfg.ControlPlane.TokenTTL.Duration = time.Hour // a new token every 30 minutes
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first publication", func() bool { return a.state().Phase == state.PhasePublished && a.clk.HasWaiters() })
	uploads := func() int { return len(a.h.kubeadm.CallsOf("init phase upload-certs")) }
	a.request(t, 0)
	a.advance(t, 20*time.Second)
	first := a.cpInfo(t)
	if uploads() != 1 || first.TokenID() != a.state().TokenID {
		t.Fatalf("after a request: %d uploads (want 1), token %s (join info's %s)", uploads(), first.TokenID(), a.state().TokenID)
	}
	a.advance(t, 31*time.Minute) // the token was replaced at 30 minutes; nobody asked
	second := a.cpInfo(t)
	switch {
	case second.TokenID() == first.TokenID() || second.TokenID() != a.state().TokenID:
		t.Errorf("after the token was replaced: control-plane join info names %s, join info %s (was %s)",
			second.TokenID(), a.state().TokenID, first.TokenID())
	case second.CertificateKey != first.CertificateKey || !second.CertificatesUploadedAt.Equal(first.CertificatesUploadedAt):
		t.Error("the certificate key or upload time changed without a new upload")
	case uploads() != 1:
		t.Errorf("%d uploads, want 1 (the upload is usable)", uploads())
	case second.Generation != first.Generation+1:
		t.Errorf("generation %d after %d", second.Generation, first.Generation)
	}
	// The token replaced at 120 minutes finds the upload (at 15 s) less
	// than certificatesMargin from kubeadm's deletion of the Secret (at 90
	// minutes it was not yet): nobody asked, so the document is withdrawn.
	a.advance(t, 90*time.Minute)
	if _, err := a.cp.Election.ControlPlaneInfo.Fetch(context.Background(), ""); !errors.Is(err, join.ErrNotFound) {
		t.Errorf("after 121 minutes: control-plane join info %v, want it withdrawn", err)
	}
	if uploads() != 1 {
		t.Errorf("after 121 minutes: %d uploads without a request, want 1", uploads())
	}
	a.request(t, 0)
	a.advance(t, 20*time.Second)
	third := a.cpInfo(t)
	if uploads() != 2 || third.CertificateKey == first.CertificateKey || third.TokenID() != a.state().TokenID || a.requestPending() {
		t.Errorf("a request after the withdrawal: %d uploads (want 2), new key %v, token %s (join info's %s), pending %v",
			uploads(), third.CertificateKey != first.CertificateKey, third.TokenID(), a.state().TokenID, a.requestPending())
	}
	assertNoKey(t, first.CertificateKey, a)
	assertNoKey(t, third.CertificateKey, a)
}

// A request is not answered by a document that is no longer there (an
// operator's aws s3 rm): the uploader publishes it again, with the same
// key while the upload is usable; and a request naming a failed generation
// above what is published gets a generation past it.
func TestRequestAfterTheControlPlaneInfoWasRemoved(t *testing.T) {
	a := newHANode(t, nil, nil, 0)
	a.h.cfg.ControlPlane.TokenTTL.Duration = 24 * time.Hour // one token throughout
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first publication", func() bool { return a.state().Phase == state.PhasePublished && a.clk.HasWaiters() })
	a.request(t, 0)
	a.advance(t, 20*time.Second)
	first := a.cpInfo(t)
	if err := a.cp.Election.ControlPlaneInfo.Delete(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	a.request(t, 0)
	a.advance(t, 20*time.Second)
	second := a.cpInfo(t)
	if second.CertificateKey != first.CertificateKey || second.Generation != first.Generation+1 || a.requestPending() {
		t.Errorf("after the removal: generation %d (want %d), same key %v, request pending %v", second.Generation,
			first.Generation+1, second.CertificateKey == first.CertificateKey, a.requestPending())
	}
	if n := len(a.h.kubeadm.CallsOf("init phase upload-certs")); n != 1 {
		t.Errorf("%d uploads, want 1", n)
	}
	a.request(t, second.Generation+5) // a generation this node never published failed
	a.advance(t, 20*time.Second)
	if third := a.cpInfo(t); third.Generation <= second.Generation+5 {
		t.Errorf("after a failed generation %d: generation %d, want past it", second.Generation+5, third.Generation)
	}
}

// In the first minutes after it took the uploader lock (when the control
// planes booted with it ask) the uploader looks for a join request every
// requestCheckBurst; later every requestCheckInterval.
func TestUploaderLooksForRequestsOftenAfterTakingTheLock(t *testing.T) {
	a := startHA(t)
	burstEnd := a.clk.Now().Add(requestBurstWindow) // the lock was taken before now
	answeredWithin := func() time.Duration {
		t.Helper()
		eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
		a.request(t, 0)
		start := a.clk.Now()
		for a.clk.Now().Sub(start) < time.Minute {
			eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
			if !a.requestPending() {
				return a.clk.Now().Sub(start)
			}
			a.clk.Step(time.Second)
		}
		t.Fatal("a join request was not answered within a minute")
		return 0
	}
	if d := answeredWithin(); d > requestCheckBurst {
		t.Errorf("a request right after the lock was taken was answered after %s, want within %s", d, requestCheckBurst)
	}
	gets := func(d time.Duration) int {
		before := a.h.s3.Counts.Snapshot()
		for end := a.clk.Now().Add(d); a.clk.Now().Before(end); {
			eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
			a.clk.Step(time.Second)
		}
		eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
		after := a.h.s3.Counts.Snapshot()
		return (after.Gets - after.Conditional) - (before.Gets - before.Conditional)
	}
	inWindow := gets(3 * time.Minute)
	for a.clk.Now().Before(burstEnd) {
		eventually(t, "the publish loop to sleep", a.clk.HasWaiters)
		a.clk.Step(5 * time.Second)
	}
	later := gets(3 * time.Minute)
	t.Logf("plain GETs in 3 minutes: %d in the first %s, %d later", inWindow, requestBurstWindow, later)
	if inWindow < 50 || later > 15 {
		t.Errorf("plain GETs in 3 minutes: %d in the first %s (want a look every %s), %d later (want one every %s)",
			inWindow, requestBurstWindow, requestCheckBurst, later, requestCheckInterval)
	}
	if d := answeredWithin(); d > requestCheckInterval {
		t.Errorf("a request after the first %s was answered after %s, want within %s", requestBurstWindow, d, requestCheckInterval)
	}
}

// When the control-plane join info cannot be republished with the new token
// (here: the kubeadm-certs Secret cannot be looked at), it is withdrawn
// before the token it names is deleted, never left naming a deleted token.
func TestControlPlaneInfoNeverOutlivesItsToken(t *testing.T) {
	a := newHANode(t, nil, nil, 0)
	a.h.cfg.ControlPlane.TokenTTL.Duration = time.Hour
	var broken atomic.Bool
	uploaded := a.cp.Election.CertificatesUploaded
	a.cp.Election.CertificatesUploaded = func(ctx context.Context) (bool, error) {
		if broken.Load() {
			return false, errors.New("the API server does not answer")
		}
		return uploaded(ctx)
	}
	a.stop = start(t, a.cp.Run)
	eventually(t, "the first publication", func() bool { return a.state().Phase == state.PhasePublished && a.clk.HasWaiters() })
	a.request(t, 0)
	a.advance(t, 20*time.Second)
	first := a.cpInfo(t)
	broken.Store(true)
	a.advance(t, 31*time.Minute) // the token was replaced at 30 minutes
	if got := a.cpInfo(t); got.TokenID() != first.TokenID() {
		t.Fatalf("republished with token %s although the Secret could not be looked at", got.TokenID())
	}
	a.advance(t, 10*time.Minute) // past the old token's retirement
	if slices.Contains(a.h.kubeadm.TokenIDs(), first.TokenID()) {
		t.Fatalf("the old token %s is still in the cluster after its retirement", first.TokenID())
	}
	if _, err := a.cp.Election.ControlPlaneInfo.Fetch(context.Background(), ""); !errors.Is(err, join.ErrNotFound) {
		t.Errorf("the control-plane join info naming the deleted token %s: %v, want it withdrawn", first.TokenID(), err)
	}
}
