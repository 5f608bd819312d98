package testutil

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// FakeKubeadm is a built test/fakekubeadm executable with its own state.
type FakeKubeadm struct {
	Path string
	// Dir holds calls.log and the accepted tokens; Etc stands in for
	// /etc/kubernetes and Etcd for /var/lib/etcd.
	Dir, Etc, Etcd string
}

// BuildFakeKubeadm compiles test/fakekubeadm into dir and returns its path;
// a package's TestMain builds it once and hands it to NewFakeKubeadm.
func BuildFakeKubeadm(dir string) (string, error) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(dir, "kubeadm")
	cmd := exec.Command("go", "build", "-o", out, "./test/fakekubeadm")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build fake kubeadm: %w\n%s", err, b)
	}
	return out, nil
}

// NewFakeKubeadm gives the fake binary at path a fresh state of its own.
func NewFakeKubeadm(t testing.TB, path string) *FakeKubeadm {
	t.Helper()
	base := t.TempDir()
	f := &FakeKubeadm{Path: path, Dir: filepath.Join(base, "state"), Etc: filepath.Join(base, "etc"), Etcd: filepath.Join(base, "etcd")}
	for _, d := range []string{f.Dir, f.Etc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Node returns another node of f's cluster: the same calls, tokens and
// kubeadm-certs Secret, its own /etc/kubernetes and /var/lib/etcd.
func (f *FakeKubeadm) Node(t testing.TB) *FakeKubeadm {
	t.Helper()
	base := t.TempDir()
	n := &FakeKubeadm{Path: f.Path, Dir: f.Dir, Etc: filepath.Join(base, "etc"), Etcd: filepath.Join(base, "etcd")}
	if err := os.MkdirAll(n.Etc, 0o755); err != nil {
		t.Fatal(err)
	}
	return n
}

// Env is the environment to run the fake with.
func (f *FakeKubeadm) Env() []string {
	return append(os.Environ(), "FAKE_KUBEADM_DIR="+f.Dir, "FAKE_KUBEADM_ETC="+f.Etc, "FAKE_KUBEADM_ETCD="+f.Etcd)
}

// Calls returns the argument lists of every call so far.
func (f *FakeKubeadm) Calls() []string {
	b, _ := os.ReadFile(filepath.Join(f.Dir, "calls.log"))
	var calls []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, args, ok := strings.Cut(l, " "); ok {
			calls = append(calls, args)
		}
	}
	return calls
}

// CallsOf returns the calls whose first argument is cmd.
func (f *FakeKubeadm) CallsOf(cmd string) []string {
	var out []string
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, cmd+" ") || c == cmd {
			out = append(out, c)
		}
	}
	return out
}

// AcceptToken makes the fake API server accept token.
func (f *FakeKubeadm) AcceptToken(t testing.TB, token string) {
	t.Helper()
	fh, err := os.OpenFile(filepath.Join(f.Dir, "tokens"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(token + "\n"); err != nil {
		t.Fatal(err)
	}
}

// Tokens lists the tokens the fake API server accepts.
func (f *FakeKubeadm) Tokens() []string {
	b, _ := os.ReadFile(filepath.Join(f.Dir, "tokens"))
	var tokens []string
	for _, l := range strings.Split(string(b), "\n") {
		if t, _, _ := strings.Cut(l, "\t"); t != "" {
			tokens = append(tokens, t)
		}
	}
	return tokens
}

// TokenIDs lists the IDs of the tokens the fake API server accepts.
func (f *FakeKubeadm) TokenIDs() []string {
	var ids []string
	for _, t := range f.Tokens() {
		id, _, _ := strings.Cut(t, ".")
		ids = append(ids, id)
	}
	return ids
}

// CrashNextInit makes the next init die by SIGKILL right after it wrote
// admin.conf, the certificates, the manifests and etcd data: a reboot
// inside kubeadm init.
func (f *FakeKubeadm) CrashNextInit(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.Dir, "init-crash"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// DelayNextJoin makes the next join take d before it finishes.
func (f *FakeKubeadm) DelayNextJoin(t testing.TB, d time.Duration) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.Dir, "join-delay"), []byte(d.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// InitsCompleted counts the inits that ran to the end.
func (f *FakeKubeadm) InitsCompleted() int {
	b, _ := os.ReadFile(filepath.Join(f.Dir, "inits-completed"))
	return len(strings.Fields(string(b)))
}

// FailNext makes the next call of cmd ("join" or "init") fail with a non-token error.
func (f *FakeKubeadm) FailNext(t testing.TB, cmd string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.Dir, "fail-next-"+cmd), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// KubeletConf and AdminConf are where the fake writes node kubeconfigs.
func (f *FakeKubeadm) KubeletConf() string { return filepath.Join(f.Etc, "kubelet.conf") }

// AdminConf is where the fake init writes admin.conf.
func (f *FakeKubeadm) AdminConf() string { return filepath.Join(f.Etc, "admin.conf") }

// CACert is where the fake init writes the cluster CA.
func (f *FakeKubeadm) CACert() string { return filepath.Join(f.Etc, "pki", "ca.crt") }
