//go:build bench

package main

// Figure 7 (issue 14): the highly available control plane, on the real
// end-to-end harness (hack/e2e: systemd-nspawn nodes running Debian's
// systemd, real kubeadm v1.37.2, moto, the TCP load balancer standing in for
// the NLB), brought up exactly as `make e2e-ha` brings up its cluster, but
// under its own prefix (ksbench: its own namespaces, machines, cgroups and
// run directory) and without a worker. Each round is a fresh cluster:
//
//	(a) hack/e2e/up.sh boots cp, cp2 and cp3 at once (its boot_cps) and
//	    returns once every agent is READY and every Node Ready;
//	(b) one control plane is terminated (node.sh terminate) and a
//	    replacement booted (node.sh boot cp4 control-plane), until the
//	    replacement's agent stands by (phase Standby) and its Node is Ready;
//
// then hack/e2e/down.sh, also on failure and on Ctrl-C. The hack/e2e
// scripts are run as they are; the moments are read afterwards from what the
// nodes recorded themselves: the start of a boot is the modification time of
// the node's $E2E_RUN/nodes/<n>/role (node.sh boot writes it first thing),
// the agent's start, its kubeadm runs and the phases from its journal (read
// from the node's disk), READY=1 from the node's systemd ("Started
// kubestrap.service": a Type=notify unit is started when READY=1 comes), a
// Node's readiness from its Ready condition's lastTransitionTime.
//
// The machine is shared: every harness run holds an exclusive flock on
// /tmp/kubestrap-e2e.lock for its whole duration (one round: the cleanup of
// leftovers, up, the measurements, down), as other end-to-end runs on the
// machine do, so that two clusters never fight over the host sysctls up.sh
// and down.sh save and restore, nor skew each other's timings.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kubestrap/kubestrap/internal/state"
)

const (
	haPrefix      = "ksbench"
	haDefaultLock = "/tmp/kubestrap-e2e.lock"
	haReplacement = "cp4"
	// Bounds of every step; healthy runs take a fraction of them.
	haUpTimeout      = 25 * time.Minute // up.sh (its own waits: 600 s for READY, 180 s for the Nodes)
	haNodeTimeout    = 10 * time.Minute // node.sh terminate, node.sh boot
	haSettleTimeout  = 10 * time.Minute // replacement booted → Standby and Node Ready
	haDownTimeout    = 10 * time.Minute // down.sh
	haCommandTimeout = 2 * time.Minute  // journalctl, kubectl, cp
	// sdMessageUnitStarted is the MESSAGE_ID of systemd's "Started <unit>"
	// (SD_MESSAGE_UNIT_STARTED); for a Type=notify unit it comes with READY=1.
	sdMessageUnitStarted = "39f53479d3a045ac8e11786248231fbf"
)

var haControlPlanes = []string{"cp", "cp2", "cp3"}

// ownNetnsPrefix is the prefix of the end-to-end cluster figure 7 runs (""
// before): the processes in its network namespaces are the benchmark's own,
// not "other heavy processes" (report.go otherLoad).
var ownNetnsPrefix atomic.Value

// haKubeadmRun is one kubeadm run as the agent logged it.
type haKubeadmRun struct {
	Command    string        // "kubeadm init", "kubeadm join", "kubeadm init phase" (upload-certs), ...
	Start, End time.Time     // "running kubeadm", "kubeadm finished" (journal)
	Took       time.Duration // the agent's own measure of the run
	OK         bool
}

// haCleanup is a node cleanup action on a terminated control plane, as the
// control plane that did it logged it.
type haCleanup struct {
	By, Node, What string
	At             time.Time
}

// haNode is what one node's journal and the API say of its agent.
type haNode struct {
	Name        string
	BootStart   time.Time // node.sh boot began (mtime of $E2E_RUN/nodes/<n>/role)
	AgentStart  time.Time // the agent's first journal entry
	AgentStarts int       // agent processes the unit ran
	Ready       time.Time // READY=1 (systemd's "Started kubestrap.service")
	Standby     time.Time // first entry with phase Standby
	Published   time.Time // first entry with phase Published (the uploader)
	NodeReady   time.Time // the Node's Ready condition, lastTransitionTime (whole seconds)
	Version     string
	Kubeadm     []haKubeadmRun
	Cleanups    []haCleanup
}

// lastOK is the last successful run of command (nil: none).
func (n *haNode) lastOK(command string) *haKubeadmRun {
	for i := len(n.Kubeadm) - 1; i >= 0; i-- {
		if r := &n.Kubeadm[i]; r.Command == command && r.OK {
			return r
		}
	}
	return nil
}

func (n *haNode) count(command string) (all, failed int) {
	for _, r := range n.Kubeadm {
		if r.Command == command {
			all++
			if !r.OK {
				failed++
			}
		}
	}
	return all, failed
}

