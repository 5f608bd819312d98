//go:build e2e

package e2e

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricsAddr is the agent's default metrics.address.
const metricsAddr = "127.0.0.1:9464"

// agentHTTP GETs path from the agent's listener inside node and returns the
// status code and body (curl in the node: the listener is on its loopback).
func agentHTTP(t *testing.T, node, path string) (int, string) {
	t.Helper()
	out, err := inNode(node, "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", "http://"+metricsAddr+path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v\n%s", node, path, err, out)
	}
	out = strings.TrimRight(out, "\n")
	i := strings.LastIndex(out, "\n")
	code, _ := strconv.Atoi(strings.TrimSpace(out[i+1:]))
	return code, out[:max(i, 0)]
}

// scrape returns the value of every sample of the agent's /metrics on node,
// keyed by the sample as written (name{labels}).
func scrape(t *testing.T, node string) map[string]float64 {
	t.Helper()
	code, body := agentHTTP(t, node, "/metrics")
	if code != 200 {
		t.Fatalf("%s: /metrics answered %d:\n%s", node, code, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndex(l, " ")
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: /metrics line %q: %v", node, l, err)
		}
		samples[l[:i]] = v
	}
	return samples
}

// sum adds the samples of metric whose labels contain every given label pair.
func sum(samples map[string]float64, metric string, labels ...string) float64 {
	var s float64
	for k, v := range samples {
		name, rest, _ := strings.Cut(k, "{")
		if name != metric {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			s += v
		}
	}
	return s
}

// A worker's agent after its join: /metrics shows the one join info fetch
// that changed something and one successful join; in the steady state it
// makes no S3 request at all; /healthz and /readyz answer 200; the listener
// is on loopback only; and its Node has a Joined event.
func TestObservabilityOfAJoinedWorker(t *testing.T) {
	w := "w1"
	first := scrape(t, w)
	if v := sum(first, "kubestrap_joininfo_fetch_total", `result="changed"`); v != 1 {
		t.Errorf("%s: kubestrap_joininfo_fetch_total{result=\"changed\"} = %v, want 1 (one fetch of the join info it joined with)", w, v)
	}
	if v := sum(first, "kubestrap_join_total", `result="success"`); v != 1 {
		t.Errorf("%s: kubestrap_join_total{result=\"success\"} = %v, want 1", w, v)
	}
	if v := sum(first, "kubestrap_build_info", `role="worker"`); v != 1 {
		t.Errorf("%s: kubestrap_build_info{role=\"worker\"} = %v, want 1", w, v)
	}
	for k := range first {
		if strings.Contains(k, instanceID(t, w)) || strings.Contains(k, `"`+w+`"`) {
			t.Errorf("%s: a label carries an instance or node name: %s", w, k)
		}
	}
	s3Before := sum(first, "kubestrap_s3_requests_total")
	time.Sleep(10 * time.Second)
	if s3After := sum(scrape(t, w), "kubestrap_s3_requests_total"); s3After != s3Before {
		t.Errorf("%s: %v S3 requests in 10 s of the steady state, want none", w, s3After-s3Before)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		for _, n := range []string{"cp", w} {
			if code, body := agentHTTP(t, n, path); code != 200 {
				t.Errorf("%s: %s answered %d: %s", n, path, code, body)
			}
		}
	}
	out, err := inNode(w, "ss", "-Hltn")
	if err != nil {
		t.Fatalf("%s: ss: %v\n%s", w, err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, ":9464") && !strings.Contains(l, metricsAddr) {
			t.Errorf("%s: the agent's listener is not loopback-only: %s", w, l)
		}
	}
	events := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name="+w,
		"-o", "custom-columns=REASON:.reason,SOURCE:.source.component,MSG:.message", "--no-headers")
	if !regexp.MustCompile(`(?m)^Joined\s+kubestrap\s`).MatchString(events) {
		t.Errorf("%s: no Joined event from kubestrap on its Node:\n%s", w, events)
	}
	if !strings.Contains(kubectl(t, "describe", "node", w), "Joined") {
		t.Errorf("%s: kubectl describe node does not list the Joined event", w)
	}
}
