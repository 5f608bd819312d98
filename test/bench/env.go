//go:build bench

package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubestrap/kubestrap/internal/testutil/emulators"
)

// ---------------------------------------------------------------------------
// Counting proxy: every S3 (and IMDS) request of the agents and of the shell
// workers goes through one of these, on loopback, so that requests can be
// counted and attributed. Attribution uses the SDK application ID that both
// the Go SDK and botocore put into the User-Agent (AWS_SDK_UA_APP_ID).

type reqEvent struct {
	Start, Done time.Time
	Method      string
	Path        string
	Status      int
	App         string
}

type recorder struct {
	name   string
	mu     sync.Mutex
	events []reqEvent
	srv    *http.Server
	URL    string
}

var appIDPattern = regexp.MustCompile(`(?:^| )app/([^ ]+)`)

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

func startRecorder(name, target string) (*recorder, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second,
		DisableCompression: true, ResponseHeaderTimeout: 30 * time.Second}
	rp.ErrorLog = log.New(io.Discard, "", 0)
	r := &recorder{name: name}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.URL = "http://" + l.Addr().String()
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		rp.ServeHTTP(sw, req)
		app := ""
		if m := appIDPattern.FindStringSubmatch(req.Header.Get("User-Agent")); m != nil {
			app = m[1]
		}
		r.mu.Lock()
		r.events = append(r.events, reqEvent{Start: start, Done: time.Now(), Method: req.Method, Path: req.URL.Path,
			Status: sw.code, App: app})
		r.mu.Unlock()
	})}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

func (r *recorder) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

// filter returns the events for which keep is true.
func (r *recorder) filter(keep func(e *reqEvent) bool) []reqEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []reqEvent
	for i := range r.events {
		if keep(&r.events[i]) {
			out = append(out, r.events[i])
		}
	}
	return out
}

// byApp groups the events of the given apps.
func (r *recorder) byApp(apps map[string]bool) map[string][]reqEvent {
	out := map[string][]reqEvent{}
	for _, e := range r.filter(func(e *reqEvent) bool { return apps[e.App] }) {
		out[e.App] = append(out[e.App], e)
	}
	return out
}

// countBetween counts events that started in [from, to).
func (r *recorder) countBetween(from, to time.Time, keep func(e *reqEvent) bool) int {
	return len(r.filter(func(e *reqEvent) bool {
		return !e.Start.Before(from) && e.Start.Before(to) && (keep == nil || keep(e))
	}))
}

// ---------------------------------------------------------------------------
// Child processes: each in its own process group, stopped by PID (SIGTERM to
// the group, SIGKILL after a grace period), all of them at exit.

type proc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	logFile *os.File
	logPath string
}

type registry struct {
	mu    sync.Mutex
	procs map[*proc]bool
	// stopping: stopEverything ran; no registered process starts after it.
	stopping bool
}

var children = &registry{procs: map[*proc]bool{}}

func startProc(name string, env []string, logPath string, bin string, args ...string) (*proc, error) {
	return startProcReg(name, env, logPath, true, bin, args...)
}

// startProcReg is startProc; with register false the process is not among
// the children that stopEverything stops (figure 7's teardown, which must
// run to its end after Ctrl-C), and it may start after stopEverything.
func startProcReg(name string, env []string, logPath string, register bool, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), logFile: lf, logPath: logPath}
	if register {
		// Started and registered under the lock: a process either starts
		// before stopEverything (and is stopped by it) or not at all.
		children.mu.Lock()
		defer children.mu.Unlock()
		if children.stopping {
			lf.Close()
			return nil, fmt.Errorf("start %s: the benchmark is stopping", name)
		}
	}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if register {
		children.procs[p] = true
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process group of p.
func (p *proc) signal(sig syscall.Signal) { _ = syscall.Kill(-p.pid(), sig) }

// stopAll stops the given processes: SIGTERM to each group, then SIGKILL to
// whatever is left after grace.
func stopAll(ps []*proc, grace time.Duration) {
	for _, p := range ps {
		if !p.exited() {
			p.signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
		}
	}
	for _, p := range ps {
		if !p.exited() {
			p.signal(syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "kbench: %s (pid %d) did not exit after SIGKILL\n", p.name, p.pid())
			}
		} else {
			// The leader is gone; make sure nothing of its group outlives it.
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		}
		p.logFile.Close()
		children.mu.Lock()
		delete(children.procs, p)
		children.mu.Unlock()
	}
}

