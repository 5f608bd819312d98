//go:build e2e

package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/certs"
	"github.com/kubestrap/kubestrap/internal/state"
)

// servedCert returns the API server certificate's "expire date" as curl
// sees it from the aws host, or "" when the API server does not answer.
func servedCert(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+prefix+"-aws", "--", "curl", "-skv", "--max-time", "5", "-o", "/dev/null", "https://10.200.0.10:6443/livez")
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`expire date: (.*)`).FindStringSubmatch(string(out))
	if m == nil {
		return "" // the API server is not answering (restarting): no certificate yet
	}
	return strings.TrimSpace(m[1])
}

// The control plane's certificates, issued by the test with ten days left
// (kubeadm's certificateValidityPeriod set to 240h for one `kubeadm certs
// renew all`, then back to a year): the agent sees them within its 30-day
// threshold at its next check (its start), renews them with kubeadm,
// restarts the static control-plane pods one at a time, and the API server
// then presents the new certificate; the workers stay Ready throughout, the
// Node has a CertificatesRenewed event and the expiry is in the metrics.
func TestCertificatesNearExpiryAreRenewed(t *testing.T) {
	setValidity := func(d string) {
		t.Helper()
		cm := kubectl(t, "-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "jsonpath={.data.ClusterConfiguration}")
		cm = regexp.MustCompile(`(?m)^certificateValidityPeriod: .*\n`).ReplaceAllString(cm, "")
		cm += "certificateValidityPeriod: " + d + "\n"
		patch := fmt.Sprintf(`{"data":{"ClusterConfiguration":%s}}`, strconv.Quote(cm))
		kubectl(t, "-n", "kube-system", "patch", "configmap", "kubeadm-config", "--type", "merge", "-p", patch)
	}
	setValidity("240h0m0s")
	if out, err := inNode("cp", "kubeadm", "certs", "renew", "all"); err != nil {
		t.Fatalf("kubeadm certs renew all (short lifetime): %v\n%s", err, out)
	}
	setValidity("8760h0m0s")
	short, err := certNotAfter(nodeFile("cp", "/etc/kubernetes/pki/apiserver.crt"))
	if err != nil || time.Until(short) > 11*24*time.Hour {
		t.Fatalf("the test's short-lived apiserver certificate expires %s (%v), want within 10 days", short, err)
	}
	before := servedCert(t)
	if before == "" {
		t.Fatalf("no certificate from the API server before the renewal")
	}
	t.Logf("served certificate before the agent's check: expires %s (file: %s)", before, short)

	// The workers Ready now must stay Ready throughout.
	readyBefore := map[string]bool{}
	for name, n := range nodes(t) {
		if strings.HasPrefix(name, "w") && n.ready() {
			readyBefore[name] = true
		}
	}
	for _, n := range []string{"cp", "w1", "w2"} {
		on, err := certs.KubeletRotationEnabled(nodeFile(n, "/var/lib/kubelet/config.yaml"))
		if err != nil || !on {
			t.Errorf("%s: the kubelet's client certificate rotation is off (%v): kubeadm's default must stay", n, err)
		}
	}
	start := time.Now()
	systemctl(t, "cp", "restart", "kubestrap")
	// Later scenarios need the API server back from its restart.
	t.Cleanup(func() { waitForAPI(t) })
	notReady := map[string]bool{}
	eventually(t, 6*time.Minute, "the agent renewed the certificates, restarted the static pods, and the API server serves the new certificate", func() (bool, string) {
		// The API server itself restarts during the renewal: a refused
		// request is not a failure, only a Node seen NotReady is.
		if ns, err := nodesNow(); err == nil {
			for name, n := range ns {
				if readyBefore[name] && !n.ready() {
					notReady[name] = true
				}
			}
		}
		served := servedCert(t)
		exp, err := time.Parse("Jan 2 15:04:05 2006 MST", strings.Join(strings.Fields(served), " "))
		renewed := agentState(t, "cp").CertificatesRenewedAt
		return err == nil && time.Until(exp) > 300*24*time.Hour && renewed.After(start),
			fmt.Sprintf("served expiry %s, certificatesRenewedAt %s", served, renewed)
	})
	t.Logf("renewed and served %s after the agent's restart", time.Since(start).Round(time.Second))
	for name := range notReady {
		t.Errorf("worker %s was NotReady during the renewal", name)
	}
	if n := len(logEntries(t, "cp", "kubeadm certificates renewed and loaded by the control plane")); n == 0 {
		t.Errorf("cp: no \"kubeadm certificates renewed and loaded by the control plane\" journal entry")
	}
	events := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name=cp,reason=CertificatesRenewed", "--no-headers")
	if strings.TrimSpace(events) == "" {
		t.Errorf("cp: no CertificatesRenewed event on its Node")
	}
	if v := sum(scrape(t, "cp"), "kubestrap_certificate_expiry_timestamp_seconds", `cert="apiserver"`); time.Until(time.Unix(int64(v), 0)) < 300*24*time.Hour {
		t.Errorf("cp: kubestrap_certificate_expiry_timestamp_seconds{cert=\"apiserver\"} = %v, want the renewed expiry", v)
	}
}

// certNotAfter reads a PEM certificate file's expiry.
func certNotAfter(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return time.Time{}, fmt.Errorf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return c.NotAfter, nil
}

// leaveDemo is the workload of the leave scenario: three replicas on three
// distinct labelled workers, at least two available at any time (PDB).
const leaveDemo = `apiVersion: apps/v1
kind: Deployment
metadata: {name: leave-demo, labels: {app: leave-demo}}
spec:
  replicas: 3
  selector: {matchLabels: {app: leave-demo}}
  template:
    metadata: {labels: {app: leave-demo}}
    spec:
      nodeSelector: {kubestrap-e2e/leave: "yes"}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: leave-demo}}, topologyKey: kubernetes.io/hostname}
      terminationGracePeriodSeconds: 10
      containers:
      - name: demo
        image: ` + demoImage + `
        readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
        resources: {requests: {cpu: 10m, memory: 16Mi}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: leave-demo}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: leave-demo}}
`

// podsOn returns the pods of app (leave-demo, asg-demo) by node (Running and not terminating).
func podsOn(t *testing.T, app string) map[string]string {
	t.Helper()
	out := kubectl(t, "get", "pods", "-l", "app="+app, "-o",
		`jsonpath={range .items[*]}{.spec.nodeName} {.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}`)
	on := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "Running" {
			on[f[0]] = f[1]
		}
	}
	return on
}

