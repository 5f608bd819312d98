package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

// trail is the ordered record of what the fakes saw.
type trail struct {
	mu     sync.Mutex
	events []string
}

func (tr *trail) add(format string, a ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.events = append(tr.events, fmt.Sprintf(format, a...))
}

func (tr *trail) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.events)
}

// fakeKubelet plays the kubelet and the static pods: a component runs while
// its manifest is in the manifests directory; removing the manifest stops it
// (after stopDelay observations), putting it back starts a new instance.
type fakeKubelet struct {
	t         *testing.T
	manifests string
	trail     *trail

	mu        sync.Mutex
	gen       map[string]int
	running   map[string]bool
	seenOut   map[string]int
	stopDelay int
	// neverStop / neverReady make a component hang in the stop / start wait.
	neverStop, neverReady map[string]bool
	// onOut runs when the kubelet first sees a manifest moved out; onStart
	// when it starts a component.
	onOut, onStart func(component string)
}

func newFakeKubelet(t *testing.T, manifests string, tr *trail, components ...string) *fakeKubelet {
	k := &fakeKubelet{t: t, manifests: manifests, trail: tr, gen: map[string]int{}, running: map[string]bool{},
		seenOut: map[string]int{}, neverStop: map[string]bool{}, neverReady: map[string]bool{}}
	for _, c := range components {
		writeFile(t, filepath.Join(manifests, c+".yaml"), []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: "+c+"}\n"))
		k.gen[c], k.running[c] = 1, true
	}
	return k
}

func (k *fakeKubelet) present(c string) bool {
	_, err := os.Stat(filepath.Join(k.manifests, c+".yaml"))
	return err == nil
}

func (k *fakeKubelet) Instance(ctx context.Context, c string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		k.t.Errorf("Instance(%s) without a deadline", c)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	out := 0
	for _, m := range Components {
		if _, known := k.gen[m]; known && !k.present(m) {
			out++
		}
	}
	if out > 1 {
		k.t.Errorf("%d manifests out at once: restarts must be one at a time", out)
	}
	if !k.present(c) && k.running[c] {
		if k.seenOut[c] == 0 {
			k.trail.add("out %s", c)
			if k.onOut != nil {
				k.onOut(c)
			}
		}
		k.seenOut[c]++
		if !k.neverStop[c] && k.seenOut[c] > k.stopDelay {
			k.running[c] = false
			k.trail.add("stopped %s", c)
		}
	}
	if k.present(c) && !k.running[c] {
		k.gen[c]++
		k.running[c] = true
		k.seenOut[c] = 0
		k.trail.add("started %s", c)
		if k.onStart != nil {
			k.onStart(c)
		}
	}
	if !k.running[c] {
		return "", nil
	}
	return fmt.Sprintf("%s-%d", c, k.gen[c]), nil
}

func (k *fakeKubelet) Ready(ctx context.Context, c string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.neverReady[c] {
		return fmt.Errorf("%s not ready", c)
	}
	k.trail.add("ready %s", c)
	return nil
}

// fakeKubeadm rewrites the certificates like kubeadm certs renew all.
type fakeKubeadm struct {
	t     *testing.T
	pki   *fakePKI
	trail *trail
	exp   time.Time
	err   error
	calls int
}

func (f *fakeKubeadm) CertsRenewAll(ctx context.Context) error {
	f.calls++
	f.trail.add("kubeadm certs renew all")
	if f.err != nil {
		return f.err
	}
	f.pki.reissue(f.t, func(string) time.Time { return f.exp })
	return nil
}

type fakeLock struct {
	trail *trail
	block bool
}

func (l *fakeLock) Acquire(ctx context.Context) (func(), error) {
	if l.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	l.trail.add("lock acquired")
	return func() { l.trail.add("lock released") }, nil
}

// servingAPI is a TLS server presenting whichever certificate is set.
type servingAPI struct {
	mu   sync.Mutex
	cert tls.Certificate
	ln   net.Listener
}

func newServingAPI(t *testing.T, cert tls.Certificate) *servingAPI {
	s := &servingAPI{cert: cert}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = tls.NewListener(ln, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		c := s.cert
		return &c, nil
	}})
	go func() {
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_ = conn.(*tls.Conn).Handshake()
				_ = conn.Close()
			}()
		}
	}()
	t.Cleanup(func() { _ = s.ln.Close() })
	return s
}

