package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/state"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func alwaysReady(context.Context) (bool, string) { return true, "test" }

func TestHealthzTurns503WhenALoopStalls(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC))
	board := progress.NewBoard(clk)
	worker := board.Part("worker", time.Minute)
	board.Part("ecr", time.Hour)
	s := &Server{Metrics: New("v", "worker"), Stale: board.Stale, Ready: alwaysReady}
	h := s.Handler()

	if code, body := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("fresh board: %d %q", code, body)
	}
	// The worker keeps its promise up to its window (promise + slack)...
	clk.SetTime(clk.Now().Add(time.Minute + progress.Slack))
	if code, body := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("within the window: %d %q", code, body)
	}
	// ...and is stale just after it.
	clk.SetTime(clk.Now().Add(time.Second))
	code, body := get(t, h, "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "worker") || strings.Contains(body, "ecr") {
		t.Fatalf("stalled worker: %d %q, want 503 naming worker only", code, body)
	}
	worker.Within(time.Minute) // progress again
	if code, body := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("after progress: %d %q", code, body)
	}
}

func kubelet(t *testing.T, status int, hang bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/healthz"
}

func TestReadyz(t *testing.T) {
	initialized := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return "http://" + addr + "/healthz"
	}()
	for _, tc := range []struct {
		name    string
		role    config.Role
		st      state.State
		kubelet string
		code    int
		says    string
	}{
		{"worker waiting", config.RoleWorker, state.State{Phase: state.PhaseWaitingJoinInfo, Message: "waiting for join info in s3://b/demo/join.json"},
			kubelet(t, 200, false), 503, "not joined (phase WaitingForJoinInfo: waiting for join info"},
		{"worker starting", config.RoleWorker, state.State{}, kubelet(t, 200, false), 503, "phase Starting"},
		{"worker joined, kubelet healthy", config.RoleWorker, state.State{Phase: state.PhaseJoined}, kubelet(t, 200, false), 200, "kubelet is healthy"},
		{"worker joined, kubelet 500", config.RoleWorker, state.State{Phase: state.PhaseJoined}, kubelet(t, 500, false), 503, "500"},
		{"worker joined, kubelet down", config.RoleWorker, state.State{Phase: state.PhaseJoined}, closed, 503, "kubelet is not healthy"},
		{"control plane published", config.RoleControlPlane, state.State{Phase: state.PhasePublished, InitializedAt: initialized, JoinGeneration: 3},
			"", 200, "generation 3 published"},
		{"control plane degraded", config.RoleControlPlane, state.State{Phase: state.PhaseDegraded, InitializedAt: initialized, Message: "degraded: cannot refresh"},
			"", 503, "degraded: cannot refresh"},
		{"control plane initializing", config.RoleControlPlane, state.State{Phase: state.PhaseInitializing}, "", 503, "phase Initializing"},
		{"control plane standing by", config.RoleControlPlane, state.State{Phase: state.PhaseStandby, InitializedAt: initialized,
			UploaderLockHolder: "i-0123456789abcdef0"}, "", 200, "i-0123456789abcdef0 publishes"},
		{"control plane joining", config.RoleControlPlane, state.State{Phase: state.PhaseJoiningControlPlane}, "", 503, "phase JoiningControlPlane"},
		{"published without init record", config.RoleControlPlane, state.State{Phase: state.PhasePublished}, "", 503, "not initialized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			s := &Server{Metrics: New("v", string(tc.role)), Stale: func() []string { return nil },
				Ready: Readiness(tc.role, func() state.State { return st }, tc.kubelet, nil)}
			code, body := get(t, s.Handler(), "/readyz")
			if code != tc.code || !strings.Contains(body, tc.says) {
				t.Errorf("/readyz = %d %q, want %d saying %q", code, body, tc.code, tc.says)
			}
		})
	}
}

func TestReadyzGivesUpOnAHungKubeletWithinItsDeadline(t *testing.T) {
	url := kubelet(t, 200, true)
	ready := Readiness(config.RoleWorker, func() state.State { return state.State{Phase: state.PhaseJoined} }, url, nil)
	start := time.Now()
	ok, why := ready(context.Background())
	took := time.Since(start)
	if ok || !strings.Contains(why, "kubelet is not healthy") {
		t.Errorf("hung kubelet: ready %v %q", ok, why)
	}
	if took < kubeletTimeout || took > kubeletTimeout+time.Second {
		t.Errorf("took %s, want about %s", took, kubeletTimeout)
	}
}

// runServer starts s.Run and returns the bound address and a stop function
// that returns Run's error.
func runServer(t *testing.T, s *Server) (net.Addr, func() error) {
	t.Helper()
	addrs := make(chan net.Addr, 1)
	s.listening = func(a net.Addr) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case a := <-addrs:
		return a, stop
	case err := <-done:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not listening")
	}
	return nil, stop
}

func TestDefaultAddressListensOnLoopbackOnly(t *testing.T) {
	host, _, err := net.SplitHostPort(config.Defaults().Metrics.Address)
	if err != nil {
		t.Fatal(err)
	}
	// The default host; port 0 so that the test does not depend on 9464 being free.
	s := &Server{Address: net.JoinHostPort(host, "0"), Metrics: New("v", "worker"), Stale: func() []string { return nil }, Ready: alwaysReady}
	addr, stop := runServer(t, s)
	tcp := addr.(*net.TCPAddr)
	if !tcp.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("listening on %s, want 127.0.0.1", tcp)
	}
	resp, err := http.Get("http://" + tcp.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != MetricsContentType || !strings.Contains(string(body), BuildInfo) {
		t.Fatalf("/metrics = %d %q %.80q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// Nothing answers on this machine's other addresses at that port.
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range ifaddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		tried++
		target := net.JoinHostPort(ipn.IP.String(), "0")
		target = target[:strings.LastIndex(target, ":")+1] + strings.TrimPrefix(tcp.String(), "127.0.0.1:")
		if c, err := net.DialTimeout("tcp", target, time.Second); err == nil {
			c.Close()
			t.Errorf("the listener answers on %s", target)
		}
	}
	if tried == 0 {
		t.Log("no non-loopback address on this machine to try")
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if c, err := net.DialTimeout("tcp", tcp.String(), time.Second); err == nil {
		c.Close()
		t.Error("still listening after the agent stopped")
	}
}

func TestListenFailureDoesNotStopTheAgent(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	reported := make(chan error, 1)
	s := &Server{Address: taken.Addr().String(), Metrics: New("v", "worker"), Stale: func() []string { return nil }, Ready: alwaysReady,
		OnListen: func(err error) { reported <- err }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	select {
	case err := <-reported:
		if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
			t.Fatalf("reported %v, want the listen error naming the address", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("listen failure not reported")
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while the agent runs: the supervisor would stop the agent", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}
