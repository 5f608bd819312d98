package lease

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"k8s.io/utils/clock"
)

// HolderAliveFunc reports whether the EC2 instance holder still exists as a
// machine that may run: pending or running is alive; stopping, stopped,
// shutting-down, terminated or unknown to EC2 is not. An error means "cannot
// tell", and the lock is then not taken over.
type HolderAliveFunc func(ctx context.Context, holder string) (bool, error)

// DefaultLeaseDuration is the lease when Lock.LeaseDuration is zero.
const DefaultLeaseDuration = 5 * time.Minute

// Lock is one lock object and this node's identity. Its fields are read-only
// once it is in use; one Lock may serve any number of Acquire calls.
type Lock struct {
	Client S3API
	Bucket string
	// Key is the object, LockKey(cluster, name).
	Key string
	// Holder is this node's EC2 instance ID.
	Holder string
	// LeaseDuration is how long a claim lasts after its last write
	// (default DefaultLeaseDuration, whole seconds, MinLeaseDuration to
	// MaxLeaseDuration).
	LeaseDuration time.Duration
	// RenewInterval is the time between renewals (default LeaseDuration/10).
	RenewInterval time.Duration
	// Margin is how long before the lease would end that a holder that could
	// not renew gives it up (default LeaseDuration/10): it must cover the
	// difference between the rates of this machine's clock and S3's and the
	// whole seconds of S3's times.
	Margin time.Duration
	// RetryInterval is how long Acquire waits between attempts (default
	// RenewInterval; each wait is drawn from 75-100% of it).
	RetryInterval time.Duration
	// CallTimeout bounds each S3 call and each HolderAlive call (default
	// DefaultCallTimeout). A renewal is also cut off when the lease's own
	// deadline comes first.
	CallTimeout time.Duration
	// HolderAlive tells whether another holder's instance still runs. Without
	// it an expired lease of another instance is never taken over.
	HolderAlive HolderAliveFunc
	// ReclaimOwn, when set and true, says that no other process that could
	// hold this lock runs on this instance (the agent holds an exclusive
	// flock on <stateDir>/agent.lock for its whole life): a lock held in this
	// instance's name was then left by an earlier, dead run of this agent and
	// is taken over at once (If-Match on its ETag, generation+1), whatever
	// its lease's age. Without it, this instance's own lease is taken over
	// only once it expired.
	ReclaimOwn func() bool
	// Clock is this machine's clock (default the real one).
	Clock clock.Clock
	// KMSKeyID, when set, makes writes use SSE-KMS with this key.
	KMSKeyID string
	// OnWait, when set, is called by Acquire with each failed attempt's
	// error before it waits (a *HeldError while another node holds the lock).
	OnWait func(error)
	// OnRenewFailure, when set, is called with each failed renewal that does
	// not end the lease yet (S3 unreachable, 5xx, 409).
	OnRenewFailure func(error)

	// sleepHook, when set (tests), is called each time a lease's renewal loop
	// starts to wait, with the time it waits for.
	sleepHook func(until time.Time)
}

// settings are a Lock's values with defaults applied, checked.
type settings struct {
	lease, renew, margin, retry, renewRetry time.Duration
	clock                                   clock.Clock
}

