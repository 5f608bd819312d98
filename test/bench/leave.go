//go:build bench

package main

// Graceful node leave (issue 10): the real leave.Leaver, in this process and
// through its public API, against a real kube-apiserver and etcd on loopback
// (started and stopped here, by PID, with the Kubernetes binaries of
// `make kube-bins`). Per round: a fresh Node and a node identity
// (system:node:<name> in system:nodes), N pods bound to it, a stand-in
// kubelet that deletes each evicted pod a little after its deletion
// started, and a recording Lifecycle in place of the Auto Scaling API. The
// clock starts when the Notice is handed to Leave. See docs/bench.md.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/leave"
)

var (
	lvNodes = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	lvPods  = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	lvSAs   = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
)

const (
	// leaveRoundTimeout bounds one round (a healthy one takes a few seconds).
	leaveRoundTimeout = 90 * time.Second
	// leaveHookTimeout is the lifecycle hook's heartbeat timeout the rounds
	// assume (the AWS default, 300 s): the agent's ASG budget is it minus
	// 20 s, its lifecycle heartbeat interval a third of it.
	leaveHookTimeout = 300 * time.Second
	leavePodGrace    = 30
)

// leaveCluster is etcd + kube-apiserver on loopback, nothing else: no
// controller manager, no scheduler, no kubelet.
type leaveCluster struct {
	dir, endpoint string
	caPEM         []byte
	caCert        *x509.Certificate
	caKey         crypto.Signer
	procs         []*proc
	admin         dynamic.Interface
	version       string
	startup       time.Duration
}

func runTool(timeout time.Duration, env []string, bin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return nil
}

// startLeaveCluster starts etcd and kube-apiserver as kubeadm would run them
// (certificates from `kubeadm init phase certs`, --authorization-mode=Node,RBAC,
// --enable-admission-plugins=NodeRestriction) and waits until it is ready.
func startLeaveCluster(kubeBin, work, empty string) (*leaveCluster, error) {
	began := time.Now()
	for _, b := range []string{"kubeadm", "etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(kubeBin, b)); err != nil {
			return nil, fmt.Errorf("%s: %w (run `make kube-bins`)", b, err)
		}
	}
	dir := filepath.Join(work, "leave")
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	apiPort, etcdClient, etcdPeer := ports[0], ports[1], ports[2]
	c := &leaveCluster{dir: dir, endpoint: fmt.Sprintf("127.0.0.1:%d", apiPort)}
	cfg := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: 192.0.2.2, bindPort: %d}
