package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLeftCountsNoticesPodsAndDuration(t *testing.T) {
	m := New("v", "worker")
	m.Left("Spot", 2, 1, 3, 40*time.Second)
	m.Left("Rebalance", 0, 0, 0, time.Second)
	m.Left("i-0123456789abcdef0", 0, 0, 0, time.Second) // not a kind: counted as other, never a label value
	out := string(m.Expose())
	for _, want := range []string{
		`kubestrap_leave_notices_total{kind="spot"} 1`,
		`kubestrap_leave_notices_total{kind="rebalance"} 1`,
		`kubestrap_leave_notices_total{kind="asg_termination"} 0`,
		`kubestrap_leave_notices_total{kind="other"} 1`,
		`kubestrap_leave_pods_total{result="evicted"} 2`,
		`kubestrap_leave_pods_total{result="left"} 1`,
		`kubestrap_leave_pods_total{result="skipped"} 3`,
		`kubestrap_leave_duration_seconds_count 3`,
		`kubestrap_leave_duration_seconds_bucket{le="60"} 3`,
		`kubestrap_leave_duration_seconds_bucket{le="30"} 2`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(out, "i-0123456789abcdef0") {
		t.Errorf("an unknown kind became a label value")
	}
}

func TestNodeCleanupPassesAndDeletions(t *testing.T) {
	m := New("v", "control-plane")
	m.NodeCleanupPass(2, nil)
	m.NodeCleanupPass(1, errors.New("describe instances: AccessDenied"))
	m.NodeCleanupPass(0, nil)
	out := string(m.Expose())
	for _, want := range []string{
		`kubestrap_node_cleanup_passes_total{result="ok"} 2`,
		`kubestrap_node_cleanup_passes_total{result="error"} 1`,
		`kubestrap_node_cleanup_deleted_nodes_total 3`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(out, "AccessDenied") {
		t.Error("an error message became a label value")
	}
}