func (l *Lock) settings() (settings, error) {
	s := settings{lease: l.LeaseDuration, renew: l.RenewInterval, margin: l.Margin, retry: l.RetryInterval, clock: l.Clock}
	if s.lease == 0 {
		s.lease = DefaultLeaseDuration
	}
	if s.renew == 0 {
		s.renew = s.lease / 10
	}
	if s.margin == 0 {
		s.margin = s.lease / 10
	}
	if s.retry == 0 {
		s.retry = s.renew
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	s.renewRetry = s.renew / 3
	switch {
	case l.Client == nil || l.Bucket == "" || l.Key == "":
		return s, errors.New("lock: Client, Bucket and Key are required")
	case !ValidHolder(l.Holder):
		return s, fmt.Errorf("lock %s: holder %s is not an EC2 instance ID; pass this instance's ID", l.url(), quote(l.Holder))
	case s.lease%time.Second != 0 || s.lease < MinLeaseDuration || s.lease > MaxLeaseDuration:
		return s, fmt.Errorf("lock %s: lease duration %s must be whole seconds from %s to %s", l.url(), s.lease, MinLeaseDuration, MaxLeaseDuration)
	case s.margin < 0 || s.renew <= 0 || s.retry <= 0:
		return s, fmt.Errorf("lock %s: renew interval %s and retry interval %s must be positive, margin %s not negative", l.url(), s.renew, s.retry, s.margin)
	case s.renew >= s.lease-s.margin:
		return s, fmt.Errorf("lock %s: renew interval %s must be shorter than the lease %s minus the margin %s, or the lease ends before its first renewal", l.url(), s.renew, s.lease, s.margin)
	}
	return s, nil
}

func (l *Lock) url() string { return "s3://" + l.Bucket + "/" + l.Key }

func (l *Lock) object() *object {
	return &object{client: l.Client, bucket: l.Bucket, key: l.Key, kmsKeyID: l.KMSKeyID, callTimeout: l.CallTimeout}
}

// Status is what a lock object says, for `kubestrap status` and for messages.
type Status struct {
	// Held is false when there is no lock object; the other fields are then zero.
	Held       bool
	Holder     string
	Generation int64
	// LeaseDuration is the holder's lease.
	LeaseDuration time.Duration
	// Age is how long ago the holder last wrote the object, by S3's clock;
	// AgeKnown is false when S3 did not give both Last-Modified and Date.
	Age      time.Duration
	AgeKnown bool
	// Expired is true when Age is known and longer than LeaseDuration.
	Expired    bool
	AcquiredAt time.Time
	ETag       string
}

func (s Status) String() string {
	if !s.Held {
		return "not held"
	}
	age := "unknown"
	if s.AgeKnown {
		age = s.Age.Round(time.Second).String() + " ago"
	}
	state := "lease running"
	if s.Expired {
		state = "lease expired"
	}
	return fmt.Sprintf("held by %s (generation %d, last renewed %s by S3's clock, lease %s, %s)", s.Holder, s.Generation, age, s.LeaseDuration, state)
}

func statusOf(r *Record, f *fetched) Status {
	s := Status{Held: true, Holder: r.Holder, Generation: r.Generation, LeaseDuration: r.LeaseDuration(), AcquiredAt: r.AcquiredAt, ETag: f.etag}
	s.Age, s.AgeKnown = f.age()
	s.Expired = s.AgeKnown && s.Age > s.LeaseDuration
	return s
}

// ErrHeld means another node holds the lock; the error is a *HeldError.
var ErrHeld = errors.New("lock is held by another node")

// HeldError says who holds the lock and why it was not taken over.
type HeldError struct {
	URL    string
	Status Status
	// Why the lock was not taken over.
	Why string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lock %s is %s: %s", e.URL, e.Status, e.Why)
}

// Unwrap makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Inspect reads the lock object without changing it.
func (l *Lock) Inspect(ctx context.Context) (Status, error) {
	f, err := l.object().get(ctx, MaxRecordSize)
	if errors.Is(err, errNoObject) {
		return Status{}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("inspect lock: %w", err)
	}
	r, err := ParseRecord(l.url(), f.body)
	if err != nil {
		return Status{}, err
	}
	return statusOf(r, f), nil
}

// maxAttempts bounds TryAcquire's create-read-takeover rounds when other
// writers keep changing the object.
const maxAttempts = 3

// TryAcquire makes one attempt to take the lock: create it, or take it over
// when the lease expired and its holder is not alive. It returns the held
// lease, a *HeldError (errors.Is ErrHeld) when another node holds it, an
// *InvalidError (ErrInvalid) when the object is not a lock, or another error
// (S3, HolderAlive). The lease's renewals stop when ctx ends.
func (l *Lock) TryAcquire(ctx context.Context) (*Lease, error) {
	s, err := l.settings()
	if err != nil {
		return nil, err
	}
	return l.tryAcquire(ctx, s)
}

func (l *Lock) tryAcquire(ctx context.Context, s settings) (*Lease, error) {
	obj := l.object()
	var held *HeldError
	for range maxAttempts {
		sentAt := s.clock.Now()
		rec, err := l.newRecord(1, sentAt, s)
		if err != nil {
			return nil, err
		}
		etag, err := obj.put(ctx, rec, writeCond{})
		if err == nil {
			return l.start(ctx, s, rec, etag, sentAt), nil
		}
		if !errors.Is(err, errPrecondition) && !errors.Is(err, errConcurrent) {
			return nil, fmt.Errorf("acquire lock: %w", err)
		}
		f, err := obj.get(ctx, MaxRecordSize)
		if errors.Is(err, errNoObject) {
			continue // released meanwhile: create again
		}
		if err != nil {
			return nil, fmt.Errorf("acquire lock: it exists; %w", err)
		}
		cur, err := ParseRecord(l.url(), f.body)
		if err != nil {
			return nil, err
		}
		st := statusOf(cur, f)
		ok, why, err := l.mayTakeOver(ctx, s, st)
		if err != nil {
			return nil, err
		}
		held = &HeldError{URL: l.url(), Status: st, Why: why}
		if !ok {
			return nil, held
		}
		if cur.Generation >= MaxGeneration {
			return nil, fmt.Errorf("lock %s: generation %d has no successor; delete the object by hand once no node holds it", l.url(), cur.Generation)
		}
		sentAt = s.clock.Now()
		next, err := l.newRecord(cur.Generation+1, sentAt, s)
		if err != nil {
			return nil, err
		}
		etag, err = obj.put(ctx, next, writeCond{ifMatch: f.etag})
		if err == nil {
			return l.start(ctx, s, next, etag, sentAt), nil
		}
		if !errors.Is(err, errPrecondition) && !errors.Is(err, errConcurrent) && !errors.Is(err, errNoObject) {
			return nil, fmt.Errorf("take over lock from %s: %w", cur.Holder, err)
		}
		held.Why = "the lock changed while it was being taken over"
		// Someone renewed, took over or released meanwhile: look again.
	}
	if held != nil {
		return nil, held
	}
	return nil, fmt.Errorf("acquire lock %s: it was created and removed %d times while this node tried; try again", l.url(), maxAttempts)
}

// mayTakeOver decides whether the lock described by st may be taken over.
func (l *Lock) mayTakeOver(ctx context.Context, s settings, st Status) (bool, string, error) {
	switch {
	case st.Holder == l.Holder && l.ReclaimOwn != nil && l.ReclaimOwn():
		// No other agent process runs on this instance: the lease was left
		// by an earlier run of this agent, which cannot renew it any more.
		return true, "", nil
	case !st.AgeKnown:
		return false, "S3 did not give Last-Modified and Date, so the lease's age is unknown and it is never taken over", nil
	case !st.Expired:
		return false, fmt.Sprintf("its lease has %s left", (st.LeaseDuration - st.Age).Round(time.Second)), nil
	case st.Holder == l.Holder:
		// Only one agent runs on an instance: an expired lease in this
		// instance's name was left by an earlier run of this agent.
		return true, "", nil
	case l.HolderAlive == nil:
		return false, "its lease expired, but this node has no way to check whether the holder still runs, so it does not take it over", nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.object().timeout())
	defer cancel()
	alive, err := l.HolderAlive(ctx, st.Holder)
	if err != nil {
		return false, "", fmt.Errorf("lock %s: its lease expired, but whether holder %s still runs is unknown, so it is not taken over: %w", l.url(), st.Holder, err)
	}
	if alive {
		return false, fmt.Sprintf("its lease expired, but instance %s still runs; a lock is never taken from a running instance (stop or terminate it, or delete the object by hand)", st.Holder), nil
	}
	return true, "", nil
}

func (l *Lock) newRecord(gen int64, now time.Time, s settings) (*Record, error) {
	nonce, err := newNonce()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", l.url(), err)
	}
	return &Record{APIVersion: APIVersion, Kind: LockKind, Holder: l.Holder, Generation: gen,
		LeaseSeconds: int64(s.lease / time.Second), AcquiredAt: now.UTC(), RenewedAt: now.UTC(), Nonce: nonce}, nil
}

