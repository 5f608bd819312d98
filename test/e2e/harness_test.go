//go:build e2e

// Package e2e holds the end-to-end scenarios of issue 5. They run against the
// cluster that hack/e2e/up.sh brings up (make e2e does both, and tears it
// down at the end) and assert on its real state: Node objects, kubeadm token
// list, each agent's state.json and the READY/STATUS it sent to its service
// manager, and every kubeadm run on each node, as an operator reads them:
// `systemctl show kubestrap` and `journalctl -u kubestrap -o json` of each
// node (a systemd-nspawn machine booting Debian's systemd, hack/e2e/sdnode.sh).
//
// The scenarios share one cluster and run in order.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/state"
)

const (
	cluster = "kse2e"
	bucket  = "kse2e-bootstrap"
	ecrHost = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
)

var (
	root   = envOr("E2E_ROOT", "../..")
	runDir = envOr("E2E_RUN", "/var/cache/kubestrap/e2e-run")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if _, err := os.Stat(filepath.Join(runDir, "nodes", "cp")); err != nil {
		fmt.Fprintf(os.Stderr, "no cluster in %s: run the scenarios with `make e2e` (or hack/e2e/up.sh first)\n", runDir)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// ---- commands ----

func script(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "hack", "e2e", name), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func mustScript(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := script(name, args...)
	if err != nil {
		t.Fatalf("hack/e2e/%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	return mustScript(t, "kubectl.sh", args...)
}

// inNode runs a command inside a node (as an operator logged in there would).
func inNode(node string, args ...string) (string, error) {
	return script("node.sh", append([]string{"exec", node}, args...)...)
}

func systemctl(t *testing.T, node string, args ...string) {
	t.Helper()
	mustScript(t, "node.sh", append([]string{"systemctl", node}, args...)...)
}

// bootNode boots a new worker: its user-data starts kubestrap.
func bootNode(t *testing.T, node string) {
	t.Helper()
	start := time.Now()
	mustScript(t, "node.sh", "boot", node, "worker")
	t.Logf("booted %s in %s", node, time.Since(start).Round(time.Second))
}

// ---- cluster state ----

type nodeObj struct {
	Metadata struct {
		Name              string            `json:"name"`
		UID               string            `json:"uid"`
		CreationTimestamp time.Time         `json:"creationTimestamp"`
		Labels            map[string]string `json:"labels"`
	} `json:"metadata"`
	Status struct {
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

func (n nodeObj) ready() bool {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func nodes(t *testing.T) map[string]nodeObj {
	t.Helper()
	var list struct {
		Items []nodeObj `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "nodes", "-o", "json")), &list); err != nil {
		t.Fatalf("decode nodes: %v", err)
	}
	out := map[string]nodeObj{}
	for _, n := range list.Items {
		out[n.Metadata.Name] = n
	}
	return out
}

type bootstrapToken struct {
	Token       string    `json:"token"`
	Description string    `json:"description"`
	Expires     time.Time `json:"expires"`
}

// tokens is `kubeadm token list` on the control plane, by token ID.
func tokens(t *testing.T) map[string]bootstrapToken {
	t.Helper()
	out, err := inNode("cp", "kubeadm", "token", "list", "-o", "json",
		"--kubeconfig", "/etc/kubernetes/admin.conf")
	if err != nil {
		t.Fatalf("kubeadm token list: %v\n%s", err, out)
	}
	res := map[string]bootstrapToken{}
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var tok bootstrapToken
		if err := dec.Decode(&tok); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode kubeadm token list: %v\n%s", err, out)
		}
		res[join.TokenID(tok.Token)] = tok
	}
	return res
}

// joinObject is the published join.json, read as the account's administrator.
func joinObject(t *testing.T) (*join.Info, []byte) {
	t.Helper()
	out := mustScript(t, "aws.sh", "cli", "s3", "cp", fmt.Sprintf("s3://%s/%s/join.json", bucket, cluster), "-")
	var info join.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("join.json is not join info: %v\n%s", err, out)
	}
	return &info, []byte(out)
}

// putJoinObject overwrites join.json, as an attacker with write access would.
func putJoinObject(t *testing.T, body []byte) {
	t.Helper()
	f := filepath.Join(runDir, "hostile-join.json")
	if err := os.WriteFile(f, body, 0o600); err != nil {
		t.Fatal(err)
	}
	mustScript(t, "aws.sh", "cli", "s3api", "put-object", "--bucket", bucket,
		"--key", cluster+"/join.json", "--body", f)
}

// ---- what the agents report ----

// prefix names the test's objects on the machine (hack/e2e/lib.sh E2E_PREFIX).
var prefix = envOr("E2E_PREFIX", "kse2e")

// machine is the node's systemd-nspawn machine (and network namespace).
func machine(node string) string { return prefix + "-" + node }

// nodeDisk is the node's disk seen from the machine (hack/e2e/sdnode.sh).
func nodeDisk(node string) string { return filepath.Join(runDir, "sd", "nodes", machine(node), "disk") }

// nodeFile is the file at path inside the node, read from its disk: the
// overlay's upper layer (what the node wrote), or the plain directories
// bound on /var/lib/kubelet and /var/lib/containerd.
func nodeFile(node, path string) string {
	for _, d := range []string{"kubelet", "containerd"} {
		if rest, ok := strings.CutPrefix(path, "/var/lib/"+d); ok {
			return filepath.Join(nodeDisk(node), d, rest)
		}
	}
	return filepath.Join(nodeDisk(node), "upper", path)
}

// agentState is the agent's <stateDir>/state.json (/var/lib/kubestrap in the node).
func agentState(t *testing.T, node string) state.State {
	t.Helper()
	st, err := state.Load(nodeFile(node, "/var/lib/kubestrap"))
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return *st
}

// unitState is what the node's systemd knows of the kubestrap unit
// (systemctl show), plus what the journal says of its processes.
type unitState struct {
	Active, Sub string
	// PID is the main process, as the machine sees it (0: none).
	PID int
	// Starts counts the agent processes the unit ran so far (journal).
	Starts int
	// Ready: systemd got READY=1 from the current process (Type=notify: active).
	Ready     bool
	Status    string
	NRestarts int
	Result    string
	// ExecMainCode and ExecMainStatus: how the last main process ended (1 and N: exit N).
	ExecMainCode, ExecMainStatus int
	// StartedAt is when the latest agent process logged its first line.
	StartedAt time.Time
}

func unit(t *testing.T, node string) unitState {
	t.Helper()
	out, err := inNode(node, "systemctl", "show", "kubestrap",
		"-p", "ActiveState,SubState,MainPID,NRestarts,StatusText,Result,ExecMainCode,ExecMainStatus")
	if err != nil {
		t.Fatalf("%s: systemctl show kubestrap: %v\n%s", node, err, out)
	}
	p := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			p[k] = v
		}
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	u := unitState{Active: p["ActiveState"], Sub: p["SubState"], Status: p["StatusText"], NRestarts: atoi(p["NRestarts"]),
		Result: p["Result"], ExecMainCode: atoi(p["ExecMainCode"]), ExecMainStatus: atoi(p["ExecMainStatus"])}
	u.Ready = u.Active == "active"
	if pid := atoi(p["MainPID"]); pid != 0 {
		u.PID = hostPID(t, node, pid)
	}
	procs := agentProcs(t, node)
	u.Starts = len(procs)
	if len(procs) > 0 {
		u.StartedAt = procs[len(procs)-1].first
	}
	return u
}

// hostPID maps a PID inside the node to the machine's PID.
func hostPID(t *testing.T, node string, nspid int) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", machine(node)).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", machine(node), err)
	}
	for _, f := range strings.Fields(string(out)) {
		b, err := os.ReadFile("/proc/" + f + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if ns, ok := strings.CutPrefix(l, "NSpid:"); ok {
				ids := strings.Fields(ns)
				if len(ids) > 1 && ids[len(ids)-1] == strconv.Itoa(nspid) {
					pid, _ := strconv.Atoi(f)
					return pid
				}
			}
		}
	}
	return 0
}

// ---- the node's journal ----

// journalEntries runs journalctl on the node's journal (read from its disk,
// also while the node is down) for the kubestrap unit; after is a cursor
// (or ""). It returns the entries (string fields only) and the last cursor.
func journalEntries(t *testing.T, node, after string) ([]map[string]string, string) {
	t.Helper()
	args := []string{"-D", nodeFile(node, "/var/log/journal"), "-u", "kubestrap", "-o", "json", "--no-pager", "-q"}
	if after != "" {
		args = append(args, "--after-cursor", after)
	}
	// journald of a running node writes (and rotates) these files while
	// they are read: a failed read is tried again a few times.
	var out []byte
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		var stderr bytes.Buffer
		cmd := exec.Command("journalctl", args...)
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err == nil {
			break
		}
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err != nil {
		if _, serr := os.Stat(nodeFile(node, "/var/log/journal")); serr != nil {
			return nil, after
		}
		t.Fatalf("%s: journalctl: %v", node, err)
	}
	var res []map[string]string
	last := after
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("%s: journal entry: %v: %s", node, err, line)
		}
		e := map[string]string{}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				e[k] = s
			}
		}
		res = append(res, e)
		last = e["__CURSOR"]
	}
	return res, last
}

// fromAgent: an entry the agent process wrote (not systemd's own about the unit).
func fromAgent(e map[string]string) bool { return e["_PID"] != "1" && e["_COMM"] == "kubestrap" }

func entryTime(e map[string]string) time.Time {
	us, _ := strconv.ParseInt(e["__REALTIME_TIMESTAMP"], 10, 64)
	return time.UnixMicro(us)
}

type agentProc struct {
	key   string // boot ID/PID
	first time.Time
}

// agentProcs lists the unit's agent processes in the order they started.
func agentProcs(t *testing.T, node string) []agentProc {
	t.Helper()
	es, _ := journalEntries(t, node, "")
	var out []agentProc
	seen := map[string]bool{}
	for _, e := range es {
		if !fromAgent(e) {
			continue
		}
		k := e["_BOOT_ID"] + "/" + e["_PID"]
		if !seen[k] {
			seen[k] = true
			out = append(out, agentProc{k, entryTime(e)})
		}
	}
	return out
}

// readyAt reports whether the unit is active with agent process number start (1 = first).
func readyAt(t *testing.T, node string, start int) bool {
	t.Helper()
	u := unit(t, node)
	return u.Ready && u.Starts == start
}

// phaseLines are the agent's log entries that reported a phase (each is
// what it also sent as STATUS=), in order.
func phaseLines(t *testing.T, node string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range agentLogLines(t, node) {
		if l.str("phase") != "" {
			out = append(out, l)
		}
	}
	return out
}

// statuses lists the phase messages (STATUS=) the agent reported, in order.
func statuses(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for _, l := range phaseLines(t, node) {
		out = append(out, l.Msg)
	}
	return out
}

// kubeadmCalls lists the kubeadm subcommands the agent ran on a node
// ("init", "join", "token create", "reset", ...), from its journal.
func kubeadmCalls(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for _, l := range agentLogLines(t, node) {
		if l.Msg == "running kubeadm" {
			out = append(out, strings.TrimPrefix(l.str("command"), "kubeadm "))
		}
	}
	return out
}

func countCalls(calls []string, verb string) int {
	n := 0
	for _, c := range calls {
		if c == verb || strings.HasPrefix(c, verb+" ") {
			n++
		}
	}
	return n
}

// agentLog is every field of every journal entry of the unit, as text
// (for "no secret anywhere" and "the error names the field").
func agentLog(t *testing.T, node string) string {
	t.Helper()
	es, _ := journalEntries(t, node, "")
	var b strings.Builder
	for _, e := range es {
		for k, v := range e {
			fmt.Fprintf(&b, "%s=%s\t", k, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// logEntries returns the fields (journal names) of the agent's entries whose message is msg.
func logEntries(t *testing.T, node, msg string) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, l := range agentLogLines(t, node) {
		if l.Msg == msg {
			out = append(out, l.Fields)
		}
	}
	return out
}

// ---- waiting ----

// eventually polls cond every second until it returns true (bounded by
// timeout); the string it returns says what it last saw, for the failure.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < timeout {
		ok, seen := cond()
		if ok {
			t.Logf("%s: after %s", what, time.Since(start).Round(time.Second))
			return
		}
		last = seen
		time.Sleep(time.Second)
	}
	t.Fatalf("timed out after %s waiting for %s; last seen: %s", timeout, what, last)
}

// waitJoined waits until a worker's agent sent READY=1 and its Node is Ready.
func waitJoined(t *testing.T, node string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, node+" joined (READY=1) and its Node Ready", func() (bool, string) {
		u := unit(t, node)
		if !u.Ready || u.Sub != "running" {
			return false, fmt.Sprintf("unit %s, STATUS %q", u.Active, u.Status)
		}
		n, ok := nodes(t)[node]
		return ok && n.ready(), fmt.Sprintf("READY sent; Node present=%v ready=%v", ok, n.ready())
	})
}

func sleepUntil(t *testing.T, at time.Time, why string) {
	t.Helper()
	if d := time.Until(at); d > 0 {
		t.Logf("waiting %s: %s", d.Round(time.Second), why)
		time.Sleep(d)
	}
}
