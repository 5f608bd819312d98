package role

import (
	"testing"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/state"
)

// OnWarning hears each problem once as it is first reported: a Condition
// repeated with the same meaning is not a new problem, Waiting is not a
// problem at all, and Problem always is.
func TestReporterOnWarningHearsEachNewProblemOnce(t *testing.T) {
	h := newHarness(t, config.RoleControlPlane)
	var heard []string
	h.reporter.OnWarning = func(p state.Phase, meaning, msg string) { heard = append(heard, string(p)+"/"+meaning+"/"+msg) }
	h.reporter.Condition(state.PhaseDegraded, "refresh:network", "degraded: a")
	h.reporter.Condition(state.PhaseDegraded, "refresh:network", "degraded: a, retrying in 10s")
	h.reporter.Waiting(state.PhaseWaitingJoinInfo, "not-found", "waiting")
	h.reporter.Condition(state.PhaseDegraded, "refresh:network", "degraded: again")
	h.reporter.Problem(state.PhaseWaitingJoinInfo, "refused: expired")
	want := []string{"Degraded/refresh:network/degraded: a", "Degraded/refresh:network/degraded: again", "WaitingForJoinInfo//refused: expired"}
	if len(heard) != len(want) {
		t.Fatalf("heard %q, want %q", heard, want)
	}
	for i := range want {
		if heard[i] != want[i] {
			t.Errorf("heard[%d] = %q, want %q", i, heard[i], want[i])
		}
	}
}