// haRound is one fresh cluster. Durations are -1 when not measured.
type haRound struct {
	N           int
	Began       time.Time
	Took        time.Duration // without the wait for the lock
	LockWaited  time.Duration
	LoadAtStart string // load average when the round got the lock
	Dir         string
	Stages      map[string]int // up.sh's stage times, seconds
	Nodes       []*haNode      // cp, cp2, cp3
	BootStart   time.Time      // the first of the three boots began
	// (a) from BootStart.
	AllStarted, AllReady, AllNodesReady time.Duration
	// (a) from the first agent's start.
	FirstAgentToReady time.Duration
	Initializer       string
	Joiners           []string // in the order they joined
	Init              time.Duration
	Joins             []time.Duration
	Floor             time.Duration // Init + Joins
	// Hand-offs between the floor's runs: first agent start → init start,
	// init end → first join start, first join end → second join start,
	// last join end → last READY.
	ToInit, InitToJoin, JoinToJoin, JoinToReady time.Duration
	Uploader                                    string
	// (b)
	Victim            string
	VictimRole        string // "standby" or "uploader"
	TerminateStart    time.Time
	TerminateTook     time.Duration
	Replacement       *haNode
	RepStarted        time.Duration // replacement's boot start → its agent started
	RepStandby        time.Duration // → phase Standby (or Published, if it took over)
	RepPhase          string
	RepReady          time.Duration // → READY=1
	RepNodeReady      time.Duration // → Node Ready
	RepJoin           time.Duration // its successful kubeadm join
	RepJoinAttempts   int
	RepToJoin         time.Duration // agent started → join started
	RepJoinToStandby  time.Duration // join finished → Standby
	VictimMemberGone  time.Duration // terminate started → etcd member removed (node cleanup)
	VictimNodeDeleted time.Duration // terminate started → Node deleted (node cleanup)
	Problems          []string
	Failed            string // why the round did not finish ("" when it did)
}

type haResult struct {
	Prefix   string
	Lock     string
	Deb      string
	Version  string
	Replace  string
	Rounds   []*haRound
	Skipped  string
	Problems []string
}

// ---------------------------------------------------------------------------
// The run.

type haRun struct {
	o                   options
	root, run, out, deb string
}

// haMissing lists what figure 7 needs of `make e2e-build` and is not there.
func haMissing(o options) (deb string, missing []string) {
	need := []string{
		filepath.Join(o.e2eRoot, "hack", "e2e", "up.sh"),
		filepath.Join(o.e2eBuild, "bin", "tcplb"),
		filepath.Join(o.e2eBuild, "bin", "asgproxy"),
		filepath.Join(o.e2eBuild, "bin", "ec2-metadata-mock"),
		filepath.Join(o.e2eBuild, "bin", "containerd"),
		filepath.Join(o.e2eBuild, "sdnode-image", "base"),
		filepath.Join(o.e2eBuild, "sdnode-image", "layer"),
		filepath.Join(o.e2eBuild, "images", "etcd.tar"),
		filepath.Join(o.e2eBuild, "images", "kube-apiserver.tar"),
		filepath.Join(o.e2eBuild, "images", "flannel.tar"),
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	// up.sh installs the newest .deb of dist/ (make package-deb, part of make e2e-build).
	debs, _ := filepath.Glob(filepath.Join(o.e2eRoot, "dist", "kubestrap_*.deb"))
	var newest time.Time
	for _, d := range debs {
		if fi, err := os.Stat(d); err == nil && fi.ModTime().After(newest) {
			deb, newest = d, fi.ModTime()
		}
	}
	if deb == "" {
		missing = append(missing, filepath.Join(o.e2eRoot, "dist", "kubestrap_*.deb"))
	}
	return deb, missing
}

// runHA is figure 7. only: `-only ha`, where a missing e2e build is an
// error; in the full run figure 7 is skipped then, with the reason.
func runHA(o options, only bool) (*haResult, error) {
	res := &haResult{Prefix: haPrefix, Lock: o.haLock, Replace: o.haReplace}
	if o.e2eBuild == "" {
		res.Skipped = "no -e2e-build given (`make bench` passes $(E2E_BUILD))"
		if only {
			return res, errors.New("-only ha needs -e2e-build (run `make bench BENCH_ARGS='-only ha'`)")
		}
		return res, nil
	}
	deb, missing := haMissing(o)
	if len(missing) > 0 {
		res.Skipped = fmt.Sprintf("the end-to-end build is incomplete (missing %s): run `make e2e-build`", strings.Join(missing, ", "))
		if only {
			return res, fmt.Errorf("figure 7 needs the outputs of `make e2e-build`; missing: %s", strings.Join(missing, ", "))
		}
		logf("figure 7 skipped: %s", res.Skipped)
		return res, nil
	}
	res.Deb = filepath.Base(deb)
	h := &haRun{o: o, root: o.e2eRoot, deb: deb, run: filepath.Join(o.cache, "e2e-run-"+haPrefix)}
	base := o.out
	if base == "" {
		base = os.TempDir()
	}
	h.out = filepath.Join(base, "ha-"+time.Now().UTC().Format("20060102-150405"))
	if err := os.MkdirAll(h.out, 0o755); err != nil {
		return res, fmt.Errorf("figure 7: %w", err)
	}
	ownNetnsPrefix.Store(haPrefix)
	logf("figure 7: %d round(s), each a fresh cluster of 3 control planes (prefix %s, run directory %s, logs in %s)",
		o.haRounds, haPrefix, h.run, h.out)
	for i := 1; i <= o.haRounds; i++ {
		rd, err := h.round(i)
		res.Rounds = append(res.Rounds, rd)
		res.Problems = append(res.Problems, rd.Problems...)
		if err != nil {
			rd.Failed = err.Error()
			res.Problems = append(res.Problems, fmt.Sprintf("figure 7, round %d failed: %v", i, err))
			logf("figure 7: round %d failed: %v", i, err)
			if errors.Is(err, errStopping) {
				break
			}
			continue
		}
		if res.Version == "" && len(rd.Nodes) > 0 {
			res.Version = rd.Nodes[0].Version
		}
	}
	ok := 0
	for _, rd := range res.Rounds {
		if rd.Failed == "" {
			ok++
		}
	}
	if ok == 0 {
		return res, fmt.Errorf("figure 7: no round finished (logs in %s)", h.out)
	}
	return res, nil
}

var errStopping = errors.New("the benchmark is stopping")

// env is the harness's environment: mk/e2e.mk's E2E_ENV for the HA shape,
// under the prefix ksbench, without a worker and without the crash of
// `make e2e`; nothing of the caller's E2E_*, SDNODE_* or AWS_* settings.
func (h *haRun) env(stageTimes string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "E2E_"), strings.HasPrefix(k, "SDNODE_"), strings.HasPrefix(k, "AWS_"),
			k == "CACHE", k == "KUBE_BIN", k == "STAGE_TIMES", k == "KUBESTRAP", k == "KUBESTRAP_DEB",
			k == "NOTIFY_SOCKET", k == "JOURNAL_STREAM", strings.HasPrefix(k, "WATCHDOG_"):
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CACHE="+h.o.cache, "E2E_BUILD="+h.o.e2eBuild, "E2E_RUN="+h.run, "E2E_PREFIX="+haPrefix,
		"STAGE_TIMES="+stageTimes, "E2E_CONTROL_PLANES=3", "E2E_WORKERS=0", "E2E_CRASH_INIT=0")
	if h.o.kubeBin != "" {
		env = append(env, "KUBE_BIN="+h.o.kubeBin)
	}
	return env
}

