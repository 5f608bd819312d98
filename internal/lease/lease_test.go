package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/testutil"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

const bucket = "demo-bootstrap"

// env is a fake S3 whose Last-Modified and Date come from the fake clock s3clock.
type env struct {
	t       *testing.T
	s3clock *clocktesting.FakeClock
	fake    *testutil.FakeS3
	key     string
}

func newEnv(t *testing.T) *env {
	fc := clocktesting.NewFakeClock(t0)
	return &env{t: t, s3clock: fc, fake: testutil.NewFakeS3(t, bucket, testutil.WithS3Clock(fc)), key: LockKey("demo", InitLock)}
}

func holder(n int) string { return fmt.Sprintf("i-%017x", n) }

// contender is one node: its Lock, its clock, its S3 client (which a test
// may take down) and the times its renewal loop goes to sleep until.
type contender struct {
	lock   *Lock
	clock  *clocktesting.FakeClock
	client *flakyS3
	sleeps chan time.Time
}

// node makes a contender on the S3 clock (one clock for all).
func (e *env) node(n int, alive HolderAliveFunc) *contender {
	return e.nodeWithClock(n, alive, e.s3clock)
}

func (e *env) nodeWithClock(n int, alive HolderAliveFunc, clk *clocktesting.FakeClock) *contender {
	c := &contender{clock: clk, client: &flakyS3{S3API: e.fake.Client}, sleeps: make(chan time.Time, 64)}
	c.lock = &Lock{Client: c.client, Bucket: bucket, Key: e.key, Holder: holder(n), Clock: clk, HolderAlive: alive,
		sleepHook: func(until time.Time) {
			select {
			case c.sleeps <- until:
			default:
			}
		}}
	return c
}

// nextSleep is the time the lease's loop sleeps until next.
func (c *contender) nextSleep(t *testing.T) time.Time {
	t.Helper()
	select {
	case until := <-c.sleeps:
		return until
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the renewal loop did not go to sleep", c.lock.Holder)
		return time.Time{}
	}
}

// runUntilDone moves the clock to each time the loop sleeps until, until the
// held context ends; at most limit wake-ups.
func (c *contender) runUntilDone(t *testing.T, held context.Context, limit int) {
	t.Helper()
	for range limit {
		select {
		case until := <-c.sleeps:
			c.clock.SetTime(until)
		case <-held.Done():
			return
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the renewal loop neither slept nor ended", c.lock.Holder)
		}
	}
	t.Fatalf("%s: the lease was still held after %d wake-ups", c.lock.Holder, limit)
}

// flakyS3 fails PUTs (and optionally GETs) while down, or blocks PUTs until
// their context ends while hung.
type flakyS3 struct {
	S3API
	down, hung atomic.Bool
	// slow makes a PUT answer 300 ms after S3 applied it.
	slow atomic.Bool
	puts atomic.Int64
}

var errOutage = errors.New("dial tcp 127.0.0.1:443: connect: connection refused")