nodeRegistration: {name: kbench-cp}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
clusterName: kbench
controlPlaneEndpoint: %s
certificatesDir: %s
networking: {serviceSubnet: 10.96.0.0/12, podSubnet: 10.244.0.0/16}
`, apiPort, c.endpoint, pki)
	cfgPath := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	env := cleanEnv(empty)
	kubeadm := filepath.Join(kubeBin, "kubeadm")
	if err := runTool(2*time.Minute, env, kubeadm, "init", "phase", "certs", "all", "--config", cfgPath); err != nil {
		return nil, err
	}
	if err := runTool(time.Minute, env, kubeadm, "init", "phase", "kubeconfig", "super-admin", "--config", cfgPath, "--kubeconfig-dir", dir); err != nil {
		return nil, err
	}
	p := func(f string) string { return filepath.Join(pki, f) }
	var err error
	if c.caPEM, err = os.ReadFile(p("ca.crt")); err != nil {
		return nil, err
	}
	if c.caCert, c.caKey, err = parseCA(c.caPEM, p("ca.key")); err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", etcdPeer)
	etcd, err := startProc("etcd", env, filepath.Join(dir, "etcd.log"), filepath.Join(kubeBin, "etcd"),
		"--name=cp", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=cp="+peerURL,
		"--listen-metrics-urls=", "--cert-file="+p("etcd/server.crt"), "--key-file="+p("etcd/server.key"),
		"--trusted-ca-file="+p("etcd/ca.crt"), "--client-cert-auth=true",
		"--peer-cert-file="+p("etcd/peer.crt"), "--peer-key-file="+p("etcd/peer.key"),
		"--peer-trusted-ca-file="+p("etcd/ca.crt"), "--peer-client-cert-auth=true")
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, etcd)
	api, err := startProc("kube-apiserver", env, filepath.Join(dir, "kube-apiserver.log"), filepath.Join(kubeBin, "kube-apiserver"),
		"--advertise-address=192.0.2.2", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction", // as kubeadm runs it
		"--client-ca-file="+p("ca.crt"),
		"--etcd-cafile="+p("etcd/ca.crt"), "--etcd-certfile="+p("apiserver-etcd-client.crt"),
		"--etcd-keyfile="+p("apiserver-etcd-client.key"), "--etcd-servers="+etcdURL,
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"), "--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--proxy-client-cert-file="+p("front-proxy-client.crt"), "--proxy-client-key-file="+p("front-proxy-client.key"),
		"--requestheader-allowed-names=front-proxy-client", "--requestheader-client-ca-file="+p("front-proxy-ca.crt"),
		"--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-username-headers=X-Remote-User",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local", "--service-account-key-file="+p("sa.pub"),
		"--service-account-signing-key-file="+p("sa.key"), "--service-cluster-ip-range=10.96.0.0/12",
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"))
	if err != nil {
		c.stop()
		return nil, err
	}
	c.procs = append(c.procs, api)
	c.version = strings.TrimSpace(cmdOutput(filepath.Join(kubeBin, "kube-apiserver"), "--version"))

	adminCfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "super-admin.conf"))
	if err != nil {
		c.stop()
		return nil, err
	}
	adminCfg.QPS, adminCfg.Burst, adminCfg.Timeout = 200, 400, 15*time.Second
	hc, err := rest.HTTPClientFor(adminCfg)
	if err != nil {
		c.stop()
		return nil, err
	}
	err = waitUntil("kube-apiserver /readyz", 3*time.Minute, 250*time.Millisecond, func() error {
		if etcd.exited() || api.exited() {
			return errors.New("etcd or kube-apiserver exited (logs in " + dir + ", -keep keeps them)")
		}
		resp, err := hc.Get("https://" + c.endpoint + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil || etcd.exited() || api.exited() {
		c.stop()
		return nil, errors.Join(err, errors.New("the API server did not come up"))
	}
	if c.admin, err = dynamic.NewForConfigAndClient(adminCfg, hc); err != nil {
		c.stop()
		return nil, err
	}
	// No controller manager: the default ServiceAccount (the pods need it
	// to be admitted) is created here, once the namespace exists.
	sa := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ServiceAccount",
		"metadata": map[string]any{"name": "default", "namespace": "default"}}}
	err = waitUntil("default ServiceAccount", time.Minute, 250*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.admin.Resource(lvSAs).Namespace("default").Create(ctx, sa, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		c.stop()
		return nil, err
	}
	c.startup = time.Since(began)
	return c, nil
}

func (c *leaveCluster) stop() { stopAll(c.procs, 15*time.Second) }

func parseCA(caPEM []byte, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return nil, nil, errors.New("ca.crt: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, errors.New("ca.key: no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		return cert, k, nil
	}
	if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return cert, s, nil
		}
	}
	if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		return cert, k, nil
	}
	return nil, nil, errors.New("ca.key: unknown key type")
}

// nodeKubeconfig mints the identity a kubelet has (system:node:<name> in
// system:nodes), signed by the cluster CA, and writes a kubeconfig for it.
func (c *leaveCluster) nodeKubeconfig(name string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:   pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.caCert, key.Public(), c.caKey)
	if err != nil {
		return "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: kbench, cluster: {server: "https://%s", certificate-authority-data: %s}}]
users: [{name: node, user: {client-certificate-data: %s, client-key-data: %s}}]
contexts: [{name: node, context: {cluster: kbench, user: node}}]
current-context: node
`, c.endpoint, b64(c.caPEM), b64(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		b64(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	path := filepath.Join(c.dir, "kubelet-"+name+".conf")
	return path, os.WriteFile(path, []byte(kc), 0o600)
}

// ---------------------------------------------------------------------------
// Seams: what the Leaver's requests got back, the stand-in kubelet, the
// recording Lifecycle.

// stamps wraps the Leaver's transport and notes when the API server
// answered the cordon and each accepted eviction (response headers
// received, real clock).
type stamps struct {
	mu        sync.Mutex
	cordoned  time.Time
	lastEvict time.Time
	evictions int
	requests  int
}

type stampRT struct {
	rt http.RoundTripper
	s  *stamps
}

func (t stampRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	now := time.Now()
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	t.s.requests++
	if err != nil || resp.StatusCode/100 != 2 {
		return resp, err
	}
	switch {
	case req.Method == http.MethodPatch && strings.HasPrefix(req.URL.Path, "/api/v1/nodes/") && t.s.cordoned.IsZero():
		t.s.cordoned = now
	case req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/eviction"):
		t.s.evictions++
		t.s.lastEvict = now
	}
	return resp, err
}

// recordingLifecycle is leave.Lifecycle without Auto Scaling: it notes the
// heartbeats and the completion and accepts them at once.
type recordingLifecycle struct {
	mu         sync.Mutex
	heartbeats int
	completed  time.Time
	result     string
}

func (r *recordingLifecycle) Heartbeat(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heartbeats++
	return nil
}

func (r *recordingLifecycle) Complete(_ context.Context, result string) error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.completed.IsZero() {
		r.completed, r.result = now, result
	}
	return nil
}