// Acquire waits until it holds the lock or ctx ends. Between attempts it
// calls OnWait with the attempt's error and waits RetryInterval (75-100% of
// it). Only a bad Lock configuration ends it early.
func (l *Lock) Acquire(ctx context.Context) (*Lease, error) {
	s, err := l.settings()
	if err != nil {
		return nil, err
	}
	for {
		lease, err := l.tryAcquire(ctx, s)
		if err == nil {
			return lease, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("acquire lock %s: %w (last attempt: %w)", l.url(), ctx.Err(), err)
		}
		if l.OnWait != nil {
			l.OnWait(err)
		}
		wait := s.retry - time.Duration(rand.Int64N(int64(s.retry)/4+1))
		t := s.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("acquire lock %s: %w (last attempt: %w)", l.url(), ctx.Err(), err)
		case <-t.C():
		}
	}
}

// AttemptBudget is the longest one Acquire attempt and the wait after it can
// take: every S3 and HolderAlive call of TryAcquire's rounds at its
// CallTimeout, plus RetryInterval. Callers that report progress to a
// watchdog promise it before each attempt (in OnWait).
func (l *Lock) AttemptBudget() time.Duration {
	s, err := l.settings()
	if err != nil {
		s = settings{retry: DefaultLeaseDuration / 10}
	}
	call := l.CallTimeout
	if call <= 0 {
		call = DefaultCallTimeout
	}
	// Each round: create, read, HolderAlive, take over.
	return time.Duration(maxAttempts*4)*call + s.retry
}

// Hold is Acquire for callers that need only the held context and a release:
// held is cancelled the moment the lease is lost or could not be renewed in
// time (context.Cause says which), and release gives the lock up.
func (l *Lock) Hold(ctx context.Context) (held context.Context, release func(context.Context) error, err error) {
	lease, err := l.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	return lease.Context(), lease.Release, nil
}
