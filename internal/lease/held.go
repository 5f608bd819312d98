package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Causes of a held context's end (context.Cause), and Release's refusal.
var (
	// ErrLost: a renewal found the lock taken over or removed.
	ErrLost = errors.New("lease lost: another node took the lock over or it was removed")
	// ErrExpired: the holder could not renew before its own deadline, after
	// which another node may take the lock; it must stop acting as holder.
	ErrExpired = errors.New("lease could not be renewed in time and must be assumed lost")
	// ErrReleased: the holder released the lock.
	ErrReleased = errors.New("lease released")
	// ErrNotHolder: Release found the lock held by another node or gone;
	// nothing was deleted.
	ErrNotHolder = errors.New("this node does not hold the lock")
)

// Lease is a held lock. Its context ends the moment the lease is lost, could
// not be renewed in time, is released, or the context Acquire was given ends
// (then renewals stop and the lock stays in S3 until it expires or Release).
// Work done as the holder must run under Context() and, before each step that
// must not happen twice, call Check.
type Lease struct {
	lock *Lock
	s    settings
	obj  *object

	ctx    context.Context // the held context
	cancel context.CancelCauseFunc
	// loop is the renewal loop's own context: Release ends it to stop the
	// loop (an in-flight renewal is waited for, not cut off).
	loop     context.Context
	stopLoop context.CancelFunc
	done     chan struct{}

	mu       sync.Mutex
	rec      Record
	etag     string
	sentAt   time.Time // when our last successful write was sent (our clock)
	deadline time.Time // sentAt + lease - margin
	renewals int
}

func (l *Lock) start(parent context.Context, s settings, rec *Record, etag string, sentAt time.Time) *Lease {
	held, cancel := context.WithCancelCause(parent)
	loop, stop := context.WithCancel(context.WithoutCancel(parent))
	ls := &Lease{lock: l, s: s, obj: l.object(), ctx: held, cancel: cancel, loop: loop, stopLoop: stop, done: make(chan struct{}),
		rec: *rec, etag: etag, sentAt: sentAt, deadline: sentAt.Add(s.lease - s.margin)}
	go ls.run()
	return ls
}

// Context is the held context.
func (ls *Lease) Context() context.Context { return ls.ctx }

// Holder is this node's instance ID.
func (ls *Lease) Holder() string { return ls.rec.Holder }

// Generation is the lock's generation under this lease.
func (ls *Lease) Generation() int64 {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.rec.Generation
}

// Deadline is when this holder gives the lease up unless a renewal succeeds
// first (this machine's clock).
func (ls *Lease) Deadline() time.Time {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.deadline
}

// Check returns nil while the lease is held, else why not (the held context's
// cause). It also looks at the clock itself, so a process that was stopped
// past its deadline (SIGSTOP, a suspended VM) sees that at once, before the
// renewal loop has run again.
func (ls *Lease) Check() error {
	if err := context.Cause(ls.ctx); err != nil {
		return err
	}
	if now := ls.s.clock.Now(); !now.Before(ls.Deadline()) {
		err := ls.expired(now)
		ls.cancel(err)
		return context.Cause(ls.ctx)
	}
	return nil
}

func (ls *Lease) expired(now time.Time) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return fmt.Errorf("lock %s: %w: last renewal sent %s ago, the lease is %s with a margin of %s",
		ls.lock.url(), ErrExpired, now.Sub(ls.sentAt).Round(time.Millisecond), ls.s.lease, ls.s.margin)
}

// Release stops the renewals, ends the held context and deletes the lock
// object if it is still the one this holder wrote last (DELETE If-Match).
// When another node holds the lock now, or it is gone, nothing is deleted and
// the error wraps ErrNotHolder. A lease that was lost for an S3 outage
// (ErrExpired) is still released when nobody took it over meanwhile.
func (ls *Lease) Release(ctx context.Context) error {
	ls.stopLoop()
	<-ls.done // bounded: an in-flight renewal ends within CallTimeout
	ls.cancel(fmt.Errorf("lock %s: %w", ls.lock.url(), ErrReleased))
	ls.mu.Lock()
	etag := ls.etag
	ls.mu.Unlock()
	err := ls.obj.deleteIfMatch(ctx, etag)
	if errors.Is(err, errPrecondition) || errors.Is(err, errNoObject) {
		return fmt.Errorf("release lock %s: %w: another node holds it now or it was removed, so nothing was deleted (%w)", ls.lock.url(), ErrNotHolder, err)
	}
	if err != nil {
		return fmt.Errorf("release lock: %w; it expires by itself after %s", err, ls.s.lease)
	}
	return nil
}