// fakeKubelet stands in for the node's kubelet: it watches the node's pods
// and, stop after it sees a pod's deletion start (the eviction), finishes
// it (DELETE, grace 0, UID precondition), as a kubelet does once the
// containers stopped. Admin credentials.
type fakeKubelet struct {
	dyn  dynamic.Interface
	node string
	stop time.Duration

	mu      sync.Mutex
	seen    map[string]bool
	deleted map[string]time.Time
	errs    []string
	wg      sync.WaitGroup
}

func (k *fakeKubelet) run(ctx context.Context) {
	sel := "spec.nodeName=" + k.node
	for ctx.Err() == nil {
		list, err := k.dyn.Resource(lvPods).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for i := range list.Items {
			k.handle(ctx, &list.Items[i])
		}
		w, err := k.dyn.Resource(lvPods).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if u, ok := ev.Object.(*unstructured.Unstructured); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				k.handle(ctx, u)
			}
		}
		w.Stop()
	}
}

func (k *fakeKubelet) handle(ctx context.Context, u *unstructured.Unstructured) {
	if u.GetDeletionTimestamp() == nil {
		return
	}
	key := u.GetNamespace() + "/" + u.GetName()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen[key] {
		return
	}
	k.seen[key] = true
	uid := u.GetUID()
	ns, name := u.GetNamespace(), u.GetName()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		if !sleepCtx(ctx, k.stop) {
			return
		}
		zero := int64(0)
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		err := k.dyn.Resource(lvPods).Namespace(ns).Delete(dctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
			Preconditions: &metav1.Preconditions{UID: &uid}})
		now := time.Now()
		k.mu.Lock()
		defer k.mu.Unlock()
		if err != nil {
			k.errs = append(k.errs, key+": "+err.Error())
			return
		}
		k.deleted[key] = now
	}()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ---------------------------------------------------------------------------
// Rounds.

// leaveRound is one Leave, every time measured from the Notice handed to it.
type leaveRound struct {
	Kind        leave.Kind
	Pods        int
	Warmup      bool `json:",omitempty"`
	Cordoned    time.Duration
	LastEvicted time.Duration // last eviction accepted (201)
	LastDeleted time.Duration // last pod deleted by the stand-in kubelet
	Completed   time.Duration // lifecycle action completed (ASG)
	Returned    time.Duration // Leave returned
	Evictions   int
	Requests    int
	Heartbeats  int
	Summary     string
	Problems    []string `json:",omitempty"`
}

type leaveResult struct {
	APIServer string
	Startup   time.Duration
	PodStop   time.Duration
	Rounds    []*leaveRound
	Problems  []string `json:",omitempty"`
}

func leavePod(name, node string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "default", "labels": map[string]any{"app": "kbench-leave"}},
		"spec": map[string]any{"nodeName": node, "automountServiceAccountToken": false,
			"terminationGracePeriodSeconds": int64(leavePodGrace),
			"containers":                    []any{map[string]any{"name": "app", "image": "registry.k8s.io/pause:3.10"}}}}}
}

// setUp creates the Node and its pods (Running, as a kubelet reports them).
func (c *leaveCluster) setUp(ctx context.Context, node string, pods int) error {
	n := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": node}}}
	if _, err := c.admin.Resource(lvNodes).Create(ctx, n, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create node %s: %w", node, err)
	}
	for i := 0; i < pods; i++ {
		name := fmt.Sprintf("%s-p%02d", node, i)
		if _, err := c.admin.Resource(lvPods).Namespace("default").Create(ctx, leavePod(name, node), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod %s: %w", name, err)
		}
		if _, err := c.admin.Resource(lvPods).Namespace("default").Patch(ctx, name, types.MergePatchType,
			[]byte(`{"status":{"phase":"Running"}}`), metav1.PatchOptions{}, "status"); err != nil {
			return fmt.Errorf("set pod %s running: %w", name, err)
		}
	}
	return nil
}