func (f *flakyS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	f.puts.Add(1)
	if f.hung.Load() {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.down.Load() {
		return nil, errOutage
	}
	if f.slow.Load() {
		out, err := f.S3API.PutObject(ctx, in, opts...)
		time.Sleep(300 * time.Millisecond)
		return out, err
	}
	return f.S3API.PutObject(ctx, in, opts...)
}

func alwaysAlive(context.Context, string) (bool, error) { return true, nil }
func neverAlive(context.Context, string) (bool, error)  { return false, nil }

func mustAcquire(t *testing.T, c *contender, ctx context.Context) *Lease {
	t.Helper()
	ls, err := c.lock.TryAcquire(ctx)
	if err != nil {
		t.Fatalf("%s: acquire: %v", c.lock.Holder, err)
	}
	return ls
}

func (e *env) inspect() Status {
	e.t.Helper()
	st, err := (&Lock{Client: e.fake.Client, Bucket: bucket, Key: e.key, Holder: holder(999)}).Inspect(context.Background())
	if err != nil {
		e.t.Fatalf("inspect: %v", err)
	}
	return st
}

func heldError(t *testing.T, err error) *HeldError {
	t.Helper()
	var he *HeldError
	if !errors.As(err, &he) || !errors.Is(err, ErrHeld) {
		t.Fatalf("err = %v, want a *HeldError", err)
	}
	return he
}

func TestAcquireRenewRelease(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.node(1, neverAlive), e.node(2, neverAlive)
	ls := mustAcquire(t, a, ctx)
	if ls.Generation() != 1 || ls.Holder() != holder(1) || !ls.Deadline().Equal(t0.Add(270*time.Second)) {
		t.Fatalf("lease generation %d holder %s deadline %s", ls.Generation(), ls.Holder(), ls.Deadline())
	}
	st := e.inspect()
	if !st.Held || st.Holder != holder(1) || st.Generation != 1 || !st.AgeKnown || st.Age != 0 || st.LeaseDuration != 5*time.Minute {
		t.Fatalf("status %+v", st)
	}
	firstETag := st.ETag
	// Ten renewals, 30 s apart: 5 minutes pass, the lease never runs out.
	for n := 1; n <= 10; n++ {
		until := a.nextSleep(t)
		if want := t0.Add(time.Duration(n) * 30 * time.Second); !until.Equal(want) {
			t.Fatalf("renewal %d planned for %s, want %s", n, until, want)
		}
		a.clock.SetTime(until)
		// The renewal shows in S3: age 0 again.
		waitFor(t, "renewal", func() bool { return ls.renewalCount() == n })
		if st := e.inspect(); st.Age != 0 || st.Holder != holder(1) || st.Generation != 1 {
			t.Fatalf("after renewal %d: %v", n, st)
		}
	}
	if st := e.inspect(); st.ETag == firstETag {
		t.Errorf("renewals kept the ETag %s: every write must have its own", st.ETag)
	}
	if err := ls.Check(); err != nil {
		t.Fatalf("held lease: Check = %v", err)
	}
	// Someone else sees who holds it.
	_, err := b.lock.TryAcquire(ctx)
	if he := heldError(t, err); he.Status.Holder != holder(1) || he.Status.Expired || !strings.Contains(err.Error(), "lease has 5m0s left") {
		t.Errorf("contender sees %v", err)
	}
	if err := ls.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if !errors.Is(context.Cause(ls.Context()), ErrReleased) || !errors.Is(ls.Check(), ErrReleased) {
		t.Errorf("after release: cause %v", context.Cause(ls.Context()))
	}
	if st := e.inspect(); st.Held {
		t.Errorf("after release: %v", st)
	}
	lb := mustAcquire(t, b, ctx)
	if lb.Generation() != 1 {
		t.Errorf("new lock generation %d", lb.Generation())
	}
	// A second release of the old lease deletes nothing.
	if err := ls.Release(ctx); !errors.Is(err, ErrNotHolder) {
		t.Errorf("second release: %v, want ErrNotHolder", err)
	}
	if st := e.inspect(); st.Holder != holder(2) {
		t.Errorf("after the stale release: %v", st)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func (ls *Lease) renewalCount() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.renewals
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSixteenContendersOneHolder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	nodes := make([]*contender, 16)
	for n := range nodes {
		nodes[n] = e.node(n+1, neverAlive)
	}
	for round := range 10 {
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			leases = make([]*Lease, len(nodes))
			errs   = make([]error, len(nodes))
		)
		for n, c := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				leases[n], errs[n] = c.lock.TryAcquire(ctx)
			}()
		}
		close(start)
		wg.Wait()
		var winner *Lease
		for n := range nodes {
			if errs[n] == nil {
				if winner != nil {
					t.Fatalf("round %d: two holders, %s and %s", round, winner.Holder(), leases[n].Holder())
				}
				winner = leases[n]
			}
		}
		if winner == nil {
			t.Fatalf("round %d: nobody holds the lock: %v", round, errs)
		}
		for n := range nodes {
			if errs[n] != nil {
				if he := heldError(t, errs[n]); he.Status.Holder != winner.Holder() {
					t.Errorf("round %d: %s sees holder %s, the winner is %s", round, holder(n+1), he.Status.Holder, winner.Holder())
				}
			}
		}
		if st := e.inspect(); st.Holder != winner.Holder() {
			t.Fatalf("round %d: S3 says %v, the winner is %s", round, st, winner.Holder())
		}
		if err := winner.Release(ctx); err != nil {
			t.Fatalf("round %d: release: %v", round, err)
		}
	}
}