// run renews the lease until it is lost, released or its parent ends.
func (ls *Lease) run() {
	defer close(ls.done)
	ls.mu.Lock()
	next := ls.sentAt.Add(ls.s.renew)
	ls.mu.Unlock()
	for {
		deadline := ls.Deadline()
		now := ls.s.clock.Now()
		if !now.Before(deadline) {
			ls.cancel(ls.expired(now))
			return
		}
		wake := next
		if deadline.Before(wake) {
			wake = deadline
		}
		if !ls.sleepUntil(now, wake) {
			return
		}
		if now := ls.s.clock.Now(); !now.Before(deadline) {
			ls.cancel(ls.expired(now))
			return
		}
		err := ls.renew(deadline)
		switch {
		case err == nil:
			ls.mu.Lock()
			next = ls.sentAt.Add(ls.s.renew)
			ls.mu.Unlock()
		case errors.Is(err, ErrLost), errors.Is(err, ErrExpired):
			ls.cancel(err)
			return
		default:
			if ls.lock.OnRenewFailure != nil {
				ls.lock.OnRenewFailure(err)
			}
			next = ls.s.clock.Now().Add(ls.s.renewRetry)
		}
	}
}

// sleepUntil waits on the clock until wake; false when the loop must stop.
func (ls *Lease) sleepUntil(now, wake time.Time) bool {
	d := wake.Sub(now)
	if d <= 0 {
		return ls.loop.Err() == nil && ls.ctx.Err() == nil
	}
	t := ls.s.clock.NewTimer(d)
	defer t.Stop()
	if ls.lock.sleepHook != nil {
		ls.lock.sleepHook(wake)
	}
	select {
	case <-t.C():
		return ls.loop.Err() == nil && ls.ctx.Err() == nil
	case <-ls.loop.Done():
		return false
	case <-ls.ctx.Done():
		return false
	}
}

type putResult struct {
	etag string
	err  error
}

// renew writes the record again, If-Match our last ETag, racing the
// deadline. The write itself is never cut short but by CallTimeout: S3 may
// apply a write whose answer a cancelled caller never sees, and then the
// ETag that Release needs would be unknown. When the deadline comes first the
// held context is cancelled at once, and renew still waits for the answer.
func (ls *Lease) renew(deadline time.Time) error {
	ls.mu.Lock()
	rec, etag := ls.rec, ls.etag
	ls.mu.Unlock()
	nonce, err := newNonce()
	if err != nil {
		return err
	}
	sentAt := ls.s.clock.Now()
	rec.Nonce, rec.RenewedAt = nonce, sentAt.UTC()
	res := make(chan putResult, 1)
	go func() {
		e, err := ls.obj.put(context.WithoutCancel(ls.loop), &rec, writeCond{ifMatch: etag})
		res <- putResult{e, err}
	}()
	fence := ls.s.clock.NewTimer(deadline.Sub(sentAt))
	defer fence.Stop()
	select {
	case r := <-res:
		return ls.renewed(r, rec, sentAt)
	case <-fence.C():
		expired := ls.expired(ls.s.clock.Now())
		ls.cancel(expired)
		// A write that S3 took after all still counts for Release.
		_ = ls.renewed(<-res, rec, sentAt)
		return expired
	}
}

// renewed records the outcome of a renewal.
func (ls *Lease) renewed(r putResult, rec Record, sentAt time.Time) error {
	switch {
	case r.err == nil:
		ls.mu.Lock()
		defer ls.mu.Unlock()
		ls.rec, ls.etag, ls.sentAt, ls.deadline = rec, r.etag, sentAt, sentAt.Add(ls.s.lease-ls.s.margin)
		ls.renewals++
		return nil
	case errors.Is(r.err, errPrecondition), errors.Is(r.err, errNoObject):
		return fmt.Errorf("lock %s: %w (%w)", ls.lock.url(), ErrLost, r.err)
	}
	return fmt.Errorf("renew lock: %w", r.err)
}
