//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/role"
)

// hostControlPlane is etcd + kube-apiserver + kube-controller-manager run as
// host processes on loopback (advertising the TEST-NET address 192.0.2.2,
// which kubeadm accepts where it refuses loopback; nothing is sent to it), with certificates and kubeconfigs from the real
// kubeadm and the bootstrap-token and upload-config phases applied.
type hostControlPlane struct {
	dir, endpoint, admin, caCert string
}

func startHostControlPlane(t *testing.T) *hostControlPlane {
	t.Helper()
	kb := requireEnvDir(t, "KUBE_BIN")
	dir := t.TempDir()
	apiPort, etcdClient, etcdPeer, kcmPort := freePort(t), freePort(t), freePort(t), freePort(t)
	cp := &hostControlPlane{dir: dir, endpoint: fmt.Sprintf("127.0.0.1:%d", apiPort),
		admin: filepath.Join(dir, "super-admin.conf"), caCert: filepath.Join(dir, "pki", "ca.crt")}
	pki := filepath.Join(dir, "pki")
	cfg := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens: [{token: harnes.0000000000000000, ttl: 1h, description: harness}]
localAPIEndpoint: {advertiseAddress: 192.0.2.2, bindPort: %d}
nodeRegistration: {name: cp-host}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
clusterName: demo
controlPlaneEndpoint: %s
certificatesDir: %s
networking: {serviceSubnet: 10.96.0.0/12, podSubnet: 10.244.0.0/16}
`, apiPort, cp.endpoint, pki)
	cfgPath := writeTemp(t, "cluster.yaml", []byte(cfg))
	kubeadmRun := func(args ...string) {
		t.Helper()
		if out, err := runKubeadm(t, args...); err != nil {
			t.Fatalf("kubeadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	kubeadmRun("init", "phase", "certs", "all", "--config", cfgPath)
	// super-admin.conf (system:masters): no init ran to bind the admin.conf group.
	kubeadmRun("init", "phase", "kubeconfig", "super-admin", "--config", cfgPath, "--kubeconfig-dir", dir)
	kubeadmRun("init", "phase", "kubeconfig", "controller-manager", "--config", cfgPath, "--kubeconfig-dir", dir)

	env := cleanEnv(t)
	p := func(f string) string { return filepath.Join(pki, f) }
	etcdURL := fmt.Sprintf("https://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("https://127.0.0.1:%d", etcdPeer)
	startProcess(t, "etcd", env, filepath.Join(kb, "etcd"), "--name=cp", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL, "--initial-cluster=cp="+peerURL,
		"--listen-metrics-urls=", "--cert-file="+p("etcd/server.crt"), "--key-file="+p("etcd/server.key"),
		"--trusted-ca-file="+p("etcd/ca.crt"), "--client-cert-auth=true",
		"--peer-cert-file="+p("etcd/peer.crt"), "--peer-key-file="+p("etcd/peer.key"),
		"--peer-trusted-ca-file="+p("etcd/ca.crt"), "--peer-client-cert-auth=true")
	startProcess(t, "kube-apiserver", env, filepath.Join(kb, "kube-apiserver"),
		"--advertise-address=192.0.2.2", "--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction", // as kubeadm runs it
		"--client-ca-file="+p("ca.crt"), "--enable-bootstrap-token-auth=true",
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
	waitFor(t, "API server /readyz", 90*time.Second, func() error {
		return kubeadm.APIServerHealthy(context.Background(), cp.admin)
	})
	// kubeadm writes the advertise address into controller-manager.conf: point
	// it at loopback so that no traffic leaves the machine.
	kcm := filepath.Join(dir, "controller-manager.conf")
	kcmConf, err := os.ReadFile(kcm)
	if err != nil {
		t.Fatal(err)
	}
	kcmConf = []byte(strings.ReplaceAll(string(kcmConf), "https://192.0.2.2:", "https://127.0.0.1:"))
	if err := os.WriteFile(kcm, kcmConf, 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "kube-controller-manager", env, filepath.Join(kb, "kube-controller-manager"),
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(kcmPort),
		"--authentication-kubeconfig="+kcm, "--authorization-kubeconfig="+kcm, "--kubeconfig="+kcm,
		"--client-ca-file="+p("ca.crt"), "--cluster-signing-cert-file="+p("ca.crt"), "--cluster-signing-key-file="+p("ca.key"),
		"--controllers=*,bootstrapsigner,tokencleaner", "--leader-elect=false",
		"--requestheader-client-ca-file="+p("front-proxy-ca.crt"), "--root-ca-file="+p("ca.crt"),
		"--service-account-private-key-file="+p("sa.key"), "--service-cluster-ip-range=10.96.0.0/12",
		"--use-service-account-credentials=true")
	kubeadmRun("init", "phase", "upload-config", "kubeadm", "--config", cfgPath, "--kubeconfig", cp.admin)
	kubeadmRun("init", "phase", "upload-config", "kubelet", "--config", cfgPath, "--kubeconfig", cp.admin)
	kubeadmRun("init", "phase", "bootstrap-token", "--config", cfgPath, "--kubeconfig", cp.admin)
	// The bootstrap signer in kube-controller-manager signs cluster-info for
	// each token; wait until it works before handing the cluster to a test.
	waitFor(t, "bootstrap signer", 120*time.Second, func() error {
		body, err := cp.get("/api/v1/namespaces/kube-public/configmaps/cluster-info")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "jws-kubeconfig-harnes") {
			return fmt.Errorf("cluster-info not signed yet")
		}
		return nil
	})
	return cp
}

// get reads an API path with the super-admin client certificate.
func (cp *hostControlPlane) get(path string) (string, error) {
	b, err := os.ReadFile(cp.admin)
	if err != nil {
		return "", err
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Cert string `json:"client-certificate-data"`
				Key  string `json:"client-key-data"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) == 0 || len(kc.Users) == 0 {
		return "", fmt.Errorf("parse %s: %v", cp.admin, err)
	}
	dec := func(s string) []byte { d, _ := base64.StdEncoding.DecodeString(s); return d }
	cert, err := tls.X509KeyPair(dec(kc.Users[0].User.Cert), dec(kc.Users[0].User.Key))
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(dec(kc.Clusters[0].Cluster.CA))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(kc.Clusters[0].Cluster.Server + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return string(body), err
}