// lockE2E takes the machine's end-to-end lock (flock, exclusive), waiting
// at most wait for another run to release it.
func lockE2E(path string, wait time.Duration) (*os.File, time.Duration, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, 0, fmt.Errorf("open the e2e lock: %w", err)
	}
	began := time.Now()
	defer monitorPaused.Store(false)
	for i := 0; ; i++ {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, time.Since(began), nil
		}
		monitorPaused.Store(true)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, 0, fmt.Errorf("flock %s: %w", path, err)
		}
		if time.Since(began) > wait {
			f.Close()
			return nil, 0, fmt.Errorf("another end-to-end run held %s for over %s", path, wait)
		}
		if i%60 == 0 {
			logf("figure 7: waiting for %s (another end-to-end run on this machine holds it; at most %s)", path, wait)
		}
		if stoppingNow() {
			f.Close()
			return nil, 0, errStopping
		}
		time.Sleep(time.Second)
	}
}

func stoppingNow() bool {
	children.mu.Lock()
	defer children.mu.Unlock()
	return children.stopping
}

// teardowns run at Ctrl-C, after stopEverything: each round registers its
// down.sh while its cluster may exist.
var teardowns struct {
	mu  sync.Mutex
	fns map[int]func()
	n   int
}

func addTeardown(fn func()) (remove func()) {
	teardowns.mu.Lock()
	defer teardowns.mu.Unlock()
	if teardowns.fns == nil {
		teardowns.fns = map[int]func(){}
	}
	teardowns.n++
	id := teardowns.n
	teardowns.fns[id] = fn
	return func() {
		teardowns.mu.Lock()
		defer teardowns.mu.Unlock()
		delete(teardowns.fns, id)
	}
}

func runTeardowns() {
	teardowns.mu.Lock()
	var fns []func()
	for _, fn := range teardowns.fns {
		fns = append(fns, fn)
	}
	teardowns.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// script runs hack/e2e/<name> in its own process group, output to
// dir/<log>, bounded by timeout (then SIGTERM to the group, SIGKILL 15 s
// later). register false: not stopped by stopEverything (the teardown).
func (h *haRun) script(env []string, logPath string, timeout time.Duration, register bool, name string, args ...string) error {
	what := strings.TrimSpace(name + " " + strings.Join(args, " "))
	p, err := startProcReg(name, env, logPath, register, filepath.Join(h.root, "hack", "e2e", name), args...)
	if err != nil {
		if stoppingNow() {
			return errStopping
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		stopAll([]*proc{p}, 15*time.Second)
		return fmt.Errorf("%s: no end within %s, stopped (log %s)", what, timeout, logPath)
	}
	// Closes the log and stops whatever is left of its process group (the
	// daemons the scripts start run in sessions of their own).
	stopAll([]*proc{p}, 0)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		if stoppingNow() {
			return errStopping
		}
		return fmt.Errorf("%s: exit status %d (log %s):\n%s", what, code, logPath, tailFile(logPath, 15))
	}
	return nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// round runs one fresh cluster: lock, leftovers, up (a), terminate and
// replace (b), down.
func (h *haRun) round(n int) (rd *haRound, err error) {
	rd = &haRound{N: n, Began: time.Now(), Dir: filepath.Join(h.out, fmt.Sprintf("round-%d", n)),
		AllStarted: -1, AllReady: -1, AllNodesReady: -1, FirstAgentToReady: -1, Init: -1, Floor: -1,
		ToInit: -1, InitToJoin: -1, JoinToJoin: -1, JoinToReady: -1, TerminateTook: -1,
		RepStarted: -1, RepStandby: -1, RepReady: -1, RepNodeReady: -1, RepJoin: -1, RepToJoin: -1,
		RepJoinToStandby: -1, VictimMemberGone: -1, VictimNodeDeleted: -1}
	defer func() { rd.Took = time.Since(rd.Began) - rd.LockWaited }()
	if err := os.MkdirAll(rd.Dir, 0o755); err != nil {
		return rd, err
	}
	env := h.env(filepath.Join(rd.Dir, "stage-times"))

	lock, waited, err := lockE2E(h.o.haLock, h.o.haLockWait)
	if err != nil {
		return rd, err
	}
	defer lock.Close() // released after the teardown below (deferred later, runs first)
	rd.LockWaited, rd.LoadAtStart = waited, loadAvg()
	logf("figure 7, round %d/%d: holding %s (waited %s)", n, h.o.haRounds, h.o.haLock, waited.Round(time.Second))

	var once sync.Once
	teardown := func() {
		once.Do(func() {
			logf("figure 7, round %d: tearing the cluster down (hack/e2e/down.sh)", n)
			if err := h.script(env, filepath.Join(rd.Dir, "down.log"), haDownTimeout, false, "down.sh"); err != nil {
				rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: teardown: %v", n, err))
			}
			rd.Problems = append(rd.Problems, h.leftovers(n)...)
			// down.sh keeps the nodes' journals and logs in e2e-last-logs-<prefix>: a copy per round.
			last := filepath.Join(h.o.cache, "e2e-last-logs-"+haPrefix)
			ctx, cancel := context.WithTimeout(context.Background(), haCommandTimeout)
			defer cancel()
			if out, err := exec.CommandContext(ctx, "cp", "-a", last, filepath.Join(rd.Dir, "logs")).CombinedOutput(); err != nil {
				rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: keeping the logs of %s: %v %s", n, last, err, out))
			}
			for _, p := range rd.Problems {
				if strings.Contains(p, "teardown") || strings.Contains(p, "left after down.sh") {
					logf("figure 7: %s", p)
				}
			}
		})
	}
	remove := addTeardown(teardown)
	defer func() {
		teardown()
		remove()
	}()

	// Leftovers of an interrupted run of this prefix, as run-e2e.sh does.
	if err := h.script(env, filepath.Join(rd.Dir, "down-before.log"), haDownTimeout, true, "down.sh"); err != nil {
		return rd, fmt.Errorf("clearing leftovers: %w", err)
	}
	if err := h.simultaneousBoot(rd, env); err != nil {
		return rd, err
	}
	if err := h.replace(rd, env); err != nil {
		return rd, err
	}
	return rd, nil
}

// leftovers names what the prefix still has on the machine after down.sh.
func (h *haRun) leftovers(n int) (out []string) {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), haPrefix+"-") {
			out = append(out, fmt.Sprintf("round %d: network namespace %s left after down.sh", n, e.Name()))
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " "+h.run+"/") || strings.Contains(l, " "+h.run+" ") {
				out = append(out, fmt.Sprintf("round %d: mount left after down.sh: %s", n, l))
			}
		}
	}
	return out
}

