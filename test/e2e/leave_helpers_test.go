//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The worker Auto Scaling group and its termination lifecycle hook that
// hack/e2e/aws.sh creates in moto and the workers' configuration names
// (hack/e2e/lib.sh WORKER_ASG, WORKER_HOOK, WORKER_HOOK_TIMEOUT).
const (
	workerASG           = cluster + "-workers"
	workerHook          = cluster + "-workers-terminate"
	workerHookHeartbeat = 60 * time.Second
	// asgLeaveMargin is kept between the drain's deadline and the hook's
	// heartbeat timeout (cmd/agent asgBudgetMargin).
	asgLeaveMargin = 20 * time.Second
	// leavePoll is the agent's default leave.pollInterval: a notice is seen
	// within it.
	leavePoll = 5 * time.Second
	// nodeGoneTimeout bounds the wait for the control plane to delete the
	// Node of a terminated instance.
	nodeGoneTimeout = 90 * time.Second
)

// instanceID is the node's EC2 instance in moto (hack/e2e/aws.sh records
// one per node).
func instanceID(t *testing.T, node string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "aws", "iids", node))
	if err != nil {
		t.Fatalf("%s: no EC2 instance recorded: %v", node, err)
	}
	return strings.TrimSpace(string(b))
}

// instanceKey is the access key ID of the node's instance-role session
// (what its metadata service hands out).
func instanceKey(t *testing.T, node string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "aws", "creds", node+".json"))
	if err != nil {
		t.Fatalf("%s: no instance-role credentials: %v", node, err)
	}
	var v struct {
		Credentials struct {
			AccessKeyID string `json:"AccessKeyId"`
		}
	}
	if err := json.Unmarshal(b, &v); err != nil || v.Credentials.AccessKeyID == "" {
		t.Fatalf("%s: instance-role credentials: %v", node, err)
	}
	return v.Credentials.AccessKeyID
}

// instanceStates is what EC2 (moto) says of the instances, by ID.
func instanceStates(t *testing.T, ids ...string) map[string]string {
	t.Helper()
	out := mustScript(t, "aws.sh", append([]string{"cli", "ec2", "describe-instances", "--output", "json",
		"--query", "Reservations[].Instances[].[InstanceId,State.Name]", "--instance-ids"}, ids...)...)
	var rows [][]string
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("describe-instances: %v\n%s", err, out)
	}
	res := map[string]string{}
	for _, r := range rows {
		if len(r) == 2 {
			res[r[0]] = r[1]
		}
	}
	return res
}

// lifecycleRecord is one call the Auto Scaling proxy answered
// (test/e2e/asgproxy: $RUN/aws/lifecycle-actions.jsonl).
type lifecycleRecord struct {
	Time                  time.Time `json:"time"`
	Action                string    `json:"action"`
	AutoScalingGroupName  string    `json:"AutoScalingGroupName"`
	LifecycleHookName     string    `json:"LifecycleHookName"`
	InstanceID            string    `json:"InstanceId"`
	LifecycleActionResult string    `json:"LifecycleActionResult"`
	AccessKeyID           string    `json:"accessKeyId"`
	Node                  string    `json:"node"`
	CallerArn             string    `json:"callerArn"`
	Status                int       `json:"status"`
	Error                 string    `json:"error"`
}

// lifecycleRecords reads every call the proxy recorded so far.
func lifecycleRecords(t *testing.T) []lifecycleRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "aws", "lifecycle-actions.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var out []lifecycleRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var r lifecycleRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("lifecycle record %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// terminateInstance terminates the node's instance in EC2 (moto) and powers
// the node off for good (hack/e2e/node.sh terminate).
func terminateInstance(t *testing.T, node string) {
	t.Helper()
	iid := instanceID(t, node)
	mustScript(t, "node.sh", "terminate", node)
	if s := instanceStates(t, iid)[iid]; s != "shutting-down" && s != "terminated" {
		t.Fatalf("%s: instance %s is %q after its termination, want shutting-down or terminated", node, iid, s)
	}
	t.Logf("%s: instance %s terminated, node powered off", node, iid)
}

// nodeGoneAfterTermination waits (nodeGoneTimeout) for the control plane to
// delete the Node of a terminated instance (issue 10's reconciler); it
// reports a failure, not a fatal one, so that the checks after it run.
func nodeGoneAfterTermination(t *testing.T, node string) bool {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < nodeGoneTimeout {
		ns, err := nodesNow()
		if err == nil {
			if _, ok := ns[node]; !ok {
				t.Logf("Node %s deleted %s after its instance was terminated", node, time.Since(start).Round(time.Second))
				return true
			}
			last = "the Node is still there"
		} else {
			last = err.Error()
		}
		time.Sleep(time.Second)
	}
	t.Errorf("Node %s is still there %s after its instance %s was terminated (the control plane deletes the Node of a "+
		"terminated instance); last seen: %s", node, nodeGoneTimeout, instanceID(t, node), last)
	return false
}

// nodesOfRunningInstances are the Nodes present now whose instance EC2
// reports running, by Node name.
func nodesOfRunningInstances(t *testing.T) map[string]string {
	t.Helper()
	ns, err := nodesNow()
	if err != nil {
		t.Fatalf("list Nodes: %v", err)
	}
	byID := map[string]string{}
	var ids []string
	for name := range ns {
		id := instanceID(t, name)
		byID[id] = name
		ids = append(ids, id)
	}
	out := map[string]string{}
	for id, s := range instanceStates(t, ids...) {
		if s == "running" {
			out[byID[id]] = id
		}
	}
	return out
}

// assertNodesKept checks that every Node of kept (node -> instance, all
// running before) whose instance EC2 still reports running is still there:
// the control plane never deletes the Node of a live instance.
func assertNodesKept(t *testing.T, kept map[string]string) {
	t.Helper()
	ns, err := nodesNow()
	if err != nil {
		t.Fatalf("list Nodes: %v", err)
	}
	var ids []string
	for _, id := range kept {
		ids = append(ids, id)
	}
	states := instanceStates(t, ids...)
	var missing []string
	for name, id := range kept {
		if _, ok := ns[name]; !ok && states[id] == "running" {
			missing = append(missing, fmt.Sprintf("%s (%s, running)", name, id))
		}
	}
	if len(missing) > 0 {
		t.Errorf("Nodes of running instances were deleted: %s", strings.Join(missing, ", "))
	}
}
