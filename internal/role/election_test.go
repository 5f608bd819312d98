package role

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/lease"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

// initLock reads the init lock as an outsider would.
func (h *harness) initLock(t *testing.T) lease.Status {
	t.Helper()
	st, err := (&lease.Lock{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.LockKey(h.cfg.Cluster, lease.InitLock),
		Holder: "i-0000000000000999"}).Inspect(context.Background())
	if err != nil {
		t.Fatalf("inspect init lock: %v", err)
	}
	return st
}

// marker reads the initialized marker; nil when there is none.
func (h *harness) marker(t *testing.T) *lease.Initialized {
	t.Helper()
	m, err := (&lease.Marker{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.MarkerKey(h.cfg.Cluster), Cluster: h.cfg.Cluster}).
		Read(context.Background(), time.Now())
	if errors.Is(err, lease.ErrNotInitialized) {
		return nil
	}
	if err != nil {
		t.Fatalf("read marker: %v", err)
	}
	return m
}

func assertMarkerOf(t *testing.T, h *harness, instance string) *lease.Initialized {
	t.Helper()
	m := h.marker(t)
	if m == nil {
		t.Fatalf("no initialized marker in S3, want one by %s", instance)
	}
	hash, err := kubeadm.CACertHash(h.kubeadm.CACert())
	if err != nil {
		t.Fatal(err)
	}
	if m.InitializedBy != instance || m.Endpoint != "10.0.1.10:6443" || len(m.CACertHashes) != 1 || m.CACertHashes[0] != hash {
		t.Errorf("marker %+v, want by %s at 10.0.1.10:6443 with hash %s", m, instance, hash)
	}
	return m
}

// gatedRunner holds every kubeadm init until open is closed (or its context
// ends), and tells started when one begins.
type gatedRunner struct {
	ControlPlaneRunner
	name    string
	open    chan struct{}
	started chan<- string
	// halfInit, when set, makes a held init leave a half-initialized node
	// behind (the fake kubeadm's crash after its kubeconfig phase) before
	// it waits, as kubeadm cut off mid-run would.
	halfInit func()
	inits    atomic.Int32
}

