//go:build bench

package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// dist summarises a sample of durations.
type dist struct {
	N                     int
	Min, Median, P95, Max time.Duration
}

// summarize uses the nearest-rank method: p95 of 10 samples is the 10th.
func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration {
		k := int(math.Ceil(p*float64(len(s)))) - 1
		if k < 0 {
			k = 0
		}
		return s[k]
	}
	return dist{N: len(s), Min: s[0], Median: rank(0.5), P95: rank(0.95), Max: s[len(s)-1]}
}

func (d dist) String() string {
	if d.N == 0 {
		return "n/a"
	}
	return fmt.Sprintf("median %s, p95 %s (n=%d)", secs(d.Median), secs(d.P95), d.N)
}

// secs formats a duration in seconds with a precision that suits it.
func secs(d time.Duration) string {
	s := d.Seconds()
	switch {
	case math.Abs(s) < 0.01:
		return fmt.Sprintf("%.1f ms", s*1000)
	case math.Abs(s) < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func medianInt(v []int64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2]
}

func maxInt(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// perHour scales count observed over total worker-time to one worker-hour.
func perHour(count float64, workerTime time.Duration) float64 {
	if workerTime <= 0 {
		return math.NaN()
	}
	return count / workerTime.Hours()
}
