package certs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

func fakeProc(t *testing.T, procs map[int][2]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, p := range procs {
		writeFile(t, filepath.Join(dir, fmt.Sprint(pid), "cmdline"), []byte(p[0]))
		writeFile(t, filepath.Join(dir, fmt.Sprint(pid), "stat"), []byte(p[1]))
	}
	writeFile(t, filepath.Join(dir, "self", "cmdline"), []byte("x"))
	return dir
}

func stat(pid int, comm, state string, start int) string {
	return fmt.Sprintf("%d (%s) %s 1 1 1 0 -1 4194560 100 0 0 0 10 5 0 0 20 0 12 0 %d 0 0\n", pid, comm, state, start)
}

func TestProcObserverInstanceFollowsTheProcess(t *testing.T) {
	proc := fakeProc(t, map[int][2]string{
		100: {"/usr/local/bin/kube-scheduler\x00--config=x\x00", stat(100, "kube-scheduler", "S", 5000)},
		200: {"etcd\x00--name=a\x00", stat(200, "etcd", "Z", 6000)},
		300: {"/bin/sh\x00-c\x00kube-scheduler\x00", stat(300, "sh", "S", 7000)},
		400: {"/usr/local/bin/kube-controller-manager\x00", stat(400, "kube-controller", "R", 8000)},
	})
	dir := t.TempDir()
	// The manifest's command names the binary (its basename is matched).
	writeFile(t, filepath.Join(dir, "manifests", "kube-controller-manager.yaml"), []byte(
		"apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: kube-controller-manager\n    command: [/usr/local/bin/kube-controller-manager, --x]\n"))
	o := &ProcObserver{Paths: kubeadm.Paths{Dir: dir}, Proc: proc}
	for c, want := range map[string]string{
		"kube-scheduler":          "100:5000",
		"etcd":                    "", // a zombie is not running
		"kube-controller-manager": "400:8000",
		"kube-apiserver":          "",
	} {
		got, err := o.Instance(context.Background(), c)
		if err != nil || got != want {
			t.Errorf("Instance(%s) = %q, %v; want %q", c, got, err, want)
		}
	}
}

func TestProcObserverInstanceOnTheRealProc(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := &ProcObserver{Paths: kubeadm.Paths{Dir: t.TempDir()}}
	got, err := o.Instance(context.Background(), filepath.Base(self))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(","+got, fmt.Sprintf(",%d:", os.Getpid())) {
		t.Errorf("Instance(%s) = %q, does not list this process %d", filepath.Base(self), got, os.Getpid())
	}
}

func TestProcObserverReadyUsesTheManifestsProbe(t *testing.T) {
	code := http.StatusOK
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		w.WriteHeader(code)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "manifests", "kube-scheduler.yaml"), fmt.Appendf(nil, `apiVersion: v1
kind: Pod
spec:
  containers:
  - name: kube-scheduler
    livenessProbe:
      httpGet: {host: 127.0.0.1, path: /livez, port: %[1]s, scheme: HTTP}
    startupProbe:
      httpGet: {host: 127.0.0.1, path: /healthz, port: %[1]s, scheme: HTTP}
`, u.Port()))
	o := &ProcObserver{Paths: kubeadm.Paths{Dir: dir}}
	if err := o.Ready(context.Background(), "kube-scheduler"); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if path != "/healthz" {
		t.Errorf("probed %s, want the startup probe's /healthz (before liveness)", path)
	}
	code = http.StatusInternalServerError
	if err := o.Ready(context.Background(), "kube-scheduler"); err == nil {
		t.Error("Ready with the probe answering 500: no error")
	}
	if err := o.Ready(context.Background(), "etcd"); err == nil {
		t.Error("Ready without a manifest: no error")
	}
}
