//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

// The HA boot rounds (issue 14): cp, cp2 and cp3 boot at once, five times
// in a row, each time into a new cluster (round 1 is the one make e2e-ha
// brought up; rounds 2-5 wipe every node, empty the cluster's S3 prefix and
// boot fresh nodes with the same instance IDs, the worker w1 with them).
// Each round must end the same way: one kubeadm init that succeeded, three
// etcd voters, every Node Ready, the worker joined through the load
// balancer. Rounds 2-5 add a fault each, with the real kubeadm:
//   - round 2: power loss of the holder right after it took the init lock
//     (PID 1 killed, its EC2 instance stopped): another control plane
//     initializes once the lease ran out (EC2 says stopped); the holder,
//     started again later, joins that cluster;
//   - round 3: the holder is SIGSTOPped (agent and kubeadm) inside kubeadm
//     init for longer than its lease (20 s) and resumed: it fences itself
//     (gives the lock up, undoes its init with kubeadm reset) and there is
//     still one cluster;
//   - round 4: a control plane joining loses power once its etcd member is
//     listed, and is started again: no stale member is left;
//   - round 5: the first control plane to join loses power right after its
//     etcd member became a voter (two voters, one down: no quorum); it
//     undoes its join only once that keeps the quorum, then joins again.
// The scenarios after this one (ha_test.go) run on the cluster of round 5.

// haRoundNodes are the nodes every round boots at once.
var haRoundNodes = []string{"cp", "cp2", "cp3", "w1"}

const (
	// haStopFor is how long round 3 keeps the holder stopped: past the
	// e2e lock lease (hack/e2e/node.sh: 20 s), short of the unit's
	// WatchdogSec (60 s) minus its 30 s ping interval.
	haStopFor = 25 * time.Second
	// haRoundTimeout bounds one round's boot (the joins are one at a time).
	haRoundTimeout = 8 * time.Minute
)

func TestHABootsAtOnceFiveTimesInARow(t *testing.T) {
	haOnly(t)
	var took []string
	checkHARound(t, 1)
	for round := 2; round <= 5; round++ {
		wipeHACluster(t)
		start := time.Now()
		var hold func(t *testing.T) string
		switch round {
		case 2:
			hold = powerLossOfTheInitLockHolder
		case 3:
			hold = stopTheInitLockHolderPastItsLease
		case 4:
			hold = powerLossOfAJoiningControlPlane
		case 5:
			hold = powerLossOfAPromotedControlPlane
		}
		bootHARound(t, round, hold)
		took = append(took, fmt.Sprintf("round %d: %s", round, time.Since(start).Round(time.Second)))
		checkHARound(t, round)
	}
	t.Logf("boot to every node Ready: %s", strings.Join(took, ", "))
}

// wipeHACluster removes every node of the last round and the cluster's
// objects in S3 (every version), so that the next round starts a new
// cluster of the same name.
func wipeHACluster(t *testing.T) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(haRoundNodes))
	for i, n := range haRoundNodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := script("node.sh", "wipe", n); err != nil {
				errs[i] = fmt.Sprintf("wipe %s: %v\n%s", n, err, out)
			}
		}()
	}
	wg.Wait()
	if e := strings.Join(slices.DeleteFunc(errs, func(s string) bool { return s == "" }), "\n"); e != "" {
		t.Fatal(e)
	}
	// The whole bucket's versions, filtered here: moto 5.2.1 refuses the
	// signature of a ListObjectVersions with a prefix from the aws CLI v1.
	out := mustScript(t, "aws.sh", "cli", "s3api", "list-object-versions", "--bucket", bucket, "--output", "json")
	var list struct {
		Versions      []s3Version `json:"Versions"`
		DeleteMarkers []s3Version `json:"DeleteMarkers"`
	}
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("list-object-versions: %v: %.300s", err, out)
		}
	}
	objs := slices.DeleteFunc(append(list.Versions, list.DeleteMarkers...), func(v s3Version) bool {
		return !strings.HasPrefix(v.Key, cluster+"/")
	})
	for len(objs) > 0 {
		batch := objs[:min(len(objs), 1000)]
		objs = objs[len(batch):]
		body, _ := json.Marshal(map[string]any{"Objects": batch, "Quiet": true})
		f := filepath.Join(runDir, "s3-delete.json")
		if err := os.WriteFile(f, body, 0o600); err != nil {
			t.Fatal(err)
		}
		mustScript(t, "aws.sh", "cli", "s3api", "delete-objects", "--bucket", bucket, "--delete", "file://"+f)
	}
	out = mustScript(t, "aws.sh", "cli", "s3api", "list-object-versions", "--bucket", bucket, "--output", "json",
		"--query", "[Versions[].Key, DeleteMarkers[].Key][]")
	if strings.Contains(out, `"`+cluster+`/`) {
		t.Fatalf("objects of cluster %s left in S3 after the wipe: %s", cluster, out)
	}
}

