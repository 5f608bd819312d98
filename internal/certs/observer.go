package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

// ProcObserver watches the static control-plane pods from this node:
// their processes in /proc, and their readiness the way the kubelet probes
// it.
//
// Why not the mirror pods in the API, or crictl: two of the four restarts
// take the API away (the API server's own, and etcd's, during which the
// API server cannot read or write anything), so a wait that asks the API
// server whether the old pod is gone cannot be answered exactly when it
// matters, and mirror pod status lags behind the kubelet's status manager.
// crictl is not part of every node image, and a CRI gRPC client would
// grow the binary by megabytes. The processes are what holds the old
// certificate in memory: once the process that ran before is gone and a new
// one runs and is ready, the component has loaded the new certificate.
type ProcObserver struct {
	Paths kubeadm.Paths
	// Proc is the proc file system (default /proc).
	Proc string
}

// Instance lists the processes that run component's command (the basename
// of the manifest container's command[0], else the component name), as
// "pid:starttime" joined with commas, or "" when none runs.
func (o *ProcObserver) Instance(ctx context.Context, component string) (string, error) {
	proc := o.Proc
	if proc == "" {
		proc = "/proc"
	}
	name := component
	if pod, err := readManifest(o.manifest(component)); err == nil && len(pod.Spec.Containers) > 0 &&
		len(pod.Spec.Containers[0].Command) > 0 {
		name = filepath.Base(pod.Spec.Containers[0].Command[0])
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return "", fmt.Errorf("list processes: %w", err)
	}
	var found []string
	for _, e := range entries {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue // gone meanwhile, or a kernel thread
		}
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if filepath.Base(argv0) != name {
			continue
		}
		start, state, err := procStat(filepath.Join(proc, e.Name(), "stat"))
		if err != nil || state == "Z" || state == "X" {
			continue
		}
		found = append(found, fmt.Sprintf("%d:%s", pid, start))
	}
	slices.Sort(found)
	return strings.Join(found, ","), nil
}

// procStat returns a process's start time (in clock ticks since boot, field
// 22 of /proc/<pid>/stat) and state (field 3).
func procStat(path string) (start, state string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", "", fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", "", fmt.Errorf("%s: unexpected format", path)
	}
	return f[19], f[0], nil
}

func (o *ProcObserver) manifest(component string) string {
	return filepath.Join(o.Paths.Dir, "manifests", component+".yaml")
}

// Ready checks the API server with /readyz through admin.conf (its CA
// verified); the other components with the HTTP probe of their manifest
// (readiness, else startup, else liveness: what the kubelet itself asks).
func (o *ProcObserver) Ready(ctx context.Context, component string) error {
	if component == "kube-apiserver" {
		return kubeadm.APIServerHealthy(ctx, o.Paths.Admin())
	}
	pod, err := readManifest(o.manifest(component))
	if err != nil {
		return err
	}
	if len(pod.Spec.Containers) == 0 {
		return fmt.Errorf("%s: no container", o.manifest(component))
	}
	c := pod.Spec.Containers[0]
	var probe *corev1.Probe
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.StartupProbe, c.LivenessProbe} {
		if p != nil && p.HTTPGet != nil {
			probe = p
			break
		}
	}
	if probe == nil {
		return nil // nothing to ask: running is all the kubelet knows too
	}
	return httpProbe(ctx, c, probe.HTTPGet)
}

// httpProbe performs an HTTP GET probe like the kubelet: host default
// 127.0.0.1 (static control-plane pods use the host network), TLS not
// verified, 2xx and 3xx are success.
func httpProbe(ctx context.Context, c corev1.Container, g *corev1.HTTPGetAction) error {
	port := g.Port.IntValue()
	if port == 0 {
		for _, p := range c.Ports {
			if p.Name == g.Port.String() {
				port = int(p.ContainerPort)
			}
		}
	}
	if port == 0 {
		return fmt.Errorf("probe port %q of %s unknown", g.Port.String(), c.Name)
	}
	host := g.Host
	if host == "" {
		host = "127.0.0.1"
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	u := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + g.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("probe of %s: %w", c.Name, err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // as the kubelet's probes: self-signed serving certificates
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: CallTimeout}).Do(req)
	if err != nil {
		return fmt.Errorf("probe of %s: %w", c.Name, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("probe of %s: GET %s: %s", c.Name, u, resp.Status)
	}
	return nil
}
