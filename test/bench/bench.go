//go:build bench

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kubestrap/kubestrap/internal/join"
)

const (
	bucket         = "kb-bench"
	workerCluster  = "kbw"
	shellKey       = "kbsh/join.sh"
	apiEndpoint    = "10.0.1.10:6443"
	joinInfoMargin = time.Minute
)

// Bench holds the shared environment: one moto_server, one ec2-metadata-mock,
// the counting proxies in front of them, and the built binaries.
type Bench struct {
	o     options
	work  string
	empty string
	// bin holds the copied kubestrap, and `kubeadm` and `aws` for the shell way.
	bin, kubestrap, fake string

	motoURL, imdsURL string
	// apiURL and apiCA: the stand-in API server the fake kubeadm's admin.conf names.
	apiURL, apiCA string
	s3r, imdsr    *recorder
	s3            *s3.Client
	rng           *mrand.Rand
	gen           int64
	caHash        string

	// shellPeriod is the observed time between two polls of one shell worker.
	shellPeriod time.Duration
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randomToken returns a bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}.
func randomToken() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 22)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:6]) + "." + string(b[6:])
}

func (b *Bench) deleteKey(key string) error {
	_, err := b.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	return err
}

// put writes an object directly to moto and returns when the write is acknowledged:
// from then on every reader sees it.
func (b *Bench) put(key string, body []byte) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := b.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	return time.Now(), err
}

// putJoinInfo publishes valid join info for token, as the control plane would.
func (b *Bench) putJoinInfo(token string) (time.Time, error) {
	b.gen++
	now := time.Now().UTC().Truncate(time.Second)
	info := &join.Info{APIVersion: join.APIVersion, Kind: join.Kind, Cluster: workerCluster, APIServerEndpoint: apiEndpoint,
		Token: token, CACertHashes: []string{"sha256:" + b.caHash}, KubernetesVersion: "v1.37.2",
		IssuedAt: now, ExpiresAt: now.Add(2 * time.Hour), Generation: b.gen}
	body, err := json.Marshal(info)
	if err != nil {
		return time.Time{}, err
	}
	if _, err := join.Parse(body, join.Expectations{Cluster: workerCluster, Now: time.Now(), Margin: joinInfoMargin}); err != nil {
		return time.Time{}, fmt.Errorf("benchmark join info is not valid: %w", err)
	}
	return b.put(join.Key(workerCluster), body)
}

// putJoinScript publishes what install_master.sh writes: the join command kubeadm printed.
func (b *Bench) putJoinScript(token string) (time.Time, error) {
	cmd := fmt.Sprintf("kubeadm join %s --token %s --discovery-token-ca-cert-hash sha256:%s\n", apiEndpoint, token, b.caHash)
	return b.put(shellKey, []byte(cmd))
}

// callsOf returns the times of the fake kubeadm's calls whose arguments start with prefix.
func callsOf(fakeDir, prefix string) []time.Time {
	f, err := os.Open(filepath.Join(fakeDir, "calls.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ns, args, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(args, prefix) {
			continue
		}
		n, err := strconv.ParseInt(ns, 10, 64)
		if err == nil {
			out = append(out, time.Unix(0, n))
		}
	}
	return out
}