type s3Version struct {
	Key       string `json:"Key"`
	VersionID string `json:"VersionId"`
}

// bootHARound boots every node of a round at once; hold, when set, runs
// beside the boots (it finds the init lock's holder in the journals and
// does its fault) and returns a description of what it did. It waits until
// every agent is READY and every Node Ready.
func bootHARound(t *testing.T, round int, hold func(t *testing.T) string) {
	t.Helper()
	t.Logf("round %d: booting %v at once", round, haRoundNodes)
	var wg sync.WaitGroup
	errs := make([]string, len(haRoundNodes))
	for i, n := range haRoundNodes {
		role := "control-plane"
		if !isCP(n) {
			role = "worker"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := script("node.sh", "boot", n, role); err != nil {
				errs[i] = fmt.Sprintf("boot %s: %v\n%s", n, err, out)
			}
		}()
	}
	if hold != nil {
		t.Logf("round %d: %s", round, hold(t))
	}
	wg.Wait()
	if e := strings.Join(slices.DeleteFunc(errs, func(s string) bool { return s == "" }), "\n"); e != "" {
		t.Fatal(e)
	}
	eventually(t, haRoundTimeout, fmt.Sprintf("round %d: every agent READY and every Node Ready", round), func() (bool, string) {
		for _, n := range haRoundNodes {
			if u := unit(t, n); !u.Ready {
				return false, fmt.Sprintf("%s: %s, STATUS %q", n, u.Active, u.Status)
			}
		}
		ns, err := nodesVia("cp")
		if err != nil {
			return false, err.Error()
		}
		for _, n := range haRoundNodes {
			if !ns[n].ready() {
				return false, "Node " + n + " not Ready"
			}
		}
		return true, ""
	})
}

func isCP(n string) bool { return strings.HasPrefix(n, "cp") }

