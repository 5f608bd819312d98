//go:build e2e

package e2e

// Scenarios of issue 12: what only a real systemd shows (the watchdog as it
// arms it, the stop of a unit with its children, a reboot of the instance).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pid1Says reports whether the node's systemd logged, about the kubestrap
// unit and after since, a message containing s.
func pid1Says(t *testing.T, node, s string, since time.Time) bool {
	t.Helper()
	es, _ := journalEntries(t, node, "")
	for _, e := range es {
		if e["_PID"] == "1" && entryTime(e).After(since) && strings.Contains(e["MESSAGE"], s) {
			return true
		}
	}
	return false
}

// (a) SIGSTOP of a worker's agent after READY: it sends no WATCHDOG=1 any
// more; systemd's watchdog (the shipped WatchdogSec=60s) kills it with
// SIGABRT and restarts it; the new agent does not join a second time.
func TestSystemdWatchdogRestartsStoppedAgent(t *testing.T) {
	const w = "w1"
	before := unit(t, w)
	joins := countCalls(kubeadmCalls(t, w), "join")
	if !before.Ready || before.PID == 0 {
		t.Fatalf("%s: agent not READY: %+v", w, before)
	}
	at := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(before.PID, syscall.SIGCONT) })
	t.Logf("%s: SIGSTOP to the agent (pid %d) at %s", w, before.PID, at.Format("15:04:05.000"))
	var u unitState
	eventually(t, 60*time.Second+5*time.Second+60*time.Second, w+": agent killed by the watchdog, restarted and READY", func() (bool, string) {
		u = unit(t, w)
		return u.Starts > before.Starts && u.Ready, u.Active + " " + u.Status
	})
	took := time.Since(at)
	if !pid1Says(t, w, "Watchdog timeout", at) {
		t.Errorf("%s: systemd logged no watchdog timeout for kubestrap", w)
	}
	if u.NRestarts <= before.NRestarts {
		t.Errorf("%s: NRestarts %d -> %d, want an automatic restart", w, before.NRestarts, u.NRestarts)
	}
	// The last WATCHDOG=1 came at most 60s before the stop (pings every 30s):
	// the kill within WatchdogSec of the stop, then RestartSec=5s and the start.
	if took > 60*time.Second+5*time.Second+30*time.Second {
		t.Errorf("%s: restarted %s after the SIGSTOP, want within WatchdogSec (60s) + RestartSec (5s) + a start", w, took)
	}
	if j := countCalls(kubeadmCalls(t, w), "join"); j != joins {
		t.Errorf("%s: kubeadm join ran %d more times after the watchdog restart", w, j-joins)
	}
	if n := nodes(t)[w]; !n.ready() {
		t.Errorf("Node %s not Ready", w)
	}
}

// (d) `systemctl stop kubestrap` while kubeadm join runs: systemd sends
// SIGTERM to the agent and its kubeadm child (the unit's control group),
// the stop ends inside TimeoutStopSec (90s) without a SIGKILL, and the next
// start converges: the node joins.
func TestSystemdStopDuringJoin(t *testing.T) {
	const w = "w9"
	bootNode(t, w)
	f := followAgentLog(t, w, true)
	f.waitFor(t, 2*time.Minute, "kubeadm join running", func(l logLine) bool {
		return l.Msg == "running kubeadm" && l.str("command") == "kubeadm join"
	})
	u := unit(t, w)
	kids := childrenNamed(u.PID, "kubeadm")
	at := time.Now()
	systemctl(t, w, "stop", "kubestrap")
	took := time.Since(at)
	t.Logf("%s: systemctl stop took %s; kubeadm children at the stop: %v", w, took.Round(10*time.Millisecond), kids)
	if len(kids) == 0 {
		t.Logf("%s: kubeadm join had finished before the stop (the stop still ran during the join's follow-up)", w)
	}
	if took > 90*time.Second {
		t.Errorf("%s: stop took %s, longer than TimeoutStopSec (90s)", w, took)
	}
	for _, k := range kids {
		if alive(k) {
			t.Errorf("%s: kubeadm %d still runs after the stop", w, k)
		}
	}
	after := unit(t, w)
	if after.Active != "inactive" || after.Result != "success" {
		t.Errorf("%s: unit %s (result %s) after the stop, want inactive, success", w, after.Active, after.Result)
	}
	if pid1Says(t, w, "SIGKILL", at) {
		t.Errorf("%s: systemd had to SIGKILL something of kubestrap at the stop", w)
	}
	systemctl(t, w, "start", "kubestrap")
	waitJoined(t, w, 3*time.Minute)
}

