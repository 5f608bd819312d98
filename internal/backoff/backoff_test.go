package backoff

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToMaxWithJitter(t *testing.T) {
	b := &Backoff{Initial: time.Second, Max: 8 * time.Second, Rand: func() float64 { return 0 }}
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.Next())
	}
	want := []time.Duration{1, 2, 4, 8, 8, 8}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", got, want)
		}
	}
	b.Rand = func() float64 { return 0.999 }
	if d := b.Next(); d < 4*time.Second || d >= 8*time.Second {
		t.Errorf("full jitter of 8s gave %s, want within [4s, 8s)", d)
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Errorf("after Reset: %s", d)
	}
}