func (g *gatedRunner) Init(ctx context.Context, configFile string, extra ...string) error {
	if g.inits.Add(1) == 1 {
		if g.halfInit != nil {
			g.halfInit()
			_ = g.ControlPlaneRunner.Init(ctx, configFile, extra...)
		}
		if g.started != nil {
			g.started <- g.name
		}
		select {
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
		if g.halfInit != nil {
			return errors.New("unreachable in these tests")
		}
	}
	return g.ControlPlaneRunner.Init(ctx, configFile, extra...)
}

// node is one control-plane node of a multi-node test: its harness (own
// state directory, fake kubeadm, agent clock) on the shared fake S3, and the
// fake clock its init lock runs on.
type node struct {
	h       *harness
	agent   *testingclock.FakeClock
	lockClk *testingclock.FakeClock
	runner  *gatedRunner
	cp      *ControlPlane
	alive   atomic.Bool // what EC2 says about this node's instance
}

// cluster is N control-plane nodes sharing one fake S3 whose clock (object
// ages) the test moves.
type cluster struct {
	s3clk *testingclock.FakeClock
	s3    *testutil.FakeS3
	nodes []*node
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{s3clk: testingclock.NewFakeClock(t0)}
	c.s3 = testutil.NewFakeS3(t, "demo-bootstrap", testutil.WithS3Clock(c.s3clk))
	for i := range n {
		nd := &node{agent: testingclock.NewFakeClock(t0), lockClk: testingclock.NewFakeClock(t0)}
		nd.alive.Store(true)
		h := newHarnessWithClock(t, config.RoleControlPlane, nd.agent)
		h.s3 = c.s3
		h.store.Client = c.s3.Client
		h.instanceID = "i-00000000000000a" + string(rune('1'+i))
		nd.h = h
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.cp = nd.h.controlPlane()
		nd.runner = &gatedRunner{ControlPlaneRunner: nd.cp.Kubeadm, name: nd.h.instanceID, open: make(chan struct{})}
		nd.cp.Kubeadm = nd.runner
		nd.cp.Election.Lock.Clock = nd.lockClk
		nd.cp.Election.Lock.HolderAlive = c.holderAlive
	}
	return c
}

// holderAlive is EC2: each node's instance runs while its alive flag is set.
func (c *cluster) holderAlive(_ context.Context, id string) (bool, error) {
	for _, nd := range c.nodes {
		if nd.h.instanceID == id {
			return nd.alive.Load(), nil
		}
	}
	return false, nil
}

func (c *cluster) byID(id string) *node {
	for _, nd := range c.nodes {
		if nd.h.instanceID == id {
			return nd
		}
	}
	return nil
}

func (c *cluster) other(nd *node) *node {
	for _, o := range c.nodes {
		if o != nd {
			return o
		}
	}
	return nil
}

// nextAttempt lets a node waiting for the init lock try again: its lock
// clock moves past the retry interval.
func (nd *node) nextAttempt(t *testing.T) {
	t.Helper()
	eventually(t, nd.h.instanceID+" to wait for its next attempt", nd.lockClk.HasWaiters)
	nd.lockClk.Step(lease.DefaultLeaseDuration / 10)
}

func (nd *node) phase() state.Phase { return nd.h.reporter.State().Phase }

// Two control planes starting at once: exactly one runs kubeadm init; the
// other says who holds the lock while it waits, never runs init, and once
// the marker exists says who initialized the cluster.
func TestTwoControlPlanesStartingAtOnceInitOnce(t *testing.T) {
	c := newCluster(t, 2)
	started := make(chan string, 2)
	for _, nd := range c.nodes {
		nd.runner.started = started
		start(t, nd.cp.Run)
	}
	var winner *node
	select {
	case id := <-started:
		winner = c.byID(id)
	case <-time.After(20 * time.Second):
		t.Fatal("no node started kubeadm init")
	}
	loser := c.other(winner)
	eventually(t, "the other node to wait for the lock", func() bool { return loser.phase() == state.PhaseWaitingInitLock })
	if st := loser.h.reporter.State(); st.InitLockHolder != winner.h.instanceID ||
		!strings.Contains(st.Message, "waiting for control-plane node "+winner.h.instanceID) {
		t.Errorf("waiting node: initLockHolder %q, message %q", st.InitLockHolder, st.Message)
	}
	if st := winner.h.reporter.State(); st.InitLockHolder != winner.h.instanceID || st.InitLockGeneration != 1 {
		t.Errorf("holder's state: initLockHolder %q generation %d", st.InitLockHolder, st.InitLockGeneration)
	}
	// The waiting node tries again a few times while the holder inits.
	for range 3 {
		loser.nextAttempt(t)
	}
	close(winner.runner.open)
	eventually(t, "READY on the node that initialized", func() bool { _, n := winner.h.notifier.snapshot(); return n > 0 })
	loser.nextAttempt(t)
	eventually(t, "the other node to see the marker", func() bool { return loser.phase() == state.PhaseWaitingToJoin })
	// It keeps looking, and never inits.
	for range 3 {
		eventually(t, "the waiting node to sleep", loser.agent.HasWaiters)
		loser.agent.Step(BlockedRecheck)
	}
	close(loser.runner.open)
	eventually(t, "the waiting node to sleep", loser.agent.HasWaiters)

	if n := len(winner.h.kubeadm.CallsOf("init")); n != 1 {
		t.Errorf("the initializing node ran init %d times", n)
	}
	if n := loser.runner.inits.Load(); n != 0 || len(loser.h.kubeadm.Calls()) != 0 {
		t.Errorf("the waiting node ran kubeadm: %d inits, calls %q", n, loser.h.kubeadm.Calls())
	}
	m := assertMarkerOf(t, winner.h, winner.h.instanceID)
	if m.Generation != 1 {
		t.Errorf("marker generation %d, want 1", m.Generation)
	}
	if lock := winner.h.initLock(t); lock.Held {
		t.Errorf("init lock not released: %v", lock)
	}
	st := loser.h.reporter.State()
	if st.InitializedBy != winner.h.instanceID || st.InitLockHolder != "" || !st.InitializedAt.IsZero() {
		t.Errorf("waiting node's state: initializedBy %q initLockHolder %q initializedAt %s", st.InitializedBy, st.InitLockHolder, st.InitializedAt)
	}
	for _, want := range []string{"was initialized by " + winner.h.instanceID, "not implemented yet (issue 14)"} {
		if !strings.Contains(st.Message, want) {
			t.Errorf("waiting node's STATUS %q lacks %q", st.Message, want)
		}
	}
	if _, n := loser.h.notifier.snapshot(); n != 0 {
		t.Error("READY on a node that did not join")
	}
	if st := winner.h.reporter.State(); st.InitializedBy != winner.h.instanceID || st.Phase != state.PhasePublished {
		t.Errorf("initializing node: initializedBy %q phase %s", st.InitializedBy, st.Phase)
	}
}

// The lock holder dies before it runs init: its lease expires, EC2 says its
// instance is gone, and the other node takes the lock over and inits.
func TestHolderDeadBeforeInitIsTakenOver(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	crashed := crashAt(t, a.cp, stepLockAcquired)
	<-crashed
	a.alive.Store(false) // the instance was terminated
	close(b.runner.open)
	start(t, b.cp.Run)
	eventually(t, "b to wait for the lock", func() bool { return b.phase() == state.PhaseWaitingInitLock })
	// Before the lease expired (by S3's clock) nobody takes it.
	c.s3clk.Step(4 * time.Minute)
	b.nextAttempt(t)
	eventually(t, "b to try again", func() bool { return b.lockClk.HasWaiters() })
	if n := len(b.h.kubeadm.CallsOf("init")); n != 0 {
		t.Fatalf("b ran init while a's lease ran: %d", n)
	}
	c.s3clk.Step(61 * time.Second)
	b.nextAttempt(t)
	eventually(t, "READY on b", func() bool { _, n := b.h.notifier.snapshot(); return n > 0 })
	if n := len(b.h.kubeadm.CallsOf("init")); n != 1 {
		t.Errorf("b ran init %d times", n)
	}
	if n := len(a.h.kubeadm.Calls()); n != 0 {
		t.Errorf("a ran kubeadm %d times", n)
	}
	if m := assertMarkerOf(t, b.h, b.h.instanceID); m.Generation != 2 {
		t.Errorf("marker generation %d, want 2 (after a takeover)", m.Generation)
	}
}

// The holder loses its lease in the middle of kubeadm init (another node
// took it over after it could not renew): its init is cancelled, it resets
// its half-initialized node, writes no marker and waits; the other node
// initializes the cluster.
func TestHolderFencedMidInitResetsAndDoesNotWriteTheMarker(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	started := make(chan string, 1)
	a.runner.started = started
	a.runner.halfInit = func() { a.h.kubeadm.CrashNextInit(t) }
	start(t, a.cp.Run)
	<-started
	if err := kubeadm.CheckKubeconfig(a.h.kubeadm.AdminConf()); err != nil {
		t.Fatalf("test setup: the held init left no half-initialized node: %v", err)
	}
	close(b.runner.open)
	start(t, b.cp.Run)
	eventually(t, "b to wait for the lock", func() bool { return b.phase() == state.PhaseWaitingInitLock })
	// a's renewals fail (S3 unreachable from a, or a paused): S3's clock
	// runs past the lease, and EC2 cannot see a's instance run.
	a.alive.Store(false)
	c.s3clk.Step(lease.DefaultLeaseDuration + time.Second)
	b.nextAttempt(t)
	eventually(t, "READY on b", func() bool { _, n := b.h.notifier.snapshot(); return n > 0 })
	// a's next renewal finds the lock taken: fenced.
	eventually(t, "a's renewal loop to wait", a.lockClk.HasWaiters)
	a.lockClk.Step(lease.DefaultLeaseDuration / 10)
	eventually(t, "a to wait to join", func() bool { return a.phase() == state.PhaseWaitingToJoin })

	if n := a.h.kubeadm.InitsCompleted(); n != 0 {
		t.Errorf("a finished %d inits", n)
	}
	if resets := a.h.kubeadm.CallsOf("reset"); len(resets) != 1 {
		t.Errorf("a's reset calls %q, want one undoing its cancelled init", resets)
	}
	if err := kubeadm.CheckKubeconfig(a.h.kubeadm.AdminConf()); err == nil {
		t.Error("a's half-initialized node was not reset")
	}
	assertMarkerOf(t, b.h, b.h.instanceID)
	st := a.h.reporter.State()
	if !st.InitStartedAt.IsZero() || !st.InitializedAt.IsZero() || st.InitializedBy != b.h.instanceID {
		t.Errorf("a's state after the reset: %+v", st)
	}
	if !a.h.notifier.sawStatus("lost the init lock") {
		t.Error("a's STATUS never said it lost the init lock")
	}
	if n := b.h.kubeadm.InitsCompleted(); n != 1 {
		t.Errorf("b finished %d inits", n)
	}
	assertNoLeftovers(t, a.h.cfg.StateDir)
}

// A lease that runs out under the holder's own clock (it could not renew in
// time) cancels its kubeadm init; with nobody else around it undoes the
// init and wins the election again.
func TestHolderWhoseLeaseExpiresMidInitStartsOver(t *testing.T) {
	c := newCluster(t, 1)
	a := c.nodes[0]
	started := make(chan string, 1)
	a.runner.started = started
	a.runner.halfInit = func() { a.h.kubeadm.CrashNextInit(t) }
	stop := start(t, a.cp.Run)
	<-started
	eventually(t, "a's renewal loop to wait", a.lockClk.HasWaiters)
	a.lockClk.Step(lease.DefaultLeaseDuration) // past its deadline, no renewal went out
	eventually(t, "READY after the second init", func() bool { _, n := a.h.notifier.snapshot(); return n > 0 })
	_ = stop()
	calls := a.h.kubeadm.Calls()
	if len(calls) < 3 || !strings.HasPrefix(calls[0], "init") || !strings.HasPrefix(calls[1], "reset -f") || !strings.HasPrefix(calls[2], "init") {
		t.Fatalf("calls = %q, want init (cancelled), reset -f, init", calls)
	}
	if !a.h.notifier.sawStatus("could not be renewed in time") {
		t.Error("STATUS does not say why the init was given up")
	}
	if m := assertMarkerOf(t, a.h, a.h.instanceID); m.Generation != 1 {
		t.Errorf("marker generation %d, want 1 (the released lock was created anew)", m.Generation)
	}
	assertNoLeftovers(t, a.h.cfg.StateDir)
}

// A restart inside kubeadm init finds the init lock held in its own name
// with a fresh lease; holding agent.lock it takes it over at once and
// finishes within one verify interval, not after the 5-minute lease.
func TestRestartInsideInitTakesItsOwnLeaseOverAtOnce(t *testing.T) {
	h, clk, idle := newFakeClockHarness(t)
	h.kubeadm.CrashNextInit(t)
	crashed := crashAt(t, h.controlPlane(), stepInsideInit)
	<-crashed
	if lock := h.initLock(t); !lock.Held || lock.Holder != testInstanceID || lock.Expired {
		t.Fatalf("test setup: lock %v", lock)
	}
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("published")
	_ = stop()
	if _, n := h2.notifier.snapshot(); n != 1 || clk.Since(t0) > time.Minute {
		t.Errorf("READY %d after %s", n, clk.Since(t0))
	}
	if m := assertMarkerOf(t, h, testInstanceID); m.Generation != 2 {
		t.Errorf("marker generation %d, want 2 (own lease taken over)", m.Generation)
	}
	// Without agent.lock the own fresh lease is not taken: another agent
	// process of this node might still run.
	h3, _, _ := newFakeClockHarness(t)
	h3.kubeadm.CrashNextInit(t)
	crashed = crashAt(t, h3.controlPlane(), stepInsideInit)
	<-crashed
	h4 := h3.restarted(t)
	cp := h4.controlPlane()
	cp.Election.Lock.ReclaimOwn = func() bool { return false }
	start(t, cp.Run)
	eventually(t, "waiting for its own lease", func() bool { return h4.reporter.State().Phase == state.PhaseWaitingInitLock })
	if st := h4.reporter.State(); st.InitLockHolder != testInstanceID {
		t.Errorf("initLockHolder %q", st.InitLockHolder)
	}
}

// A node initialized before the election existed (no marker in S3) writes
// the marker at start; a foreign marker on an initialized node blocks it.
func TestInitializedNodeRecordsTheMarkerOrIsBlockedByAForeignOne(t *testing.T) {
	h, clk, idle := initializedHarness(t)
	h.s3.Delete(t, lease.MarkerKey("demo")) // as before the election existed
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("published")
	_ = stop()
	assertMarkerOf(t, h, testInstanceID)
	if n := len(h.kubeadm.CallsOf("init")); n != 1 {
		t.Errorf("init ran %d times", n)
	}

	// Another instance's marker: two clusters for one name.
	h.s3.Delete(t, lease.MarkerKey("demo"))
	foreign := &lease.Marker{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.MarkerKey("demo"), Cluster: "demo"}
	hash, _ := kubeadm.CACertHash(h.kubeadm.CACert())
	if err := foreign.Create(context.Background(), &lease.Initialized{APIVersion: lease.APIVersion, Kind: lease.MarkerKind,
		Cluster: "demo", InitializedBy: "i-0000000000000bad", InitializedAt: clk.Now(), Endpoint: "10.0.9.9:6443",
		CACertHashes: []string{hash}, Generation: 1}); err != nil {
		t.Fatal(err)
	}
	h3 := h.restarted(t)
	puts := h.s3.Counts.Snapshot().Puts
	stop = start(t, h3.controlPlane().Run)
	idle("blocked")
	clk.Step(BlockedRecheck)
	idle("still blocked")
	_ = stop()
	if st := h3.reporter.State(); st.Phase != state.PhaseBlocked || !strings.Contains(st.Message, "two clusters for one name") ||
		!strings.Contains(st.Message, "i-0000000000000bad") {
		t.Errorf("phase %s message %q", st.Phase, st.Message)
	}
	if _, n := h3.notifier.snapshot(); n != 0 || h.s3.Counts.Snapshot().Puts != puts {
		t.Error("a blocked node published")
	}
	if resets := h.kubeadm.CallsOf("reset"); len(resets) != 0 {
		t.Errorf("reset of a cluster that published join info: %q", resets)
	}
}

// A crash after init finished and before the marker was written, while
// another node's marker won meanwhile: the restarted node never published,
// so its cluster is a lost init; it is undone and the node waits to join.
func TestUnrecordedInitLosingToAnotherMarkerIsUndone(t *testing.T) {
	h, _, idle := newFakeClockHarness(t)
	crashed := crashAt(t, h.controlPlane(), stepAfterInit)
	<-crashed
	hash, _ := kubeadm.CACertHash(h.kubeadm.CACert())
	other := &lease.Marker{Client: h.s3.Client, Bucket: h.cfg.Bucket, Key: lease.MarkerKey("demo"), Cluster: "demo"}
	if err := other.Create(context.Background(), &lease.Initialized{APIVersion: lease.APIVersion, Kind: lease.MarkerKind,
		Cluster: "demo", InitializedBy: "i-00000000000000b2", InitializedAt: t0, Endpoint: "10.0.1.11:6443",
		CACertHashes: []string{hash}, Generation: 2}); err != nil {
		t.Fatal(err)
	}
	h2 := h.restarted(t)
	stop := start(t, h2.controlPlane().Run)
	idle("waiting to join")
	_ = stop()
	st := h2.reporter.State()
	if st.Phase != state.PhaseWaitingToJoin || st.InitializedBy != "i-00000000000000b2" || !st.InitializedAt.IsZero() {
		t.Errorf("phase %s initializedBy %q initializedAt %s", st.Phase, st.InitializedBy, st.InitializedAt)
	}
	if resets := h.kubeadm.CallsOf("reset"); len(resets) != 1 {
		t.Errorf("reset calls %q, want one", resets)
	}
	if _, err := h.store.Fetch(context.Background(), ""); err == nil {
		t.Error("join info published for a lost init")
	}
}

// The agent lock admits one agent process per state directory.
func TestAgentLockIsExclusive(t *testing.T) {
	dir := t.TempDir()
	first, err := LockAgent(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Held() {
		t.Error("Held = false right after LockAgent")
	}
	if _, err := LockAgent(dir); !errors.Is(err, ErrAnotherAgent) || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("second lock: %v, want ErrAnotherAgent naming the pid", err)
	}
	if err := first.Close(); err != nil || first.Held() {
		t.Fatalf("close: %v, held %v", err, first.Held())
	}
	again, err := LockAgent(dir)
	if err != nil {
		t.Fatalf("after close: %v", err)
	}
	_ = again.Close()
	if fi, err := os.Stat(filepath.Join(dir, AgentLockFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.lock: %v %v", fi, err)
	}
}

func TestInstanceIDFromProviderID(t *testing.T) {
	for in, want := range map[string]string{
		"aws:///eu-west-1a/i-0123456789abcdef0": "i-0123456789abcdef0",
		"aws:///eu-west-1a/":                    "",
		"":                                      "",
		"gce://p/z/i-0123456789abcdef0":         "",
		"aws:///eu-west-1a/i-XYZ":               "",
	} {
		if got := InstanceIDFromProviderID(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// A control plane without an instance ID cannot take part in the election:
// it exits (systemd restarts it, and it asks IMDS again) and never inits.
func TestControlPlaneWithoutInstanceIDDoesNotInit(t *testing.T) {
	h, _, _ := newFakeClockHarness(t)
	cp := h.controlPlane()
	cp.Election.Lock.Holder = ""
	err := cp.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "instance ID is unknown") {
		t.Fatalf("Run = %v", err)
	}
	if calls := h.kubeadm.Calls(); len(calls) != 0 {
		t.Errorf("kubeadm calls %q", calls)
	}
}