// logEntries reads the agent's JSON log lines with msg.
func logEntries(path, msg string) []map[string]any {
	var out []map[string]any
	for _, e := range readJSONLines(path) {
		if e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

const zapISO8601 = "2006-01-02T15:04:05.000Z0700"

// kubeadmFinished returns the end times of the successful kubeadm runs of command
// ("kubeadm join", "kubeadm init", "kubeadm token create") in the agent's log.
func kubeadmFinished(logPath, command string) []time.Time {
	var out []time.Time
	for _, e := range logEntries(logPath, "kubeadm finished") {
		if e["command"] != command || e["ok"] != true {
			continue
		}
		if ts, ok := e["ts"].(string); ok {
			if t, err := time.Parse(zapISO8601, ts); err == nil {
				out = append(out, t)
			}
		}
	}
	return out
}

func firstEvent(evs []reqEvent) (reqEvent, bool) {
	if len(evs) == 0 {
		return reqEvent{}, false
	}
	first := evs[0]
	for _, e := range evs[1:] {
		if e.Start.Before(first.Start) {
			first = e
		}
	}
	return first, true
}

func (b *Bench) randomDelay() time.Duration {
	return time.Duration(b.rng.Int64N(int64(b.o.interval)))
}

// spreadDelay is the publish moment of round i of k: spread evenly (with a
// random offset inside each slot) over one poll period, so that a few rounds
// sample every phase of the poll cycle instead of a random clump of them.
func (b *Bench) spreadDelay(i, k int, period time.Duration) time.Duration {
	return time.Duration((float64(i) + b.rng.Float64()) / float64(k) * float64(period))
}

// ---------------------------------------------------------------------------
// kubestrap workers: the real binary, one process each.

type ksWorker struct {
	id, dir, fk, etc, cfg, logPath string
	notify                         *notifyListener
	p                              *proc
}

func (b *Bench) newKSWorker(trialDir string, i int, token string) (*ksWorker, error) {
	w := &ksWorker{id: fmt.Sprintf("%s-%d", filepath.Base(trialDir), i), dir: filepath.Join(trialDir, fmt.Sprintf("w%d", i))}
	w.fk, w.etc = filepath.Join(w.dir, "fk"), filepath.Join(w.dir, "etc")
	for _, d := range []string{w.fk, w.etc, filepath.Join(w.dir, "state")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(w.fk, "tokens"), []byte(token+"\n"), 0o600); err != nil {
		return nil, err
	}
	w.cfg = filepath.Join(w.dir, "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: %s
role: worker
bucket: %s
stateDir: %s
nodeName: bench-%s
aws: {s3UsePathStyle: true, imdsTimeout: 60s}
kubeadm: {path: %s, configDir: %s}
worker: {pollInterval: %s, expiryMargin: %s}
ecr: {enabled: false}
`, workerCluster, bucket, filepath.Join(w.dir, "state"), w.id, b.fake, w.etc, b.o.interval, joinInfoMargin)
	if err := os.WriteFile(w.cfg, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	n, err := listenNotify(filepath.Join(w.dir, "n.sock"))
	if err != nil {
		return nil, err
	}
	w.notify = n
	w.logPath = filepath.Join(w.dir, "agent.log")
	return w, nil
}

func (b *Bench) agentEnv(id, notifySock, fk, etc string) []string {
	return cleanEnv(b.empty,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+b.imdsr.URL, "AWS_ENDPOINT_URL_S3="+b.s3r.URL,
		"AWS_SDK_UA_APP_ID="+id, "NOTIFY_SOCKET="+notifySock,
		"FAKE_KUBEADM_DIR="+fk, "FAKE_KUBEADM_ETC="+etc,
		"FAKE_KUBEADM_API_SERVER="+b.apiURL, "FAKE_KUBEADM_API_CA="+b.apiCA)
}

func (b *Bench) startKSWorker(w *ksWorker) error {
	p, err := startProc(w.id, b.agentEnv(w.id, filepath.Join(w.dir, "n.sock"), w.fk, w.etc), w.logPath,
		b.kubestrap, "run", "--config", w.cfg, "--log-format", "json")
	w.p = p
	return err
}

// ksTrial is what one group of kubestrap workers measured.
type ksTrial struct {
	Name string
	N    int
	// Pickup: join info PUT acknowledged -> kubeadm join started.
	Pickup []time.Duration
	// Startup: process start -> its first S3 request.
	Startup []time.Duration
	// StartToKubeadm: process start -> kubeadm join started (join info already in S3).
	StartToKubeadm []time.Duration
	// ExitToReady: kubeadm join returned (agent log, ms) -> READY=1 received.
	ExitToReady []time.Duration
	// Waiting window (before the join info exists).
	Wait windowCost
	// After the join.
	AfterReqs       int
	AfterWorkerTime time.Duration
	AfterCPU        time.Duration
	AfterWindow     time.Duration
	IdleRSS         []int64
	IdleAnon        []int64
	IdleFile        []int64
	Smaps           map[string]int64
	Problems        []string
}

// windowCost is the cost of N workers over a window while they wait.
type windowCost struct {
	N             int
	Window        time.Duration
	S3Reqs        int
	IMDSReqs      int
	CPU           time.Duration
	PeakKiB       []int64
	MeanKiB       []int64
	PollPeriods   []time.Duration
	ProcessesSeen int
	measured      bool
}

func (c windowCost) workerTime() time.Duration { return time.Duration(c.N) * c.Window }

// kubestrapTrial starts n workers, lets them wait (measuring a window of
// length wait), publishes join info at a random moment and measures each
// worker's pickup, its READY, and (after > 0) a window after the join.
// With prepublished the join info is in S3 before the workers start.
// The join info is published delay after the wait (or at once, with delay 0).
func (b *Bench) kubestrapTrial(name string, n int, prepublished bool, wait, after, delay time.Duration) (*ksTrial, error) {
	res := &ksTrial{Name: name, N: n}
	dir := filepath.Join(b.work, name)
	if err := b.deleteKey(join.Key(workerCluster)); err != nil {
		return nil, err
	}
	token := randomToken()
	workers := make([]*ksWorker, n)
	apps := map[string]bool{}
	for i := range workers {
		w, err := b.newKSWorker(dir, i, token)
		if err != nil {
			return nil, err
		}
		workers[i] = w
		apps[w.id] = true
	}
	defer func() {
		var ps []*proc
		for _, w := range workers {
			if w.p != nil {
				ps = append(ps, w.p)
			}
		}
		stopAll(ps, 15*time.Second)
		for _, w := range workers {
			w.notify.close()
		}
	}()
	if prepublished {
		if _, err := b.putJoinInfo(token); err != nil {
			return nil, err
		}
	}
	spacing := b.o.interval / time.Duration(n)
	for i, w := range workers {
		if err := b.startKSWorker(w); err != nil {
			return nil, err
		}
		if i < n-1 {
			time.Sleep(spacing)
		}
	}
	// Every worker is up and polling once it has made its first S3 request.
	err := waitUntil(fmt.Sprintf("the first S3 request of %d kubestrap workers", n), 120*time.Second, 50*time.Millisecond, func() error {
		got := b.s3r.byApp(apps)
		missing := 0
		for _, w := range workers {
			if len(got[w.id]) == 0 {
				if w.p.exited() {
					return fmt.Errorf("worker %s exited; see %s", w.id, w.logPath)
				}
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d workers have not asked S3 yet", missing)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	evs := b.s3r.byApp(apps)
	for _, w := range workers {
		if e, ok := firstEvent(evs[w.id]); ok {
			res.Startup = append(res.Startup, e.Start.Sub(w.p.started))
		}
	}
	if !prepublished && wait > 0 {
		res.Wait = b.measureWaiting(workers, apps, wait)
	}
	var t0 time.Time
	if !prepublished {
		time.Sleep(delay)
		if t0, err = b.putJoinInfo(token); err != nil {
			return nil, err
		}
	}
	// Pickup: every worker's kubeadm join call.
	joinAt := make([]time.Time, n)
	timeout := 3*b.o.interval + 30*time.Second + time.Duration(n)*20*time.Millisecond
	_ = waitUntil("kubeadm join of every worker", timeout, 100*time.Millisecond, func() error {
		missing := 0
		for i, w := range workers {
			if joinAt[i].IsZero() {
				if c := callsOf(w.fk, "join"); len(c) > 0 {
					joinAt[i] = c[0]
				} else {
					missing++
				}
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d workers have not started kubeadm join", missing)
		}
		return nil
	})
	_ = waitUntil("READY=1 from every worker", 30*time.Second, 100*time.Millisecond, func() error {
		for _, w := range workers {
			if w.notify.readyAt().IsZero() {
				return errors.New("not all ready")
			}
		}
		return nil
	})
	for i, w := range workers {
		if joinAt[i].IsZero() {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: no kubeadm join within %s", w.id, timeout))
			continue
		}
		if prepublished {
			res.StartToKubeadm = append(res.StartToKubeadm, joinAt[i].Sub(w.p.started))
		} else {
			res.Pickup = append(res.Pickup, joinAt[i].Sub(t0))
		}
		ready := w.notify.readyAt()
		if ready.IsZero() {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: no READY=1", w.id))
			continue
		}
		if ex := kubeadmFinished(w.logPath, "kubeadm join"); len(ex) > 0 {
			res.ExitToReady = append(res.ExitToReady, ready.Sub(ex[0]))
		}
	}
	if after > 0 {
		b.measureAfterJoin(res, workers, apps, after)
	}
	return res, nil
}

// measureWaiting measures n waiting kubestrap workers over a window.
func (b *Bench) measureWaiting(workers []*ksWorker, apps map[string]bool, window time.Duration) windowCost {
	c := windowCost{N: len(workers), measured: true}
	pids := make([]int, len(workers))
	for i, w := range workers {
		pids[i] = w.p.pid()
	}
	sampler := startRSSSampler(pids, 500*time.Millisecond, false)
	t0, cpu0 := time.Now(), sumCPU(pids)
	time.Sleep(window)
	t1, cpu1 := time.Now(), sumCPU(pids)
	peak, mean := sampler.finish()
	c.Window = t1.Sub(t0)
	c.CPU = cpu1 - cpu0
	c.S3Reqs = b.s3r.countBetween(t0, t1, func(e *reqEvent) bool { return apps[e.App] })
	c.IMDSReqs = b.imdsr.countBetween(t0, t1, nil)
	for _, p := range pids {
		c.PeakKiB = append(c.PeakKiB, peak[p])
		c.MeanKiB = append(c.MeanKiB, mean[p])
	}
	c.PollPeriods = pollPeriods(b.s3r.byApp(apps), t0, t1)
	return c
}

// pollPeriods are the gaps between consecutive requests of the same worker in [t0, t1].
func pollPeriods(byApp map[string][]reqEvent, t0, t1 time.Time) []time.Duration {
	var out []time.Duration
	for _, evs := range byApp {
		var last time.Time
		for _, e := range evs {
			if e.Start.Before(t0) || e.Start.After(t1) || e.Method == "GET" && e.Status == 200 {
				continue
			}
			if !last.IsZero() {
				out = append(out, e.Start.Sub(last))
			}
			last = e.Start
		}
	}
	return out
}

func (b *Bench) measureAfterJoin(res *ksTrial, workers []*ksWorker, apps map[string]bool, window time.Duration) {
	pids := make([]int, len(workers))
	for i, w := range workers {
		pids[i] = w.p.pid()
	}
	t0, cpu0 := time.Now(), sumCPU(pids)
	time.Sleep(window)
	t1, cpu1 := time.Now(), sumCPU(pids)
	res.AfterWindow = t1.Sub(t0)
	res.AfterCPU = cpu1 - cpu0
	evs := b.s3r.byApp(apps)
	for _, w := range workers {
		ready := w.notify.readyAt()
		if ready.IsZero() || w.p.exited() {
			continue
		}
		res.AfterWorkerTime += t1.Sub(ready)
		for _, e := range evs[w.id] {
			if e.Start.After(ready) {
				res.AfterReqs++
			}
		}
		if m, err := readMem(w.p.pid()); err == nil {
			res.IdleRSS = append(res.IdleRSS, m.RSS)
			res.IdleAnon = append(res.IdleAnon, m.Anon)
			res.IdleFile = append(res.IdleFile, m.File)
		}
	}
	res.Smaps = smapsByMapping(workers[0].p.pid())
}

// ---------------------------------------------------------------------------
// The shell way: hack/bench/shell-worker.sh (bash + AWS CLI), one process
// group each.

type shWorker struct {
	id, dir, fk, etc, logPath string
	p                         *proc
}

func (b *Bench) startShellWorker(trialDir string, i int) (*shWorker, error) {
	w := &shWorker{id: fmt.Sprintf("%s-%d", filepath.Base(trialDir), i), dir: filepath.Join(trialDir, fmt.Sprintf("s%d", i))}
	w.fk, w.etc = filepath.Join(w.dir, "fk"), filepath.Join(w.dir, "etc")
	for _, d := range []string{w.fk, w.etc} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	w.logPath = filepath.Join(w.dir, "worker.log")
	maxTries := int(30*time.Minute/b.o.interval) + 1
	env := cleanEnv(b.empty,
		"PATH="+b.bin+":/usr/local/bin:/usr/bin:/bin", "HOME="+w.dir,
		"AWS_DEFAULT_REGION=eu-west-1", "AWS_EC2_METADATA_SERVICE_ENDPOINT="+b.imdsr.URL,
		"AWS_ENDPOINT_URL_S3="+b.s3r.URL, "AWS_SDK_UA_APP_ID="+w.id,
		"FAKE_KUBEADM_DIR="+w.fk, "FAKE_KUBEADM_ETC="+w.etc,
		"BUCKET="+bucket, "KEY="+shellKey, "INTERVAL="+strconv.FormatFloat(b.o.interval.Seconds(), 'f', -1, 64),
		"WORKDIR="+w.dir, "MAX_TRIES="+strconv.Itoa(maxTries))
	p, err := startProc(w.id, env, w.logPath, "/bin/bash", b.o.shellWorker)
	w.p = p
	return w, err
}

// shTrial is what one batch of shell workers measured.
type shTrial struct {
	Name      string
	N         int // real shell workers
	Synthetic int // emulated pollers (S3 load only)
	Pickup    []time.Duration
	Startup   []time.Duration
	Wait      windowCost
	AfterReqs int
	Problems  []string
}

// shellTrial runs n real shell workers (staggered over one interval) next to
// synthetic emulated pollers that give S3 the request load of the others.
func (b *Bench) shellTrial(name string, n, synthetic int, wait, delay time.Duration) (*shTrial, error) {
	res := &shTrial{Name: name, N: n, Synthetic: synthetic}
	dir := filepath.Join(b.work, name)
	if err := b.deleteKey(shellKey); err != nil {
		return nil, err
	}
	token := randomToken()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	b.startSyntheticPollers(ctx, &wg, synthetic)

	workers := make([]*shWorker, 0, n)
	defer func() {
		var ps []*proc
		for _, w := range workers {
			ps = append(ps, w.p)
		}
		stopAll(ps, 10*time.Second)
	}()
	apps := map[string]bool{}
	spacing := b.o.interval / time.Duration(n)
	for i := 0; i < n; i++ {
		w, err := b.startShellWorker(dir, i)
		if err != nil {
			return nil, err
		}
		workers = append(workers, w)
		apps[w.id] = true
		if i < n-1 {
			time.Sleep(spacing)
		}
	}
	err := waitUntil(fmt.Sprintf("the first S3 request of %d shell workers", n), 120*time.Second, 50*time.Millisecond, func() error {
		got := b.s3r.byApp(apps)
		for _, w := range workers {
			if len(got[w.id]) == 0 {
				if w.p.exited() {
					return fmt.Errorf("shell worker %s exited; see %s", w.id, w.logPath)
				}
				return fmt.Errorf("%s has not asked S3 yet", w.id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	evs := b.s3r.byApp(apps)
	for _, w := range workers {
		if e, ok := firstEvent(evs[w.id]); ok {
			res.Startup = append(res.Startup, e.Start.Sub(w.p.started))
		}
	}
	if wait > 0 {
		res.Wait = b.measureShellWaiting(workers, apps, wait)
	}
	time.Sleep(delay)
	t0, err := b.putJoinScript(token)
	if err != nil {
		return nil, err
	}
	joinAt := make([]time.Time, n)
	timeout := 3*b.o.interval + 60*time.Second
	_ = waitUntil("kubeadm join of every shell worker", timeout, 100*time.Millisecond, func() error {
		for i, w := range workers {
			if joinAt[i].IsZero() {
				if c := callsOf(w.fk, "join"); len(c) > 0 {
					joinAt[i] = c[0]
				} else {
					return fmt.Errorf("%s has not started kubeadm join", w.id)
				}
			}
		}
		return nil
	})
	// The shell worker is done once join.sh has run.
	_ = waitUntil("shell workers to finish", 30*time.Second, 100*time.Millisecond, func() error {
		for _, w := range workers {
			if !w.p.exited() {
				return fmt.Errorf("%s still running", w.id)
			}
		}
		return nil
	})
	evs = b.s3r.byApp(apps)
	for i, w := range workers {
		if joinAt[i].IsZero() {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: no kubeadm join within %s", w.id, timeout))
			continue
		}
		res.Pickup = append(res.Pickup, joinAt[i].Sub(t0))
		for _, e := range evs[w.id] {
			if e.Start.After(joinAt[i]) {
				res.AfterReqs++
			}
		}
	}
	return res, nil
}

func (b *Bench) measureShellWaiting(workers []*shWorker, apps map[string]bool, window time.Duration) windowCost {
	c := windowCost{N: len(workers), measured: true}
	pgids := make([]int, len(workers))
	for i, w := range workers {
		pgids[i] = w.p.pid()
	}
	sum := func(m map[int]uint64) uint64 {
		var s uint64
		for _, v := range m {
			s += v
		}
		return s
	}
	sampler := startRSSSampler(pgids, 100*time.Millisecond, true)
	t0, cpu0 := time.Now(), sum(groupCPU(pgids))
	time.Sleep(window)
	t1, cpu1 := time.Now(), sum(groupCPU(pgids))
	peak, mean := sampler.finish()
	c.Window = t1.Sub(t0)
	c.CPU = time.Duration(cpu1-cpu0) * time.Second / clockTick
	c.S3Reqs = b.s3r.countBetween(t0, t1, func(e *reqEvent) bool { return apps[e.App] })
	c.IMDSReqs = b.imdsr.countBetween(t0, t1, nil)
	for _, g := range pgids {
		c.PeakKiB = append(c.PeakKiB, peak[g])
		c.MeanKiB = append(c.MeanKiB, mean[g])
	}
	c.PollPeriods = pollPeriods(b.s3r.byApp(apps), t0, t1)
	return c
}

// startSyntheticPollers emulates the S3 load of n more shell workers waiting:
// one HEAD of the join script per shell poll period each (what `aws s3 cp`
// sends for a missing key), and the HEAD + GET of the download once it exists.
// They run until ctx ends, at most a bounded number of polls each.
func (b *Bench) startSyntheticPollers(ctx context.Context, wg *sync.WaitGroup, n int) {
	if n == 0 {
		return
	}
	client := s3.New(s3.Options{Region: "eu-west-1", BaseEndpoint: aws.String(b.s3r.URL), UsePathStyle: true,
		AppID: "kb-synthetic", Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", "")})
	period := b.shellPeriod
	for i := 0; i < n; i++ {
		first := time.Duration(b.rng.Int64N(int64(period)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(first)
			defer t.Stop()
			for polls := 0; polls < 1000; polls++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := client.HeadObject(rctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(shellKey)})
				if err == nil {
					out, gerr := client.GetObject(rctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(shellKey)})
					if gerr == nil {
						out.Body.Close()
					}
					cancel()
					return
				}
				cancel()
				t.Reset(period)
			}
		}()
	}
}

// createBucket makes the benchmark bucket in moto.
func (b *Bench) createBucket() error {
	_, err := b.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuWest1}})
	return err
}

// dumpRequests writes every request the proxies saw into the work directory
// (with -keep), for a closer look.
func (b *Bench) dumpRequests() {
	for _, r := range []*recorder{b.s3r, b.imdsr} {
		f, err := os.Create(filepath.Join(b.work, r.name+"-requests.jsonl"))
		if err != nil {
			continue
		}
		enc := json.NewEncoder(f)
		for _, e := range r.filter(func(*reqEvent) bool { return true }) {
			_ = enc.Encode(e)
		}
		f.Close()
	}
}