func TestS3OutageFencesHolderBeforeTheLeaseCanBeStolen(t *testing.T) {
	for _, mode := range []string{"failing", "hanging"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			a, b := e.node(1, alwaysAlive), e.node(2, neverAlive)
			a.lock.CallTimeout = 2 * time.Second // bounds the hung renewal Release waits for
			var failures atomic.Int64
			a.lock.OnRenewFailure = func(error) { failures.Add(1) }
			ls := mustAcquire(t, a, ctx)
			if mode == "failing" {
				a.client.down.Store(true)
				a.runUntilDone(t, ls.Context(), 100)
				if failures.Load() < 20 {
					t.Errorf("%d failed renewals reported, want one every 10 s", failures.Load())
				}
			} else {
				a.client.hung.Store(true)
				a.clock.SetTime(a.nextSleep(t)) // the first renewal starts and hangs
				waitFor(t, "the renewal's deadline timer", a.clock.HasWaiters)
				a.clock.SetTime(t0.Add(270 * time.Second))
				select {
				case <-ls.Context().Done():
				case <-time.After(10 * time.Second):
					t.Fatal("a hung renewal kept the lease past its deadline")
				}
			}
			fencedAt := a.clock.Now()
			if !errors.Is(context.Cause(ls.Context()), ErrExpired) {
				t.Fatalf("cause %v, want ErrExpired", context.Cause(ls.Context()))
			}
			if limit := t0.Add(300 * time.Second); !fencedAt.Before(limit) {
				t.Fatalf("fenced at %s, not before the lease could be stolen at %s", fencedAt, limit)
			}
			// At that moment nobody can take the lock yet, by S3's clock.
			_, err := b.lock.TryAcquire(ctx)
			if he := heldError(t, err); he.Status.Expired || he.Status.Holder != holder(1) {
				t.Errorf("at the fence: %v", err)
			}
			// After the lease, a node whose EC2 check says "gone" takes it over.
			e.s3clock.SetTime(t0.Add(301 * time.Second))
			lb := mustAcquire(t, b, ctx)
			if lb.Generation() != 2 {
				t.Errorf("taken over with generation %d, want 2", lb.Generation())
			}
			// The fenced holder's release deletes nothing.
			a.client.down.Store(false)
			a.client.hung.Store(false)
			if err := ls.Release(ctx); !errors.Is(err, ErrNotHolder) {
				t.Errorf("fenced holder's release: %v, want ErrNotHolder", err)
			}
			if st := e.inspect(); st.Holder != holder(2) || st.Generation != 2 {
				t.Errorf("after the stale release: %v", st)
			}
		})
	}
}

func TestOutageWithoutTakeoverIsReleasedAfterwards(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.node(1, alwaysAlive)
	ls := mustAcquire(t, a, ctx)
	a.client.down.Store(true)
	a.runUntilDone(t, ls.Context(), 100)
	a.client.down.Store(false)
	if err := ls.Release(ctx); err != nil {
		t.Fatalf("release after an outage nobody used: %v", err)
	}
	if st := e.inspect(); st.Held {
		t.Errorf("after release: %v", st)
	}
}