// bootStart is when node.sh boot began for node: the mtime of the role file
// it writes first thing.
func (h *haRun) bootStart(node string) (time.Time, error) {
	fi, err := os.Stat(filepath.Join(h.run, "nodes", node, "role"))
	if err != nil {
		return time.Time{}, fmt.Errorf("start of %s's boot: %w", node, err)
	}
	return fi.ModTime(), nil
}

func (h *haRun) disk(node string) string {
	return filepath.Join(h.run, "sd", "nodes", haPrefix+"-"+node, "disk")
}

func (h *haRun) iid(node string) string {
	b, _ := os.ReadFile(filepath.Join(h.run, "aws", "iids", node))
	return strings.TrimSpace(string(b))
}

// simultaneousBoot is (a): up.sh, then the records of the three nodes.
func (h *haRun) simultaneousBoot(rd *haRound, env []string) error {
	logf("figure 7, round %d: hack/e2e/up.sh: network, aws host, cp + cp2 + cp3 booted at once, until READY and Ready", rd.N)
	if err := h.script(env, filepath.Join(rd.Dir, "up.log"), haUpTimeout, true, "up.sh"); err != nil {
		return err
	}
	rd.Stages = readStageTimes(filepath.Join(rd.Dir, "stage-times"))
	ns, err := h.nodeStatus(env)
	if err != nil {
		return err
	}
	for _, name := range haControlPlanes {
		nd, err := h.record(rd, name)
		if err != nil {
			return err
		}
		if c, ok := ns[name]; ok && c.ready {
			nd.NodeReady = c.since
		}
		rd.Nodes = append(rd.Nodes, nd)
	}
	analyzeBoot(rd)
	for _, name := range haControlPlanes {
		st, err := state.Load(filepath.Join(h.disk(name), "upper", "var", "lib", "kubestrap"))
		if err == nil && st.UploaderLockHolder != "" && st.UploaderLockHolder == h.iid(name) {
			rd.Uploader = name
		}
	}
	logf("figure 7, round %d: all READY %s and all Ready %s after the boots began (kubeadm init %s, joins %s)", rd.N,
		secs(rd.AllReady), secs(rd.AllNodesReady), secs(rd.Init), fmtDurations(rd.Joins))
	return nil
}