// round runs one Leave of node with pods pods on a notice of kind.
func (c *leaveCluster) round(kind leave.Kind, pods int, name string, stop time.Duration) (*leaveRound, error) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveRoundTimeout)
	defer cancel()
	node := "kb-" + name
	if err := c.setUp(ctx, node, pods); err != nil {
		return nil, err
	}
	kc, err := c.nodeKubeconfig(node)
	if err != nil {
		return nil, err
	}
	// What leave.NewFromKubeconfig does, plus the timestamping transport.
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, err
	}
	st := &stamps{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return stampRT{rt: rt, s: st} }
	lc := &recordingLifecycle{}
	// The agent's options (cmd/agent/leave.go): defaults, an Events recorder
	// on the kubelet kubeconfig, and on an ASG notice the lifecycle action
	// with heartbeats every third of the hook's heartbeat timeout.
	opts := leave.Options{Events: events.NewRecorder(kc, events.Options{})}
	if kind == leave.ASGTermination {
		opts.Lifecycle, opts.LifecycleHeartbeat = lc, leaveHookTimeout/3
	}
	l, err := leave.New(cfg, node, opts)
	if err != nil {
		return nil, err
	}
	k := &fakeKubelet{dyn: c.admin, node: node, stop: stop, seen: map[string]bool{}, deleted: map[string]time.Time{}}
	kctx, stopKubelet := context.WithCancel(ctx)
	kdone := make(chan struct{})
	go func() { defer close(kdone); k.run(kctx) }()
	defer func() { stopKubelet(); <-kdone; k.wg.Wait() }()
	// Let the stand-in kubelet's watch start before the notice.
	sleepCtx(ctx, 200*time.Millisecond)

	t0 := time.Now()
	n := leave.Notice{Kind: kind, NoticeTime: t0, Deadline: t0.Add(leave.DefaultSpotBudget), Action: "terminate"}
	if kind == leave.ASGTermination {
		n.Deadline, n.Action = t0.Add(leaveHookTimeout-20*time.Second), "Terminated"
	}
	res, lerr := l.Leave(ctx, n)
	returned := time.Now()
	stopKubelet()
	<-kdone
	k.wg.Wait()

	r := &leaveRound{Kind: kind, Pods: pods, Returned: returned.Sub(t0), Summary: res.Summary()}
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return -1
		}
		return t.Sub(t0)
	}
	st.mu.Lock()
	r.Cordoned, r.LastEvicted, r.Evictions, r.Requests = since(st.cordoned), since(st.lastEvict), st.evictions, st.requests
	st.mu.Unlock()
	lc.mu.Lock()
	r.Completed, r.Heartbeats = since(lc.completed), lc.heartbeats
	lc.mu.Unlock()
	k.mu.Lock()
	var last time.Time
	for _, t := range k.deleted {
		if t.After(last) {
			last = t
		}
	}
	r.LastDeleted = since(last)
	if len(k.errs) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: stand-in kubelet: %s", name, strings.Join(k.errs, "; ")))
	}
	deletedN := len(k.deleted)
	k.mu.Unlock()
	if lerr != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: Leave: %v", name, lerr))
	}
	if !res.Cordoned || len(res.Evicted) != pods || len(res.Left) > 0 || res.DeadlineHit || res.Interrupted ||
		deletedN != pods || (kind == leave.ASGTermination && (!res.LifecycleCompleted || lc.result != leave.LifecycleContinue)) {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: not a clean leave: %s; evicted %d, left %v, deleted by the kubelet %d",
			name, res.Summary(), len(res.Evicted), res.Left, deletedN))
	}
	return r, nil
}