// tokenIDs lists the bootstrap token IDs the cluster knows (kubeadm token list).
func (cp *hostControlPlane) tokenIDs(t *testing.T) []string {
	t.Helper()
	out, err := runKubeadm(t, "token", "list", "--kubeconfig", cp.admin, "-o", "jsonpath={.token}{\"\\n\"}")
	if err != nil {
		t.Fatalf("kubeadm token list: %v\n%s", err, out)
	}
	var ids []string
	for _, l := range strings.Fields(out) {
		if id, _, ok := strings.Cut(l, "."); ok {
			ids = append(ids, id)
		} else if len(l) == 6 {
			ids = append(ids, l)
		}
	}
	return ids
}

type statusRecorder struct {
	mu       sync.Mutex
	statuses []string
}

func (s *statusRecorder) Status(msg string) {
	s.mu.Lock()
	s.statuses = append(s.statuses, msg)
	s.mu.Unlock()
}
func (s *statusRecorder) Ready(msg string) { s.Status("READY " + msg) }

// preflight runs the real `kubeadm join phase preflight` with a JoinConfiguration
// built by the worker side from join info: it does real token discovery.
func preflight(t *testing.T, info *join.Info, cfg *config.AgentConfig) (string, error) {
	t.Helper()
	doc, err := kubeadm.JoinConfig(cfg, kubeadm.Node{Name: "worker-1", IP: "127.0.0.2"}, kubeadm.JoinOptions{
		APIServerEndpoint: info.APIServerEndpoint, Token: info.Token, CACertHashes: info.CACertHashes})
	if err != nil {
		t.Fatal(err)
	}
	path := writeTemp(t, "join.yaml", doc)
	cmd := exec.Command(kubeadmBin(t), "join", "phase", "preflight", "--config", path)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestControlPlaneAgentPublishesJoinInfoThatRealKubeadmAccepts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("kubeadm join preflight needs root")
	}
	cp := startHostControlPlane(t)
	moto := startMoto(t)
	s3c := s3Client(moto)
	createBucket(t, s3c, "demo-bootstrap")
	store := &join.Store{Client: s3c, Bucket: "demo-bootstrap", Key: join.Key("demo")}

	cfg := config.Defaults()
	cfg.APIVersion, cfg.Kind, cfg.Cluster, cfg.Bucket, cfg.Role = config.APIVersion, config.Kind, "demo", "demo-bootstrap", config.RoleControlPlane
	cfg.StateDir = t.TempDir()
	cfg.Kubeadm.Path = kubeadmBin(t)
	cfg.Kubeadm.ControlPlaneEndpoint = cp.endpoint
	cfg.Kubeadm.IgnorePreflightErrors = []string{"all"}
	cfg.Kubeadm.DiscoveryTimeout = config.Duration{Duration: 10 * time.Second}
	cfg.ControlPlane.TokenTTL = config.Duration{Duration: time.Minute}
	// A superseded token stays valid for one poll interval and one join
	// timeout after the refresh: 21s here, inside the old token's 30s left.
	cfg.Worker.PollInterval = config.Duration{Duration: time.Second}
	cfg.Worker.ExpiryMargin = config.Duration{Duration: 10 * time.Second}
	cfg.Kubeadm.JoinTimeout = config.Duration{Duration: 20 * time.Second}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	notes := &statusRecorder{}
	reporter, err := role.NewReporter(cfg.StateDir, notes, log, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	cmdlines := scanCmdlines(t, "kubeadm")
	agent := &role.ControlPlane{Config: &cfg, Node: kubeadm.Node{Name: "cp-host", IP: "127.0.0.1"}, Store: store,
		Kubeadm: &kubeadm.Runner{Path: cfg.Kubeadm.Path, Log: log}, Clock: clock.RealClock{}, Reporter: reporter, Log: log,
		AdminKubeconfig: cp.admin, CACert: cp.caCert, VerifyInterval: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	read := func() *join.Info {
		f, err := store.Fetch(context.Background(), "")
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		info, err := join.Parse(f.Body, join.Expectations{Cluster: "demo", Now: time.Now(), Margin: 10 * time.Second})
		if err != nil {
			t.Fatalf("published join info refused by the worker side: %v", err)
		}
		return info
	}
	var first *join.Info
	waitFor(t, "first publish", 60*time.Second, func() error {
		if reporter.State().JoinGeneration < 1 {
			return fmt.Errorf("not published yet; status %v", notes.statuses)
		}
		first = read()
		return nil
	})
	// The CA hash the agent computed is the one kubeadm prints.
	out, err := runKubeadm(t, "token", "create", "--print-join-command", "--kubeconfig", cp.admin, "--ttl", "1m")
	if err != nil || !strings.Contains(out, "--discovery-token-ca-cert-hash "+first.CACertHashes[0]) {
		t.Errorf("agent hash %s not in kubeadm's join command (err %v):\n%s", first.CACertHashes[0], err, out)
	}
	// Real discovery with the published info: signature check and CA pin pass.
	if out, err := preflight(t, first, &cfg); err != nil {
		t.Fatalf("kubeadm join phase preflight with published join info: %v\n%s", err, tail(out, 20))
	}
	// A tampered CA hash fails the pin.
	tampered := *first
	tampered.CACertHashes = []string{"sha256:" + strings.Repeat("00", 32)}
	if out, err := preflight(t, &tampered, &cfg); err == nil || !strings.Contains(out, "none of the public keys") {
		t.Errorf("tampered hash: err %v\n%s", err, tail(out, 10))
	}
	// With a 1m TTL the token is replaced at half-life.
	var second *join.Info
	waitFor(t, "token replaced at half-life", 60*time.Second, func() error {
		if reporter.State().JoinGeneration < first.Generation+1 {
			return fmt.Errorf("still generation %d", reporter.State().JoinGeneration)
		}
		second = read()
		return nil
	})
	// A worker that read the old info just before the refresh starts its
	// join now: real discovery with the superseded token still succeeds.
	if out, err := preflight(t, first, &cfg); err != nil {
		t.Fatalf("kubeadm join phase preflight with the info read just before the refresh: %v\n%s", err, tail(out, 20))
	}
	// The old token is deleted once its grace (poll interval + join timeout) is over.
	waitFor(t, "old token deleted after its grace", 60*time.Second, func() error {
		for _, id := range cp.tokenIDs(t) {
			if id == first.TokenID() {
				return fmt.Errorf("old token %s still listed", id)
			}
		}
		return nil
	})
	if d := time.Since(reporter.State().LastPublish); d < 20*time.Second {
		t.Errorf("old token deleted %s after the refresh, before its 21s grace", d.Round(time.Second))
	}
	// kubeadm generated every token: no secret was ever on a command line.
	lines, n := cmdlines()
	if n == 0 || !strings.Contains(lines, "token create") {
		t.Fatalf("the /proc scan saw no kubeadm token create (%d scans)", n)
	}
	for _, info := range []*join.Info{first, second} {
		if strings.Contains(lines, info.Token[7:]) {
			t.Errorf("token %s secret seen in /proc/*/cmdline", info.TokenID())
		}
	}
	if second.Token == first.Token || second.Generation != first.Generation+1 {
		t.Fatalf("second generation %d reuses the token: %v", second.Generation, second.Token == first.Token)
	}
	if out, err := preflight(t, second, &cfg); err != nil {
		t.Fatalf("preflight with the refreshed join info: %v\n%s", err, tail(out, 20))
	}
	// The real kubeadm's error for the superseded token is classified as a
	// token refusal (the worker then waits for newer join info).
	out, err = preflight(t, first, &cfg)
	if err == nil {
		t.Fatal("preflight with the deleted token succeeded")
	}
	exitErr := &kubeadm.ExitError{Output: strings.Split(out, "\n"), Err: err}
	if !kubeadm.IsTokenRejected(exitErr) {
		t.Errorf("real kubeadm output for a deleted token not recognised as a token refusal:\n%s", tail(out, 10))
	}
}

// scanCmdlines reads /proc/*/cmdline every few milliseconds until the test
// ends, keeping every command line that contains word; the returned function
// gives them (one per line) and the number of scans made.
func scanCmdlines(t *testing.T, word string) func() (string, int) {
	t.Helper()
	var (
		mu    sync.Mutex
		seen  = map[string]bool{}
		scans int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			mu.Lock()
			for _, p := range paths {
				b, err := os.ReadFile(p)
				if err == nil && strings.Contains(string(b), word) {
					seen[strings.ReplaceAll(string(b), "\x00", " ")] = true
				}
			}
			scans++
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() (string, int) {
		mu.Lock()
		defer mu.Unlock()
		var b strings.Builder
		for l := range seen {
			b.WriteString(l + "\n")
		}
		return b.String(), scans
	}
}