// (e) reboot: the node is powered off through its systemd and booted again
// on the same disks; containerd, the kubelet and kubestrap come back by
// themselves (enabled units), with no second init or join.
func TestSystemdNodeReboot(t *testing.T) {
	const w = "w2"
	before := unit(t, w)
	calls := kubeadmCalls(t, w)
	uid := nodes(t)[w].Metadata.UID
	at := time.Now()
	out := mustScript(t, "node.sh", "reboot", w)
	t.Logf("%s: rebooted in %s\n%s", w, time.Since(at).Round(100*time.Millisecond), out)
	eventually(t, 3*time.Minute, w+": containerd, kubelet and kubestrap active again, Node Ready", func() (bool, string) {
		// systemctl is-active exits 0 when any one of several units is
		// active, so each unit's own line is checked.
		o, _ := inNode(w, "systemctl", "is-active", "containerd", "kubelet", "kubestrap")
		states := strings.Fields(o)
		if len(states) != 3 || states[0] != "active" || states[1] != "active" || states[2] != "active" {
			return false, "containerd, kubelet, kubestrap: " + strings.Join(states, " ")
		}
		if u := unit(t, w); u.Starts <= before.Starts || u.Status != "joined as "+w {
			return false, fmt.Sprintf("agent processes %d (%d before), STATUS %q", u.Starts, before.Starts, u.Status)
		}
		n := nodes(t)[w]
		return n.ready(), "units active, agent joined; Node ready=" + map[bool]string{true: "yes", false: "no"}[n.ready()]
	})
	t.Logf("%s: back %s after the reboot began", w, time.Since(at).Round(time.Second))
	u := unit(t, w)
	if u.Starts <= before.Starts || u.Status != "joined as "+w {
		t.Errorf("%s: after the reboot %d agent processes (%d before), STATUS %q", w, u.Starts, before.Starts, u.Status)
	}
	now := kubeadmCalls(t, w)
	for _, v := range []string{"init", "join", "reset"} {
		if countCalls(now, v) != countCalls(calls, v) {
			t.Errorf("%s: kubeadm %s ran after the reboot (%v -> %v)", w, v, calls, now)
		}
	}
	if n := nodes(t)[w]; n.Metadata.UID != uid {
		t.Errorf("%s: Node object changed across the reboot", w)
	}
}

