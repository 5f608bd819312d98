package testutil

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// InstantClock is a clock.Clock whose timers fire at once and move its time
// forward by their duration: loops that wait run at full speed in virtual
// time, and tests assert on the virtual time that passed.
type InstantClock struct {
	mu  sync.Mutex
	now time.Time
}

var _ clock.Clock = (*InstantClock)(nil)

// NewInstantClock starts at now.
func NewInstantClock(now time.Time) *InstantClock { return &InstantClock{now: now} }

// Now returns the virtual time.
func (c *InstantClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Since is Now minus t.
func (c *InstantClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// Advance moves virtual time forward by d.
func (c *InstantClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// After advances by d and returns a channel that has fired.
func (c *InstantClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- c.Advance(d)
	return ch
}

// NewTimer advances by d and returns a fired timer.
func (c *InstantClock) NewTimer(d time.Duration) clock.Timer {
	return &instantTimer{c: c.After(d)}
}

// Sleep advances by d.
func (c *InstantClock) Sleep(d time.Duration) { c.Advance(d) }

// Tick is not supported by virtual time and returns nil.
func (c *InstantClock) Tick(time.Duration) <-chan time.Time { return nil }

type instantTimer struct{ c <-chan time.Time }

func (t *instantTimer) C() <-chan time.Time      { return t.c }
func (t *instantTimer) Stop() bool               { return false }
func (t *instantTimer) Reset(time.Duration) bool { return false }