// nodesVia lists the Nodes with the admin.conf of node (all name the load
// balancer); an error while the cluster is not there yet.
func nodesVia(node string) (map[string]nodeObj, error) {
	kc := nodeFile(node, "/etc/kubernetes/admin.conf")
	if _, err := os.Stat(kc); err != nil {
		return nil, fmt.Errorf("no admin.conf on %s yet", node)
	}
	out, err := exec.Command("nsenter", "--net=/run/netns/"+prefix+"-aws", "--", "kubectl", "--kubeconfig", kc,
		"--request-timeout=10s", "get", "nodes", "-o", "json").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %v: %.200s", err, out)
	}
	var list struct {
		Items []nodeObj `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("decode nodes: %v", err)
	}
	m := map[string]nodeObj{}
	for _, n := range list.Items {
		m[n.Metadata.Name] = n
	}
	return m, nil
}

// checkHARound asserts what every round must end with: exactly one control
// plane ran a kubeadm init that succeeded, and the marker names it; etcd
// has the three control planes as voters; every Node is Ready; the worker
// talks to the load balancer.
func checkHARound(t *testing.T, round int) {
	t.Helper()
	var initializers []string
	for _, n := range haControlPlanes {
		runs := kubeadmRuns(agentLogLines(t, n))
		if countRuns(runs, "kubeadm init", func(r kubeadmRun) bool { return r.OK }) > 0 {
			initializers = append(initializers, n)
		}
	}
	if len(initializers) != 1 {
		t.Fatalf("round %d: control planes whose kubeadm init succeeded: %v, want exactly one", round, initializers)
	}
	var marker struct {
		InitializedBy string `json:"initializedBy"`
	}
	if err := json.Unmarshal(s3Object(t, "cp/initialized.json"), &marker); err != nil {
		t.Fatalf("round %d: marker: %v", round, err)
	}
	if marker.InitializedBy != instanceID(t, initializers[0]) {
		t.Errorf("round %d: the marker names %s, but %s (%s) initialized", round, marker.InitializedBy, initializers[0], instanceID(t, initializers[0]))
	}
	ms, err := etcdMembers(t, initializers[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := voters(ms); !slices.Equal(got, haControlPlanes) || len(ms) != 3 {
		t.Errorf("round %d: etcd members %+v, want the three control planes as voters", round, ms)
	}
	ns, err := nodesVia("cp")
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	for _, n := range haRoundNodes {
		if !ns[n].ready() {
			t.Errorf("round %d: Node %s not Ready", round, n)
		}
	}
	if len(ns) != len(haRoundNodes) {
		t.Errorf("round %d: %d Nodes, want %d", round, len(ns), len(haRoundNodes))
	}
	kc, err := os.ReadFile(nodeFile("w1", "/etc/kubernetes/kubelet.conf"))
	if err != nil || !strings.Contains(string(kc), "server: https://"+lbEndpoint) {
		t.Errorf("round %d: w1's kubelet does not talk through the load balancer: %v", round, err)
	}
	t.Logf("round %d: %s initialized; etcd voters %v; Nodes Ready", round, initializers[0], voters(ms))
}

// initLockHolder waits for the control plane that logs "holding the init
// lock" (polling the three journals every 100 ms) and returns it.
func initLockHolder(t *testing.T, msg, command string, timeout time.Duration) string {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		for _, n := range haControlPlanes {
			for _, l := range agentLogLines(t, n) {
				if l.Msg == msg && (command == "" || l.str("command") == command) {
					t.Logf("%s: %q (%s) after %s", n, msg, command, time.Since(start).Round(10*time.Millisecond))
					return n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no control plane logged %q (%s) within %s", msg, command, timeout)
	return ""
}

// killInitLockHolder polls the control planes' state files every 10 ms
// until one records that it holds the init lock, and kills that node's PID
// 1 (sdnode.sh's leader.pid) at once: a power loss.
func killInitLockHolder(t *testing.T, timeout time.Duration) (string, time.Time) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		for _, n := range haControlPlanes {
			st, err := state.Load(nodeFile(n, "/var/lib/kubestrap"))
			if err != nil || st.InitLockHolder == "" {
				continue
			}
			pid := killPID1(t, n)
			t.Logf("%s holds the init lock (its state file, after %s): its PID 1 (%d) killed", n, time.Since(start).Round(10*time.Millisecond), pid)
			return n, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no control plane recorded that it holds the init lock within %s", timeout)
	return "", time.Time{}
}

// initsBy lists the control planes other than except that started kubeadm init.
func initsBy(t *testing.T, except string) []string {
	t.Helper()
	var out []string
	for _, n := range haControlPlanes {
		if n != except && slices.Contains(kubeadmCalls(t, n), "init") {
			out = append(out, n)
		}
	}
	return out
}

// powerLossOfTheInitLockHolder (round 2): the holder loses power right
// after it took the init lock; another control plane initializes once the
// lease ran out and EC2 says the holder's instance is stopped; the holder,
// started again, finds the cluster initialized by another and joins it
// (undoing its own init first if it got that far).
func powerLossOfTheInitLockHolder(t *testing.T) string {
	// The holder is seen in its state file (written as it takes the lock,
	// before it reads the marker again and runs kubeadm init) and its PID 1
	// killed from here at once; node.sh poweroff then cleans up and stops
	// its instance.
	h, killed := killInitLockHolder(t, 5*time.Minute)
	mustScript(t, "node.sh", "poweroff", h)
	began := countRuns(kubeadmRuns(agentLogLines(t, h)), "kubeadm init", nil) > 0
	t.Logf("%s lost power right after it took the init lock (kubeadm init had started: %v)", h, began)
	var next string
	eventually(t, 4*time.Minute, "another control plane to initialize the cluster", func() (bool, string) {
		var m struct {
			InitializedBy string `json:"initializedBy"`
		}
		out, err := script("aws.sh", "cli", "s3", "cp", fmt.Sprintf("s3://%s/%s/cp/initialized.json", bucket, cluster), "-")
		if err != nil || json.Unmarshal([]byte(out), &m) != nil {
			return false, "no marker yet"
		}
		for _, n := range haControlPlanes {
			if instanceID(t, n) == m.InitializedBy {
				next = n
			}
		}
		return next != "" && next != h, "initialized by " + m.InitializedBy
	})
	after := time.Since(killed)
	// The takeover itself: the lease (20 s from the holder's last renewal,
	// at most 2 s before the power loss) must have run out first.
	var tookAt time.Time
	for _, l := range agentLogLines(t, next) {
		if l.Msg == "holding the init lock" {
			tookAt = l.Time
		}
	}
	if d := tookAt.Sub(killed); d < 17*time.Second {
		t.Errorf("%s took the init lock %s after the holder's power loss, before the holder's 20 s lease ran out", next, d.Round(100*time.Millisecond))
	} else {
		t.Logf("%s took the init lock over %s after the power loss", next, d.Round(100*time.Millisecond))
	}
	if others := initsBy(t, h); len(others) != 1 || others[0] != next {
		t.Errorf("control planes other than %s that ran kubeadm init: %v, want only %s", h, others, next)
	}
	mustScript(t, "node.sh", "start", h)
	eventually(t, 5*time.Minute, h+" started again and joined as a control plane", func() (bool, string) {
		st := agentState(t, h)
		return !st.ControlPlaneJoinedAt.IsZero(), fmt.Sprintf("phase %s: %s", st.Phase, st.Message)
	})
	runs := kubeadmRuns(agentLogLines(t, h))
	if countRuns(runs, "kubeadm init", func(r kubeadmRun) bool { return r.OK }) != 0 {
		t.Errorf("%s: a kubeadm init succeeded after its power loss: %+v", h, runs)
	}
	if began && countRuns(runs, "kubeadm reset", func(r kubeadmRun) bool { return r.OK }) == 0 {
		t.Errorf("%s: its interrupted init was not undone with kubeadm reset: %+v", h, runs)
	}
	return fmt.Sprintf("%s lost power holding the init lock; %s initialized %s later; %s started again and joined",
		h, next, after.Round(time.Second), h)
}

// stopTheInitLockHolderPastItsLease (round 3): the holder's agent and its
// kubeadm are SIGSTOPped inside kubeadm init for haStopFor and resumed.
// Meanwhile nobody else may initialize (its instance runs, so its lock is
// not taken over); once resumed it sees its lease ran out and fences
// itself: it undoes its init, and the cluster is initialized once.
func stopTheInitLockHolderPastItsLease(t *testing.T) string {
	h := initLockHolder(t, "running kubeadm", "kubeadm init", 5*time.Minute)
	agents := nodeProcsNamed(t, h, "kubestrap")
	if len(agents) != 1 {
		t.Fatalf("%s: agent processes %v, want one", h, agents)
	}
	signal(t, agents, syscall.SIGSTOP)
	kubeadms := nodeProcsNamed(t, h, "kubeadm")
	signal(t, kubeadms, syscall.SIGSTOP)
	stopped := time.Now()
	t.Logf("%s: agent %v and kubeadm %v stopped inside kubeadm init", h, agents, kubeadms)
	time.Sleep(haStopFor)
	if others := initsBy(t, h); len(others) != 0 {
		t.Errorf("while %s was stopped (its instance running), %v ran kubeadm init", h, others)
	}
	signal(t, kubeadms, syscall.SIGCONT)
	signal(t, agents, syscall.SIGCONT)
	t.Logf("%s: resumed after %s", h, time.Since(stopped).Round(time.Second))
	f := followAgentLog(t, h, true)
	l := f.waitFor(t, time.Minute, h+" fences itself (its lease ran out while it was stopped)", func(l logLine) bool {
		return strings.Contains(l.Msg, "lost the init lock")
	})
	if !strings.Contains(l.Msg, "could not be renewed in time") {
		t.Errorf("%s fenced itself for another reason: %s", h, l.Msg)
	}
	f.waitFor(t, 2*time.Minute, h+" undid its init", isKubeadmFinished("kubeadm reset"))
	return fmt.Sprintf("%s stopped %s inside kubeadm init, resumed, fenced itself and undid its init", h, haStopFor)
}

// signal sends sig to the processes (machine PIDs).
func signal(t *testing.T, pids []int, sig syscall.Signal) {
	t.Helper()
	for _, p := range pids {
		if err := syscall.Kill(p, sig); err != nil {
			t.Errorf("signal %v to %d: %v", sig, p, err)
		}
	}
}

// powerLossOfAJoiningControlPlane (round 4): a control plane loses power
// during its kubeadm join --control-plane, as soon as its etcd member is in
// the cluster's member list; started again, it completes or cleans up its
// join without leaving a stale member (checkHARound: exactly three members,
// all voters).
func powerLossOfAJoiningControlPlane(t *testing.T) string {
	j := initLockHolder(t, "running kubeadm", "kubeadm join", 8*time.Minute)
	initializer := initializerOtherThan(t, j)
	var member etcdMember
	start := time.Now()
	for found := false; !found; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("%s's etcd member never appeared in %s's member list", j, initializer)
		}
		ms, _ := etcdMembers(t, initializer)
		for _, m := range ms {
			if m.Name == j || m.Name == "" && len(ms) > 1 {
				member, found = m, true
			}
		}
	}
	killPID1(t, j)
	mustScript(t, "node.sh", "poweroff", j)
	finished := countRuns(kubeadmRuns(agentLogLines(t, j)), "kubeadm join", func(r kubeadmRun) bool { return r.Finished }) > 0
	t.Logf("%s lost power %s after its kubeadm join began, its etcd member %+v listed (join finished: %v)",
		j, time.Since(start).Round(100*time.Millisecond), member, finished)
	time.Sleep(10 * time.Second)
	mustScript(t, "node.sh", "start", j)
	eventually(t, 6*time.Minute, j+" started again and joined as a control plane", func() (bool, string) {
		st := agentState(t, j)
		return !st.ControlPlaneJoinedAt.IsZero(), fmt.Sprintf("phase %s: %s", st.Phase, st.Message)
	})
	runs := kubeadmRuns(agentLogLines(t, j))
	return fmt.Sprintf("%s lost power inside kubeadm join (its etcd member listed, learner %v); started again, its kubeadm runs: %v",
		j, member.IsLearner, runsSummary(runs))
}

// powerLossOfAPromotedControlPlane (round 5): the first control plane to
// join loses power inside its kubeadm join right after its etcd member was
// promoted to a voter: two voters, one down, so etcd has no quorum until
// that node's etcd runs again. Started again (its kubelet, which runs that
// etcd, held back at boot until the agent has looked), its agent must not
// undo the join while that would cost the quorum (kubeadm reset deletes the
// member's data even when it cannot remove the member: no quorum for good):
// it waits, saying so, removes its member once the quorum allows, undoes the
// join and joins again; checkHARound then finds three voters.
func powerLossOfAPromotedControlPlane(t *testing.T) string {
	j := initLockHolder(t, "running kubeadm", "kubeadm join", 8*time.Minute)
	initializer := initializerOtherThan(t, j)
	start := time.Now()
	for promoted := false; !promoted; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("%s's etcd member did not become a voter within 3 minutes of its kubeadm join", j)
		}
		ms, _ := etcdMembers(t, initializer)
		for _, m := range ms {
			promoted = promoted || m.Name == j && !m.IsLearner
		}
	}
	killPID1(t, j)
	mustScript(t, "node.sh", "poweroff", j)
	lost := time.Now()
	if !agentState(t, j).ControlPlaneJoinedAt.IsZero() {
		t.Fatalf("%s's kubeadm join had finished when it lost power: the fault missed the window it tests", j)
	}
	t.Logf("%s lost power %s after its kubeadm join began, its etcd member a voter of two", j, lost.Sub(start).Round(100*time.Millisecond))
	// At the next boot the kubelet waits (at most 90 s) for a flag the test
	// sets once the agent said it waits, so the agent's first look finds
	// this node's etcd down.
	dropIn := nodeFile(j, "/etc/systemd/system/kubelet.service.d/99-e2e-hold.conf")
	if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	hold := "[Service]\nExecStartPre=/bin/sh -c 'for i in $$(seq 90); do [ -e /run/e2e-kubelet-go ] && exit 0; sleep 1; done'\n"
	if err := os.WriteFile(dropIn, []byte(hold), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dropIn)
	time.Sleep(10 * time.Second)
	mustScript(t, "node.sh", "start", j)
	eventually(t, 2*time.Minute, j+"'s agent to say it does not undo its join yet", func() (bool, string) {
		for _, l := range agentLogLines(t, j) {
			if l.Time.After(lost) && strings.Contains(l.Msg, "not undoing it yet") {
				return true, ""
			}
		}
		return false, "phase " + string(agentState(t, j).Phase)
	})
	if out, err := inNode(j, "touch", "/run/e2e-kubelet-go"); err != nil {
		t.Fatalf("%s: release the kubelet: %v %s", j, err, out)
	}
	eventually(t, 6*time.Minute, j+" started again and joined as a control plane", func() (bool, string) {
		st := agentState(t, j)
		return !st.ControlPlaneJoinedAt.IsZero(), fmt.Sprintf("phase %s: %s", st.Phase, st.Message)
	})
	// After the power loss: no kubeadm reset before the agent removed its
	// member with the quorum's consent.
	var after []logLine
	for _, l := range agentLogLines(t, j) {
		if l.Time.After(lost) {
			after = append(after, l)
		}
	}
	safe, waits := "", 0
	for _, l := range after {
		switch {
		case strings.Contains(l.Msg, "not undoing it yet"):
			waits++
		case l.Msg == "undoing the unfinished control-plane join keeps the etcd quorum":
			safe = l.str("reason")
		case l.Msg == "running kubeadm" && l.str("command") == "kubeadm reset" && safe == "":
			t.Errorf("%s ran kubeadm reset before it found that undoing its join keeps the etcd quorum", j)
		}
	}
	if safe == "" || waits == 0 {
		t.Errorf("%s: %d warnings that it waits, then %q; want at least one, then the removal of its member", j, waits, safe)
	}
	return fmt.Sprintf("%s lost power inside kubeadm join (its etcd member a voter of two); started again it waited "+
		"(%d warnings), then %q; its kubeadm runs since: %v", j, waits, safe, runsSummary(kubeadmRuns(after)))
}

// initializerOtherThan is the control plane other than j whose kubeadm
// init succeeded.
func initializerOtherThan(t *testing.T, j string) string {
	t.Helper()
	for _, n := range haControlPlanes {
		if n != j && countRuns(kubeadmRuns(agentLogLines(t, n)), "kubeadm init", func(r kubeadmRun) bool { return r.OK }) > 0 {
			return n
		}
	}
	t.Fatalf("%s joins, but no control plane's kubeadm init succeeded", j)
	return ""
}

// killPID1 kills node n's PID 1 (sdnode.sh's leader.pid) at once: every
// process of the node dies and nothing is flushed, as at a power loss.
func killPID1(t *testing.T, n string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "sd", "nodes", machine(n), "leader.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("%s: no PID 1 recorded: %v", n, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("%s: kill -9 of its PID 1 (%d): %v", n, pid, err)
	}
	return pid
}

// runsSummary names each kubeadm run and how it ended.
func runsSummary(runs []kubeadmRun) []string {
	var out []string
	for _, r := range runs {
		end := "unfinished"
		if r.Finished {
			end = map[bool]string{true: "ok", false: "failed"}[r.OK]
		}
		out = append(out, strings.TrimPrefix(r.Command, "kubeadm ")+" "+end)
	}
	return out
}
