package metrics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/state"
)

// KubeletHealthzURL is the kubelet's local health endpoint.
const KubeletHealthzURL = "http://127.0.0.1:10248/healthz"

// kubeletTimeout bounds the kubelet health check of /readyz.
const kubeletTimeout = 2 * time.Second

// Readiness is the /readyz check of a role, from the agent's state (the
// Reporter's): a worker is ready once joined (phase Joined) while the
// kubelet answers kubeletURL (KubeletHealthzURL in production) with 200
// within 2 s; a control plane once initialized (or joined) with its join
// info published (phase Published), or standing by while another control
// plane publishes (phase Standby). client nil means a client of its own: no
// proxy, no connection kept between checks.
func Readiness(r config.Role, current func() state.State, kubeletURL string, client *http.Client) ReadyFunc {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	}
	return func(ctx context.Context) (bool, string) {
		st := current()
		switch r {
		case config.RoleWorker:
			if st.Phase != state.PhaseJoined {
				return false, describe("not joined", st)
			}
			if err := kubeletHealthy(ctx, client, kubeletURL); err != nil {
				return false, fmt.Sprintf("joined, but the kubelet is not healthy: %v", err)
			}
			return true, "joined; the kubelet is healthy"
		case config.RoleControlPlane:
			if !st.InitializedAt.IsZero() && st.Phase == state.PhaseStandby {
				return true, fmt.Sprintf("control plane member standing by; %s publishes join info", st.UploaderLockHolder)
			}
			if st.InitializedAt.IsZero() || st.Phase != state.PhasePublished {
				return false, describe("control plane not initialized with join info published", st)
			}
			return true, fmt.Sprintf("control plane initialized; join info generation %d published", st.JoinGeneration)
		}
		return false, fmt.Sprintf("unknown role %q", r)
	}
}

func describe(what string, st state.State) string {
	phase := string(st.Phase)
	if phase == "" {
		phase = string(state.PhaseStarting)
	}
	if st.Message == "" {
		return fmt.Sprintf("%s (phase %s)", what, phase)
	}
	return fmt.Sprintf("%s (phase %s: %s)", what, phase, st.Message)
}

func kubeletHealthy(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, kubeletTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("kubelet health check %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("kubelet health check: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kubelet health check %s answered %s", url, resp.Status)
	}
	return nil
}