// record reads node's journal (a copy, as JSON, goes to the round's directory).
func (h *haRun) record(rd *haRound, node string) (*haNode, error) {
	es, err := readJournal(filepath.Join(h.disk(node), "upper", "var", "log", "journal"),
		filepath.Join(rd.Dir, "journal-"+node+".json"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", node, err)
	}
	nd := nodeRecord(node, es)
	if nd.BootStart, err = h.bootStart(node); err != nil {
		return nil, err
	}
	return nd, nil
}

// analyzeBoot derives (a) from the three nodes' records.
func analyzeBoot(rd *haRound) {
	var firstBoot, firstAgent, lastStart, lastReady, lastNodeReady time.Time
	complete := true
	for _, nd := range rd.Nodes {
		if firstBoot.IsZero() || nd.BootStart.Before(firstBoot) {
			firstBoot = nd.BootStart
		}
		if nd.AgentStart.IsZero() || nd.Ready.IsZero() || nd.NodeReady.IsZero() {
			complete = false
			rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s: agent start %v, READY %v, Node Ready %v (a zero time was not found)",
				rd.N, nd.Name, !nd.AgentStart.IsZero(), !nd.Ready.IsZero(), !nd.NodeReady.IsZero()))
			continue
		}
		if nd.AgentStarts > 1 {
			rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s: the unit ran %d agent processes", rd.N, nd.Name, nd.AgentStarts))
		}
		if firstAgent.IsZero() || nd.AgentStart.Before(firstAgent) {
			firstAgent = nd.AgentStart
		}
		lastStart = later(lastStart, nd.AgentStart)
		lastReady = later(lastReady, nd.Ready)
		lastNodeReady = later(lastNodeReady, nd.NodeReady)
	}
	rd.BootStart = firstBoot
	if complete {
		rd.AllStarted, rd.AllReady, rd.AllNodesReady = lastStart.Sub(firstBoot), lastReady.Sub(firstBoot), lastNodeReady.Sub(firstBoot)
		rd.FirstAgentToReady = lastReady.Sub(firstAgent)
	}
	var init *haKubeadmRun
	type join struct {
		node string
		run  *haKubeadmRun
	}
	var joins []join
	for _, nd := range rd.Nodes {
		if r := nd.lastOK("kubeadm init"); r != nil {
			if init != nil {
				rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: more than one control plane ran kubeadm init (%s and %s)", rd.N, rd.Initializer, nd.Name))
			}
			init, rd.Initializer = r, nd.Name
			continue
		}
		if r := nd.lastOK("kubeadm join"); r != nil {
			joins = append(joins, join{nd.Name, r})
		}
		if all, failed := nd.count("kubeadm join"); failed > 0 {
			rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s ran kubeadm join %d times, %d failed", rd.N, nd.Name, all, failed))
		}
	}
	sort.Slice(joins, func(i, j int) bool { return joins[i].run.Start.Before(joins[j].run.Start) })
	for _, j := range joins {
		rd.Joiners = append(rd.Joiners, j.node)
		rd.Joins = append(rd.Joins, j.run.Took)
	}
	if init == nil || len(joins) != 2 {
		rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: want one kubeadm init and two joins, found init %v and %d joins", rd.N, init != nil, len(joins)))
		return
	}
	rd.Init = init.Took
	rd.Floor = init.Took + joins[0].run.Took + joins[1].run.Took
	if complete {
		rd.ToInit = init.Start.Sub(firstAgent)
		rd.JoinToReady = lastReady.Sub(joins[1].run.End)
	}
	rd.InitToJoin = joins[0].run.Start.Sub(init.End)
	rd.JoinToJoin = joins[1].run.Start.Sub(joins[0].run.End)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// replace is (b): terminate one control plane, boot cp4, wait until it
// stands by and its Node is Ready.
func (h *haRun) replace(rd *haRound, env []string) error {
	var standby []string
	for _, nd := range rd.Nodes {
		if nd.Name != rd.Uploader {
			standby = append(standby, nd.Name)
		}
	}
	switch {
	case h.o.haReplace == "uploader" && rd.Uploader != "":
		rd.Victim, rd.VictimRole = rd.Uploader, "uploader"
	case h.o.haReplace == "standby" && len(standby) > 0:
		// The last standby by name: cp keeps its admin.conf, which kubectl.sh uses, running.
		rd.Victim, rd.VictimRole = standby[len(standby)-1], "standby"
	default:
		return fmt.Errorf("no %s control plane to terminate (uploader %q)", h.o.haReplace, rd.Uploader)
	}
	logf("figure 7, round %d: terminating %s (%s), then booting %s", rd.N, rd.Victim, rd.VictimRole, haReplacement)
	rd.TerminateStart = time.Now()
	if err := h.script(env, filepath.Join(rd.Dir, "terminate.log"), haNodeTimeout, true, "node.sh", "terminate", rd.Victim); err != nil {
		return err
	}
	rd.TerminateTook = time.Since(rd.TerminateStart)
	if err := h.script(env, filepath.Join(rd.Dir, "boot-"+haReplacement+".log"), haNodeTimeout, true,
		"node.sh", "boot", haReplacement, "control-plane"); err != nil {
		return err
	}
	// Until the replacement stands by (state.json, every second) and its
	// Node is Ready (kubectl, every 3 s).
	stateDir := filepath.Join(h.disk(haReplacement), "upper", "var", "lib", "kubestrap")
	deadline := time.Now().Add(haSettleTimeout)
	var phaseOK, nodeOK bool
	var last string
	var nodeReady time.Time
	for i := 0; !phaseOK || !nodeOK; i++ {
		if stoppingNow() {
			return errStopping
		}
		if st, err := state.Load(stateDir); err == nil {
			last = fmt.Sprintf("phase %s: %s", st.Phase, st.Message)
			if (st.Phase == state.PhaseStandby || st.Phase == state.PhasePublished) && !st.ControlPlaneJoinedAt.IsZero() {
				phaseOK, rd.RepPhase = true, string(st.Phase)
			}
		}
		if !nodeOK && i%3 == 0 {
			if ns, err := h.nodeStatus(env); err == nil {
				if c, ok := ns[haReplacement]; ok && c.ready {
					nodeOK, nodeReady = true, c.since
				}
			}
		}
		if phaseOK && nodeOK {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not stand by with its Node Ready within %s of its boot (%s; Node Ready %v)",
				haReplacement, haSettleTimeout, last, nodeOK)
		}
		time.Sleep(time.Second)
	}
	rep, err := h.record(rd, haReplacement)
	if err != nil {
		return err
	}
	rep.NodeReady = nodeReady
	rd.Replacement = rep
	t0 := rep.BootStart
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return -1
		}
		return t.Sub(t0)
	}
	rd.RepStarted, rd.RepReady, rd.RepNodeReady = since(rep.AgentStart), since(rep.Ready), since(rep.NodeReady)
	settled := rep.Standby
	if rd.RepPhase == string(state.PhasePublished) {
		settled = rep.Published
	}
	rd.RepStandby = since(settled)
	rd.RepJoinAttempts, _ = rep.count("kubeadm join")
	if j := rep.lastOK("kubeadm join"); j != nil {
		rd.RepJoin = j.Took
		if !rep.AgentStart.IsZero() {
			rd.RepToJoin = j.Start.Sub(rep.AgentStart)
		}
		if !settled.IsZero() {
			rd.RepJoinToStandby = settled.Sub(j.End)
		}
	}
	if rd.RepJoinAttempts > 1 {
		rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s ran kubeadm join %d times", rd.N, haReplacement, rd.RepJoinAttempts))
	}
	if rep.AgentStarts > 1 {
		rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s: the unit ran %d agent processes", rd.N, haReplacement, rep.AgentStarts))
	}
	// The node cleanup's work on the terminated control plane, from the survivors' journals.
	for _, name := range append(append([]string{}, haControlPlanes...), haReplacement) {
		if name == rd.Victim {
			continue
		}
		// Read again to the end of the round (the copy kept replaces the one of (a)).
		es, err := readJournal(filepath.Join(h.disk(name), "upper", "var", "log", "journal"),
			filepath.Join(rd.Dir, "journal-"+name+".json"))
		if err != nil {
			rd.Problems = append(rd.Problems, fmt.Sprintf("round %d: %s: %v", rd.N, name, err))
			continue
		}
		for _, c := range nodeRecord(name, es).Cleanups {
			if c.Node != rd.Victim {
				continue
			}
			d := c.At.Sub(rd.TerminateStart)
			switch c.What {
			case "etcd member removed":
				if rd.VictimMemberGone < 0 || d < rd.VictimMemberGone {
					rd.VictimMemberGone = d
				}
			case "Node deleted":
				if rd.VictimNodeDeleted < 0 || d < rd.VictimNodeDeleted {
					rd.VictimNodeDeleted = d
				}
			}
		}
	}
	logf("figure 7, round %d: %s stands by %s and is Ready %s after its boot began (its kubeadm join %s)", rd.N, haReplacement,
		secs(rd.RepStandby), secs(rd.RepNodeReady), secs(rd.RepJoin))
	return nil
}