func TestTakeoverRules(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.node(1, alwaysAlive)
	// a crashes: its renewals stop, the lock stays.
	actx, crash := context.WithCancel(ctx)
	ls := mustAcquire(t, a, actx)
	crash()
	<-ls.done
	var checked []string
	var mu sync.Mutex
	record := func(alive bool, err error) HolderAliveFunc {
		return func(_ context.Context, h string) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			checked = append(checked, h)
			return alive, err
		}
	}
	dead, running, unsure, unchecked := e.node(2, record(false, nil)), e.node(3, record(true, nil)), e.node(4, record(false, errors.New("DescribeInstances: throttled"))), e.node(5, nil)

	// Not expired (299 s, and exactly 300 s): nobody takes it, EC2 is not asked.
	for _, at := range []time.Duration{299 * time.Second, 300 * time.Second} {
		e.s3clock.SetTime(t0.Add(at))
		_, err := dead.lock.TryAcquire(ctx)
		if he := heldError(t, err); he.Status.Expired || !strings.Contains(err.Error(), "left") {
			t.Errorf("at %s: %v", at, err)
		}
	}
	if len(checked) != 0 {
		t.Errorf("EC2 asked about %v before the lease expired", checked)
	}
	e.s3clock.SetTime(t0.Add(301 * time.Second))
	// Expired, but the holder's instance runs: refused.
	_, err := running.lock.TryAcquire(ctx)
	if he := heldError(t, err); !he.Status.Expired || !strings.Contains(err.Error(), "still runs") {
		t.Errorf("holder alive: %v", err)
	}
	// Expired, EC2 cannot tell: refused, and not as "held" but as an error.
	_, err = unsure.lock.TryAcquire(ctx)
	if err == nil || errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "throttled") {
		t.Errorf("EC2 error: %v", err)
	}
	// Expired, no EC2 check configured: refused.
	_, err = unchecked.lock.TryAcquire(ctx)
	if he := heldError(t, err); !strings.Contains(he.Why, "no way to check") {
		t.Errorf("no HolderAlive: %v", err)
	}
	if st := e.inspect(); st.Holder != holder(1) || st.Generation != 1 {
		t.Fatalf("refused takeovers changed the lock: %v", st)
	}
	// Expired and the holder is gone: taken over, atomically, generation 2.
	lb := mustAcquire(t, dead, ctx)
	if lb.Generation() != 2 {
		t.Errorf("generation %d", lb.Generation())
	}
	for _, h := range checked {
		if h != holder(1) {
			t.Errorf("EC2 asked about %s, the holder is %s", h, holder(1))
		}
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestOwnExpiredLeaseIsReclaimedEvenWhileTheInstanceRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actx, crash := context.WithCancel(ctx)
	ls := mustAcquire(t, e.node(1, alwaysAlive), actx)
	crash() // the agent died; it restarts on the same instance
	<-ls.done
	again := e.node(1, alwaysAlive)
	e.s3clock.SetTime(t0.Add(200 * time.Second))
	if _, err := again.lock.TryAcquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("own lease before it expired: %v, want ErrHeld (another agent of this instance might still run)", err)
	}
	e.s3clock.SetTime(t0.Add(301 * time.Second))
	l2 := mustAcquire(t, again, ctx)
	if l2.Generation() != 2 {
		t.Errorf("generation %d", l2.Generation())
	}
	_ = l2.Release(ctx)
}

func TestStaleHolderResumingIsFencedByItsNextRenewal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// a's clock stands still (a paused VM), S3's goes on.
	aclock := clocktesting.NewFakeClock(t0)
	a := e.nodeWithClock(1, alwaysAlive, aclock)
	b := e.node(2, neverAlive)
	ls := mustAcquire(t, a, ctx)
	until := a.nextSleep(t)
	e.s3clock.SetTime(t0.Add(301 * time.Second))
	lb := mustAcquire(t, b, ctx)
	// a resumes: its own clock says a renewal is due, not that the lease ran out.
	aclock.SetTime(until)
	select {
	case <-ls.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stale holder was not fenced")
	}
	if cause := context.Cause(ls.Context()); !errors.Is(cause, ErrLost) {
		t.Fatalf("cause %v, want ErrLost", cause)
	}
	if err := ls.Check(); !errors.Is(err, ErrLost) {
		t.Errorf("Check = %v", err)
	}
	if err := ls.Release(ctx); !errors.Is(err, ErrNotHolder) {
		t.Errorf("stale release: %v", err)
	}
	if st := e.inspect(); st.Holder != holder(2) || st.Generation != 2 {
		t.Errorf("lock now %v", st)
	}
	_ = lb.Release(ctx)
}

// TestReleaseDuringARenewal: S3 applies a renewal whose answer is still on
// its way when Release is called; Release waits for it and deletes the
// object with the new ETag.
func TestReleaseDuringARenewal(t *testing.T) {
	e := newEnv(t)
	a := e.node(1, alwaysAlive)
	ls := mustAcquire(t, a, context.Background())
	a.client.slow.Store(true)
	before := a.client.puts.Load()
	a.clock.SetTime(a.nextSleep(t))
	waitFor(t, "the renewal to start", func() bool { return a.client.puts.Load() > before })
	if err := ls.Release(context.Background()); err != nil {
		t.Fatalf("release during a renewal: %v", err)
	}
	if st := e.inspect(); st.Held {
		t.Errorf("after release: %v", st)
	}
}

