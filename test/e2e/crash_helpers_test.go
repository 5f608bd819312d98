//go:build e2e

package e2e

// Helpers of the crash-point scenarios (issue 13, "Prove convergence"): the
// agent's log read line by line as it is written, the processes of a node,
// kill -9, holding the control plane's S3 traffic so that a kill lands in a
// chosen window, and the convergence checks every crash point shares.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/logging"
	"github.com/kubestrap/kubestrap/internal/state"
)

const (
	awsIP    = "10.200.0.2"
	motoPort = "5000"
	// tokenTTL, pollInterval and expiryMargin are the agent configuration of
	// hack/e2e/node.sh (agent_config).
	tokenTTL     = 2 * time.Minute
	expiryMargin = 20 * time.Second
	// verifyInterval is the control plane's default check of join.json.
	verifyInterval = time.Minute
	// retireDelay is worker.pollInterval (2s) + kubeadm.joinTimeout (5m
	// default): how long a superseded token stays valid after a refresh
	// unless it expires first.
	retireDelay = 2*time.Second + 5*time.Minute
)

// ---- the agent's log, line by line ----

// logLine is one entry the agent wrote to the node's journal: time, level
// (syslog priority), message, fields (journal names: TOKEN_ID, COMMAND, ...).
type logLine struct {
	Time   time.Time
	Level  string
	Msg    string
	Fields map[string]string
	// Proc is the agent process that wrote it: 1 for the unit's first
	// process, 2 for the next, ... (by boot ID and PID in the journal).
	Proc int
}

// str is the field the agent logged as key ("tokenID" is TOKEN_ID in the journal).
func (l logLine) str(key string) string { return l.Fields[logging.FieldName(key)] }

// logFollower reads the agent's journal as it grows.
type logFollower struct {
	node   string
	cursor string
	procs  map[string]int
	seen   []logLine
}

// followAgentLog follows node's agent log; with fromStart it first returns
// what is already there, otherwise only what is written from now on.
func followAgentLog(t *testing.T, node string, fromStart bool) *logFollower {
	t.Helper()
	f := &logFollower{node: node, procs: map[string]int{}}
	f.read(t)
	if !fromStart {
		f.seen = nil
	}
	return f
}

// read returns the entries written since the last read.
func (f *logFollower) read(t *testing.T) []logLine {
	t.Helper()
	es, cur := journalEntries(t, f.node, f.cursor)
	f.cursor = cur
	var out []logLine
	for _, e := range es {
		if !fromAgent(e) {
			continue
		}
		k := e["_BOOT_ID"] + "/" + e["_PID"]
		if f.procs[k] == 0 {
			f.procs[k] = len(f.procs) + 1
		}
		fields := map[string]string{}
		for name, v := range e {
			if !strings.HasPrefix(name, "_") && name != "MESSAGE" && name != "PRIORITY" && name != "SYSLOG_IDENTIFIER" {
				fields[name] = v
			}
		}
		out = append(out, logLine{Time: entryTime(e), Level: e["PRIORITY"], Msg: e["MESSAGE"], Fields: fields, Proc: f.procs[k]})
	}
	f.seen = append(f.seen, out...)
	return out
}

// waitFor polls the journal every 100 ms (bounded by timeout) until a line
// matches; lines already read by the follower and not yet matched count.
func (f *logFollower) waitFor(t *testing.T, timeout time.Duration, what string, match func(logLine) bool) logLine {
	t.Helper()
	start := time.Now()
	pending := f.seen
	f.seen = nil
	for {
		for i, l := range pending {
			if match(l) {
				f.seen = append([]logLine(nil), pending[i+1:]...)
				t.Logf("%s: after %s (log time %s)", what, time.Since(start).Round(10*time.Millisecond), l.Time.Format("15:04:05.000"))
				return l
			}
		}
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s in %s's journal", timeout, what, f.node)
		}
		time.Sleep(100 * time.Millisecond)
		f.read(t)
		pending, f.seen = f.seen, nil
	}
}

