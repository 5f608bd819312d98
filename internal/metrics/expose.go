package metrics

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Type is a metric type of the Prometheus text format.
type Type string

// The metric types the agent uses.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Label is one label of a metric family and the values it can take.
type Label struct {
	Name string
	// Values is the fixed set of values, every one present from start-up;
	// nil for a label whose one value is set when the registry is built
	// (build info's version).
	Values []string
	// Doc says what the label means, for docs/metrics.md.
	Doc string
}

// Desc describes a metric family: what docs/metrics.md says about it.
type Desc struct {
	Name   string
	Type   Type
	Help   string
	Labels []Label
	// Buckets are a histogram's upper bounds (without +Inf).
	Buckets []float64
	// Fallback, when set, is the label values an out-of-set observation is
	// counted under (the catch-all class), one per label; when nil such an
	// observation is dropped.
	Fallback []string
}

// family is a metric family with every one of its series.
type family struct {
	Desc
	series []*series
	byKey  map[string]*series
}

// series is one labelled time series: a counter or gauge value, or a
// histogram's counts.
type series struct {
	values []string
	bits   atomic.Uint64 // float64 bits: counter or gauge value

	mu      sync.Mutex // histogram only
	buckets []uint64   // non-cumulative count per bucket, +Inf last
	count   uint64
	sum     float64
}

func key(values []string) string { return strings.Join(values, "\x00") }

// newFamily creates the family with one series per combination of values
// (sets[i] holds label i's values).
func newFamily(d Desc, sets [][]string) *family {
	f := &family{Desc: d, byKey: map[string]*series{}}
	var add func(prefix []string, rest [][]string)
	add = func(prefix []string, rest [][]string) {
		if len(rest) == 0 {
			s := &series{values: slices.Clone(prefix)}
			if d.Type == Histogram {
				s.buckets = make([]uint64, len(d.Buckets)+1)
			}
			f.series = append(f.series, s)
			f.byKey[key(s.values)] = s
			return
		}
		for _, v := range rest[0] {
			add(append(prefix, v), rest[1:])
		}
	}
	add(nil, sets)
	return f
}

// lookup returns the series of values, the fallback series when values are
// outside the fixed sets, or nil (dropped).
func (f *family) lookup(values ...string) *series {
	if s := f.byKey[key(values)]; s != nil {
		return s
	}
	if f.Fallback == nil {
		return nil
	}
	// Keep the labels that are in their set; replace the others.
	fixed := slices.Clone(values)
	for i, v := range values {
		if !slices.Contains(f.Labels[i].Values, v) {
			fixed[i] = f.Fallback[i]
		}
	}
	return f.byKey[key(fixed)]
}

func (s *series) add(v float64) {
	for {
		old := s.bits.Load()
		if s.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (s *series) set(v float64) { s.bits.Store(math.Float64bits(v)) }

func (s *series) get() float64 { return math.Float64frombits(s.bits.Load()) }

func (s *series) observe(bounds []float64, v float64) {
	i, _ := slices.BinarySearch(bounds, v) // first bound >= v: le is inclusive
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[i]++
	s.count++
	s.sum += v
}

// write writes the family in the Prometheus text format (version 0.0.4).
func (f *family) write(w *bufio.Writer) {
	w.WriteString("# HELP " + f.Name + " " + escapeHelp(f.Help) + "\n")
	w.WriteString("# TYPE " + f.Name + " " + string(f.Type) + "\n")
	for _, s := range f.series {
		if f.Type != Histogram {
			writeSample(w, f.Name, f.Labels, s.values, "", "", s.get())
			continue
		}
		s.mu.Lock()
		counts, count, sum := slices.Clone(s.buckets), s.count, s.sum
		s.mu.Unlock()
		var cum uint64
		for i, c := range counts {
			cum += c
			le := "+Inf"
			if i < len(f.Buckets) {
				le = formatFloat(f.Buckets[i])
			}
			writeSample(w, f.Name+"_bucket", f.Labels, s.values, "le", le, float64(cum))
		}
		writeSample(w, f.Name+"_sum", f.Labels, s.values, "", "", sum)
		writeSample(w, f.Name+"_count", f.Labels, s.values, "", "", float64(count))
	}
}

func writeSample(w *bufio.Writer, name string, labels []Label, values []string, extraName, extraValue string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extraName != "" {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l.Name + `="` + escapeLabel(values[i]) + `"`)
		}
		if extraName != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extraName + `="` + escapeLabel(extraValue) + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// writeAll writes every family, sorted by name, to out.
func writeAll(out io.Writer, families []*family) error {
	w := bufio.NewWriter(out)
	for _, f := range families {
		f.write(w)
	}
	return w.Flush()
}