func TestCheckFencesAtOnceAfterTheDeadline(t *testing.T) {
	e := newEnv(t)
	a := e.node(1, alwaysAlive)
	ls := mustAcquire(t, a, context.Background())
	a.nextSleep(t)
	// A process stopped past its deadline looks before the loop ran.
	a.clock.SetTime(t0.Add(280 * time.Second))
	if err := ls.Check(); !errors.Is(err, ErrExpired) {
		t.Fatalf("Check after the deadline = %v, want ErrExpired", err)
	}
	if ls.Context().Err() == nil {
		t.Error("held context not cancelled")
	}
	_ = ls.Release(context.Background())
}

func TestAcquireWaitsAndHold(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.node(1, alwaysAlive)
	ls := mustAcquire(t, a, ctx)
	b := e.node(2, alwaysAlive)
	var waits atomic.Int64
	b.lock.OnWait = func(err error) {
		if waits.Add(1) == 3 {
			_ = ls.Release(ctx)
		}
	}
	// b's waits run on a fake clock that only b uses.
	b.lock.Clock = clocktesting.NewFakeClock(t0)
	go func() {
		for range 100 {
			if b.lock.Clock.(*clocktesting.FakeClock).HasWaiters() {
				b.lock.Clock.(*clocktesting.FakeClock).Step(30 * time.Second)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	held, release, err := b.lock.Hold(actx)
	if err != nil {
		t.Fatalf("hold: %v", err)
	}
	if waits.Load() != 3 {
		t.Errorf("%d waits, want 3", waits.Load())
	}
	if held.Err() != nil {
		t.Errorf("held context ended: %v", context.Cause(held))
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	// Acquire gives up with its context.
	lc := mustAcquire(t, e.node(3, alwaysAlive), ctx)
	dctx, dcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer dcancel()
	if _, err := e.node(4, alwaysAlive).lock.Acquire(dctx); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrHeld) {
		t.Errorf("cancelled Acquire: %v", err)
	}
	_ = lc.Release(ctx)
}

func TestInvalidLockObjectIsNeverOverwritten(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.fake.Put(t, e.key, []byte(`{"holder":"i-00000000000000001"}`))
	e.s3clock.SetTime(t0.Add(time.Hour))
	_, err := e.node(2, neverAlive).lock.TryAcquire(ctx)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "by hand") {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	out, err := e.fake.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(e.key)})
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
}

func TestParseRecord(t *testing.T) {
	valid := `{"apiVersion":"kubestrap.dev/v1alpha1","kind":"Lock","holder":"i-0123456789abcdef0","generation":3,"leaseSeconds":300,` +
		`"acquiredAt":"2026-11-26T03:00:00Z","renewedAt":"2026-11-26T03:01:00Z","nonce":"0123456789abcdef0123456789abcdef"}`
	r, err := ParseRecord("s3://b/k", []byte(valid))
	if err != nil || r.Holder != "i-0123456789abcdef0" || r.Generation != 3 || r.LeaseDuration() != 5*time.Minute {
		t.Fatalf("valid record: %+v, %v", r, err)
	}
	with := func(old, repl string) string { return strings.Replace(valid, old, repl, 1) }
	for name, body := range map[string]string{
		"unknown key":           with(`"kind"`, `"extra":1,"kind"`),
		"duplicate key":         with(`"generation":3`, `"generation":3,"generation":4`),
		"case-variant key":      with(`"holder"`, `"Holder"`),
		"case-variant dup":      with(`"generation":3`, `"generation":3,"Generation":4`),
		"trailing data":         valid + `{}`,
		"oversize":              valid + strings.Repeat(" ", MaxRecordSize),
		"holder not instance":   with(`i-0123456789abcdef0`, `node-1`),
		"holder with newline":   with(`i-0123456789abcdef0`, `i-0123456789abcdef0\n`),
		"generation 0":          with(`"generation":3`, `"generation":0`),
		"generation above 2^53": with(`"generation":3`, `"generation":9007199254740992`),
		"lease 0":               with(`"leaseSeconds":300`, `"leaseSeconds":0`),
		"lease two hours":       with(`"leaseSeconds":300`, `"leaseSeconds":7200`),
		"fractional lease":      with(`"leaseSeconds":300`, `"leaseSeconds":300.5`),
		"bad nonce":             with(`0123456789abcdef0123456789abcdef`, `xyz`),
		"wrong kind":            with(`"Lock"`, `"JoinInfo"`),
		"missing acquiredAt":    with(`"acquiredAt":"2026-11-26T03:00:00Z",`, ``),
		"not JSON":              `holder=i-0123456789abcdef0`,
		"empty":                 ``,
	} {
		if _, err := ParseRecord("s3://b/k", []byte(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: message with a raw newline: %q", name, err)
		}
	}
}

func TestLockSettingsAreChecked(t *testing.T) {
	e := newEnv(t)
	base := func() *Lock { return &Lock{Client: e.fake.Client, Bucket: bucket, Key: e.key, Holder: holder(1)} }
	for name, mut := range map[string]func(*Lock){
		"no client":            func(l *Lock) { l.Client = nil },
		"holder not an ID":     func(l *Lock) { l.Holder = "ip-10-0-1-10" },
		"lease fraction":       func(l *Lock) { l.LeaseDuration = 1500 * time.Millisecond },
		"lease too short":      func(l *Lock) { l.LeaseDuration = 2 * time.Second },
		"lease too long":       func(l *Lock) { l.LeaseDuration = 2 * time.Hour },
		"renew past deadline":  func(l *Lock) { l.RenewInterval = 280 * time.Second },
		"negative margin":      func(l *Lock) { l.Margin = -time.Second },
		"margin eats renewals": func(l *Lock) { l.Margin = 290 * time.Second },
	} {
		l := base()
		mut(l)
		if _, err := l.TryAcquire(context.Background()); err == nil || errors.Is(err, ErrHeld) {
			t.Errorf("%s: err = %v, want a configuration error", name, err)
		}
	}
	if st, err := base().Inspect(context.Background()); err != nil || st.Held || st.String() != "not held" {
		t.Errorf("no lock: %v, %v", st, err)
	}
}

// A restarted agent that holds agent.lock (ReclaimOwn) takes its own
// unexpired lease over at once; without that knowledge it waits for the
// lease to expire; ReclaimOwn never reaches another instance's lease.
func TestOwnLeaseIsReclaimedAtOnceWhenNoOtherAgentRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	actx, crash := context.WithCancel(ctx)
	ls := mustAcquire(t, e.node(1, alwaysAlive), actx)
	crash() // the agent died inside its init; it restarts on the same instance
	<-ls.done
	e.s3clock.SetTime(t0.Add(10 * time.Second))

	unsure := e.node(1, alwaysAlive)
	unsure.lock.ReclaimOwn = func() bool { return false }
	if _, err := unsure.lock.TryAcquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("own lease, another agent process may run: %v, want ErrHeld", err)
	}
	other := e.node(2, neverAlive)
	other.lock.ReclaimOwn = func() bool { return true }
	if _, err := other.lock.TryAcquire(ctx); !errors.Is(err, ErrHeld) {
		t.Fatalf("another instance's unexpired lease: %v, want ErrHeld", err)
	}
	again := e.node(1, alwaysAlive)
	again.lock.ReclaimOwn = func() bool { return true }
	l2 := mustAcquire(t, again, ctx)
	if l2.Generation() != 2 {
		t.Errorf("generation %d, want 2 (a takeover)", l2.Generation())
	}
	if st := e.inspect(); st.Holder != holder(1) || st.Generation != 2 || st.Age != 0 {
		t.Errorf("lock now %v", st)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAttemptBudgetCoversEveryCall(t *testing.T) {
	l := &Lock{Client: newEnv(t).fake.Client, Bucket: bucket, Key: "demo/cp/init-lock.json", Holder: holder(1)}
	if got, want := l.AttemptBudget(), 12*DefaultCallTimeout+30*time.Second; got != want {
		t.Errorf("budget %s, want %s", got, want)
	}
	l.CallTimeout, l.RetryInterval = time.Second, 2*time.Second
	if got, want := l.AttemptBudget(), 14*time.Second; got != want {
		t.Errorf("budget %s, want %s", got, want)
	}
}
