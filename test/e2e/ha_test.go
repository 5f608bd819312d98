//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

// The HA scenarios (issue 14) run in make e2e-ha: cp, cp2 and cp3 booted at
// once behind a TCP load balancer on the aws host (test/e2e/tcplb, standing
// in for the internal NLB), whose address is every control plane's
// kubeadm.controlPlaneEndpoint, and one worker.

// lbEndpoint is the load balancer (hack/e2e/lib.sh CP_ENDPOINT).
const lbEndpoint = "10.200.0.2:6443"

var haControlPlanes = []string{"cp", "cp2", "cp3"}

func haOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("E2E_CONTROL_PLANES") != "3" {
		t.Skip("an HA scenario: runs in make e2e-ha (three control planes behind a load balancer)")
	}
}

// etcdMember is one member in etcd's JSON gateway answer.
type etcdMember struct {
	ID        string `json:"ID"`
	Name      string `json:"name"`
	IsLearner bool   `json:"isLearner"`
}

// etcdMembers asks node's etcd (its JSON gateway, with the node's etcd
// healthcheck client certificate) for the member list.
func etcdMembers(t *testing.T, node string) ([]etcdMember, error) {
	t.Helper()
	pki := nodeFile(node, "/etc/kubernetes/pki/etcd")
	out, err := exec.Command("nsenter", "--net=/run/netns/"+machine(node), "--", "curl", "-sS", "--max-time", "5",
		"--cacert", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "healthcheck-client.crt"),
		"--key", filepath.Join(pki, "healthcheck-client.key"), "-X", "POST", "-d", "{}",
		"https://127.0.0.1:2379/v3/cluster/member/list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: etcd member list: %v: %s", node, err, out)
	}
	var list struct {
		Members []etcdMember `json:"members"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("%s: etcd member list: %v: %s", node, err, out)
	}
	return list.Members, nil
}

// voters names the voting members (learners aside), sorted.
func voters(ms []etcdMember) []string {
	var out []string
	for _, m := range ms {
		if !m.IsLearner {
			out = append(out, m.Name)
		}
	}
	sort.Strings(out)
	return out
}

// s3Object reads an object of the cluster as the administrator.
func s3Object(t *testing.T, key string) []byte {
	t.Helper()
	return []byte(mustScript(t, "aws.sh", "cli", "s3", "cp", fmt.Sprintf("s3://%s/%s/%s", bucket, cluster, key), "-"))
}

// uploader returns the control plane that holds the uploader lock (its own
// state says so) and the others, which stand by.
func uploader(t *testing.T, cps []string) (string, []string) {
	t.Helper()
	var holder string
	var others []string
	for _, n := range cps {
		st := agentState(t, n)
		if st.UploaderLockHolder == instanceID(t, n) {
			holder = n
		} else {
			others = append(others, n)
		}
	}
	return holder, others
}

// Three control planes booted at once: exactly one ran kubeadm init, the
// others joined it through S3 (kubeadm join --control-plane), etcd has
// three voting members, every Node is Ready, the worker joined through the
// load balancer, one control plane publishes and the others stand by, and
// the certificate key is in no journal and on no command line; a worker
// cannot read the control-plane join info.
func TestHAControlPlanesInitOnceAndJoinThroughS3(t *testing.T) {
	haOnly(t)
	initializer := ""
	for _, n := range haControlPlanes {
		calls := kubeadmCalls(t, n)
		inits := 0
		for _, c := range calls {
			if c == "init" {
				inits++
			}
		}
		t.Logf("%s: kubeadm %q", n, calls)
		switch {
		case inits == 1 && initializer == "":
			initializer = n
		case inits > 0:
			t.Errorf("%s ran kubeadm init %d times (initializer so far: %q)", n, inits, initializer)
		}
	}
	if initializer == "" {
		t.Fatal("no control plane ran kubeadm init")
	}
	var marker struct {
		InitializedBy string `json:"initializedBy"`
		Endpoint      string `json:"endpoint"`
	}
	if err := json.Unmarshal(s3Object(t, "cp/initialized.json"), &marker); err != nil {
		t.Fatal(err)
	}
	if marker.InitializedBy != instanceID(t, initializer) || marker.Endpoint != lbEndpoint {
		t.Errorf("marker %+v, want initialized by %s (%s) at %s", marker, initializer, instanceID(t, initializer), lbEndpoint)
	}
	for _, n := range haControlPlanes {
		st := agentState(t, n)
		if n == initializer {
			if st.InitializedBy != instanceID(t, n) {
				t.Errorf("%s: initializedBy %q", n, st.InitializedBy)
			}
			continue
		}
		if st.ControlPlaneJoinedAt.IsZero() || st.InitializedBy != instanceID(t, initializer) ||
			countCalls(kubeadmCalls(t, n), "join") == 0 {
			t.Errorf("%s did not join the control plane: %+v", n, st)
		}
	}
	ms, err := etcdMembers(t, initializer)
	if err != nil {
		t.Fatal(err)
	}
	if got := voters(ms); !slices.Equal(got, haControlPlanes) || len(ms) != 3 {
		t.Errorf("etcd members %+v, want the three control planes as voters", ms)
	}
	ns := nodes(t)
	for _, n := range append(slices.Clone(haControlPlanes), "w1") {
		if !ns[n].ready() {
			t.Errorf("Node %s not Ready", n)
		}
	}
	for _, n := range haControlPlanes {
		if _, ok := ns[n].Metadata.Labels["node-role.kubernetes.io/control-plane"]; !ok {
			t.Errorf("Node %s has no control-plane role label", n)
		}
	}
	kc, err := os.ReadFile(nodeFile("w1", "/etc/kubernetes/kubelet.conf"))
	if err != nil || !strings.Contains(string(kc), "server: https://"+lbEndpoint) {
		t.Errorf("w1's kubelet does not talk through the load balancer: %v\n%s", err, kc)
	}
	holder, standby := uploader(t, haControlPlanes)
	if holder == "" {
		t.Fatal("no control plane holds the uploader lock")
	}
	for _, n := range standby {
		if st := agentState(t, n); st.Phase != state.PhaseStandby || st.UploaderLockHolder != instanceID(t, holder) {
			t.Errorf("%s: phase %s, uploader %q; want Standby naming %s", n, st.Phase, st.UploaderLockHolder, holder)
		}
	}

	// The certificate key: in S3 for control planes only, nowhere else.
	var cpInfo struct {
		CertificateKey string `json:"certificateKey"`
	}
	if err := json.Unmarshal(s3Object(t, "cp/join.json"), &cpInfo); err != nil || len(cpInfo.CertificateKey) != 64 {
		t.Fatalf("control-plane join info: %v", err)
	}
	for _, n := range append(slices.Clone(haControlPlanes), "w1") {
		if strings.Contains(agentLog(t, n), cpInfo.CertificateKey) {
			t.Errorf("%s: the certificate key is in the agent's journal", n)
		}
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), cpInfo.CertificateKey) {
			t.Errorf("the certificate key is on a command line: %s", f)
		}
	}
	out, err := script("aws.sh", "as-node", "w1", "s3", "cp", fmt.Sprintf("s3://%s/%s/cp/join.json", bucket, cluster), "-")
	if err == nil || !strings.Contains(out, "403") && !strings.Contains(out, "AccessDenied") && !strings.Contains(out, "Forbidden") {
		t.Errorf("a worker read the control-plane join info (err %v): %.200s", err, out)
	}
}

// The control plane that publishes join info is terminated: kubectl through
// the load balancer keeps working, the worker stays Ready, another control
// plane takes the uploader lock over (lease expired, EC2 says terminated)
// and publishes the next join info, and the terminated one's etcd member and
// Node are removed by the node cleanup. Then, with the kubeadm-certs Secret
// deleted right after an upload, a replacement control plane (cp4) still
// joins through S3. Last, cp4 loses power, its Node is deleted by hand and
// its instance terminated: the node cleanup's sweep removes its etcd member,
// which no Node names.
func TestHALosingTheUploaderAndReplacingIt(t *testing.T) {
	haOnly(t)
	holder, survivors := uploader(t, haControlPlanes)
	if holder == "" {
		t.Fatal("no control plane holds the uploader lock")
	}
	before, _ := joinObject(t)
	t.Logf("terminating %s, which publishes join info (generation %d)", holder, before.Generation)
	mustScript(t, "node.sh", "terminate", holder)
	terminatedAt := time.Now()

	// The API through the load balancer, every 2 s for 60 s.
	var failures []string
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(2 * time.Second) {
		if out, err := kubectlErr("--request-timeout=10s", "get", "--raw", "/readyz"); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v %s", time.Since(terminatedAt).Round(time.Second), err, out))
		}
		if ns, err := nodesNow(); err != nil || !ns["w1"].ready() {
			failures = append(failures, fmt.Sprintf("%s: w1 not Ready (%v)", time.Since(terminatedAt).Round(time.Second), err))
		}
	}
	if len(failures) > 0 {
		t.Errorf("with %s gone, %d of 30 checks through the load balancer failed:\n%s", holder, len(failures), strings.Join(failures, "\n"))
	}

	var next string
	eventually(t, 3*time.Minute, "another control plane to take the uploader lock and publish", func() (bool, string) {
		h, _ := uploader(t, survivors)
		if h == "" {
			return false, "no survivor holds it"
		}
		next = h
		info, _ := joinObject(t)
		return info.Generation > before.Generation, fmt.Sprintf("%s holds it; join info generation %d", h, info.Generation)
	})
	t.Logf("%s took over publishing after %s", next, time.Since(terminatedAt).Round(time.Second))
	eventually(t, 2*time.Minute, "the terminated control plane's Node to be deleted", func() (bool, string) {
		_, ok := nodes(t)[holder]
		return !ok, fmt.Sprintf("Node %s present: %v", holder, ok)
	})
	ms, err := etcdMembers(t, next)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd members after %s was terminated: %v", holder, voters(ms))
	if got := voters(ms); slices.Contains(got, holder) || len(got) != 2 {
		t.Errorf("etcd voters %v after %s's Node was deleted, want the two survivors (its member removed first)", got, holder)
	}

	// The new uploader answers a join request: with the upload it adopted
	// from the terminated one while the kubeadm-certs Secret is there, or
	// with one of its own. Then the Secret is deleted: the replacement's
	// first join finds the published info usable but fails to download the
	// certificates; it is undone, the replacement asks for info newer than
	// that generation, and joins with the new upload.
	gen := cpInfoGeneration(t)
	if gen == 0 {
		t.Fatal("no control-plane join info published")
	}
	req := filepath.Join(runDir, "cp-join-request.json")
	if err := os.WriteFile(req, []byte(`{"apiVersion":"kubestrap.dev/v1alpha1","kind":"ControlPlaneJoinRequest","requester":"e2e"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	reqKey := cluster + "/cp/join-request.json"
	mustScript(t, "aws.sh", "cli", "s3api", "put-object", "--bucket", bucket, "--key", reqKey, "--body", req)
	eventually(t, time.Minute, "the new uploader to answer a join request", func() (bool, string) {
		out, err := script("aws.sh", "cli", "s3api", "head-object", "--bucket", bucket, "--key", reqKey)
		if err != nil && (strings.Contains(out, "404") || strings.Contains(out, "Not Found")) {
			return true, ""
		}
		return false, fmt.Sprintf("the request is still there (%v %s); control-plane join info generation %d", err,
			strings.TrimSpace(out), cpInfoGeneration(t))
	})
	kubectl(t, "-n", "kube-system", "delete", "secret", "kubeadm-certs")
	// A replacement joins through S3 (the new uploader answers its request).
	mustScript(t, "node.sh", "boot", "cp4", "control-plane")
	eventually(t, 6*time.Minute, "cp4 joined the control plane and stands by, its Node Ready", func() (bool, string) {
		st := agentState(t, "cp4")
		n, ok := nodes(t)["cp4"]
		return st.Phase == state.PhaseStandby && ok && n.ready(), fmt.Sprintf("phase %s: %s; Node present %v", st.Phase, st.Message, ok)
	})
	if calls := kubeadmCalls(t, "cp4"); slices.Contains(calls, "init") || countCalls(calls, "join") < 2 || countCalls(calls, "reset") == 0 {
		t.Errorf("cp4's kubeadm runs %q: want a failed join (the Secret was deleted), a reset, a join that worked, no init", calls)
	}
	ms, err = etcdMembers(t, "cp4")
	if err != nil {
		t.Fatal(err)
	}
	if got := voters(ms); !slices.Contains(got, "cp4") {
		t.Errorf("etcd voters %v, want cp4 among them", got)
	}
	if out, err := kubectlErr("--request-timeout=10s", "get", "--raw", "/readyz"); err != nil {
		t.Errorf("API through the load balancer: %v %s", err, out)
	}

	// A control plane whose Node is deleted by hand before its instance is
	// terminated leaves an etcd member that no Node names: the uploader's
	// node cleanup finds it by address (EC2: the instance with that private
	// IP is terminated) and removes it, quorum permitting (2 of 3 healthy).
	mustScript(t, "node.sh", "poweroff", "cp4")
	kubectl(t, "delete", "node", "cp4")
	mustScript(t, "aws.sh", "cli", "ec2", "terminate-instances", "--instance-ids", instanceID(t, "cp4"))
	swept := time.Now()
	eventually(t, 2*time.Minute, "the uploader to remove cp4's etcd member, which no Node names", func() (bool, string) {
		ms, err := etcdMembers(t, next)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range ms {
			if m.Name == "cp4" {
				return false, fmt.Sprintf("members %v", voters(ms))
			}
		}
		return len(ms) == 2, fmt.Sprintf("members %v", voters(ms))
	})
	var removal string
	for _, l := range agentLogLines(t, next) {
		if l.Msg == "removed an etcd member that no Node names" && l.str("member") == "cp4" {
			removal = l.str("reason")
		}
	}
	if removal == "" {
		t.Errorf("%s did not log the removal of cp4's member by the sweep", next)
	}
	t.Logf("cp4's member removed %s after its instance was terminated: %s", time.Since(swept).Round(time.Second), removal)
}

// cpInfoGeneration is the generation of the control-plane join info in S3
// (0: none).
func cpInfoGeneration(t *testing.T) int64 {
	t.Helper()
	out, err := script("aws.sh", "cli", "s3", "cp", fmt.Sprintf("s3://%s/%s/cp/join.json", bucket, cluster), "-")
	if err != nil {
		return 0
	}
	var v struct {
		Generation int64 `json:"generation"`
	}
	if json.Unmarshal([]byte(out), &v) != nil {
		return 0
	}
	return v.Generation
}
