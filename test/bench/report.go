//go:build bench

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

type machine struct {
	CPUs     int
	CPUModel string
	MemTotal string
	Kernel   string
	OS       string
	Go       string
}

type shellGroup struct {
	N       int
	Batches []*shTrial
}

// Results is everything one run measured (results.json) and its table (results.md).
type Results struct {
	Began            time.Time
	Took             time.Duration
	Options          options `json:"-"`
	Settings         map[string]string
	Machine          machine
	KubestrapVersion string
	BinarySize       int64
	AWSCLI           string
	AWSWall, AWSCPU  []time.Duration
	AWSMaxRSSKiB     int64
	LoadBefore       string
	LoadAfter        string
	Load1            []float64
	OtherLoad        []string
	KSPre, KS1       []*ksTrial
	SH1              []*shTrial
	KSGroups         []*ksTrial
	SHGroups         []*shellGroup
	CP               []*cpResult
	E2E              *e2eResult
	Leave            *leaveResult
	HA               *haResult
	S3Total          int
}

func readFirstLine(path, prefix string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			return strings.TrimSpace(strings.TrimPrefix(sc.Text(), prefix))
		}
	}
	return ""
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	m.CPUModel = strings.TrimSpace(strings.TrimPrefix(readFirstLine("/proc/cpuinfo", "model name"), ":"))
	if kb := strings.Fields(readFirstLine("/proc/meminfo", "MemTotal:")); len(kb) > 0 {
		var n float64
		fmt.Sscan(kb[0], &n)
		m.MemTotal = fmt.Sprintf("%.1f GiB", n/1024/1024)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.OS = strings.Trim(readFirstLine("/etc/os-release", "PRETTY_NAME="), `"`)
	return m
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// otherLoad counts heavy processes that are not the benchmark's (an
// end-to-end cluster, builds, another moto_server), which would skew the figures.
func otherLoad(into map[string]int) {
	watch := map[string]bool{"kube-apiserver": true, "kubelet": true, "etcd": true, "containerd": true,
		"kube-controller": true, "kube-scheduler": true, "compile": true, "link": true, "go": true}
	counts := map[string]int{}
	self := os.Getpid()
	own := ownNetns()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(b))
		if (watch[name] || strings.HasPrefix(name, "python") || name == "moto_server") && inOwnNetns(e.Name(), own) {
			continue // figure 7's own cluster (its nodes and its aws host)
		}
		if watch[name] {
			// Figure 6 runs its own etcd and kube-apiserver.
			if pid, _ := strconv.Atoi(e.Name()); !descendsFrom(pid, self) {
				counts[name]++
			}
			continue
		}
		// Python processes (moto_server, the AWS CLI) are ours when they descend from us.
		if strings.HasPrefix(name, "python") || name == "moto_server" {
			pid, _ := strconv.Atoi(e.Name())
			if !descendsFrom(pid, self) {
				counts[name]++
			}
		}
	}
	for k, v := range counts {
		into[k] = max(into[k], v)
	}
}

func descendsFrom(pid, ancestor int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == ancestor {
			return true
		}
		st, err := readStat(pid)
		if err != nil {
			return false
		}
		pid = st.ppid
	}
	return false
}

// monitorPaused: the monitor takes no samples (figure 7 waits for the
// machine's end-to-end lock).
var monitorPaused atomic.Bool

// monitor samples the machine's load while the benchmark runs.
type monitor struct {
	stop, done chan struct{}
	load1      []float64
	other      map[string]int
}