// stopEverything stops every child still registered.
func stopEverything() {
	children.mu.Lock()
	children.stopping = true
	var ps []*proc
	for p := range children.procs {
		ps = append(ps, p)
	}
	children.mu.Unlock()
	stopAll(ps, 10*time.Second)
}

// cleanEnv is the environment for children: none of the machine's AWS
// settings, credentials files or systemd sockets.
func cleanEnv(empty string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "JOURNAL_STREAM=") ||
			strings.HasPrefix(kv, "WATCHDOG_") || strings.HasPrefix(kv, "GO") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty)
	return append(env, extra...)
}

func freePort() (int, error) { return emulators.FreePort() }

// waitUntil polls check every step until it returns nil or timeout passes.
func waitUntil(what string, timeout, step time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(step)
	}
}

// startMoto runs moto_server on a free loopback port.
func startMoto(bin, dir, empty string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc("moto", cleanEnv(empty), filepath.Join(dir, "moto.log"), bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	if err != nil {
		return nil, "", err
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	err = waitUntil("moto_server", 60*time.Second, 200*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("moto_server exited; see %s", p.logPath)
		}
		return emulators.MotoReady(u)
	})
	return p, u, err
}

// startIMDS runs one ec2-metadata-mock (IMDSv2 only) shared by every worker,
// serving an identity and instance-role credentials, as on EC2.
func startIMDS(bin, dir, empty string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	home := filepath.Join(dir, "aemm-home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, "", err
	}
	// A well-formed instance ID (i- and 8-17 hex digits): since issue 14 a
	// control plane refuses to take part in the init election without one.
	b := emulators.IMDSConfig(emulators.Instance{InstanceID: "i-0be0c00000000001", Region: "eu-west-1",
		AccountID: "123456789012", PrivateIP: "10.0.2.7", Hostname: "ip-10-0-2-7.eu-west-1.compute.internal"}, port)
	path := filepath.Join(dir, "aemm-config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, "", err
	}
	// No interruption notices (ec2-metadata-mock serves them from its start
	// unless delayed, here by a year): the agents' leave watch stays idle.
	p, err := startProc("ec2-metadata-mock", cleanEnv(empty, "HOME="+home), filepath.Join(dir, "aemm.log"), bin, "-c", path,
		"--mock-delay-sec", "31536000", "--rebalance-delay-sec", "31536000", "--asg-termination-delay-sec", "31536000")
	if err != nil {
		return nil, "", err
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	err = waitUntil("ec2-metadata-mock", 30*time.Second, 100*time.Millisecond, func() error {
		if p.exited() {
			return fmt.Errorf("ec2-metadata-mock exited; see %s", p.logPath)
		}
		return emulators.IMDSReady(u)
	})
	return p, u, err
}

// ---------------------------------------------------------------------------
// Unixgram listener standing in for systemd's NOTIFY_SOCKET.

type notifyListener struct {
	conn  *net.UnixConn
	mu    sync.Mutex
	ready time.Time
	msgs  []notifyMsg
}

type notifyMsg struct {
	At   time.Time
	Text string
}

func listenNotify(path string) (*notifyListener, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	n := &notifyListener{conn: conn}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			text := string(buf[:k])
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{At: now, Text: text})
			if n.ready.IsZero() && containsLine(text, "READY=1") {
				n.ready = now
			}
			n.mu.Unlock()
		}
	}()
	return n, nil
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func (n *notifyListener) readyAt() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready
}

func (n *notifyListener) close() { n.conn.Close() }
