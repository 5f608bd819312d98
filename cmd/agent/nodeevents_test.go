package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/role"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

type recorded struct{ node, typ, reason, msg string }

type fakeRecorder struct {
	mu    sync.Mutex
	got   []recorded
	fails int // the next fails calls fail
}

func (f *fakeRecorder) Node(_ context.Context, node, typ, reason, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails > 0 {
		f.fails--
		return errors.New("the server is currently unable to handle the request")
	}
	f.got = append(f.got, recorded{node, typ, reason, msg})
	return nil
}

func (f *fakeRecorder) events() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.got...)
}

// queued drains what was queued without recording it.
func queued(e *nodeEvents) []nodeEvent {
	var out []nodeEvent
	for {
		select {
		case ev := <-e.queue:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func reasons(evs []nodeEvent) []string {
	var r []string
	for _, e := range evs {
		r = append(r, e.reason)
	}
	return r
}

func testEvents(t *testing.T, kubeconfig string, rec nodeRecorder) *nodeEvents {
	t.Helper()
	return newNodeEvents("w1", kubeconfig, rec, testutil.NewInstantClock(time.Unix(1e9, 0)), zap.NewNop())
}

func TestWorkerEventsJoinedThenRefusalsBeforeARejoin(t *testing.T) {
	ev := testEvents(t, "", nil)
	o := &workerEvents{ev: ev}
	o.Fetch(role.FetchNotFound)
	o.Fetch(role.FetchChanged)
	o.JoinAttempt(role.JoinSuccess, 12*time.Second)
	got := queued(ev)
	if r := reasons(got); len(r) != 1 || r[0] != "Joined" || got[0].typ != events.Normal || !strings.Contains(got[0].msg, "12s") {
		t.Fatalf("first join queued %+v, want one Normal Joined naming the join's duration", got)
	}

	// The membership is gone (kubeadm reset); before the node joins again
	// it refuses expired join info three times and has a token rejected.
	for range 3 {
		o.Fetch(role.FetchRefusedExpired)
	}
	o.Fetch(role.FetchRefusedCluster)
	o.JoinAttempt(role.JoinTokenRejected, time.Second)
	if got := queued(ev); len(got) != 0 {
		t.Fatalf("refusals were queued before the join: %+v (the node has no credentials yet)", got)
	}
	o.JoinAttempt(role.JoinSuccess, 3*time.Second)
	got = queued(ev)
	want := []string{"JoinInfoRefused", "JoinInfoRefused", "JoinTokenRejected", "Rejoined"}
	if r := reasons(got); strings.Join(r, ",") != strings.Join(want, ",") {
		t.Fatalf("queued %v, want %v", r, want)
	}
	if !strings.Contains(got[0].msg, "cluster") || !strings.Contains(got[1].msg, "3 time(s): expired") || got[0].typ != events.Warning {
		t.Errorf("refusal events %+v: want one Warning per class with its count", got[:2])
	}
	o.JoinAttempt(role.JoinSuccess, time.Second)
	if r := reasons(queued(ev)); len(r) != 1 || r[0] != "Rejoined" {
		t.Errorf("refusals reported once only: after a third join queued %v, want [Rejoined]", r)
	}
}

func TestControlPlaneEventsOncePerGeneration(t *testing.T) {
	ev := testEvents(t, "", nil)
	o := &controlPlaneEvents{ev: ev, bucket: "s3://b/c/join.json", last: 4}
	exp := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	o.Published(4, exp) // the generation published before a restart
	o.Published(5, exp)
	o.Published(5, exp)
	o.Published(6, exp)
	got := queued(ev)
	if len(got) != 2 || !strings.Contains(got[0].msg, "generation 5") || !strings.Contains(got[1].msg, "generation 6") {
		t.Errorf("queued %+v, want one JoinInfoPublished each for generations 5 and 6", got)
	}
}

func TestOnWarningMapsRefreshFailuresAndBlocked(t *testing.T) {
	ev := testEvents(t, "", nil)
	ev.onWarning(state.PhaseDegraded, "refresh:api:SlowDown", "degraded: cannot refresh join info")
	ev.onWarning(state.PhaseDegraded, "reconcile:network", "degraded: cannot compare")
	ev.onWarning(state.PhaseBlocked, "initialized-without-admin-conf", "blocked: ...")
	ev.onWarning(state.PhaseWaitingJoinInfo, "", "refused join info")
	if r := reasons(queued(ev)); strings.Join(r, ",") != "JoinInfoRefreshFailed,KubestrapBlocked" {
		t.Errorf("queued %v, want [JoinInfoRefreshFailed KubestrapBlocked]", r)
	}
}

func TestNodeEventsWaitForCredentialsAndRetry(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubelet.conf")
	rec := &fakeRecorder{fails: 2}
	ev := testEvents(t, kc, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ev.run(ctx, nil) }()
	ev.add(events.Normal, "Joined", "joined")
	time.Sleep(50 * time.Millisecond)
	if got := rec.events(); len(got) != 0 {
		t.Fatalf("recorded %+v before the node had a kubeconfig", got)
	}
	kubeconfig := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://10.0.0.1:6443', certificate-authority-data: Zm9v}}]\n" +
		"users: [{name: u, user: {client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem}}]\n"
	if err := os.WriteFile(kc, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("run returned %v, want context.Canceled", err)
	}
	if got := rec.events(); len(got) != 1 || got[0] != (recorded{"w1", events.Normal, "Joined", "joined"}) {
		t.Errorf("recorded %+v, want the one Joined event after two refused attempts", got)
	}
}

func TestNodeEventsQueueIsBounded(t *testing.T) {
	ev := testEvents(t, "", nil)
	for range eventQueueSize + 10 {
		ev.add(events.Normal, "X", "x")
	}
	if n := len(queued(ev)); n != eventQueueSize {
		t.Errorf("%d events queued, want the bound %d", n, eventQueueSize)
	}
}