func (s *servingAPI) serve(c tls.Certificate) {
	s.mu.Lock()
	s.cert = c
	s.mu.Unlock()
}

func (s *servingAPI) addr() string { return s.ln.Addr().String() }

// drive advances clk whenever something waits on it, until stop is called.
func drive(clk *testingclock.FakeClock, step time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if clk.HasWaiters() {
				clk.Step(step)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// env is a control-plane node in a temporary directory.
type env struct {
	t       *testing.T
	pki     *fakePKI
	clk     *testingclock.FakeClock
	trail   *trail
	kubelet *fakeKubelet
	kubeadm *fakeKubeadm
	api     *servingAPI
	r       *Renewer

	checked []map[string]time.Time
	renewed [][2]time.Time
	mu      sync.Mutex
}

// newEnv: every certificate expires at now0+leafLife except admin.conf at
// now0+adminLife; the kubelet runs the four components; the API server
// serves pki/apiserver.crt, and switches to the file's certificate when the
// kubelet starts it again.
func newEnv(t *testing.T, adminLife time.Duration, components ...string) *env {
	t.Helper()
	if components == nil {
		components = Components
	}
	e := &env{t: t, clk: testingclock.NewFakeClock(now0), trail: &trail{}}
	e.pki = newFakePKI(t, now0.Add(300*24*time.Hour), map[string]time.Time{"admin.conf": now0.Add(adminLife),
		"ca": now0.Add(3650 * 24 * time.Hour), "etcd-ca": now0.Add(3650 * 24 * time.Hour), "front-proxy-ca": now0.Add(3650 * 24 * time.Hour)})
	e.kubelet = newFakeKubelet(t, filepath.Join(e.pki.dir, "manifests"), e.trail, components...)
	e.kubeadm = &fakeKubeadm{t: t, pki: e.pki, trail: e.trail, exp: now0.Add(365 * 24 * time.Hour)}
	e.api = newServingAPI(t, tlsCert(t, e.pki.dir, "pki/apiserver"))
	e.kubelet.onStart = func(c string) {
		if c == "kube-apiserver" {
			e.api.serve(tlsCert(t, e.pki.dir, "pki/apiserver"))
		}
	}
	e.r = &Renewer{
		Paths: kubeadm.Paths{Dir: e.pki.dir}, Kubeadm: e.kubeadm, Observer: e.kubelet,
		Clock: e.clk, Log: zaptest.NewLogger(t), APIServerAddress: e.api.addr(),
		Backoff: &backoff.Backoff{Initial: time.Minute, Max: time.Hour, Rand: func() float64 { return 0 }},
		OnChecked: func(m map[string]time.Time) {
			e.mu.Lock()
			e.checked = append(e.checked, m)
			e.mu.Unlock()
		},
		OnRenewed: func(before, after time.Time) {
			e.mu.Lock()
			e.renewed = append(e.renewed, [2]time.Time{before, after})
			e.mu.Unlock()
		},
	}
	return e
}

func (e *env) once(ctx context.Context) time.Duration {
	stop := drive(e.clk, time.Second)
	defer stop()
	return e.r.Once(ctx)
}

func (e *env) manifestsInPlace(components ...string) {
	e.t.Helper()
	for _, c := range components {
		if !e.kubelet.present(c) {
			e.t.Errorf("manifest of %s is not in the manifests directory", c)
		}
	}
	if entries, _ := os.ReadDir(e.r.HoldDir); len(entries) != 0 {
		e.t.Errorf("%d manifests left in %s", len(entries), e.r.HoldDir)
	}
}

func restartTrail(components ...string) []string {
	var want []string
	for _, c := range components {
		want = append(want, "out "+c, "stopped "+c, "started "+c, "ready "+c)
	}
	return want
}

func TestNoRenewalAboveTheThreshold(t *testing.T) {
	e := newEnv(t, 31*24*time.Hour)
	wait := e.once(context.Background())
	if e.kubeadm.calls != 0 || len(e.trail.get()) != 0 {
		t.Fatalf("renewed or restarted above the threshold: %v", e.trail.get())
	}
	if wait != 24*time.Hour {
		t.Errorf("next check in %s, want 24h", wait)
	}
	if len(e.checked) != 1 || len(e.checked[0]) != len(Names()) {
		t.Fatalf("OnChecked calls %d, want one with %d certificates", len(e.checked), len(Names()))
	}
	if !e.checked[0]["admin.conf"].Equal(now0.Add(31 * 24 * time.Hour)) {
		t.Errorf("OnChecked admin.conf %v", e.checked[0]["admin.conf"])
	}
	if len(e.renewed) != 0 {
		t.Errorf("OnRenewed called: %v", e.renewed)
	}
	// The threshold is crossed in 12 hours: check again then, not in a day.
	e2 := newEnv(t, 30*24*time.Hour+12*time.Hour)
	if wait := e2.once(context.Background()); wait != 12*time.Hour {
		t.Errorf("next check in %s, want 12h (when the threshold is reached)", wait)
	}
}

func TestRenewalBelowTheThresholdRestartsEachPodInOrderAndVerifies(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	oldServed := tlsCert(t, e.pki.dir, "pki/apiserver")
	e.r.Lock = &fakeLock{trail: e.trail}
	wait := e.once(context.Background())
	want := append([]string{"lock acquired", "kubeadm certs renew all"}, restartTrail(Components...)...)
	want = append(want, "lock released")
	if got := e.trail.get(); !slices.Equal(got, want) {
		t.Fatalf("trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if wait != 24*time.Hour {
		t.Errorf("next check in %s, want 24h", wait)
	}
	e.manifestsInPlace(Components...)
	if len(e.renewed) != 1 || !e.renewed[0][0].Equal(now0.Add(20*24*time.Hour)) || !e.renewed[0][1].Equal(now0.Add(365*24*time.Hour)) {
		t.Errorf("OnRenewed %v, want (%v, %v)", e.renewed, now0.Add(20*24*time.Hour), now0.Add(365*24*time.Hour))
	}
	if n := len(e.checked); n != 2 || !e.checked[1]["admin.conf"].Equal(now0.Add(365*24*time.Hour)) {
		t.Errorf("OnChecked after the renewal: %d calls, last %v", n, e.checked[n-1])
	}
	if err := VerifyServing(context.Background(), e.api.addr(), filepath.Join(e.pki.dir, "pki/apiserver.crt")); err != nil {
		t.Errorf("the API server does not serve the renewed certificate: %v", err)
	}
	if string(oldServed.Certificate[0]) == string(tlsCert(t, e.pki.dir, "pki/apiserver").Certificate[0]) {
		t.Error("the renewal did not change pki/apiserver.crt")
	}
}

func TestRestartWaitsForTheKubeletToStopThePod(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	e.kubelet.stopDelay = 5 // the kubelet notices the removal late
	start := e.clk.Now()
	e.once(context.Background())
	if got, want := e.trail.get()[1:], restartTrail(Components...); !slices.Equal(got, want) {
		t.Fatalf("trail %v, want %v", got, want)
	}
	// Each of the four waited at least 5 polls of 2s before moving back.
	if d := e.clk.Since(start); d < 4*5*DefaultPollInterval {
		t.Errorf("took %s of clock time, want at least %s of polling", d, 4*5*DefaultPollInterval)
	}
	e.manifestsInPlace(Components...)
}

func TestAComponentWithoutManifestIsSkipped(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour, "kube-apiserver", "kube-controller-manager", "kube-scheduler") // external etcd
	e.once(context.Background())
	want := append([]string{"kubeadm certs renew all"}, restartTrail("kube-apiserver", "kube-controller-manager", "kube-scheduler")...)
	if got := e.trail.get(); !slices.Equal(got, want) {
		t.Fatalf("trail %v, want %v", got, want)
	}
	if len(e.renewed) != 1 {
		t.Errorf("OnRenewed calls %d, want 1", len(e.renewed))
	}
}

func TestVerifyServing(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	file := filepath.Join(e.pki.dir, "pki/apiserver.crt")
	if err := VerifyServing(context.Background(), e.api.addr(), file); err != nil {
		t.Fatalf("serving the file's certificate: %v", err)
	}
	old := tlsCert(t, e.pki.dir, "pki/apiserver")
	e.pki.reissue(t, func(string) time.Time { return now0.Add(365 * 24 * time.Hour) })
	e.api.serve(old)
	err := VerifyServing(context.Background(), e.api.addr(), file)
	if err == nil || !strings.Contains(err.Error(), "serves certificate serial") {
		t.Fatalf("serving the old certificate: err %v", err)
	}
	e.api.serve(tlsCert(t, e.pki.dir, "pki/apiserver"))
	if err := VerifyServing(context.Background(), e.api.addr(), file); err != nil {
		t.Fatalf("serving the new certificate: %v", err)
	}
}

func TestOldServedCertificateFailsTheRenewalAndTheRetryRestartsWithoutRenewingAgain(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	loads := false
	e.kubelet.onStart = func(c string) { // the API server keeps its old certificate
		if c == "kube-apiserver" && loads {
			e.api.serve(tlsCert(t, e.pki.dir, "pki/apiserver"))
		}
	}
	e.r.VerifyTimeout = 10 * time.Second
	wait := e.once(context.Background())
	if wait != time.Minute {
		t.Errorf("retry in %s, want the first backoff step 1m", wait)
	}
	if len(e.renewed) != 0 {
		t.Fatalf("OnRenewed called although the old certificate is served")
	}
	if e.kubeadm.calls != 1 {
		t.Fatalf("kubeadm calls %d, want 1", e.kubeadm.calls)
	}
	// Second failure: the backoff doubles.
	if wait := e.once(context.Background()); wait != 2*time.Minute {
		t.Errorf("second retry in %s, want 2m", wait)
	}
	loads = true
	before := len(e.trail.get())
	if wait := e.once(context.Background()); wait != 24*time.Hour {
		t.Errorf("after success next check in %s, want 24h", wait)
	}
	if e.kubeadm.calls != 1 {
		t.Errorf("kubeadm ran again (%d calls): the certificates were fresh, only the restarts were missing", e.kubeadm.calls)
	}
	if got := e.trail.get()[before:]; !slices.Equal(got, restartTrail(Components...)) {
		t.Errorf("retry trail %v, want the four restarts", got)
	}
	if len(e.renewed) != 1 {
		t.Errorf("OnRenewed calls %d, want 1", len(e.renewed))
	}
}

func TestKubeadmFailureIsRetriedWithBackoff(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	e.kubeadm.err = errors.New("exit 1")
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute} {
		if got := e.once(context.Background()); got != want {
			t.Errorf("attempt %d: retry in %s, want %s", i+1, got, want)
		}
	}
	if e.kubeadm.calls != 3 {
		t.Errorf("kubeadm calls %d, want 3", e.kubeadm.calls)
	}
	for _, ev := range e.trail.get() {
		if ev != "kubeadm certs renew all" {
			t.Errorf("a pod was touched although kubeadm failed: %s", ev)
		}
	}
	e.kubeadm.err = nil
	if got := e.once(context.Background()); got != 24*time.Hour {
		t.Errorf("after success next check in %s, want 24h", got)
	}
	if len(e.renewed) != 1 {
		t.Errorf("OnRenewed calls %d, want 1", len(e.renewed))
	}
}

func TestAPodThatDoesNotStopFailsWithItsManifestBack(t *testing.T) {
	e := newEnv(t, 20*24*time.Hour)
	e.kubelet.neverStop["kube-controller-manager"] = true
	start := e.clk.Now()
	wait := e.once(context.Background())
	if wait != time.Minute {
		t.Errorf("retry in %s, want 1m", wait)
	}
	if d := e.clk.Since(start); d < DefaultStopTimeout {
		t.Errorf("gave up after %s of clock time, want the stop timeout %s", d, DefaultStopTimeout)
	}
	e.manifestsInPlace(Components...)
	for _, ev := range e.trail.get() {
		if strings.HasSuffix(ev, "kube-scheduler") || strings.HasSuffix(ev, " etcd") {
			t.Errorf("went on to the next component after a failure: %s", ev)
		}
	}
}

func TestDailyCadence(t *testing.T) {
	e := newEnv(t, 200*24*time.Hour)
	checks := make(chan struct{}, 10)
	e.r.OnChecked = func(map[string]time.Time) { checks <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.r.Run(ctx) }()
	waitCheck := func(what string) {
		t.Helper()
		select {
		case <-checks:
		case <-time.After(5 * time.Second):
			t.Fatalf("no check %s", what)
		}
	}
	waitSleeping := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !e.clk.HasWaiters() {
			if time.Now().After(deadline) {
				t.Fatal("the renewer does not wait on its clock")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitCheck("at start")
	for day := 1; day <= 3; day++ {
		waitSleeping()
		e.clk.Step(24*time.Hour - time.Second)
		select {
		case <-checks:
			t.Fatalf("day %d: checked before 24h passed", day)
		case <-time.After(50 * time.Millisecond):
		}
		e.clk.Step(time.Second)
		waitCheck(fmt.Sprintf("on day %d", day))
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if e.kubeadm.calls != 0 {
		t.Errorf("kubeadm calls %d", e.kubeadm.calls)
	}
}

func TestCancellationEndsEveryWait(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(e *env, cancel func())
	}{
		{"lock", func(e *env, cancel func()) {
			e.r.Lock = &fakeLock{trail: e.trail, block: true}
			e.kubelet.onOut = nil
			go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		}},
		{"stop wait", func(e *env, cancel func()) {
			e.kubelet.neverStop["kube-scheduler"] = true
			e.kubelet.onOut = func(c string) {
				if c == "kube-scheduler" {
					cancel()
				}
			}
		}},
		{"start wait", func(e *env, cancel func()) {
			e.kubelet.neverReady["etcd"] = true
			e.kubelet.onOut = func(c string) {
				if c == "etcd" {
					go func() { time.Sleep(20 * time.Millisecond); cancel() }()
				}
			}
		}},
		{"verify wait", func(e *env, cancel func()) {
			e.kubelet.onStart = func(c string) {
				if c == "etcd" {
					go func() { time.Sleep(20 * time.Millisecond); cancel() }()
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, 20*24*time.Hour)
			// Timeouts far beyond what the clock reaches in the test: only
			// the cancellation can end the wait.
			e.r.StopTimeout, e.r.StartTimeout, e.r.VerifyTimeout = 1000*time.Hour, 1000*time.Hour, 1000*time.Hour
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c.setup(e, cancel)
			done := make(chan error, 1)
			stop := drive(e.clk, time.Second)
			defer stop()
			go func() { done <- e.r.Run(ctx) }()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
			e.manifestsInPlace(Components...)
			if len(e.renewed) != 0 {
				t.Errorf("OnRenewed called on a cancelled renewal")
			}
		})
	}
	t.Run("sleep between checks", func(t *testing.T) {
		e := newEnv(t, 200*24*time.Hour)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.r.Run(ctx) }()
		for !e.clk.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
}

func TestRunPutsBackAManifestAKilledAgentLeftAside(t *testing.T) {
	e := newEnv(t, 200*24*time.Hour)
	e.r.defaults()
	m := filepath.Join(e.pki.dir, "manifests", "kube-scheduler.yaml")
	if err := os.MkdirAll(e.r.HoldDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m, filepath.Join(e.r.HoldDir, "kube-scheduler.yaml")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	e.manifestsInPlace(Components...)
}

// The agent's kubeadm runner is the production Kubeadm.
var _ Kubeadm = (*kubeadm.Runner)(nil)

func TestRunnerCertsRenewAllRunsKubeadmUnderTheLock(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "args")
	script := filepath.Join(dir, "kubeadm")
	// The lock is inherited as fd 3: flock -n on it would fail if the
	// runner did not hold it, so record that it is open.
	writeFile(t, script, []byte("#!/bin/sh\necho \"$@\" > "+out+"\n[ -e /proc/self/fd/3 ] && echo locked >> "+out+"\n"))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &kubeadm.Runner{Path: script, Log: zaptest.NewLogger(t), Lock: &kubeadm.Lock{Path: filepath.Join(dir, "kubeadm.lock")}}
	if err := r.CertsRenewAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != "certs renew all\nlocked\n" {
		t.Errorf("kubeadm ran with %q, want \"certs renew all\" holding the lock", got)
	}
}
