package role

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/state"
)

// recordingObserver remembers every observation, in order.
type recordingObserver struct {
	mu        sync.Mutex
	fetches   []string
	joins     []string
	published []string
}

func (o *recordingObserver) Fetch(result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.fetches = append(o.fetches, result)
}

func (o *recordingObserver) JoinAttempt(result string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.joins = append(o.joins, result)
}

func (o *recordingObserver) Published(generation int64, expires time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.published = append(o.published, fmt.Sprintf("%d@%s", generation, expires.UTC().Format(time.RFC3339)))
}

func (o *recordingObserver) snapshot() (fetches, joins, published []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.fetches), slices.Clone(o.joins), slices.Clone(o.published)
}

func count(list []string, v string) int {
	n := 0
	for _, x := range list {
		if x == v {
			n++
		}
	}
	return n
}

func TestWorkerObserverSeesEveryPollAndJoin(t *testing.T) {
	h := newHarness(t, config.RoleWorker)
	h.kubeadm.AcceptToken(t, goodToken)
	obs := &recordingObserver{}
	w := h.worker()
	w.Observer = obs
	stop := start(t, w.Run)

	eventually(t, "not_found polls", func() bool { f, _, _ := obs.snapshot(); return count(f, FetchNotFound) >= 2 })
	// Generation 1's token is unknown to the API server.
	h.publish(t, joinInfo(otherToken, 1, h.clock.Now()))
	eventually(t, "a rejected join", func() bool { _, j, _ := obs.snapshot(); return count(j, JoinTokenRejected) == 1 })
	eventually(t, "refused_generation polls", func() bool {
		f, _, _ := obs.snapshot()
		return count(f, FetchRefusedGeneration) >= 2
	})
	h.publish(t, joinInfo(goodToken, 2, h.clock.Now()))
	eventually(t, "joined", func() bool { return h.phase() == state.PhaseJoined })
	atJoin, _, _ := obs.snapshot()
	before := h.clock.Now()
	eventually(t, "an hour of virtual time", func() bool { return h.clock.Since(before) > time.Hour })
	_ = stop()

	fetches, joins, _ := obs.snapshot()
	if !slices.Equal(joins, []string{JoinTokenRejected, JoinSuccess}) {
		t.Errorf("join results = %q, want [token_rejected success]", joins)
	}
	if got := count(fetches, FetchChanged); got != 2 {
		t.Errorf("changed fetches = %d, want 2 (generation 1 and 2): %q", got, fetches)
	}
	if len(fetches) != len(atJoin) {
		t.Errorf("%d polls observed after the join, want none", len(fetches)-len(atJoin))
	}
	for _, f := range fetches {
		if !slices.Contains(FetchResults, f) {
			t.Errorf("fetch result %q is not one of FetchResults", f)
		}
	}
}

func TestWorkerObserverClassifiesRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		info func(h *harness) *join.Info
		want string
	}{
		{"expired", func(h *harness) *join.Info { return joinInfo(goodToken, 1, h.clock.Now().Add(-3*time.Hour)) }, FetchRefusedExpired},
		{"other cluster", func(h *harness) *join.Info {
			i := joinInfo(goodToken, 1, h.clock.Now())
			i.Cluster = "prod"
			return i
		}, FetchRefusedCluster},
		{"bad token", func(h *harness) *join.Info { return joinInfo("not-a-token", 1, h.clock.Now()) }, FetchRefusedInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, config.RoleWorker)
			h.publish(t, tc.info(h))
			obs := &recordingObserver{}
			w := h.worker()
			w.Observer = obs
			stop := start(t, w.Run)
			eventually(t, "three polls", func() bool { f, _, _ := obs.snapshot(); return len(f) >= 3 })
			_ = stop()
			fetches, joins, _ := obs.snapshot()
			// Refused at every poll, the first (a new object) and the
			// conditional ones after it alike.
			if n := count(fetches, tc.want); n != len(fetches) {
				t.Errorf("fetch results = %q, want only %s", fetches, tc.want)
			}
			if len(joins) != 0 {
				t.Errorf("joins observed for refused join info: %q", joins)
			}
		})
	}
}

func TestJoinResultClasses(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, JoinSuccess},
		{&kubeadm.ExitError{ExitCode: 1, Output: []string{"could not find a JWS signature in the cluster-info ConfigMap for token ID \"abcdef\""}}, JoinTokenRejected},
		{&kubeadm.ExitError{ExitCode: 1, Output: []string{"a Node with name \"node-a\" and status \"Ready\" already exists in the cluster"}}, JoinNodeStillRegistered},
		{fmt.Errorf("kubeadm join: %w", &kubeadm.ExitError{ExitCode: -1, Err: fmt.Errorf("%w (signal: killed)", context.DeadlineExceeded)}), JoinTimeout},
		{errors.New("write join configuration: disk full"), JoinFailure},
	} {
		if got := joinResult(tc.err); got != tc.want {
			t.Errorf("joinResult(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestControlPlaneObserverSeesThePublication(t *testing.T) {
	h, _, idle := newFakeClockHarness(t)
	cp := h.controlPlane()
	obs := &recordingObserver{}
	cp.Observer = obs
	stop := start(t, cp.Run)
	idle("first publish")
	_ = stop()
	info := h.published(t)
	_, _, published := obs.snapshot()
	want := fmt.Sprintf("%d@%s", info.Generation, info.ExpiresAt.UTC().Format(time.RFC3339))
	if len(published) == 0 || published[len(published)-1] != want {
		t.Errorf("published observations = %q, want the last to be %s", published, want)
	}
}