func readStageTimes(path string) map[string]int {
	out := map[string]int{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if n, err := strconv.Atoi(v); ok && err == nil {
			out[k] = n
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Reading the nodes.

type jEntry struct {
	At time.Time
	F  map[string]string
}

// readJournal is the kubestrap unit's journal of a node (its entries and
// systemd's about the unit), read from the node's disk; saved to save too
// (JSON lines, as journalctl prints them) unless save is "".
func readJournal(dir, save string) ([]jEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), haCommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "journalctl", "-D", dir, "-u", "kubestrap", "-o", "json", "--no-pager", "-q").Output()
	if err != nil {
		return nil, fmt.Errorf("journalctl -D %s: %w", dir, err)
	}
	if save != "" {
		if err := os.WriteFile(save, out, 0o644); err != nil {
			return nil, fmt.Errorf("keeping the journal of %s: %w", dir, err)
		}
	}
	var es []jEntry
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			return nil, fmt.Errorf("journal entry of %s: %w", dir, err)
		}
		e := jEntry{F: map[string]string{}}
		for k, v := range raw {
			if s, ok := v.(string); ok {
				e.F[k] = s
			}
		}
		us, err := strconv.ParseInt(e.F["__REALTIME_TIMESTAMP"], 10, 64)
		if err != nil {
			continue
		}
		e.At = time.UnixMicro(us)
		es = append(es, e)
	}
	return es, nil
}

// nodeRecord is what one node's journal says of its agent.
func nodeRecord(name string, es []jEntry) *haNode {
	nd := &haNode{Name: name}
	procs := map[string]bool{}
	running := map[string]time.Time{}
	for _, e := range es {
		if e.F["_PID"] == "1" {
			if nd.Ready.IsZero() && (e.F["MESSAGE_ID"] == sdMessageUnitStarted || strings.HasPrefix(e.F["MESSAGE"], "Started kubestrap")) {
				nd.Ready = e.At
			}
			continue
		}
		if e.F["_COMM"] != "kubestrap" {
			continue
		}
		if k := e.F["_BOOT_ID"] + "/" + e.F["_PID"]; !procs[k] {
			procs[k] = true
			nd.AgentStarts++
			if nd.AgentStart.IsZero() {
				nd.AgentStart = e.At
			}
		}
		msg := e.F["MESSAGE"]
		switch {
		case msg == "kubestrap starting" && nd.Version == "":
			nd.Version = strings.TrimSpace(e.F["VERSION"] + " (commit " + e.F["COMMIT"] + ")")
		case msg == "running kubeadm":
			running[e.F["COMMAND"]] = e.At
		case msg == "kubeadm finished":
			took, _ := time.ParseDuration(e.F["TOOK"])
			c := e.F["COMMAND"]
			nd.Kubeadm = append(nd.Kubeadm, haKubeadmRun{Command: c, Start: running[c], End: e.At, Took: took, OK: e.F["OK"] == "true"})
			delete(running, c)
		case msg == "removed the etcd member of a terminated control plane":
			nd.Cleanups = append(nd.Cleanups, haCleanup{By: name, Node: e.F["NODE"], What: "etcd member removed", At: e.At})
		case msg == "deleted the Node of a terminated instance":
			nd.Cleanups = append(nd.Cleanups, haCleanup{By: name, Node: e.F["NODE"], What: "Node deleted", At: e.At})
		}
		switch e.F["PHASE"] {
		case string(state.PhaseStandby):
			if nd.Standby.IsZero() {
				nd.Standby = e.At
			}
		case string(state.PhasePublished):
			if nd.Published.IsZero() {
				nd.Published = e.At
			}
		}
	}
	return nd
}