func startMonitor() *monitor {
	m := &monitor{stop: make(chan struct{}), done: make(chan struct{}), other: map[string]int{}}
	go func() {
		defer close(m.done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for i := 0; ; i++ {
			// Not while figure 7 waits for another end-to-end run to end:
			// that run is not this one's load.
			if monitorPaused.Load() {
				i = -1 // the first look after the wait counts other processes
			} else {
				if f := strings.Fields(loadAvg()); len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						m.load1 = append(m.load1, v)
					}
				}
				if i%6 == 0 {
					otherLoad(m.other)
				}
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *monitor) finish() ([]float64, []string) {
	close(m.stop)
	<-m.done
	var out []string
	for k, v := range m.other {
		out = append(out, fmt.Sprintf("%s×%d", k, v))
	}
	sort.Strings(out)
	return m.load1, out
}

func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

func maxFloat(v []float64) float64 {
	m := math.NaN()
	for _, x := range v {
		if math.IsNaN(m) || x > m {
			m = x
		}
	}
	return m
}

func pickups(ts []*ksTrial) (out []time.Duration) {
	for _, t := range ts {
		out = append(out, t.Pickup...)
	}
	return out
}

func shPickups(ts []*shTrial) (out []time.Duration) {
	for _, t := range ts {
		out = append(out, t.Pickup...)
	}
	return out
}

func problems(r *Results) (out []string) {
	for _, ts := range [][]*ksTrial{r.KSPre, r.KS1, r.KSGroups} {
		for _, t := range ts {
			out = append(out, t.Problems...)
		}
	}
	for _, t := range r.SH1 {
		out = append(out, t.Problems...)
	}
	for _, g := range r.SHGroups {
		for _, t := range g.Batches {
			out = append(out, t.Problems...)
		}
	}
	for _, c := range r.CP {
		out = append(out, c.Problems...)
	}
	if r.Leave != nil {
		out = append(out, r.Leave.Problems...)
	}
	if r.HA != nil {
		out = append(out, r.HA.Problems...)
	}
	return out
}

func row(cells ...string) string { return "| " + strings.Join(cells, " | ") + " |\n" }

func fmtRate(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

func cpuPerHour(cpu time.Duration, workerTime time.Duration) float64 {
	return perHour(cpu.Seconds(), workerTime)
}

// topMappings names the largest resident mappings.
func topMappings(m map[string]int64, n int) string {
	type kv struct {
		k string
		v int64
	}
	var s []kv
	for k, v := range m {
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v > s[j].v })
	var parts []string
	for i := 0; i < len(s) && i < n && s[i].v >= 100; i++ {
		parts = append(parts, fmt.Sprintf("%s %s", s[i].k, mib(s[i].v)))
	}
	return strings.Join(parts, ", ")
}

func (r *Results) markdown() string {
	var b strings.Builder
	o := r.Options
	iv := o.interval
	m := r.Machine
	title := "kubestrap vs the shell-script way"
	switch o.only {
	case "leave":
		title = "graceful node leave alone (-only leave)"
	case "ha":
		title = "HA control plane alone (-only ha)"
	}
	fmt.Fprintf(&b, "## %s: `make bench` of %s\n\n", title, r.Began.UTC().Format("2006-01-02 15:04 MST"))
	took := r.Took.Round(time.Second).String()
	if w := r.HA.lockWaited(); w >= time.Second {
		took += fmt.Sprintf(" (%s of it waiting for the machine's end-to-end lock)", w.Round(time.Second))
	}
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %s RAM, kernel %s, %s, %s. Run took %s.\n",
		m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.OS, m.Go, took)
	other := "none"
	if len(r.OtherLoad) > 0 {
		other = strings.Join(r.OtherLoad, ", ")
	}
	fmt.Fprintf(&b, "- Load average before %s, after %s; 1-minute load during the run: median %.2f, max %.2f. "+
		"Heavy processes that are not the benchmark's, seen during the run: %s.\n",
		r.LoadBefore, r.LoadAfter, medianFloat(r.Load1), maxFloat(r.Load1), other)
	if o.only != "" {
		b.WriteString("\n")
		if o.only == "leave" {
			r.Leave.markdown(&b, "###")
		} else {
			r.HA.markdown(&b, "###")
		}
		if p := problems(r); len(p) > 0 {
			b.WriteString("Problems seen:\n")
			for _, x := range p {
				b.WriteString("- " + x + "\n")
			}
		}
		return b.String()
	}
	fmt.Fprintf(&b, "- kubestrap: `%s`, %s binary. Shell way: `hack/bench/shell-worker.sh` with %s "+
		"(one `aws s3 cp` of a missing key: %s wall, %s CPU, %s peak RSS).\n",
		strings.TrimSpace(strings.ReplaceAll(r.KubestrapVersion, "\n", " ")), mib(r.BinarySize/1024), r.AWSCLI,
		secs(median(r.AWSWall)), secs(median(r.AWSCPU)), mib(r.AWSMaxRSSKiB))
	fmt.Fprintf(&b, "- Poll interval %s both ways (kubestrap: conditional GET every 75-100%% of it; shell: `sleep %g` between two `aws s3 cp`). "+
		"S3 = moto_server, IMDS = ec2-metadata-mock (credentials from the instance role, both ways), kubeadm = test/fakekubeadm; all on loopback.\n\n",
		iv, iv.Seconds())

	// 1. Pickup.
	b.WriteString("### 1. Pickup latency: join info written to S3 → `kubeadm join` starts\n\n")
	b.WriteString(row("waiting workers", "way", "how it ran", "samples", "median", "p95", "max"))
	b.WriteString(row("---", "---", "---", "---:", "---:", "---:", "---:"))
	addPick := func(n, way, how string, ds []time.Duration) {
		d := summarize(ds)
		b.WriteString(row(n, way, how, fmt.Sprint(d.N), secs(d.Median), secs(d.P95), secs(d.Max)))
	}
	addPick("1", "kubestrap", fmt.Sprintf("1 process, %d rounds", len(r.KS1)), pickups(r.KS1))
	addPick("1", "shell", fmt.Sprintf("1 process, %d rounds", len(r.SH1)), shPickups(r.SH1))
	type pair struct {
		n  int
		ks *ksTrial
		sh *shellGroup
	}
	var pairs []pair
	seen := map[int]*pair{}
	for _, t := range r.KSGroups {
		pairs = append(pairs, pair{n: t.N, ks: t})
	}
	for i := range pairs {
		seen[pairs[i].n] = &pairs[i]
	}
	for _, g := range r.SHGroups {
		if p, ok := seen[g.N]; ok {
			p.sh = g
		} else {
			pairs = append(pairs, pair{n: g.N, sh: g})
		}
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].n < pairs[j].n })
	for _, p := range pairs {
		if p.ks != nil {
			addPick(fmt.Sprint(p.n), "kubestrap", fmt.Sprintf("%d processes at once", p.ks.N), p.ks.Pickup)
		}
		if p.sh != nil && len(p.sh.Batches) > 0 {
			bt := p.sh.Batches[0]
			how := fmt.Sprintf("%d batches × %d real shell workers at once, each batch with %d emulated pollers (S3 load of the others); %d real processes in all",
				len(p.sh.Batches), bt.N, bt.Synthetic, len(p.sh.Batches)*bt.N)
			var ds []time.Duration
			for _, t := range p.sh.Batches {
				ds = append(ds, t.Pickup...)
			}
			addPick(fmt.Sprint(p.n), "shell", how, ds)
		}
	}
	b.WriteString("\n")

	// 2. Cost of waiting.
	b.WriteString("### 2. Cost of waiting, per worker (measured over a window, scaled to one hour)\n\n")
	b.WriteString(row("way", "measured on", "S3 req/worker-h waiting", "IMDS req/worker-h waiting", "S3 req/worker-h after join",
		"CPU s/worker-h waiting", "peak RSS while waiting (median / max)", "mean RSS while waiting"))
	b.WriteString(row("---", "---", "---:", "---:", "---:", "---:", "---:", "---:"))
	for _, t := range r.KSGroups {
		w := t.Wait
		if !w.measured {
			continue
		}
		after := perHour(float64(t.AfterReqs), t.AfterWorkerTime)
		b.WriteString(row("kubestrap", fmt.Sprintf("%d workers × %s", w.N, w.Window.Round(time.Second)),
			fmtRate(perHour(float64(w.S3Reqs), w.workerTime())), fmtRate(perHour(float64(w.IMDSReqs), w.workerTime())),
			fmt.Sprintf("%s (%d requests in %s of worker-time)", fmtRate(after), t.AfterReqs, t.AfterWorkerTime.Round(time.Second)),
			fmtRate(cpuPerHour(w.CPU, w.workerTime())),
			mib(medianInt(w.PeakKiB))+" / "+mib(maxInt(w.PeakKiB)), mib(medianInt(w.MeanKiB))))
	}
	for _, g := range r.SHGroups {
		for _, t := range g.Batches {
			w := t.Wait
			if !w.measured {
				continue
			}
			b.WriteString(row("shell", fmt.Sprintf("%d workers × %s (+%d emulated)", w.N, w.Window.Round(time.Second), t.Synthetic),
				fmtRate(perHour(float64(w.S3Reqs), w.workerTime())), fmtRate(perHour(float64(w.IMDSReqs), w.workerTime())),
				fmt.Sprintf("0: the script has exited (%d requests seen after the join)", t.AfterReqs),
				fmtRate(cpuPerHour(w.CPU, w.workerTime())),
				mib(medianInt(w.PeakKiB))+" / "+mib(maxInt(w.PeakKiB)), mib(medianInt(w.MeanKiB))))
		}
	}
	b.WriteString("\nPoll period actually observed while waiting: ")
	var periods []string
	for _, t := range r.KSGroups {
		if t.Wait.measured {
			periods = append(periods, fmt.Sprintf("kubestrap (%d) %s", t.N, summarize(t.Wait.PollPeriods)))
		}
	}
	for _, g := range r.SHGroups {
		for _, t := range g.Batches {
			if t.Wait.measured {
				periods = append(periods, fmt.Sprintf("shell %s", summarize(t.Wait.PollPeriods)))
			}
		}
	}
	b.WriteString(strings.Join(periods, "; ") + ".\n\n")

	// 3. Footprint.
	b.WriteString("### 3. Agent footprint\n\n")
	var startupUnc []time.Duration
	for _, t := range append(append([]*ksTrial{}, r.KSPre...), r.KS1...) {
		startupUnc = append(startupUnc, t.Startup...)
	}
	var shStart []time.Duration
	for _, t := range r.SH1 {
		shStart = append(shStart, t.Startup...)
	}
	var cpIdle, cpRot *cpResult
	for _, c := range r.CP {
		switch c.Name {
		case "cp-idle":
			cpIdle = c
		case "cp-rot":
			cpRot = c
		}
	}
	b.WriteString(row("figure", "worker", "control plane"))
	b.WriteString(row("---", "---", "---"))
	b.WriteString(row("binary size (static, stripped; one binary for both roles)", mib(r.BinarySize/1024), mib(r.BinarySize/1024)))
	cpStart := "n/a"
	if cpIdle != nil {
		cpStart = fmt.Sprintf("%s (includes the fake `kubeadm init`, %s after start)", secs(cpIdle.Startup), secs(cpIdle.StartToInit))
	}
	wStart := fmt.Sprintf("one at a time: %s", summarize(startupUnc))
	for _, t := range r.KSGroups {
		wStart += fmt.Sprintf("; %d started within %s: %s", t.N, iv, summarize(t.Startup))
	}
	wStart += fmt.Sprintf(" (shell way, bash + aws: %s)", summarize(shStart))
	b.WriteString(row("start-up → first S3 request", wStart, cpStart))
	var big *ksTrial
	for _, t := range r.KSGroups {
		if len(t.IdleRSS) > 0 && (big == nil || t.N > big.N) {
			big = t
		}
	}
	if big != nil {
		cpRSS, cpCPU, cpReq := "n/a", "n/a", "n/a"
		if cpIdle != nil {
			cpRSS = fmt.Sprintf("%s (anon %s, file %s; peak %s)", mib(cpIdle.IdleRSS), mib(cpIdle.IdleAnon), mib(cpIdle.IdleFile), mib(cpIdle.IdleHWM))
			cpCPU = fmt.Sprintf("%s s/h (over %s)", fmtRate(cpuPerHour(cpIdle.IdleCPU, cpIdle.IdleWindow)), cpIdle.IdleWindow.Round(time.Second))
			cpReq = fmt.Sprintf("%s/h (%d in %s: the check that join.json is still its own, once a minute)",
				fmtRate(perHour(float64(cpIdle.IdleS3Reqs), cpIdle.IdleWindow)), cpIdle.IdleS3Reqs, cpIdle.IdleWindow.Round(time.Second))
		}
		b.WriteString(row("idle RSS after the join / READY",
			fmt.Sprintf("median %s, max %s over %d workers (anon %s, file %s)", mib(medianInt(big.IdleRSS)), mib(maxInt(big.IdleRSS)),
				len(big.IdleRSS), mib(medianInt(big.IdleAnon)), mib(medianInt(big.IdleFile))), cpRSS))
		b.WriteString(row("idle CPU after the join / READY",
			fmt.Sprintf("%s s/h (%d workers × %s)", fmtRate(cpuPerHour(big.AfterCPU, time.Duration(big.N)*big.AfterWindow)), big.N, big.AfterWindow.Round(time.Second)), cpCPU))
		b.WriteString(row("S3 requests after the join / READY",
			fmt.Sprintf("%d in %s of worker-time", big.AfterReqs, big.AfterWorkerTime.Round(time.Second)), cpReq))
		b.WriteString(row("largest resident mappings", topMappings(big.Smaps, 4), func() string {
			if cpIdle == nil {
				return ""
			}
			return topMappings(cpIdle.Smaps, 4)
		}()))
	}
	b.WriteString("\n")

	// 4. Overhead.
	b.WriteString("### 4. Agent overhead on a join\n\n")
	var s2k, e2r []time.Duration
	for _, t := range r.KSPre {
		s2k = append(s2k, t.StartToKubeadm...)
		e2r = append(e2r, t.ExitToReady...)
	}
	for _, t := range r.KS1 {
		e2r = append(e2r, t.ExitToReady...)
	}
	b.WriteString(row("where", "role", "start → kubeadm child", "kubeadm run", "kubeadm exit → READY=1", "overhead per join"))
	b.WriteString(row("---", "---", "---:", "---:", "---:", "---:"))
	localOverhead := summarize(s2k).Median + summarize(e2r).Median
	b.WriteString(row("this machine, fake kubeadm (join info already in S3)", "worker", summarize(s2k).String(), "(fake)",
		summarize(e2r).String(), secs(localOverhead)+" (sum of medians)"))
	if cpIdle != nil {
		b.WriteString(row("this machine, fake kubeadm", "control plane", secs(cpIdle.StartToInit), "(fake)",
			secs(cpIdle.InitExitToReady)+" (includes publishing join info)", secs(cpIdle.StartToInit+cpIdle.InitExitToReady)))
	}
	var e2eMax time.Duration
	e2eN := 0
	if r.E2E != nil {
		for _, bt := range r.E2E.Boots {
			if !bt.Direct || !bt.HasReady {
				continue
			}
			ov := bt.StartToKube + bt.ExitToReady
			e2eMax = max(e2eMax, ov)
			e2eN++
			b.WriteString(row(fmt.Sprintf("e2e cluster, node %s (start %d)", bt.Node, bt.Start), bt.Role, secs(bt.StartToKube),
				secs(bt.KubeadmTook), secs(bt.ExitToReady), secs(ov)))
		}
	}
	b.WriteString("\n")
	if r.E2E == nil {
		b.WriteString("No end-to-end logs were given (-e2e-logs): figure 4 on real nodes was not measured in this run.\n\n")
	} else if e2eN == 0 {
		fmt.Fprintf(&b, "No usable boots in the end-to-end logs at %s %v.\n\n", r.E2E.Dir, r.E2E.Problems)
	} else {
		fmt.Fprintf(&b, "End-to-end rows: from %s (last written %s, kubestrap %s, real kubeadm v1.37.2 on namespaced nodes); "+
			"only boots whose first kubeadm call came without waiting for join info.\n\n",
			r.E2E.Dir, r.E2E.ModTime.UTC().Format("2006-01-02 15:04 MST"), r.E2E.Version)
	}

	// 5. Publish.
	b.WriteString("### 5. Control-plane publish: token creation → join info readable in S3\n\n")
	if cpRot != nil {
		b.WriteString(row("measured from", "samples", "median", "p95", "max"))
		b.WriteString(row("---", "---:", "---:", "---:", "---:"))
		for _, x := range []struct {
			what string
			ds   []time.Duration
		}{{"`kubeadm token create` started (fake kubeadm's call log)", cpRot.PublishFromCreate},
			{"`kubeadm token create` returned (agent log, ms)", cpRot.PublishFromReturn}} {
			d := summarize(x.ds)
			b.WriteString(row(x.what, fmt.Sprint(d.N), secs(d.Median), secs(d.P95), secs(d.Max)))
		}
		fmt.Fprintf(&b, "\nThe real control-plane agent (%s token TTL, so a new token every 30 s), end = S3 acknowledged the PUT.\n\n", cpRot.TTL)
	}

	// 6. Graceful node leave.
	r.Leave.markdown(&b, "###")
	// 7. HA control plane.
	r.HA.markdown(&b, "###")

	// Targets.
	b.WriteString("### Targets (issue 6)\n\n")
	b.WriteString(row("target", "measured", "verdict"))
	b.WriteString(row("---", "---", "---"))
	okPick := true
	var picks []string
	for _, x := range append([]*ksTrial{{N: 1, Pickup: pickups(r.KS1)}}, r.KSGroups...) {
		d := summarize(x.Pickup)
		okPick = okPick && d.N > 0 && d.P95 <= iv+time.Second
		picks = append(picks, fmt.Sprintf("%d: %s", x.N, secs(d.P95)))
	}
	b.WriteString(row(fmt.Sprintf("pickup p95 ≤ poll interval + 1 s (%s)", iv+time.Second), "kubestrap p95 with "+strings.Join(picks, ", ")+" waiting", verdict(okPick)))
	if e2eN > 0 {
		b.WriteString(row("overhead ≤ 1 s per join", fmt.Sprintf("e2e: at most %s over %d boots; this machine with the fake kubeadm: %s", secs(e2eMax), e2eN, secs(localOverhead)),
			verdict(e2eMax <= time.Second)))
	} else {
		b.WriteString(row("overhead ≤ 1 s per join", fmt.Sprintf("this machine with the fake kubeadm only: %s (no e2e logs)", secs(localOverhead)),
			verdict(localOverhead <= time.Second)+" (locally; not measured on real nodes)"))
	}
	if big != nil {
		worst := maxInt(big.IdleRSS)
		cpRSS := int64(0)
		if cpIdle != nil {
			cpRSS = cpIdle.IdleRSS
		}
		b.WriteString(row("idle RSS ≤ 20 MiB", fmt.Sprintf("worker max %s, control plane %s", mib(worst), mib(cpRSS)),
			verdict(worst <= 20*1024 && cpRSS <= 20*1024)))
		zero := true
		for _, t := range r.KSGroups {
			zero = zero && t.AfterReqs == 0
		}
		b.WriteString(row("zero S3 requests after the join", fmt.Sprintf("%d requests from %d joined workers", big.AfterReqs, big.N), verdict(zero)))
	}
	if p := problems(r); len(p) > 0 {
		b.WriteString("\nProblems seen:\n")
		for _, x := range p {
			b.WriteString("- " + x + "\n")
		}
	}
	return b.String()
}

func median(ds []time.Duration) time.Duration { return summarize(ds).Median }

func (r *Results) write(dir, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stamp := r.Began.UTC().Format("20060102-150405")
	o := r.Options
	r.Settings = map[string]string{"interval": o.interval.String(), "rounds": fmt.Sprint(o.rounds), "groups": fmt.Sprint(o.groups),
		"shellBatch": fmt.Sprint(o.shellBatch), "shellPlan": fmt.Sprint(o.shellPlan), "waitWindow": o.waitWindow.String(),
		"afterWindow": o.afterWindow.String(), "seed": fmt.Sprint(o.seed), "kubeBin": o.kubeBin, "only": o.only,
		"leaveRounds": fmt.Sprint(o.leaveRounds), "leavePods": fmt.Sprint(o.leavePods), "leavePodStop": o.leaveStop.String(),
		"e2eBuild": o.e2eBuild, "haRounds": fmt.Sprint(o.haRounds), "haReplace": o.haReplace, "haLock": o.haLock}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"results-" + stamp + ".md": []byte(md), "results-" + stamp + ".json": js,
		"results.md": []byte(md), "results.json": js} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