// A spot interruption notice on a worker: the agent records an Event,
// cordons the node and evicts its pods through the Eviction API with the
// node's own kubelet credentials, honouring the PodDisruptionBudget (never
// fewer than two available replicas seen), and the replica is running
// elsewhere before the notice's deadline. Then a rebalance recommendation
// on another worker only cordons it. At last EC2 reclaims the interrupted
// instance: once it is terminated the control plane deletes its Node, and
// the Nodes of running instances (the rebalanced one among them) stay.
func TestSpotNoticeDrainsTheNodeWithinItsBudget(t *testing.T) {
	const leaving, spare, rebalanced = "w3", "w4", "w5"
	waitForAPI(t)
	for _, n := range []string{leaving, spare, rebalanced} {
		ensureJoinedWorker(t, n) // booted by earlier scenarios; here when run alone
	}
	for _, n := range []string{"w1", "w2", leaving} {
		kubectl(t, "label", "node", n, "kubestrap-e2e/leave=yes", "--overwrite")
	}
	t.Cleanup(func() {
		for _, n := range []string{"w1", "w2", leaving, spare} {
			_, _ = kubectlErr("label", "node", n, "kubestrap-e2e/leave-")
		}
		_, _ = kubectlErr("delete", "deployment,pdb", "leave-demo", "--ignore-not-found")
		_, _ = kubectlErr("uncordon", rebalanced)
	})
	apply := exec.Command(filepath.Join(root, "hack", "e2e", "kubectl.sh"), "apply", "-f", "-")
	apply.Stdin = strings.NewReader(leaveDemo)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("apply leave-demo: %v\n%s", err, out)
	}
	kubectl(t, "rollout", "status", "deployment/leave-demo", "--timeout=180s")
	if on := podsOn(t, "leave-demo"); on[leaving] == "" || len(on) != 3 {
		t.Fatalf("leave-demo pods on %v, want one on each of w1, w2, %s", on, leaving)
	}
	kubectl(t, "label", "node", spare, "kubestrap-e2e/leave=yes", "--overwrite")

	noticeAt := time.Now()
	mustScript(t, "node.sh", "notice", leaving, "spot")
	deadline := noticeAt.Add(110 * time.Second)
	minAvailable := 3
	eventually(t, 110*time.Second, "the pod moved off "+leaving+" (before the notice's deadline)", func() (bool, string) {
		avail, _ := kubectlErr("get", "deployment", "leave-demo", "-o", "jsonpath={.status.availableReplicas}")
		if n, err := strconv.Atoi(strings.TrimSpace(avail)); err == nil {
			minAvailable = min(minAvailable, n)
		}
		on := podsOn(t, "leave-demo")
		return on[leaving] == "" && on[spare] != "" && len(on) == 3, fmt.Sprintf("pods on %v, available %s", on, avail)
	})
	if time.Now().After(deadline) {
		t.Errorf("the replica was rescheduled after the notice's deadline")
	}
	if minAvailable < 2 {
		t.Errorf("the PodDisruptionBudget was violated: %d available replicas seen during the drain", minAvailable)
	}
	if u := jsonpath(t, "{.spec.unschedulable}", "node", leaving); u != "true" {
		t.Errorf("%s is not cordoned (spec.unschedulable %q)", leaving, u)
	}
	st := agentState(t, leaving)
	if st.Phase != state.PhaseLeaving {
		t.Errorf("%s: phase %s, want %s", leaving, st.Phase, state.PhaseLeaving)
	}
	// Which credentials did it: the agent's own record of the leave.
	var creds string
	for _, l := range agentLogLines(t, leaving) {
		if v := l.str("credentials"); v != "" {
			creds = v
		}
	}
	if !strings.HasPrefix(creds, "user system:node:"+leaving+", groups [system:nodes]") {
		t.Errorf("%s: the leave was done as %q, want the node's own identity system:node:%s", leaving, creds, leaving)
	}
	evs := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name="+leaving,
		"-o", "custom-columns=REASON:.reason,SOURCE:.source.component", "--no-headers")
	t.Logf("%s events:\n%s", leaving, evs)
	if !strings.Contains(evs, "kubestrap") {
		t.Errorf("%s: no Event from kubestrap about the leave", leaving)
	}

	// A rebalance recommendation only cordons.
	before := kubectl(t, "get", "pods", "-A", "--field-selector", "spec.nodeName="+rebalanced, "-o", "name")
	mustScript(t, "node.sh", "notice", rebalanced, "rebalance")
	eventually(t, 30*time.Second, rebalanced+" cordoned after a rebalance recommendation", func() (bool, string) {
		u, _ := kubectlErr("get", "node", rebalanced, "-o", "jsonpath={.spec.unschedulable}")
		return strings.TrimSpace(u) == "true", "unschedulable " + u
	})
	time.Sleep(5 * time.Second)
	if after := kubectl(t, "get", "pods", "-A", "--field-selector", "spec.nodeName="+rebalanced, "-o", "name"); after != before {
		t.Errorf("%s: pods changed after a rebalance recommendation (only a cordon is due):\nbefore:\n%s\nafter:\n%s", rebalanced, before, after)
	}

	// EC2 reclaims the interrupted instance: its Node goes, the others stay.
	kept := nodesOfRunningInstances(t)
	delete(kept, leaving)
	if _, ok := kept[rebalanced]; !ok {
		t.Errorf("%s: no Node of a running instance before the termination (%v)", rebalanced, kept)
	}
	terminateInstance(t, leaving)
	nodeGoneAfterTermination(t, leaving)
	assertNodesKept(t, kept)
}