type haNodeCond struct {
	ready bool
	since time.Time
}

// nodeStatus is every Node's Ready condition (hack/e2e/kubectl.sh, the
// cluster's admin, from the aws host).
func (h *haRun) nodeStatus(env []string) (map[string]haNodeCond, error) {
	ctx, cancel := context.WithTimeout(context.Background(), haCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.root, "hack", "e2e", "kubectl.sh"), "--request-timeout=30s", "get", "nodes", "-o", "json")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %w", err)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Status struct {
				Conditions []struct {
					Type               string    `json:"type"`
					Status             string    `json:"status"`
					LastTransitionTime time.Time `json:"lastTransitionTime"`
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("kubectl get nodes: %w", err)
	}
	res := map[string]haNodeCond{}
	for _, it := range list.Items {
		for _, c := range it.Status.Conditions {
			if c.Type == "Ready" {
				res[it.Metadata.Name] = haNodeCond{ready: c.Status == "True", since: c.LastTransitionTime}
			}
		}
	}
	return res, nil
}

// inOwnNetns reports whether process pid runs in a network namespace of the
// cluster figure 7 runs (/run/netns/<prefix>-*): one of its nodes or its aws host.
func inOwnNetns(pid string, own map[uint64]bool) bool {
	if len(own) == 0 {
		return false
	}
	l, err := os.Readlink(filepath.Join("/proc", pid, "ns", "net"))
	if err != nil {
		return false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "net:["), "]"), 10, 64)
	return err == nil && own[ino]
}

