//go:build e2e

// Command kse2e-init is the per-node service manager of the end-to-end
// cluster, standing in for systemd (which is not PID 1 on the test machine).
//
//	kse2e-init init --units DIR              run the node's units (in the node's namespaces)
//	kse2e-init systemctl --units DIR ARGS... the node's `systemctl` (a shim on the node's PATH)
//
// A unit is DIR/<name>.json (see Unit). Its runtime files live in DIR/<name>/:
//
//	enabled        present when the unit is enabled
//	want           "start" or "stop": the state systemctl asked for
//	restart        present while a restart is requested
//	reset-failed   present while a start of a failed unit is requested
//	state.json     what the manager sees (State), rewritten on every change
//	notify.sock    the unit's NOTIFY_SOCKET (Type=notify units)
//	notify.log     every sd_notify datagram received, one JSON object a line (Notification)
//	events.log     starts, exits, stops and watchdog kills, one JSON object a line
//	output.log     the unit's stdout and stderr
//
// Like systemd with Restart=always, a unit whose process exits is started
// again after RestartSec, unless its exit status is one of
// RestartPreventExitStatus: then the unit is "failed" and stays down until
// systemctl start, restart or reset-failed. A unit asked to stop is sent
// SIGTERM (its whole process group), then SIGKILL after TimeoutStopSec.
//
// One difference from systemd is deliberate: when a unit's main process dies
// on its own, what it started in its process group keeps running (systemd's
// default KillMode=control-group would stop it before the restart; this is
// KillMode=process). The end-to-end scenarios use it to leave an orphaned
// kubeadm behind a killed agent, as a manual run or another supervisor would.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Unit describes a service, as a systemd unit file would.
type Unit struct {
	Name string `json:"name"`
	// Exec is the command line (ExecStart), never run through a shell by the manager.
	Exec []string `json:"exec"`
	// Type is "simple" or "notify".
	Type string `json:"type"`
	// EnvironmentFile is read at every start; missing is fine (systemd's "-" prefix).
	EnvironmentFile string            `json:"environmentFile,omitempty"`
	Environment     map[string]string `json:"environment,omitempty"`
	// ConditionPathExists: the unit is not started while this path is missing.
	ConditionPathExists string  `json:"conditionPathExists,omitempty"`
	RestartSec          float64 `json:"restartSec"`
	TimeoutStopSec      float64 `json:"timeoutStopSec"`
	WatchdogSec         float64 `json:"watchdogSec,omitempty"`
	// RestartPreventExitStatus lists exit statuses after which the unit is
	// not restarted (it is "failed").
	RestartPreventExitStatus []int `json:"restartPreventExitStatus,omitempty"`
}