// asgDemo is leave-demo under another name, for the Auto Scaling scenario.
var asgDemo = strings.ReplaceAll(leaveDemo, "leave-demo", "asg-demo")

// An Auto Scaling termination of a worker (its metadata service's target
// lifecycle state goes to Terminated) that runs a replica of a Deployment
// with a PodDisruptionBudget: the agent cordons and drains the node within
// the lifecycle hook's heartbeat timeout (minus its margin), never below the
// budget, and completes the group's lifecycle action with CONTINUE, with
// the node's own instance-role credentials (the Auto Scaling proxy checks
// the SigV4 signature and records who called). Then the group terminates
// the instance: its Node is deleted by the control plane, while the Nodes of
// running instances stay.
func TestASGTerminationCompletesTheLifecycleHook(t *testing.T) {
	const leaving, spare = "w6", "w7"
	const app = "asg-demo"
	waitForAPI(t)
	for _, n := range []string{leaving, spare} {
		ensureJoinedWorker(t, n) // booted by earlier scenarios; here when run alone
	}
	holders := []string{"w1", "w2", leaving}
	for _, n := range holders {
		kubectl(t, "label", "node", n, "kubestrap-e2e/leave=yes", "--overwrite")
	}
	t.Cleanup(func() {
		for _, n := range append(holders, spare) {
			_, _ = kubectlErr("label", "node", n, "kubestrap-e2e/leave-")
		}
		_, _ = kubectlErr("delete", "deployment,pdb", app, "--ignore-not-found")
	})
	apply := exec.Command(filepath.Join(root, "hack", "e2e", "kubectl.sh"), "apply", "-f", "-")
	apply.Stdin = strings.NewReader(asgDemo)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("apply %s: %v\n%s", app, err, out)
	}
	kubectl(t, "rollout", "status", "deployment/"+app, "--timeout=180s")
	if on := podsOn(t, app); on[leaving] == "" || len(on) != 3 {
		t.Fatalf("%s pods on %v, want one on each of %v", app, on, holders)
	}
	kubectl(t, "label", "node", spare, "kubestrap-e2e/leave=yes", "--overwrite")
	iid, key := instanceID(t, leaving), instanceKey(t, leaving)
	kept := nodesOfRunningInstances(t)
	if kept[leaving] != iid {
		t.Fatalf("%s: its Node's instance %s is not running in EC2 (running: %v)", leaving, iid, kept)
	}
	delete(kept, leaving)
	seen := len(lifecycleRecords(t))

	noticeAt := time.Now()
	mustScript(t, "node.sh", "notice", leaving, "asg")
	// The agent sees the notice within a poll; its drain's deadline is the
	// hook's heartbeat timeout minus the margin after that.
	budget := workerHookHeartbeat - asgLeaveMargin + leavePoll
	minAvailable := 3
	eventually(t, budget+10*time.Second, "the pod moved off "+leaving+" (before the drain's deadline)", func() (bool, string) {
		avail, _ := kubectlErr("get", "deployment", app, "-o", "jsonpath={.status.availableReplicas}")
		if n, err := strconv.Atoi(strings.TrimSpace(avail)); err == nil {
			minAvailable = min(minAvailable, n)
		}
		on := podsOn(t, app)
		return on[leaving] == "" && on[spare] != "" && len(on) == 3, fmt.Sprintf("pods on %v, available %s", on, avail)
	})
	if d := time.Since(noticeAt); d > budget {
		t.Errorf("the replica was rescheduled %s after the notice, after the drain's deadline (%s)", d.Round(time.Second), budget)
	}
	if minAvailable < 2 {
		t.Errorf("the PodDisruptionBudget was violated: %d available replicas seen during the drain", minAvailable)
	}

	// The lifecycle action, completed by the node itself.
	var done *lifecycleRecord
	var mine []lifecycleRecord
	eventually(t, budget+20*time.Second, "CompleteLifecycleAction for "+leaving+" ("+iid+") at the Auto Scaling proxy", func() (bool, string) {
		mine = lifecycleRecords(t)[seen:]
		for i, r := range mine {
			if r.Action == "CompleteLifecycleAction" && r.InstanceID == iid && r.Status == 200 {
				done = &mine[i]
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d calls since the notice: %+v", len(mine), mine)
	})
	if done.LifecycleActionResult != "CONTINUE" || done.AutoScalingGroupName != workerASG || done.LifecycleHookName != workerHook {
		t.Errorf("CompleteLifecycleAction %s of group %q, hook %q; want CONTINUE of %s, %s",
			done.LifecycleActionResult, done.AutoScalingGroupName, done.LifecycleHookName, workerASG, workerHook)
	}
	if done.Node != leaving || done.AccessKeyID != key || !strings.HasSuffix(done.CallerArn, ":assumed-role/"+cluster+"-worker/"+iid) {
		t.Errorf("CompleteLifecycleAction made by node %q with key %s (%s); want %s's own instance-role key %s (session %s)",
			done.Node, done.AccessKeyID, done.CallerArn, leaving, key, iid)
	}
	if !done.Time.After(noticeAt) {
		t.Errorf("CompleteLifecycleAction at %s, before the notice (%s)", done.Time, noticeAt)
	}
	beats := 0
	for _, r := range mine {
		switch {
		case r.Status != 200:
			t.Errorf("refused lifecycle call: %+v", r)
		case r.Action == "RecordLifecycleActionHeartbeat" && r.InstanceID == iid && r.Node == leaving &&
			r.AutoScalingGroupName == workerASG && r.LifecycleHookName == workerHook:
			beats++
		case r.Action == "CompleteLifecycleAction" && r != *done:
			t.Errorf("another CompleteLifecycleAction: %+v", r)
		}
	}
	t.Logf("lifecycle calls: %d heartbeats, CompleteLifecycleAction %s %s after the notice",
		beats, done.LifecycleActionResult, done.Time.Sub(noticeAt).Round(100*time.Millisecond))

	if u := jsonpath(t, "{.spec.unschedulable}", "node", leaving); u != "true" {
		t.Errorf("%s is not cordoned (spec.unschedulable %q)", leaving, u)
	}
	if st := agentState(t, leaving); st.Phase != state.PhaseLeaving {
		t.Errorf("%s: phase %s, want %s", leaving, st.Phase, state.PhaseLeaving)
	}
	evs := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name="+leaving+",reason=ASGTermination",
		"-o", "custom-columns=SOURCE:.source.component", "--no-headers")
	if !strings.Contains(evs, "kubestrap") {
		t.Errorf("%s: no ASGTermination Event from kubestrap", leaving)
	}

	// Auto Scaling goes on: the instance is terminated, its Node goes, the others stay.
	terminateInstance(t, leaving)
	nodeGoneAfterTermination(t, leaving)
	assertNodesKept(t, kept)
}

// nodesNow lists the Nodes, or says why it cannot (the API server may be
// restarting).
func nodesNow() (map[string]nodeObj, error) {
	out, err := kubectlErr("get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []nodeObj `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	ns := map[string]nodeObj{}
	for _, n := range list.Items {
		ns[n.Metadata.Name] = n
	}
	return ns, nil
}

// waitForAPI waits (up to 3 minutes) until the API server answers.
func waitForAPI(t *testing.T) {
	t.Helper()
	eventually(t, 3*time.Minute, "the API server answering", func() (bool, string) {
		_, err := nodesNow()
		return err == nil, fmt.Sprint(err)
	})
}