// agentLogLines is the agent's whole journal on a node, parsed.
func agentLogLines(t *testing.T, node string) []logLine {
	t.Helper()
	f := &logFollower{node: node, procs: map[string]int{}}
	return f.read(t)
}

func isKubeadmFinished(command string) func(logLine) bool {
	return func(l logLine) bool {
		return l.Msg == "kubeadm finished" && l.str("command") == command && l.str("ok") == "true"
	}
}

// kubeadmRun is one kubeadm command the agent ran, from its log.
type kubeadmRun struct {
	Proc     int
	Command  string
	Start    time.Time
	End      time.Time
	Finished bool
	OK       bool
}

// kubeadmRuns pairs each "running kubeadm" entry with its "kubeadm finished".
func kubeadmRuns(lines []logLine) []kubeadmRun {
	var out []kubeadmRun
	open := map[string]int{} // proc/command -> index in out
	for _, l := range lines {
		key := fmt.Sprint(l.Proc, "/", l.str("command"))
		switch l.Msg {
		case "running kubeadm":
			open[key] = len(out)
			out = append(out, kubeadmRun{Proc: l.Proc, Command: l.str("command"), Start: l.Time})
		case "kubeadm finished":
			if i, ok := open[key]; ok {
				out[i].Finished, out[i].OK, out[i].End = true, l.str("ok") == "true", l.Time
				delete(open, key)
			}
		}
	}
	return out
}

func countRuns(runs []kubeadmRun, command string, pred func(kubeadmRun) bool) int {
	n := 0
	for _, r := range runs {
		if r.Command == command && (pred == nil || pred(r)) {
			n++
		}
	}
	return n
}

// ---- processes ----

// procStat reads /proc/PID/stat: parent, process group, name, state.
func procStat(pid int) (ppid, pgrp int, comm string, st byte, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", 0, false
	}
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return 0, 0, "", 0, false
	}
	comm = s[lp+1 : rp]
	f := strings.Fields(s[rp+1:])
	if len(f) < 3 {
		return 0, 0, "", 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	pgrp, _ = strconv.Atoi(f[2])
	return ppid, pgrp, comm, f[0][0], true
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	_, _, _, st, ok := procStat(pid)
	return ok && st != 'Z'
}