// State is DIR/<unit>/state.json.
type State struct {
	Unit string `json:"unit"`
	// Active is "active", "activating", "deactivating", "inactive" or
	// "failed" (exited with a RestartPreventExitStatus status).
	Active string `json:"active"`
	PID    int    `json:"pid,omitempty"`
	// Starts counts the processes started so far.
	Starts    int       `json:"starts"`
	Ready     bool      `json:"ready"`
	Status    string    `json:"status,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	ExitedAt  time.Time `json:"exitedAt,omitzero"`
	LastExit  string    `json:"lastExit,omitempty"`
}

// Notification is one line of notify.log.
type Notification struct {
	Time time.Time `json:"time"`
	// Start is the number of the process start (State.Starts) it belongs to.
	Start  int               `json:"start"`
	Fields map[string]string `json:"fields"`
}

func main() {
	if len(os.Args) < 4 || os.Args[2] != "--units" {
		fmt.Fprintln(os.Stderr, "usage: kse2e-init init|systemctl --units DIR [ARGS...]")
		os.Exit(2)
	}
	dir := os.Args[3]
	switch os.Args[1] {
	case "init":
		if err := runInit(dir); err != nil {
			fmt.Fprintln(os.Stderr, "kse2e-init:", err)
			os.Exit(1)
		}
	case "systemctl":
		os.Exit(systemctl(dir, os.Args[4:]))
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}

// ---- the manager ----

type unitRun struct {
	u    Unit
	dir  string
	mu   sync.Mutex
	st   State
	cmd  *exec.Cmd
	done chan struct{}
	// stopping is set while the manager itself stops the process.
	stopping bool
	// failed is set when the process exited with a RestartPreventExitStatus
	// status: no restart until systemctl start, restart or reset-failed.
	failed    bool
	nextStart time.Time
	lastPing  time.Time
	conn      *net.UnixConn
}

func runInit(dir string) error {
	units, err := loadUnits(dir)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	for _, r := range units {
		if err := os.MkdirAll(r.dir, 0o755); err != nil {
			return err
		}
		r.st = State{Unit: r.u.Name, Active: "inactive"}
		r.save()
		if r.u.Type == "notify" {
			if err := r.listen(); err != nil {
				return err
			}
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-sigs:
			var wg sync.WaitGroup
			for _, r := range units {
				wg.Add(1)
				go func() { defer wg.Done(); r.stop("manager received " + s.String()) }()
			}
			wg.Wait()
			return nil
		case <-tick.C:
			for _, r := range units {
				r.reconcile()
			}
		}
	}
}

func loadUnits(dir string) ([]*unitRun, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []*unitRun
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var u Unit
		if err := json.Unmarshal(b, &u); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if u.RestartSec == 0 {
			u.RestartSec = 2
		}
		if u.TimeoutStopSec == 0 {
			u.TimeoutStopSec = 30
		}
		out = append(out, &unitRun{u: u, dir: filepath.Join(dir, u.Name)})
	}
	return out, nil
}

func (r *unitRun) want() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "want"))
	return strings.TrimSpace(string(b))
}

func (r *unitRun) event(kind, msg string) {
	appendJSON(filepath.Join(r.dir, "events.log"), map[string]any{
		"time": time.Now().UTC(), "event": kind, "message": msg, "start": r.st.Starts, "pid": r.st.PID,
	})
}

// save writes state.json; callers hold r.mu or own r exclusively.
func (r *unitRun) save() {
	b, _ := json.MarshalIndent(r.st, "", "  ")
	tmp := filepath.Join(r.dir, "state.json.tmp")
	if os.WriteFile(tmp, append(b, '\n'), 0o644) == nil {
		_ = os.Rename(tmp, filepath.Join(r.dir, "state.json"))
	}
}

func (r *unitRun) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

func (r *unitRun) reconcile() {
	restart := filepath.Join(r.dir, "restart")
	if _, err := os.Stat(restart); err == nil {
		_ = os.Remove(restart)
		if r.running() {
			r.stop("restart requested")
		}
		r.mu.Lock()
		r.nextStart, r.failed = time.Time{}, false
		r.mu.Unlock()
	}
	if err := os.Remove(filepath.Join(r.dir, "reset-failed")); err == nil {
		r.mu.Lock()
		r.nextStart, r.failed = time.Time{}, false
		r.mu.Unlock()
	}
	want := r.want()
	if want != "start" {
		if r.running() {
			r.stop("stop requested")
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		r.checkWatchdog()
		return
	}
	if r.failed || time.Now().Before(r.nextStart) {
		return
	}
	if p := r.u.ConditionPathExists; p != "" {
		if _, err := os.Stat(p); err != nil {
			return
		}
	}
	r.start()
}

// start runs the unit's process; r.mu is held.
func (r *unitRun) start() {
	env := os.Environ()
	if f := r.u.EnvironmentFile; f != "" {
		env = append(env, readEnvFile(f)...)
	}
	for k, v := range r.u.Environment {
		env = append(env, k+"="+v)
	}
	if r.u.Type == "notify" {
		env = append(env, "NOTIFY_SOCKET="+filepath.Join(r.dir, "notify.sock"))
	}
	if r.u.WatchdogSec > 0 {
		env = append(env, fmt.Sprintf("WATCHDOG_USEC=%d", int64(r.u.WatchdogSec*1e6)))
	}
	out, err := os.OpenFile(filepath.Join(r.dir, "output.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.event("error", err.Error())
		r.nextStart = time.Now().Add(time.Duration(r.u.RestartSec * float64(time.Second)))
		return
	}
	cmd := exec.Command(r.u.Exec[0], r.u.Exec[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.st.Starts++
	if err := cmd.Start(); err != nil {
		out.Close()
		r.st.Active, r.st.LastExit, r.st.ExitedAt = "inactive", "start failed: "+err.Error(), time.Now().UTC()
		r.event("start-failed", err.Error())
		r.save()
		r.nextStart = time.Now().Add(time.Duration(r.u.RestartSec * float64(time.Second)))
		return
	}
	r.cmd, r.done, r.stopping = cmd, make(chan struct{}), false
	r.lastPing = time.Now()
	r.st.PID, r.st.Ready, r.st.Status, r.st.StartedAt = cmd.Process.Pid, false, "", time.Now().UTC()
	r.st.Active = "active"
	if r.u.Type == "notify" {
		r.st.Active = "activating"
	}
	r.event("started", strings.Join(r.u.Exec, " "))
	r.save()
	go r.wait(cmd, out)
}

func (r *unitRun) wait(cmd *exec.Cmd, out *os.File) {
	err := cmd.Wait()
	out.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	exit := "exited with status 0"
	if err != nil {
		exit = err.Error()
	}
	r.st.Active, r.st.PID, r.st.Ready, r.st.LastExit, r.st.ExitedAt = "inactive", 0, false, exit, time.Now().UTC()
	r.event("exited", exit)
	if code := cmd.ProcessState.ExitCode(); !r.stopping && slices.Contains(r.u.RestartPreventExitStatus, code) {
		r.failed, r.st.Active = true, "failed"
		r.event("failed", fmt.Sprintf("exit status %d is in RestartPreventExitStatus: not restarted", code))
	}
	r.save()
	r.cmd = nil
	r.nextStart = time.Now().Add(time.Duration(r.u.RestartSec * float64(time.Second)))
	close(r.done)
}

// stop ends the unit's process group: SIGTERM, then SIGKILL after TimeoutStopSec.
func (r *unitRun) stop(why string) {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	if cmd == nil {
		r.mu.Unlock()
		return
	}
	r.stopping = true
	r.st.Active = "deactivating"
	r.event("stopping", why)
	r.save()
	r.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Duration(r.u.TimeoutStopSec * float64(time.Second))):
		r.event("kill", "stop timed out; SIGKILL")
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	// Leftovers of the process group (systemd's KillMode=control-group).
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// checkWatchdog kills a process that stopped sending WATCHDOG=1; r.mu is held.
func (r *unitRun) checkWatchdog() {
	if r.u.WatchdogSec <= 0 || r.stopping {
		return
	}
	if time.Since(r.lastPing) > time.Duration(r.u.WatchdogSec*float64(time.Second)) {
		r.event("watchdog", "no WATCHDOG=1 within WatchdogSec; sending SIGABRT")
		r.lastPing = time.Now()
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGABRT)
	}
}

func (r *unitRun) listen() error {
	path := filepath.Join(r.dir, "notify.sock")
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	r.conn = conn
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			fields := map[string]string{}
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					fields[k] = v
				}
			}
			r.mu.Lock()
			if fields["WATCHDOG"] == "1" {
				r.lastPing = time.Now()
			}
			changed := false
			if s, ok := fields["STATUS"]; ok {
				r.st.Status, changed = s, true
			}
			if fields["READY"] == "1" && r.cmd != nil {
				r.st.Ready, r.st.Active, changed = true, "active", true
			}
			if changed {
				r.save()
			}
			start := r.st.Starts
			r.mu.Unlock()
			// Watchdog pings alone are not worth a line each.
			if len(fields) == 1 && fields["WATCHDOG"] == "1" {
				continue
			}
			appendJSON(filepath.Join(r.dir, "notify.log"), Notification{Time: time.Now().UTC(), Start: start, Fields: fields})
		}
	}()
	return nil
}

func readEnvFile(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, k+"="+v)
	}
	return env
}

var appendMu sync.Mutex

func appendJSON(path string, v any) {
	appendMu.Lock()
	defer appendMu.Unlock()
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

// ---- the systemctl shim ----

func systemctl(dir string, args []string) int {
	var verb string
	var units []string
	now, noBlock, quiet := false, false, false
	for _, a := range args {
		switch {
		case a == "--now":
			now = true
		case a == "--no-block":
			noBlock = true
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
			// --system, --no-pager, ... change nothing here.
		case verb == "":
			verb = a
		default:
			units = append(units, strings.TrimSuffix(a, ".service"))
		}
	}
	say := func(format string, a ...any) {
		if !quiet {
			fmt.Printf(format+"\n", a...)
		}
	}
	switch verb {
	case "daemon-reload", "":
		return 0
	}
	rc := 0
	for _, name := range units {
		ud := filepath.Join(dir, name)
		if _, err := os.Stat(filepath.Join(dir, name+".json")); err != nil {
			switch verb {
			case "is-active":
				say("inactive")
				rc = 3
			case "is-enabled":
				say("not-found")
				rc = 1
			case "status":
				fmt.Printf("Unit %s.service could not be found.\n   Loaded: not-found\n", name)
				rc = 4
			default:
				fmt.Fprintf(os.Stderr, "Failed to %s %s.service: Unit %s.service not found.\n", verb, name, name)
				rc = 5
			}
			continue
		}
		st := readState(ud)
		switch verb {
		case "enable", "disable":
			if verb == "enable" {
				_ = os.WriteFile(filepath.Join(ud, "enabled"), nil, 0o644)
			} else {
				_ = os.Remove(filepath.Join(ud, "enabled"))
			}
			if now {
				op := map[string]string{"enable": "start", "disable": "stop"}[verb]
				if code := setWant(ud, op, false, noBlock); code != 0 {
					rc = code
				}
			}
		case "reset-failed":
			if st.Active == "failed" {
				_ = os.WriteFile(filepath.Join(ud, "reset-failed"), nil, 0o644)
			}
		case "start", "stop", "restart", "try-restart", "reload-or-restart":
			op := map[string]string{"start": "start", "stop": "stop"}[verb]
			if op == "" {
				if verb == "try-restart" && st.Active != "active" {
					continue
				}
				op = "restart"
			}
			if code := setWant(ud, op, op == "restart", noBlock); code != 0 {
				rc = code
			}
		case "is-active":
			say("%s", st.Active)
			if st.Active != "active" {
				rc = 3
			}
		case "is-enabled":
			if _, err := os.Stat(filepath.Join(ud, "enabled")); err == nil {
				say("enabled")
			} else {
				say("disabled")
				rc = 1
			}
		case "status":
			fmt.Printf("* %s.service\n   Loaded: loaded\n   Active: %s (pid %d, starts %d)\n   Status: %q\n",
				name, st.Active, st.PID, st.Starts, st.Status)
			if st.Active != "active" {
				rc = 3
			}
		default:
			fmt.Fprintf(os.Stderr, "systemctl shim: %s is not supported\n", verb)
			return 1
		}
	}
	return rc
}

func readState(ud string) State {
	var st State
	b, err := os.ReadFile(filepath.Join(ud, "state.json"))
	if err == nil {
		_ = json.Unmarshal(b, &st)
	}
	if st.Active == "" {
		st.Active = "inactive"
	}
	return st
}

// setWant records the wanted state and, unless noBlock, waits for it.
func setWant(ud, op string, restart, noBlock bool) int {
	if err := os.MkdirAll(ud, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	before := readState(ud)
	want := "start"
	if op == "stop" {
		want = "stop"
	}
	if err := os.WriteFile(filepath.Join(ud, "want"), []byte(want+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if restart {
		_ = os.WriteFile(filepath.Join(ud, "restart"), nil, 0o644)
	} else if want == "start" && before.Active == "failed" {
		// systemctl start of a failed unit starts it again.
		_ = os.WriteFile(filepath.Join(ud, "reset-failed"), nil, 0o644)
	}
	if noBlock {
		return 0
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		st := readState(ud)
		switch {
		case want == "stop" && (st.Active == "inactive" || st.Active == "failed"):
			return 0
		case want == "start" && st.Active == "active" && (!restart || st.Starts > before.Starts):
			return 0
		case want == "start" && st.Active == "failed" && st.Starts > before.Starts:
			fmt.Fprintf(os.Stderr, "Job for %s.service failed because the control process exited with error code (%s).\n",
				filepath.Base(ud), st.LastExit)
			return 1
		case want == "start" && conditionUnmet(ud):
			return 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "Job for %s timed out.\n", filepath.Base(ud))
	return 1
}

func conditionUnmet(ud string) bool {
	b, err := os.ReadFile(ud + ".json")
	if err != nil {
		return false
	}
	var u Unit
	if json.Unmarshal(b, &u) != nil || u.ConditionPathExists == "" {
		return false
	}
	_, err = os.Stat(u.ConditionPathExists)
	return errors.Is(err, os.ErrNotExist)
}