// ownNetns is the set of inode numbers of figure 7's network namespaces.
func ownNetns() map[uint64]bool {
	prefix, _ := ownNetnsPrefix.Load().(string)
	if prefix == "" {
		return nil
	}
	ents, _ := os.ReadDir("/run/netns")
	out := map[uint64]bool{}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil {
			out[st.Ino] = true
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Report.

func fmtDurations(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, secs(d))
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// haCells is "rounds | median | min | max" of the values ≥ 0.
func haCells(ds []time.Duration) []string {
	var v []time.Duration
	for _, d := range ds {
		if d >= 0 {
			v = append(v, d)
		}
	}
	if len(v) == 0 {
		return []string{"0", "–", "–", "–"}
	}
	s := summarize(v)
	return []string{fmt.Sprint(s.N), secs(s.Median), secs(s.Min), secs(s.Max)}
}

// lockWaited is how long the rounds waited for the machine's end-to-end lock.
func (hr *haResult) lockWaited() time.Duration {
	var d time.Duration
	if hr != nil {
		for _, rd := range hr.Rounds {
			d += rd.LockWaited
		}
	}
	return d
}

func (hr *haResult) done() []*haRound {
	var out []*haRound
	for _, rd := range hr.Rounds {
		if rd.Failed == "" {
			out = append(out, rd)
		}
	}
	return out
}

func (hr *haResult) col(f func(*haRound) time.Duration) []time.Duration {
	var out []time.Duration
	for _, rd := range hr.done() {
		out = append(out, f(rd))
	}
	return out
}

// markdown is figure 7.
func (hr *haResult) markdown(b *strings.Builder, heading string) {
	fmt.Fprintf(b, "%s 7. HA control plane: three control planes booted at once, and a replacement\n\n", heading)
	if hr == nil {
		b.WriteString("Not measured in this run (no -e2e-build: `make bench` passes $(E2E_BUILD)).\n\n")
		return
	}
	if hr.Skipped != "" {
		fmt.Fprintf(b, "Not measured in this run: %s.\n\n", hr.Skipped)
		return
	}
	rounds := hr.done()
	fmt.Fprintf(b, "End-to-end harness (hack/e2e as `make e2e-ha` runs it: systemd-nspawn nodes, real kubeadm v1.37.2, moto, "+
		"the TCP load balancer as the NLB), prefix %s, 3 control planes, no worker; package %s (agent %s). "+
		"%d of %d rounds finished, each a fresh cluster.\n\n", hr.Prefix, hr.Deb, hr.Version, len(rounds), len(hr.Rounds))
	if len(rounds) == 0 {
		return
	}
	b.WriteString(row("measured", "rounds", "median", "min", "max"))
	b.WriteString(row("---", "---:", "---:", "---:", "---:"))
	add := func(what string, ds []time.Duration) { b.WriteString(row(append([]string{what}, haCells(ds)...)...)) }
	add("(a) boot of cp, cp2, cp3 began → all three agents started (the harness: namespaces, IMDS, systemd, .deb, image import, user-data)",
		hr.col(func(r *haRound) time.Duration { return r.AllStarted }))
	add("(a) boot began → **all three kubestrap READY**", hr.col(func(r *haRound) time.Duration { return r.AllReady }))
	add("(a) boot began → **all three Nodes Ready**", hr.col(func(r *haRound) time.Duration { return r.AllNodesReady }))
	add("(a) first agent started → all three READY", hr.col(func(r *haRound) time.Duration { return r.FirstAgentToReady }))
	add("floor: `kubeadm init`", hr.col(func(r *haRound) time.Duration { return r.Init }))
	var first, second []time.Duration
	for _, rd := range rounds {
		if len(rd.Joins) == 2 {
			first, second = append(first, rd.Joins[0]), append(second, rd.Joins[1])
		}
	}
	add("floor: `kubeadm join --control-plane`, first joiner", first)
	add("floor: `kubeadm join --control-plane`, second joiner", second)
	add("**floor: init + both joins** (the joins run one at a time)", hr.col(func(r *haRound) time.Duration { return r.Floor }))
	add("beyond the floor: first agent started → all READY, less the floor", hr.col(func(r *haRound) time.Duration {
		if r.FirstAgentToReady < 0 || r.Floor < 0 {
			return -1
		}
		return r.FirstAgentToReady - r.Floor
	}))
	add("  of which: first agent started → `kubeadm init` started (init lock through S3)", hr.col(func(r *haRound) time.Duration { return r.ToInit }))
	add("  of which: init finished → first join started (API server ready, add-ons, token, certificate upload, control-plane join info published and read)",
		hr.col(func(r *haRound) time.Duration { return r.InitToJoin }))
	add("  of which: first join finished → second join started (join lock handed over through S3)", hr.col(func(r *haRound) time.Duration { return r.JoinToJoin }))
	add("  of which: second join finished → last READY", hr.col(func(r *haRound) time.Duration { return r.JoinToReady }))
	add("(b) "+haReplacement+"'s boot began → its agent started (the harness, as above)", hr.col(func(r *haRound) time.Duration { return r.RepStarted }))
	add("(b) boot began → **"+haReplacement+" phase Standby** (READY=1 with it)", hr.col(func(r *haRound) time.Duration { return r.RepStandby }))
	add("(b) boot began → **"+haReplacement+"'s Node Ready**", hr.col(func(r *haRound) time.Duration { return r.RepNodeReady }))
	add("floor: "+haReplacement+"'s `kubeadm join --control-plane`", hr.col(func(r *haRound) time.Duration { return r.RepJoin }))
	add("  agent started → join started (control-plane join info and join lock through S3)", hr.col(func(r *haRound) time.Duration { return r.RepToJoin }))
	add("  join finished → Standby", hr.col(func(r *haRound) time.Duration { return r.RepJoinToStandby }))
	add("terminated control plane: `node.sh terminate` took", hr.col(func(r *haRound) time.Duration { return r.TerminateTook }))
	add("terminate began → its etcd member removed by the node cleanup", hr.col(func(r *haRound) time.Duration { return r.VictimMemberGone }))
	add("terminate began → its Node deleted by the node cleanup", hr.col(func(r *haRound) time.Duration { return r.VictimNodeDeleted }))
	b.WriteString("\nMedian / min / max over rounds (the median of an even number is the lower middle one); the `kubeadm join` rows of (a) have one sample per joiner and round. " +
		"Times from the nodes' own records: boot began = node.sh boot wrote the node's role file; agent started = its first journal entry; " +
		"READY = the node's systemd logged the unit started (Type=notify); Standby = the agent's first entry in that phase; " +
		"Node Ready = the Ready condition's lastTransitionTime (whole seconds, so up to 1 s early); kubeadm = the agent's `kubeadm finished` (took).\n\n")

	b.WriteString(row("round", "node", "agent started", "kubeadm", "kubeadm started", "took", "READY", "Standby (uploader: Published)", "Node Ready"))
	b.WriteString(row("---", "---", "---:", "---", "---:", "---:", "---:", "---:", "---:"))
	rel := func(t, t0 time.Time) string {
		if t.IsZero() || t0.IsZero() {
			return "–"
		}
		return secs(t.Sub(t0))
	}
	for _, rd := range rounds {
		nodes := append([]*haNode{}, rd.Nodes...)
		if rd.Replacement != nil {
			nodes = append(nodes, rd.Replacement)
		}
		for _, nd := range nodes {
			t0 := rd.BootStart
			if nd == rd.Replacement {
				t0 = nd.BootStart
			}
			cmd, start, took := "–", "–", "–"
			for _, c := range []string{"kubeadm init", "kubeadm join"} {
				if r := nd.lastOK(c); r != nil {
					cmd, start, took = strings.TrimPrefix(c, "kubeadm "), rel(r.Start, t0), secs(r.Took)
					if all, failed := nd.count(c); failed > 0 {
						cmd += fmt.Sprintf(" (%d runs, %d failed)", all, failed)
					}
				}
			}
			name := nd.Name
			switch {
			case nd == rd.Replacement:
				name += fmt.Sprintf(" (replaces %s, the %s; times from its own boot)", rd.Victim, rd.VictimRole)
			case nd.Name == rd.Uploader:
				name += " (uploader)"
			}
			settled := nd.Standby
			if nd.Name == rd.Uploader && nd != rd.Replacement {
				settled = nd.Published
			}
			b.WriteString(row(fmt.Sprint(rd.N), name, rel(nd.AgentStart, t0), cmd, start, took, rel(nd.Ready, t0), rel(settled, t0), rel(nd.NodeReady, t0)))
		}
	}
	b.WriteString("\nTimes from the moment the boots began (of cp, cp2 and cp3 at once; of " + haReplacement + " on its own). ")
	var stages []string
	for _, rd := range rounds {
		var s []string
		for _, k := range []string{"network", "aws", "control-plane", "workers", "cluster-up"} {
			if v, ok := rd.Stages[k]; ok {
				s = append(s, fmt.Sprintf("%s %d s", k, v))
			}
		}
		stages = append(stages, fmt.Sprintf("round %d: %s; the round took %s (waited %s for the lock, load average %s then)", rd.N, strings.Join(s, ", "),
			rd.Took.Round(time.Second), rd.LockWaited.Round(time.Second), rd.LoadAtStart))
	}
	b.WriteString("up.sh's stages: " + strings.Join(stages, "; ") + ".\n\n")
}