// (b) S3 hangs (a listener that accepts and never answers takes the
// worker's connections to moto) while a new worker waits for join info.
// First without SIGSTOP: every S3 call ends at its own deadline and the
// agent keeps promising and making progress, so the watchdog stays fed
// through more than WatchdogSec (no restart: the progress check does not
// mistake a hanging S3 for a stuck agent). Then SIGSTOP: the pings stop and
// systemd's watchdog kills and restarts the agent, which still waits (no
// join). A SIGSTOPped process runs no code, so it is the watchdog, armed by
// systemd, that must end it; the agent's own progress check is what keeps
// the pings going only while its parts make progress (unit-tested with a
// stuck part in internal/progress and cmd/agent). Once S3 answers again,
// the worker joins.
func TestSystemdHangingS3(t *testing.T) {
	const w = "w10"
	ns := machine(w)
	// The node's network namespace exists before it boots (net.sh attach
	// keeps it): the hang is in place before the agent's first request.
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
	}
	hang := exec.Command("ip", "netns", "exec", ns, "python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5001)); s.listen(128)
held = []
while True:
    held.append(s.accept())
`)
	if err := hang.Start(); err != nil {
		t.Fatal(err)
	}
	rule := []string{"-t", "nat", "OUTPUT", "-p", "tcp", "-d", awsIP, "--dport", motoPort, "-j", "REDIRECT", "--to-ports", "5001"}
	ipt := func(op string) error {
		args := append([]string{"netns", "exec", ns, "iptables", "-w", "-t", "nat", op}, rule[2:]...)
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %v: %s", op, err, out)
		}
		return nil
	}
	if err := ipt("-I"); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			if err := ipt("-D"); err != nil {
				t.Error(err)
			}
			_ = hang.Process.Kill()
			_ = hang.Wait()
		}
	}
	t.Cleanup(release)

	bootNode(t, w)
	// The user-data starts the agent without waiting for it (--no-block):
	// the first process may take a moment to show in the journal.
	eventually(t, 30*time.Second, w+"'s agent started", func() (bool, string) {
		u := unit(t, w)
		return u.Starts >= 1, fmt.Sprintf("%d agent processes, unit %s", u.Starts, u.Active)
	})
	start := time.Now()
	// More than WatchdogSec of hanging S3 calls: no restart.
	for time.Since(start) < 90*time.Second {
		u := unit(t, w)
		if u.Starts != 1 || u.NRestarts != 0 || u.Ready {
			t.Fatalf("%s with S3 hanging: %d agent processes, NRestarts %d, ready %v, STATUS %q; want one waiting process",
				w, u.Starts, u.NRestarts, u.Ready, u.Status)
		}
		time.Sleep(5 * time.Second)
	}
	u := unit(t, w)
	t.Logf("%s after %s of hanging S3: %s, STATUS %q", w, time.Since(start).Round(time.Second), u.Active, u.Status)
	if n := countCalls(kubeadmCalls(t, w), "join"); n != 0 {
		t.Fatalf("%s ran kubeadm join without join info", w)
	}

	at := time.Now()
	if err := syscall.Kill(u.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(u.PID, syscall.SIGCONT) })
	eventually(t, 60*time.Second+5*time.Second+60*time.Second, w+": stopped agent restarted by the watchdog", func() (bool, string) {
		n := unit(t, w)
		return n.Starts > u.Starts && n.NRestarts > u.NRestarts && n.PID != 0, fmt.Sprintf("%s, %d processes", n.Active, n.Starts)
	})
	if took := time.Since(at); took > 60*time.Second+5*time.Second+30*time.Second {
		t.Errorf("%s: restarted %s after the SIGSTOP, want within WatchdogSec + RestartSec", w, took)
	}
	if !pid1Says(t, w, "Watchdog timeout", at) {
		t.Errorf("%s: systemd logged no watchdog timeout", w)
	}

	release()
	waitJoined(t, w, 3*time.Minute)
	if n := countCalls(kubeadmCalls(t, w), "join"); n != 1 {
		t.Errorf("%s ran kubeadm join %d times, want 1", w, n)
	}
}

// brokenDropIn is a TEST-ONLY drop-in that makes the unit deliberately
// broken: the mount system calls are refused (EPERM, the unit's
// SystemCallErrorNumber) to the agent and every kubeadm it runs.
const brokenDropIn = "/etc/systemd/system/kubestrap.service.d/99-test-broken.conf"

// ensureJoinedWorker boots node as a worker and waits for it to join, unless
// an earlier scenario did (so the scenario also runs alone, with -run).
func ensureJoinedWorker(t *testing.T, node string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(runDir, "nodes", node, "role")); err == nil {
		return
	}
	bootNode(t, node)
	waitJoined(t, node, 3*time.Minute)
}

// Negative control of the unit's hardening (issue 12): the shipped
// SystemCallFilter leaves kubeadm the mount system calls, which kubeadm reset
// needs to unmount the kubelet's pod volumes. With a test-only drop-in that
// also forbids @mount, the reset the agent runs on a worker with running
// pods (kube-proxy's projected volume) fails visibly: its output in the
// journal says an unmount was not permitted. The trigger is the agent's own:
// a joined node whose kubelet.conf disappears is no longer joined (the agent
// clears joinedAt), it joins again, kubeadm join's preflight refuses the
// files still there, and the agent cleans up with kubeadm reset -f. Once the
// drop-in is gone the node converges: joined, Node Ready.
func TestSystemdBrokenUnitResetFails(t *testing.T) {
	const w = "w8"
	ensureJoinedWorker(t, w)
	if out, err := inNode(w, "sh", "-c", "mkdir -p "+filepath.Dir(brokenDropIn)+" && printf '# TEST ONLY: a deliberately broken unit\\n[Service]\\nSystemCallFilter=~@mount\\n' > "+brokenDropIn); err != nil {
		t.Fatalf("%s: write %s: %v\n%s", w, brokenDropIn, err, out)
	}
	removed := false
	restore := func() {
		if removed {
			return
		}
		removed = true
		if out, err := inNode(w, "rm", "-f", brokenDropIn); err != nil {
			t.Errorf("%s: rm %s: %v\n%s", w, brokenDropIn, err, out)
		}
		systemctl(t, w, "daemon-reload")
		// --no-block: a restart of a Type=notify unit waits for READY, here the join.
		systemctl(t, w, "restart", "--no-block", "kubestrap")
	}
	t.Cleanup(restore)
	systemctl(t, w, "daemon-reload")
	before := unit(t, w)
	systemctl(t, w, "restart", "kubestrap")
	eventually(t, time.Minute, w+": agent restarted under the broken unit and READY", func() (bool, string) {
		u := unit(t, w)
		return u.Starts > before.Starts && u.Ready, fmt.Sprintf("unit %s, start %d, STATUS %q", u.Active, u.Starts, u.Status)
	})
	if out, err := inNode(w, "systemctl", "show", "kubestrap", "-p", "DropInPaths"); err != nil || !strings.Contains(out, brokenDropIn) {
		t.Fatalf("%s: the drop-in is not in effect: %v %s", w, err, out)
	}
	f := followAgentLog(t, w, false)
	if out, err := inNode(w, "rm", "/etc/kubernetes/kubelet.conf"); err != nil {
		t.Fatalf("%s: rm kubelet.conf: %v\n%s", w, err, out)
	}
	t.Logf("%s: kubelet.conf removed at %s", w, time.Now().Format("15:04:05.000"))
	f.waitFor(t, time.Minute, "kubeadm reset after the failed join", func(l logLine) bool {
		return l.Msg == "running kubeadm" && l.str("command") == "kubeadm reset"
	})
	var denied []string
	end := f.waitFor(t, 2*time.Minute, "kubeadm reset finished", func(l logLine) bool {
		if l.str("command") == "kubeadm reset" && l.str("kubeadmOutput") == "true" &&
			strings.Contains(l.Msg, "operation not permitted") && strings.Contains(l.Msg, "unmount") {
			denied = append(denied, l.Msg)
		}
		return l.Msg == "kubeadm finished" && l.str("command") == "kubeadm reset"
	})
	t.Logf("%s: kubeadm reset finished ok=%s; its unmount errors: %q", w, end.str("ok"), denied)
	if len(denied) == 0 || end.str("ok") != "false" {
		t.Fatalf("%s: kubeadm reset under SystemCallFilter=~@mount: ok=%s, unmounts refused with \"operation not permitted\": %d; want a failed reset naming them",
			w, end.str("ok"), len(denied))
	}
	if n := len(logEntries(t, w, "kubeadm reset after failed join failed")); n == 0 {
		t.Errorf("%s: the agent did not log the failed reset", w)
	}

	restored := time.Now()
	restore()
	// Joined again: the Node monitor grace period (40s) passes before
	// kubeadm join accepts the node's name again.
	eventually(t, 4*time.Minute, w+" joined again after the drop-in is gone", func() (bool, string) {
		u := unit(t, w)
		st := agentState(t, w)
		n := nodes(t)[w]
		return u.Ready && st.JoinedAt.After(restored) && n.ready(), fmt.Sprintf("unit %s, STATUS %q, joinedAt %s", u.Active, u.Status, st.JoinedAt)
	})
	if s := unit(t, w).Status; s != "joined as "+w {
		t.Errorf("%s: STATUS %q", w, s)
	}
}
