//go:build bench

// Command kbench is `make bench`: kubestrap side by side with the shell-script
// way it replaces (issue 6), against one local S3 (moto_server) and one
// instance metadata service (ec2-metadata-mock), both on loopback and both
// started and stopped here, by PID. It prints a table of figures; it asserts
// nothing about time. See docs/bench.md.
package main

import (
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

type options struct {
	kubestrap, fakeKubeadm, aemm, moto, awsCLI, shellWorker string
	out, e2eLogs                                            string
	interval                                                time.Duration
	rounds, prepublished                                    int
	groups                                                  []int
	shellBatch                                              int
	shellPlan                                               [][2]int // {N, batches}
	waitWindow, afterWindow                                 time.Duration
	seed                                                    uint64
	keep                                                    bool
	// Graceful node leave (figure 6).
	kubeBin, only string
	leaveRounds   int
	leavePods     []int
	leaveStop     time.Duration
	// HA control plane (figure 7), on the end-to-end harness.
	e2eRoot, e2eBuild, cache string
	haRounds                 int
	haReplace, haLock        string
	haLockWait               time.Duration
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parsePlan(s string) ([][2]int, error) {
	var out [][2]int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, c, ok := strings.Cut(f, ":")
		n, err1 := strconv.Atoi(a)
		k, err2 := strconv.Atoi(c)
		if !ok || err1 != nil || err2 != nil || n < 1 || k < 1 {
			return nil, fmt.Errorf("bad shell plan entry %q (want N:batches)", f)
		}
		out = append(out, [2]int{n, k})
	}
	return out, nil
}

func main() {
	var o options
	var groups, plan, leavePods string
	var quick bool
	flag.StringVar(&o.kubestrap, "kubestrap", "bin/kubestrap", "the kubestrap binary (as shipped: make build)")
	flag.StringVar(&o.fakeKubeadm, "fake-kubeadm", "", "test/fakekubeadm binary")
	flag.StringVar(&o.aemm, "aemm", "", "ec2-metadata-mock binary")
	flag.StringVar(&o.moto, "moto", "moto_server", "moto_server")
	flag.StringVar(&o.awsCLI, "aws", "", "AWS CLI for the shell way (default: the real one behind `aws` on PATH)")
	flag.StringVar(&o.shellWorker, "shell-worker", "hack/bench/shell-worker.sh", "the shell way's worker script")
	flag.StringVar(&o.out, "out", "", "directory for results.md and results.json (default: print only)")
	flag.StringVar(&o.e2eLogs, "e2e-logs", "", "logs of an end-to-end run for figure 4 (e2e-last-logs or the e2e run directory)")
	flag.DurationVar(&o.interval, "interval", 5*time.Second, "poll interval, the same for both ways")
	flag.IntVar(&o.rounds, "rounds", 20, "rounds with a single waiting worker, each way")
	flag.IntVar(&o.prepublished, "prepublished", 5, "kubestrap boots with join info already in S3")
	flag.StringVar(&groups, "groups", "50,200", "sizes of the groups of concurrent kubestrap workers")
	flag.IntVar(&o.shellBatch, "shell-batch", 5, "shell workers run concurrently (each polls with a Python AWS CLI)")
	flag.StringVar(&plan, "shell", "50:10,200:8", "shell way: N:batches, each batch shell-batch real workers + N-shell-batch emulated pollers")
	flag.DurationVar(&o.waitWindow, "wait-window", 30*time.Second, "measurement window while workers wait")
	flag.DurationVar(&o.afterWindow, "after-window", 20*time.Second, "measurement window after the join")
	flag.Uint64Var(&o.seed, "seed", 0, "seed for the random publish moments (0: from the clock)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.StringVar(&o.kubeBin, "kube-bin", "", "directory with kubeadm, etcd and kube-apiserver for figure 6 (make kube-bins; empty: figure 6 skipped)")
	flag.IntVar(&o.leaveRounds, "leave-rounds", 5, "graceful leave: rounds per notice kind and pod count")
	flag.StringVar(&leavePods, "leave-pods", "1,30", "graceful leave: pods on the node")
	flag.DurationVar(&o.leaveStop, "leave-pod-stop", time.Second, "graceful leave: the stand-in kubelet deletes an evicted pod this long after its eviction")
	flag.StringVar(&o.e2eRoot, "e2e-root", ".", "HA control plane: the repository whose hack/e2e and dist/*.deb figure 7 uses")
	flag.StringVar(&o.e2eBuild, "e2e-build", "", "HA control plane: make e2e-build's output directory (empty: figure 7 skipped)")
	flag.StringVar(&o.cache, "cache", "/var/cache/kubestrap", "HA control plane: the cache directory of the e2e harness (CACHE)")
	flag.IntVar(&o.haRounds, "ha-rounds", 2, "HA control plane: rounds, each a fresh cluster")
	flag.StringVar(&o.haReplace, "ha-replace", "standby", "HA control plane: the control plane terminated before the replacement boots: standby or uploader")
	flag.StringVar(&o.haLock, "ha-lock", haDefaultLock, "HA control plane: the machine's end-to-end lock, held (flock) for each round")
	flag.DurationVar(&o.haLockWait, "ha-lock-wait", time.Hour, "HA control plane: longest wait for another end-to-end run to release the lock")
	flag.StringVar(&o.only, "only", "", "run one section only: leave (figure 6; needs -kube-bin) or ha (figure 7; needs -e2e-build)")
	flag.BoolVar(&quick, "quick", false, "a short smoke run (few workers, short windows)")
	flag.Parse()
	var err error
	if quick {
		o.rounds, o.prepublished, groups, plan = 2, 2, "5", "5:1"
		o.shellBatch, o.waitWindow, o.afterWindow = 3, 8*time.Second, 6*time.Second
		o.leaveRounds = 2
		if !flagSet("ha-rounds") {
			o.haRounds = 1
		}
	}
	if o.haRounds < 1 {
		fatal(fmt.Errorf("-ha-rounds %d: at least 1", o.haRounds))
	}
	if o.haReplace != "standby" && o.haReplace != "uploader" {
		fatal(fmt.Errorf("-ha-replace %q: standby or uploader", o.haReplace))
	}
	if o.e2eRoot, err = filepath.Abs(o.e2eRoot); err != nil {
		fatal(err)
	}
	if o.leavePods, err = parseInts(leavePods); err != nil {
		fatal(err)
	}
	switch o.only {
	case "":
	case "leave":
		if o.kubeBin == "" {
			fatal(errors.New("-only leave needs -kube-bin (run `make bench BENCH_ARGS='-only leave'`)"))
		}
	case "ha":
		if o.e2eBuild == "" {
			fatal(errors.New("-only ha needs -e2e-build, the output of `make e2e-build` (run `make bench BENCH_ARGS='-only ha'`)"))
		}
	default:
		fatal(fmt.Errorf("-only %q: the sections that run alone are leave and ha", o.only))
	}
	if o.groups, err = parseInts(groups); err != nil {
		fatal(err)
	}
	if o.shellPlan, err = parsePlan(plan); err != nil {
		fatal(err)
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.only == "" && (o.fakeKubeadm == "" || o.aemm == "") {
		fatal(errors.New("-fake-kubeadm and -aemm are required (run `make bench`)"))
	}

	// A reader that went away (`make bench | tee` stopped with Ctrl-C) must
	// not end the driver before it has torn figure 7's cluster down.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "kbench: %v: stopping every process it started\n", s)
		stopEverything()
		runTeardowns() // figure 7: down.sh, bounded
		os.Exit(130)
	}()
	code := 0
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "kbench:", err)
		code = 1
	}
	stopEverything()
	os.Exit(code)
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "kbench:", err)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// resolveAWS finds the real AWS CLI behind a pyenv shim, so that the shell
// way pays for the CLI and not for pyenv's wrapper.
func resolveAWS(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	p, err := exec.LookPath("aws")
	if err != nil {
		return "", fmt.Errorf("no aws CLI on PATH: %w", err)
	}
	if strings.Contains(p, "/shims/") {
		if out, err := exec.Command("pyenv", "which", "aws").Output(); err == nil {
			return strings.TrimSpace(string(out)), nil
		}
	}
	return p, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func run(o options) error {
	began := time.Now()
	raiseNoFile()
	if o.only != "" {
		return runOnly(o, began)
	}
	var err error
	if o.awsCLI, err = resolveAWS(o.awsCLI); err != nil {
		return err
	}
	if o.shellWorker, err = filepath.Abs(o.shellWorker); err != nil {
		return err
	}
	b := &Bench{o: o, rng: mrand.New(mrand.NewPCG(o.seed, o.seed>>1|1)), caHash: randomHex(32)}
	if b.work, err = os.MkdirTemp("/tmp", "kbench-"); err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(b.work)
	} else {
		defer logf("work directory kept: %s", b.work)
	}
	b.empty = filepath.Join(b.work, "empty")
	b.bin = filepath.Join(b.work, "bin")
	if err := os.MkdirAll(b.bin, 0o755); err != nil {
		return err
	}
	_ = os.WriteFile(b.empty, nil, 0o600)
	// Copies, so that a concurrent `make build` cannot swap the binary mid-run.
	b.kubestrap, b.fake = filepath.Join(b.bin, "kubestrap"), filepath.Join(b.bin, "kubeadm")
	if err := copyFile(o.kubestrap, b.kubestrap, 0o755); err != nil {
		return err
	}
	if err := copyFile(o.fakeKubeadm, b.fake, 0o755); err != nil {
		return err
	}
	if err := os.Symlink(o.awsCLI, filepath.Join(b.bin, "aws")); err != nil {
		return err
	}
	// The fake kubeadm's admin.conf names this stand-in API server: the
	// control-plane agent waits for its /readyz after init, as for a real one.
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			_, _ = w.Write([]byte("ok"))
			return
		}
		http.NotFound(w, r)
	}))
	defer api.Close()
	b.apiURL, b.apiCA = api.URL, filepath.Join(b.work, "api-ca.crt")
	if err := os.WriteFile(b.apiCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o644); err != nil {
		return err
	}
	r := &Results{Began: began, Options: o, Machine: machineInfo(), AWSCLI: o.awsCLI}
	if fi, err := os.Stat(b.kubestrap); err == nil {
		r.BinarySize = fi.Size()
	}
	r.KubestrapVersion = strings.TrimSpace(cmdOutput(b.kubestrap, "version"))
	r.LoadBefore = loadAvg()
	mon := startMonitor()

	logf("starting moto_server and ec2-metadata-mock on loopback")
	_, b.motoURL, err = startMoto(o.moto, b.work, b.empty)
	if err != nil {
		return err
	}
	_, b.imdsURL, err = startIMDS(o.aemm, b.work, b.empty)
	if err != nil {
		return err
	}
	if b.s3r, err = startRecorder("s3", b.motoURL); err != nil {
		return err
	}
	defer b.s3r.close()
	if b.imdsr, err = startRecorder("imds", b.imdsURL); err != nil {
		return err
	}
	defer b.imdsr.close()
	b.s3 = s3.New(s3.Options{Region: "eu-west-1", BaseEndpoint: aws.String(b.motoURL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", "")})
	if err := b.createBucket(); err != nil {
		return fmt.Errorf("create bucket: %w", err)
	}
	b.shellPeriod = o.interval + b.calibrateAWS(r)

	logf("control-plane agents: one with the default 2h token TTL (idle figures), one with 1m (a rotation every 30s)")
	cpIdle, err := b.startControlPlane("cp-idle", "kbcp", 2*time.Hour)
	if err != nil {
		return err
	}
	cpRot, err := b.startControlPlane("cp-rot", "kbcprot", time.Minute)
	if err != nil {
		return err
	}
	if err := b.waitControlPlaneReady(cpIdle); err != nil {
		return err
	}
	if err := b.waitControlPlaneReady(cpRot); err != nil {
		return err
	}

	// 1. kubestrap boots with join info already in S3 (figure 4, locally).
	for i := 0; i < o.prepublished; i++ {
		logf("kubestrap: boot %d/%d with join info already published", i+1, o.prepublished)
		t, err := b.kubestrapTrial(fmt.Sprintf("kpre%d", i), 1, true, 0, 0, 0)
		if err != nil {
			return err
		}
		r.KSPre = append(r.KSPre, t)
	}
	// 2. One waiting worker, each way, several rounds.
	for i := 0; i < o.rounds; i++ {
		logf("kubestrap: 1 waiting worker, round %d/%d", i+1, o.rounds)
		// The mean time between two polls is 87.5% of the interval (75-100% jitter).
		t, err := b.kubestrapTrial(fmt.Sprintf("k1r%d", i), 1, false, 0, 0, b.spreadDelay(i, o.rounds, o.interval*7/8))
		if err != nil {
			return err
		}
		r.KS1 = append(r.KS1, t)
	}
	for i := 0; i < o.rounds; i++ {
		logf("shell: 1 waiting worker, round %d/%d", i+1, o.rounds)
		t, err := b.shellTrial(fmt.Sprintf("s1r%d", i), 1, 0, 0, b.spreadDelay(i, o.rounds, b.shellPeriod))
		if err != nil {
			return err
		}
		r.SH1 = append(r.SH1, t)
	}
	// 3. Groups of concurrent kubestrap workers.
	for _, n := range o.groups {
		logf("kubestrap: %d waiting workers, all real processes at once (waiting window %s, after-join window %s)", n, o.waitWindow, o.afterWindow)
		t, err := b.kubestrapTrial(fmt.Sprintf("k%d", n), n, false, o.waitWindow, o.afterWindow, b.randomDelay())
		if err != nil {
			return err
		}
		r.KSGroups = append(r.KSGroups, t)
	}
	// 4. The shell way with many waiting workers: batches of real workers
	// plus emulated pollers for the S3 load of the others.
	shellCostDone := false
	for _, pl := range o.shellPlan {
		n, batches := pl[0], pl[1]
		nReal := min(o.shellBatch, n)
		g := &shellGroup{N: n}
		for k := 0; k < batches; k++ {
			wait := time.Duration(0)
			if !shellCostDone {
				wait, shellCostDone = o.waitWindow, true
			}
			logf("shell: %d waiting workers, batch %d/%d: %d real shell workers + %d emulated pollers", n, k+1, batches, nReal, n-nReal)
			t, err := b.shellTrial(fmt.Sprintf("s%db%d", n, k), nReal, n-nReal, wait, b.spreadDelay(k, batches, b.shellPeriod))
			if err != nil {
				return err
			}
			g.Batches = append(g.Batches, t)
		}
		r.SHGroups = append(r.SHGroups, g)
	}
	// 5. Control-plane agents: idle figures and publish times, then stop them.
	logf("control-plane agents: collecting idle and publish figures")
	r.CP = append(r.CP, b.finishControlPlane(cpIdle), b.finishControlPlane(cpRot))
	stopAll([]*proc{cpIdle.p, cpRot.p}, 15*time.Second)
	cpIdle.notify.close()
	cpRot.notify.close()
	// 6. Figure 4 from the end-to-end cluster's logs.
	if o.e2eLogs != "" {
		r.E2E = analyzeE2E(o.e2eLogs)
	}
	// 7. Graceful node leave (figure 6), against its own API server.
	if o.kubeBin != "" {
		if r.Leave, err = runLeave(o, b.work, b.empty); err != nil {
			return err
		}
	}
	// 8. HA control plane (figure 7), on the end-to-end harness when its
	// build exists; a failure is reported with the other figures.
	if r.HA, err = runHA(o, false); err != nil {
		logf("figure 7: %v", err)
		r.HA.Problems = append(r.HA.Problems, err.Error())
	}
	r.LoadAfter = loadAvg()
	r.Load1, r.OtherLoad = mon.finish()
	r.Took = time.Since(began)
	if o.keep {
		b.dumpRequests()
	}
	r.S3Total = len(b.s3r.filter(func(*reqEvent) bool { return true }))
	md := r.markdown()
	fmt.Println(md)
	if o.out != "" {
		if err := r.write(o.out, md); err != nil {
			return err
		}
		logf("results written to %s", o.out)
	}
	return nil
}

// runOnly is `-only leave` (figure 6) or `-only ha` (figure 7): one
// section alone, with the run's header.
func runOnly(o options, began time.Time) error {
	work, err := os.MkdirTemp("/tmp", "kbench-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(work)
	} else {
		defer logf("work directory kept: %s", work)
	}
	empty := filepath.Join(work, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		return err
	}
	r := &Results{Began: began, Options: o, Machine: machineInfo()}
	r.LoadBefore = loadAvg()
	if o.only == "ha" {
		ownNetnsPrefix.Store(haPrefix) // before the monitor's first look
	}
	mon := startMonitor()
	if o.only == "ha" {
		r.HA, err = runHA(o, true)
	} else {
		r.Leave, err = runLeave(o, work, empty)
	}
	r.LoadAfter = loadAvg()
	r.Load1, r.OtherLoad = mon.finish()
	r.Took = time.Since(began)
	if err != nil {
		return err
	}
	md := r.markdown()
	fmt.Println(md)
	if o.out != "" {
		if err := r.write(o.out, md); err != nil {
			return err
		}
		logf("results written to %s", o.out)
	}
	return nil
}

// calibrateAWS times `aws s3 cp` of a missing object three times, as a shell
// worker's poll: the emulated pollers poll every interval + this.
func (b *Bench) calibrateAWS(r *Results) time.Duration {
	var ds []time.Duration
	for i := 0; i < 3; i++ {
		cmd := exec.Command(filepath.Join(b.bin, "aws"), "s3", "cp", "s3://"+bucket+"/kbsh/missing", filepath.Join(b.work, "missing"))
		cmd.Env = cleanEnv(b.empty, "HOME="+b.work, "AWS_DEFAULT_REGION=eu-west-1",
			"AWS_EC2_METADATA_SERVICE_ENDPOINT="+b.imdsr.URL, "AWS_ENDPOINT_URL_S3="+b.s3r.URL, "AWS_SDK_UA_APP_ID=kb-calibrate")
		t := time.Now()
		_ = cmd.Run()
		ds = append(ds, time.Since(t))
		if cmd.ProcessState != nil {
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				r.AWSMaxRSSKiB = max(r.AWSMaxRSSKiB, ru.Maxrss)
				cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
				r.AWSCPU = append(r.AWSCPU, cpu)
			}
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	r.AWSWall = ds
	return ds[1]
}

func cmdOutput(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out)
}
