//go:build e2e

// Package e2e holds the end-to-end scenarios of issue 5. They run against the
// cluster that hack/e2e/up.sh brings up (make e2e does both, and tears it
// down at the end) and assert on its real state: Node objects, kubeadm token
// list, each agent's state.json and the READY/STATUS it sent to its service
// manager, and every kubeadm run on each node (kubeadm-calls.log).
//
// The scenarios share one cluster and run in order.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	root    = envOr("E2E_ROOT", "../..")
	runDir  = envOr("E2E_RUN", "/var/cache/kubestrap/e2e-run")
	kubeBin = envOr("KUBE_BIN", "/var/cache/kubestrap/kube-v1.37.2")
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
	out, err := inNode("cp", filepath.Join(kubeBin, "kubeadm"), "token", "list", "-o", "json",
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

func nodeDir(node string) string { return filepath.Join(runDir, "nodes", node) }

// agentState is the agent's <stateDir>/state.json (/var/lib/kubestrap in the node).
func agentState(t *testing.T, node string) state.State {
	t.Helper()
	st, err := state.Load(filepath.Join(nodeDir(node), "kubestrap"))
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return *st
}

// unitState is what the node's service manager knows of the kubestrap unit.
type unitState struct {
	Active string `json:"active"`
	PID    int    `json:"pid"`
	Starts int    `json:"starts"`
	Ready  bool   `json:"ready"`
	Status string `json:"status"`
	// StartedAt is when the current (or last) process started.
	StartedAt time.Time `json:"startedAt"`
	LastExit  string    `json:"lastExit"`
}

func unit(t *testing.T, node string) unitState {
	t.Helper()
	var u unitState
	b, err := os.ReadFile(filepath.Join(nodeDir(node), "units", "kubestrap", "state.json"))
	if err == nil {
		err = json.Unmarshal(b, &u)
	}
	if err != nil {
		t.Fatalf("%s: kubestrap unit state: %v", node, err)
	}
	return u
}

// notification is one sd_notify datagram the agent sent.
type notification struct {
	Time   time.Time         `json:"time"`
	Start  int               `json:"start"`
	Fields map[string]string `json:"fields"`
}

func notifications(t *testing.T, node string) []notification {
	t.Helper()
	var out []notification
	for _, line := range readLines(t, filepath.Join(nodeDir(node), "units", "kubestrap", "notify.log")) {
		var n notification
		if err := json.Unmarshal([]byte(line), &n); err != nil {
			t.Fatalf("%s: notify.log: %v", node, err)
		}
		out = append(out, n)
	}
	return out
}

// readyIn reports whether READY=1 was sent by process start number start.
func readyIn(ns []notification, start int) bool {
	for _, n := range ns {
		if n.Start == start && n.Fields["READY"] == "1" {
			return true
		}
	}
	return false
}

// statuses lists the STATUS= messages sent (in order).
func statuses(ns []notification) []string {
	var out []string
	for _, n := range ns {
		if s, ok := n.Fields["STATUS"]; ok {
			out = append(out, s)
		}
	}
	return out
}

// kubeadmCalls lists the kubeadm subcommands run on a node ("init --config",
// "join --config", "token create", "reset -f", ...).
func kubeadmCalls(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for _, line := range readLines(t, filepath.Join(nodeDir(node), "kubeadm-calls.log")) {
		if _, rest, ok := strings.Cut(line, " "); ok {
			out = append(out, strings.TrimSpace(rest))
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

// agentLog is the agent's stderr (its log when not under journald).
func agentLog(t *testing.T, node string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nodeDir(node), "units", "kubestrap", "output.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// logEntries returns the structured fields of the agent's log lines whose
// message is msg (console format: time, level, [logger,] message, JSON fields).
func logEntries(t *testing.T, node, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(agentLog(t, node), "\n") {
		parts := strings.Split(line, "\t")
		if len(parts) < 4 || parts[len(parts)-2] != msg {
			continue
		}
		var f map[string]any
		if json.Unmarshal([]byte(parts[len(parts)-1]), &f) == nil {
			out = append(out, f)
		}
	}
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
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
		if !u.Ready {
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