// runLeave is the whole section: start the API server, a warm-up round
// (not counted), then rounds of each notice kind and pod count, stop.
func runLeave(o options, work, empty string) (*leaveResult, error) {
	logf("graceful leave: starting etcd and kube-apiserver on loopback (%s)", o.kubeBin)
	c, err := startLeaveCluster(o.kubeBin, work, empty)
	if err != nil {
		return nil, fmt.Errorf("graceful leave: %w", err)
	}
	defer c.stop()
	logf("graceful leave: API server ready after %s (%s)", c.startup.Round(time.Millisecond), c.version)
	res := &leaveResult{APIServer: c.version, Startup: c.startup, PodStop: o.leaveStop}
	add := func(r *leaveRound) {
		res.Rounds = append(res.Rounds, r)
		res.Problems = append(res.Problems, r.Problems...)
	}
	w, err := c.round(leave.Spot, 1, "warmup", o.leaveStop)
	if err != nil {
		return res, fmt.Errorf("graceful leave: warm-up: %w", err)
	}
	w.Warmup = true
	add(w)
	for _, kind := range []leave.Kind{leave.Spot, leave.ASGTermination} {
		for _, pods := range o.leavePods {
			for i := 0; i < o.leaveRounds; i++ {
				name := fmt.Sprintf("%s-%d-r%d", strings.ToLower(string(kind)), pods, i)
				logf("graceful leave: %s notice, %d pods, round %d/%d", kind, pods, i+1, o.leaveRounds)
				r, err := c.round(kind, pods, name, o.leaveStop)
				if err != nil {
					return res, fmt.Errorf("graceful leave: %s: %w", name, err)
				}
				add(r)
				sleepCtx(context.Background(), 300*time.Millisecond)
			}
		}
	}
	return res, nil
}

// leaveMarkdown is figure 6.
func (lr *leaveResult) markdown(b *strings.Builder, heading string) {
	fmt.Fprintf(b, "%s 6. Graceful node leave: termination notice → node cordoned → pods evicted → lifecycle action completed\n\n", heading)
	if lr == nil {
		b.WriteString("Not measured in this run (no -kube-bin: `make bench` passes $(KUBE_BIN)).\n\n")
		return
	}
	b.WriteString(row("notice", "pods on the node", "rounds", "cordoned", "last eviction accepted", "last pod deleted (stand-in kubelet)",
		"lifecycle action completed", "Leave returned", "API requests by the Leaver"))
	b.WriteString(row("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"))
	type key struct {
		kind leave.Kind
		pods int
	}
	var order []key
	groups := map[key][]*leaveRound{}
	for _, r := range lr.Rounds {
		if r.Warmup {
			continue
		}
		k := key{r.Kind, r.Pods}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	cell := func(rs []*leaveRound, f func(*leaveRound) time.Duration) string {
		var ds []time.Duration
		for _, r := range rs {
			if d := f(r); d >= 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			return "–"
		}
		d := summarize(ds)
		return secs(d.Median) + " / " + secs(d.Max)
	}
	for _, k := range order {
		rs := groups[k]
		kind := "spot interruption"
		if k.kind == leave.ASGTermination {
			kind = "Auto Scaling termination"
		}
		var reqs []int64
		for _, r := range rs {
			reqs = append(reqs, int64(r.Requests))
		}
		b.WriteString(row(kind, fmt.Sprint(k.pods), fmt.Sprint(len(rs)),
			cell(rs, func(r *leaveRound) time.Duration { return r.Cordoned }),
			cell(rs, func(r *leaveRound) time.Duration { return r.LastEvicted }),
			cell(rs, func(r *leaveRound) time.Duration { return r.LastDeleted }),
			cell(rs, func(r *leaveRound) time.Duration { return r.Completed }),
			cell(rs, func(r *leaveRound) time.Duration { return r.Returned }),
			fmt.Sprintf("%d / %d", medianInt(reqs), maxInt(reqs))))
	}
	fmt.Fprintf(b, "\nMedian / max; time from the Notice handed to `Leave` (the watcher's IMDS poll before it is not included). "+
		"Real API server: `%s` and etcd on loopback (Node,RBAC authorization, NodeRestriction, as kubeadm runs it; up in %s), "+
		"no controller manager, scheduler or kubelet. The real `leave.Leaver` in the driver's process, with a node identity "+
		"(system:node:<name>), the agent's options (poll interval %s, %d evictions in flight) and an Events recorder; "+
		"stand-in kubelet: deletes each pod %s after it sees its eviction (watch); "+
		"stand-in lifecycle action: a recording `leave.Lifecycle` that accepts at once (no Auto Scaling API). "+
		"One warm-up round (spot, 1 pod) not counted.\n\n",
		lr.APIServer, secs(lr.Startup), leave.DefaultPollInterval, leave.DefaultConcurrency, secs(lr.PodStop))
}