// childrenNamed lists the live children of ppid whose name is comm.
func childrenNamed(ppid int, comm string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, c, st, ok := procStat(pid); ok && pp == ppid && c == comm && st != 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// nodeProcsNamed lists the processes in a node's network namespace whose name is comm.
func nodeProcsNamed(t *testing.T, node, comm string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", machine(node)).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", machine(node), err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		if _, _, c, st, ok := procStat(pid); ok && c == comm && st != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// crash is one kill -9 of an agent (and maybe its kubeadm).
type crash struct {
	Node     string
	At       time.Time
	AgentPID int
	// Starts is the unit's start count of the killed process.
	Starts int
	// Kubeadm are the kubeadm processes killed with the agent, or (when not
	// killed) left running as orphans.
	Kubeadm []int
}

// killAgent sends SIGKILL to node's agent process; with kubeadmToo also to
// every kubeadm process of the node, in the same instant (a power loss).
func killAgent(t *testing.T, node string, kubeadmToo bool) crash {
	t.Helper()
	u := unit(t, node)
	if u.PID == 0 || !alive(u.PID) {
		t.Fatalf("%s: no running agent to kill (unit %s, pid %d)", node, u.Active, u.PID)
	}
	c := crash{Node: node, AgentPID: u.PID, Starts: u.Starts}
	if kubeadmToo {
		c.Kubeadm = nodeProcsNamed(t, node, "kubeadm")
	} else {
		c.Kubeadm = childrenNamed(u.PID, "kubeadm")
	}
	victims := []int{u.PID}
	if kubeadmToo {
		victims = append(victims, c.Kubeadm...)
	}
	c.At = time.Now()
	for _, pid := range victims {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
	}
	t.Logf("%s: kill -9 agent pid %d (start %d)%s at %s", node, u.PID, u.Starts,
		map[bool]string{true: fmt.Sprintf(" and kubeadm %v", c.Kubeadm), false: ""}[kubeadmToo], c.At.Format("15:04:05.000"))
	return c
}

// waitRestarted waits until the service manager started the agent again
// and the new process sent READY=1.
func waitRestarted(t *testing.T, c crash, timeout time.Duration) unitState {
	t.Helper()
	var u unitState
	eventually(t, timeout, c.Node+": agent restarted by its service manager and READY", func() (bool, string) {
		u = unit(t, c.Node)
		return u.Starts > c.Starts && u.Ready, fmt.Sprintf("unit %s, start %d, STATUS %q", u.Active, u.Starts, u.Status)
	})
	return u
}

// ---- holding the control plane's S3 traffic ----

// holdMark marks the connection of a held PUT (conntrack mark).
const holdMark = "0x4b53"

// holdPublish keeps the control plane's PUTs of join.json from completing
// (its other S3 requests go through). With "requests" the packet carrying
// a PUT is answered with a TCP reset, so moto never sees it: the agent's
// publication fails and is retried, with the new token still pending.
// (Dropped instead, the PUT would still reach moto after the kill: the
// kernel goes on sending what a killed process had written to its socket.)
// With "responses" the PUT reaches moto and is carried out, but the
// connection it came on is marked and no answer on it comes back: the agent
// waits inside the PUT. The returned release (also run at cleanup) removes
// the rules.
func holdPublish(t *testing.T, what string) (release func()) {
	t.Helper()
	put := []string{"OUTPUT", "-p", "tcp", "-d", awsIP, "--dport", motoPort,
		"-m", "string", "--algo", "bm", "--string", "PUT /" + bucket + "/" + cluster + "/join.json"}
	comment := []string{"-m", "comment", "--comment", "kse2e-crash-hold"}
	var rules [][]string
	switch what {
	case "requests":
		rules = [][]string{append(append(put, comment...), "-j", "REJECT", "--reject-with", "tcp-reset")}
	case "responses":
		rules = [][]string{
			append(append(put, comment...), "-j", "CONNMARK", "--set-mark", holdMark),
			append([]string{"INPUT", "-p", "tcp", "-s", awsIP, "--sport", motoPort, "-m", "connmark", "--mark", holdMark},
				append(comment, "-j", "DROP")...),
		}
	default:
		t.Fatalf("holdPublish %q", what)
	}
	var added [][]string
	release = func() {
		for _, r := range added {
			if out, err := inNode("cp", append([]string{"iptables", "-w", "-D"}, r...)...); err != nil {
				t.Errorf("iptables -D %v: %v\n%s", r, err, out)
			}
		}
		added = nil
	}
	t.Cleanup(release)
	for _, r := range rules {
		if out, err := inNode("cp", append([]string{"iptables", "-w", "-I"}, r...)...); err != nil {
			t.Fatalf("iptables -I %v: %v\n%s", r, err, out)
		}
		added = append(added, r)
	}
	return release
}

// fileFollower reads a plain log file (moto's) as it grows.
type fileFollower struct {
	path string
	off  int64
}

func followFile(t *testing.T, path string) *fileFollower {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return &fileFollower{path: path, off: fi.Size()}
}

// contains reports whether what was written since the follower started
// (or last waited) contains s.
func (f *fileFollower) contains(t *testing.T, s string) bool {
	t.Helper()
	fh, err := os.Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.Seek(f.off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(fh)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, []byte(s))
}

// waitFor polls (every 20 ms, bounded) for a new line containing s.
func (f *fileFollower) waitFor(t *testing.T, timeout time.Duration, what, s string) {
	t.Helper()
	start := time.Now()
	var buf []byte
	for time.Since(start) < timeout {
		fh, err := os.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fh.Seek(f.off, io.SeekStart)
		b, _ := io.ReadAll(fh)
		fh.Close()
		f.off += int64(len(b))
		buf = append(buf, b...)
		if bytes.Contains(buf, []byte(s)) {
			t.Logf("%s: after %s", what, time.Since(start).Round(10*time.Millisecond))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (%q in %s)", timeout, what, s, f.path)
}

// ---- convergence ----

// clusterSnap is what must not change across a crash of the control-plane
// agent: one cluster (same CA, same control-plane Node), no new init, no reset.
type clusterSnap struct {
	caHash     string
	cpUID      string
	inits      int
	resets     int
	st         state.State
	info       *join.Info
	liveTokens map[string]bootstrapToken
}

func caHash(t *testing.T) string {
	t.Helper()
	h, err := kubeadm.CACertHash(nodeFile("cp", "/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		t.Fatalf("cp CA: %v", err)
	}
	return h
}

func snapshot(t *testing.T) clusterSnap {
	t.Helper()
	calls := kubeadmCalls(t, "cp")
	info, _ := joinObject(t)
	return clusterSnap{
		caHash: caHash(t), cpUID: nodes(t)["cp"].Metadata.UID,
		inits: countCalls(calls, "init"), resets: countCalls(calls, "reset"),
		st: agentState(t, "cp"), info: info, liveTokens: kubestrapTokens(t),
	}
}

// kubestrapTokens are the bootstrap tokens kubestrap made ("kubestrap join
// token, generation N"), by ID.
func kubestrapTokens(t *testing.T) map[string]bootstrapToken {
	t.Helper()
	out := map[string]bootstrapToken{}
	for id, tok := range tokens(t) {
		if kubeadm.IsKubestrapToken(tok.Description) {
			out[id] = tok
		}
	}
	return out
}

// validJoinInfo reads join.json and validates it as a worker would.
func validJoinInfo(t *testing.T) (*join.Info, error) {
	t.Helper()
	out, err := script("aws.sh", "cli", "s3", "cp", fmt.Sprintf("s3://%s/%s/join.json", bucket, cluster), "-")
	if err != nil {
		return nil, fmt.Errorf("read join.json: %v: %s", err, out)
	}
	return join.Parse([]byte(out), join.Expectations{Cluster: cluster, Now: time.Now(), Margin: expiryMargin})
}

// unknownTokens lists the kubestrap tokens in the cluster that neither
// join.json nor the agent's state.json (tokenId, retiredTokens) names.
func unknownTokens(t *testing.T, live map[string]bootstrapToken) []string {
	t.Helper()
	info, _ := joinObject(t)
	st := agentState(t, "cp")
	known := map[string]bool{info.TokenID(): true, st.TokenID: true}
	for _, r := range st.RetiredTokens {
		known[r.ID] = true
	}
	var unknown []string
	for id, tok := range live {
		if !known[id] {
			unknown = append(unknown, fmt.Sprintf("%s (%s, expires %s)", id, tok.Description, tok.Expires.Format(time.RFC3339)))
		}
	}
	slices.Sort(unknown)
	return unknown
}

// assertConverged checks what issue 13 asks after every crash of the
// control-plane agent: it came back READY; valid join info in S3 that names
// the token state.json names, within one verify interval of the restart;
// one cluster (same CA and control-plane Node, no new kubeadm init, no
// kubeadm reset); no kubestrap token the cluster holds that neither join.json
// nor state.json knows. It returns the join info.
func assertConverged(t *testing.T, c crash, before clusterSnap) *join.Info {
	t.Helper()
	u := waitRestarted(t, c, 3*time.Minute)
	var info *join.Info
	var took time.Duration
	eventually(t, 2*verifyInterval, "valid join info in S3 that names the control plane's current token", func() (bool, string) {
		i, err := validJoinInfo(t)
		if err != nil {
			return false, err.Error()
		}
		st := agentState(t, "cp")
		if i.TokenID() != st.TokenID || i.Generation != st.JoinGeneration {
			return false, fmt.Sprintf("join.json gen %d token %s, state.json gen %d token %s", i.Generation, i.TokenID(), st.JoinGeneration, st.TokenID)
		}
		if _, ok := kubestrapTokens(t)[i.TokenID()]; !ok {
			return false, "token " + i.TokenID() + " of join.json is not in kubeadm token list"
		}
		info, took = i, time.Since(u.StartedAt)
		return true, ""
	})
	t.Logf("valid join info (generation %d, token %s) %s after the agent restarted", info.Generation, info.TokenID(), took.Round(100*time.Millisecond))
	if took > verifyInterval {
		t.Errorf("valid join info only %s after the restart; want within one verify interval (%s)", took.Round(time.Second), verifyInterval)
	}
	if info.Generation < before.info.Generation {
		t.Errorf("join info generation went back from %d to %d", before.info.Generation, info.Generation)
	}
	if st := agentState(t, "cp"); st.Phase != state.PhasePublished {
		t.Errorf("cp phase %s after the restart: %s", st.Phase, st.Message)
	}

	// One cluster.
	calls := kubeadmCalls(t, "cp")
	if i, r := countCalls(calls, "init"), countCalls(calls, "reset"); i != before.inits || r != before.resets {
		t.Errorf("cp kubeadm init %d -> %d, reset %d -> %d: want no init and no reset of the live control plane",
			before.inits, i, before.resets, r)
	}
	if h := caHash(t); h != before.caHash || len(info.CACertHashes) != 1 || info.CACertHashes[0] != h {
		t.Errorf("cluster CA changed or not pinned: before %s, now %s, join.json %v", before.caHash, h, info.CACertHashes)
	}
	if n := nodes(t)["cp"]; n.Metadata.UID != before.cpUID || !n.ready() {
		t.Errorf("control-plane Node changed (uid %s -> %s) or not Ready", before.cpUID, n.Metadata.UID)
	}
	if unknown := unknownTokens(t, kubestrapTokens(t)); len(unknown) > 0 {
		t.Errorf("kubestrap tokens in the cluster that neither join.json nor state.json knows: %v", unknown)
	}
	return info
}

// assertKept checks the contract for a superseded token: it stays valid
// until retireDelay after the refresh that superseded it or its expiry,
// whichever comes first, also across a restart of the agent.
func assertKept(t *testing.T, id string, supersededAt, expires time.Time) {
	t.Helper()
	until := supersededAt.Add(retireDelay)
	if expires.Before(until) {
		until = expires
	}
	if time.Now().After(until.Add(-2 * time.Second)) {
		t.Logf("superseded token %s: its grace ended at %s; nothing to check", id, until.Format(time.RFC3339))
		return
	}
	if _, ok := kubestrapTokens(t)[id]; !ok {
		t.Errorf("superseded token %s is gone from kubeadm token list at %s; want it valid until %s "+
			"(refresh + pollInterval + joinTimeout, or its expiry)", id, time.Now().Format(time.RFC3339), until.Format(time.RFC3339))
	}
}

// newWorkerJoins boots a new worker and checks it joins with the join info
// published now (or later).
func newWorkerJoins(t *testing.T, node string, info *join.Info) {
	t.Helper()
	bootNode(t, node)
	waitJoined(t, node, 3*time.Minute)
	st := agentState(t, node)
	if st.JoinGeneration < info.Generation {
		t.Errorf("%s joined with generation %d, want %d or later", node, st.JoinGeneration, info.Generation)
	}
	if j, r := countCalls(kubeadmCalls(t, node), "join"), countCalls(kubeadmCalls(t, node), "reset"); j != 1 || r != 0 {
		t.Errorf("%s ran kubeadm join %d times and reset %d times, want 1 and 0", node, j, r)
	}
}
