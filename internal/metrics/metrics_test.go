package metrics

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kubestrap/kubestrap/internal/role"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden and docs/metrics.md from the code")

// parse reads an exposition with Prometheus' own parser.
func parse(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, b)
	}
	return mfs
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the series of name whose labels are exactly labels, or nil.
func find(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	mf := mfs[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		got := labelsOf(m)
		if len(got) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return math.NaN()
}

// golden is one line per family, "name type label,label", as Prometheus
// reads them from the exposition.
func golden(mfs map[string]*dto.MetricFamily) string {
	var lines []string
	for name, mf := range mfs {
		var labels []string
		if ms := mf.GetMetric(); len(ms) > 0 {
			for _, l := range ms[0].GetLabel() {
				labels = append(labels, l.GetName())
			}
		}
		sort.Strings(labels)
		lines = append(lines, strings.TrimSpace(fmt.Sprintf("%s %s %s", name, strings.ToLower(mf.GetType().String()), strings.Join(labels, ","))))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func TestNamesTypesAndLabelsMatchTheGoldenList(t *testing.T) {
	got := golden(parse(t, New("v1.2.3", "worker").Expose()))
	const path = "testdata/metrics.golden"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("metric names, types or labels changed; if on purpose, run go test ./internal/metrics -update "+
			"and update docs and alerts.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

func TestExpositionPassesPromlint(t *testing.T) {
	problems, err := promlint.New(bytes.NewReader(New("v1.2.3", "worker").Expose())).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestEverySeriesIsPresentAtStartUp(t *testing.T) {
	mfs := parse(t, New("v1.2.3", "control-plane").Expose())
	for _, d := range Descs() {
		mf := mfs[d.Name]
		if mf == nil {
			t.Errorf("%s missing", d.Name)
			continue
		}
		want := 1
		for _, l := range d.Labels {
			if d.Name != BuildInfo {
				want *= len(l.Values)
			}
		}
		if got := len(mf.GetMetric()); got != want {
			t.Errorf("%s has %d series at start-up, want %d", d.Name, got, want)
		}
		for _, m := range mf.GetMetric() {
			v := value(m)
			if h := m.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			wantV := 0.0
			if d.Name == BuildInfo {
				wantV = 1
			}
			if v != wantV {
				t.Errorf("%s%v = %v at start-up, want %v", d.Name, labelsOf(m), v, wantV)
			}
		}
	}
	if find(mfs, BuildInfo, map[string]string{"version": "v1.2.3", "role": "control-plane"}) == nil {
		t.Errorf("no build info series for v1.2.3 control-plane")
	}
	if find(mfs, JoinInfoFetchTotal, map[string]string{"result": "changed"}) == nil {
		t.Errorf("no %s{result=\"changed\"} at start-up", JoinInfoFetchTotal)
	}
}

func TestObservationsLandInTheirSeries(t *testing.T) {
	m := New("v1.2.3", "worker")
	exp := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	m.JoinAttempt(role.JoinTokenRejected, 1500*time.Millisecond)
	m.JoinAttempt(role.JoinSuccess, 12*time.Second)
	m.Fetch(role.FetchNotFound)
	m.Fetch(role.FetchNotFound)
	m.Fetch(role.FetchChanged)
	m.Published(42, exp)
	m.SetECRExpiry(exp.Add(time.Hour))
	m.SetCertificateExpiry("apiserver", exp.Add(24*time.Hour))
	m.SetAddonsApplied(true)
	m.s3Request("GetObject", S3NotModified)
	mfs := parse(t, m.Expose())

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{JoinTotal, map[string]string{"result": "token_rejected"}, 1},
		{JoinTotal, map[string]string{"result": "success"}, 1},
		{JoinTotal, map[string]string{"result": "failure"}, 0},
		{JoinInfoFetchTotal, map[string]string{"result": "not_found"}, 2},
		{JoinInfoFetchTotal, map[string]string{"result": "changed"}, 1},
		{PublishedGeneration, nil, 42},
		{PublishedTokenExpiry, nil, float64(exp.Unix())},
		{ECRCredentialsExpiry, nil, float64(exp.Add(time.Hour).Unix())},
		{CertificateExpiry, map[string]string{"cert": "apiserver"}, float64(exp.Add(24 * time.Hour).Unix())},
		{CertificateExpiry, map[string]string{"cert": "ca"}, 0},
		{AddonsApplied, nil, 1},
		{S3RequestsTotal, map[string]string{"operation": "GetObject", "result": "not_modified"}, 1},
	} {
		s := find(mfs, c.name, c.labels)
		if s == nil {
			t.Errorf("%s%v missing", c.name, c.labels)
			continue
		}
		if v := value(s); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	h := find(mfs, JoinDuration, nil).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() != 13.5 {
		t.Errorf("join duration count %d sum %v, want 2 and 13.5", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 20: // 1.5 s and 12 s
			want = 2
		case b.GetUpperBound() >= 2: // 1.5 s
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("join duration bucket le=%v = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	m.SetAddonsApplied(false)
	if v := value(find(parse(t, m.Expose()), AddonsApplied, nil)); v != 0 {
		t.Errorf("addons applied after a failed apply = %v, want 0", v)
	}
}

// Values an observer might be handed by mistake: a bootstrap token, a node
// name, an instance ID, S3 error text, label syntax.
var hostile = []string{
	"abcdef.0123456789abcdef", "ip-10-0-2-7.eu-west-1.compute.internal", "i-0123456789abcdef0",
	"AccessDenied: User: arn:aws:sts::123456789012:assumed-role/x is not authorized", `x",evil="1`, "multi\nline",
}

func TestHostileValuesNeverBecomeLabelValues(t *testing.T) {
	m := New("v1.2.3", "worker")
	for _, v := range hostile {
		m.JoinAttempt(v, time.Second)
		m.Fetch(v)
		m.SetCertificateExpiry(v, time.Now())
		m.s3Request(v, v)
		m.s3Request("GetObject", v)
	}
	out := m.Expose()
	for _, v := range hostile {
		if bytes.Contains(out, []byte(v)) {
			t.Errorf("hostile value %q appears in the exposition", v)
		}
	}
	mfs := parse(t, out)
	// Everything was counted, under the catch-all classes; the series set
	// did not grow.
	n := float64(len(hostile))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{JoinTotal, map[string]string{"result": role.JoinFailure}, n},
		{JoinInfoFetchTotal, map[string]string{"result": role.FetchError}, n},
		{S3RequestsTotal, map[string]string{"operation": "other", "result": "other"}, n},
		{S3RequestsTotal, map[string]string{"operation": "GetObject", "result": "other"}, n},
	} {
		if v := value(find(mfs, c.name, c.labels)); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if mf.GetName() == CertificateExpiry && value(s) != 0 {
				t.Errorf("certificate %v set by an unknown name", labelsOf(s))
			}
		}
	}
	if got := len(parse(t, New("v1.2.3", "worker").Expose())); got != len(mfs) {
		t.Errorf("families: %d, want %d", len(mfs), got)
	}
}

func TestLabelValuesAreEscaped(t *testing.T) {
	version := "v1 \"quoted\" back\\slash\nnewline"
	mfs := parse(t, New(version, "worker").Expose())
	if find(mfs, BuildInfo, map[string]string{"version": version, "role": "worker"}) == nil {
		t.Errorf("build info version does not round-trip through the text format: %v", mfs[BuildInfo])
	}
}
