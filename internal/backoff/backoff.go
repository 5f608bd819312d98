// Package backoff computes capped exponential retry delays with full jitter.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields delays that double from Initial up to Max, each drawn
// uniformly from [d/2, d] so that many nodes retrying at once spread out.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	// Rand returns a float in [0,1); nil means math/rand/v2.
	Rand    func() float64
	current time.Duration
}

// New returns a Backoff starting at initial and capped at max.
func New(initial, max time.Duration) *Backoff {
	return &Backoff{Initial: initial, Max: max}
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	if b.current == 0 {
		b.current = b.Initial
	} else {
		b.current *= 2
	}
	if b.current > b.Max {
		b.current = b.Max
	}
	return Jitter(b.current, 0.5, b.rand())
}

// Reset starts the sequence again from Initial.
func (b *Backoff) Reset() { b.current = 0 }

func (b *Backoff) rand() float64 {
	if b.Rand != nil {
		return b.Rand()
	}
	return rand.Float64()
}

// Jitter returns d reduced by up to fraction of itself, using r in [0,1).
func Jitter(d time.Duration, fraction, r float64) time.Duration {
	return d - time.Duration(float64(d)*fraction*r)
}
