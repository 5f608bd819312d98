//go:build bench

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// cpAgent is a real kubestrap process in the control-plane role with the fake
// kubeadm: it "initializes" the cluster, publishes join info for its own
// cluster name and keeps it fresh.
type cpAgent struct {
	id, cluster, dir, fk, etc, cfg, logPath string
	ttl                                     time.Duration
	notify                                  *notifyListener
	p                                       *proc
	// idle0 is when the idle measurement started (a little after READY).
	idle0    time.Time
	idleCPU0 time.Duration
}

func (b *Bench) startControlPlane(name, cluster string, ttl time.Duration) (*cpAgent, error) {
	c := &cpAgent{id: name, cluster: cluster, dir: filepath.Join(b.work, name), ttl: ttl}
	c.fk, c.etc = filepath.Join(c.dir, "fk"), filepath.Join(c.dir, "etc")
	for _, d := range []string{c.fk, c.etc, filepath.Join(c.dir, "state")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	c.cfg = filepath.Join(c.dir, "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: %s
role: control-plane
bucket: %s
stateDir: %s
nodeName: %s
aws: {s3UsePathStyle: true, imdsTimeout: 60s}
kubeadm: {path: %s, configDir: %s, controlPlaneEndpoint: "%s"}
controlPlane: {tokenTTL: %s, addons: []}
worker: {expiryMargin: 20s}
ecr: {enabled: false}
`, cluster, bucket, filepath.Join(c.dir, "state"), name, b.fake, c.etc, apiEndpoint, ttl)
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	n, err := listenNotify(filepath.Join(c.dir, "n.sock"))
	if err != nil {
		return nil, err
	}
	c.notify = n
	c.logPath = filepath.Join(c.dir, "agent.log")
	c.p, err = startProc(name, b.agentEnv(name, filepath.Join(c.dir, "n.sock"), c.fk, c.etc), c.logPath,
		b.kubestrap, "run", "--config", c.cfg, "--log-format", "json")
	return c, err
}

// cpResult is what a control-plane agent measured.
type cpResult struct {
	Name, TTL string
	// Startup: process start -> first S3 request (after the fake kubeadm init).
	Startup time.Duration
	// StartToInit: process start -> kubeadm init started.
	StartToInit time.Duration
	// InitExitToReady: kubeadm init returned -> READY=1 (publishing included).
	InitExitToReady time.Duration
	// Idle: from a little after READY to the end of the benchmark.
	IdleWindow       time.Duration
	IdleCPU          time.Duration
	IdleS3Reqs       int
	IdleRSS, IdleHWM int64
	IdleAnon         int64
	IdleFile         int64
	Smaps            map[string]int64
	// Publishes: kubeadm token create started -> join info PUT acknowledged by S3,
	// and kubeadm token create returned -> the same.
	PublishFromCreate []time.Duration
	PublishFromReturn []time.Duration
	Problems          []string
}

func (b *Bench) waitControlPlaneReady(c *cpAgent) error {
	err := waitUntil(c.id+" READY=1", 60*time.Second, 50*time.Millisecond, func() error {
		if c.p.exited() {
			return fmt.Errorf("%s exited; see %s", c.id, c.logPath)
		}
		if c.notify.readyAt().IsZero() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	c.idle0 = time.Now()
	c.idleCPU0, _ = cpuTime(c.p.pid())
	return nil
}

// finishControlPlane measures c at the end of the benchmark, before it is stopped.
func (b *Bench) finishControlPlane(c *cpAgent) *cpResult {
	r := &cpResult{Name: c.id, TTL: c.ttl.String()}
	t1 := time.Now()
	if d, err := cpuTime(c.p.pid()); err == nil {
		r.IdleCPU = d - c.idleCPU0
	}
	r.IdleWindow = t1.Sub(c.idle0)
	if m, err := readMem(c.p.pid()); err == nil {
		r.IdleRSS, r.IdleHWM, r.IdleAnon, r.IdleFile = m.RSS, m.HWM, m.Anon, m.File
	}
	r.Smaps = smapsByMapping(c.p.pid())
	evs := b.s3r.byApp(map[string]bool{c.id: true})[c.id]
	sort.Slice(evs, func(i, j int) bool { return evs[i].Start.Before(evs[j].Start) })
	if len(evs) > 0 {
		r.Startup = evs[0].Start.Sub(c.p.started)
	}
	for _, e := range evs {
		if !e.Start.Before(c.idle0) && e.Start.Before(t1) {
			r.IdleS3Reqs++
		}
	}
	if inits := callsOf(c.fk, "init"); len(inits) > 0 {
		r.StartToInit = inits[0].Sub(c.p.started)
	}
	if ex := kubeadmFinished(c.logPath, "kubeadm init"); len(ex) > 0 && !c.notify.readyAt().IsZero() {
		r.InitExitToReady = c.notify.readyAt().Sub(ex[0])
	}
	// Each token create is followed by the PUT of the join info that carries it.
	key := "/" + bucket + "/" + c.cluster + "/join.json"
	var puts []reqEvent
	for _, e := range evs {
		if e.Method == "PUT" && e.Status == 200 && strings.HasSuffix(e.Path, key) {
			puts = append(puts, e)
		}
	}
	returned := kubeadmFinished(c.logPath, "kubeadm token create")
	for i, created := range callsOf(c.fk, "token create") {
		var put *reqEvent
		for j := range puts {
			if puts[j].Done.After(created) {
				put = &puts[j]
				break
			}
		}
		if put == nil {
			continue // created near the end; not published before the measurement
		}
		r.PublishFromCreate = append(r.PublishFromCreate, put.Done.Sub(created))
		if i < len(returned) && returned[i].Before(put.Done.Add(time.Millisecond)) {
			r.PublishFromReturn = append(r.PublishFromReturn, put.Done.Sub(returned[i]))
		}
	}
	return r
}
