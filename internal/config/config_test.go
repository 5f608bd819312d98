package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const goodConfig = `apiVersion: kubestrap.dev/v1alpha1
kind: AgentConfig
cluster: demo
role: worker
bucket: my-cluster-bootstrap
kubeadm:
  path: /usr/bin/kubeadm
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
  - {name: cgroup-root, value: /node}
  kubeletConfiguration:
    cgroupDriver: cgroupfs
controlPlane:
  tokenTTL: 2h
worker:
  pollInterval: 5s
ecr:
  enabled: true
  registryIds: ["111122223333"]
`

func TestParseGoodConfigAppliesDefaults(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig))
	if err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	if cfg.StateDir != "/var/lib/kubestrap" || cfg.ECR.ConfigPath != "/var/lib/kubelet/config.json" {
		t.Errorf("defaults not applied: stateDir %q configPath %q", cfg.StateDir, cfg.ECR.ConfigPath)
	}
	if cfg.ControlPlane.TokenTTL.Duration != 2*time.Hour || cfg.Worker.PollInterval.Duration != 5*time.Second {
		t.Errorf("durations: %v %v", cfg.ControlPlane.TokenTTL, cfg.Worker.PollInterval)
	}
	if cfg.Kubeadm.KubernetesVersion != "v1.37.2" || cfg.Kubeadm.KubeletConfiguration["cgroupDriver"] != "cgroupfs" {
		t.Errorf("kubeadm section: %+v", cfg.Kubeadm)
	}
}

func TestParseBadConfigNamesTheField(t *testing.T) {
	cases := []struct {
		name, edit, field, says string
	}{
		{"missing cluster", "cluster: demo\n->", "cluster", "is required"},
		{"unknown key", "worker:\n->worker:\n  pollIntervall: 5s\n", "worker.pollIntervall", "unknown field"},
		{"unknown top-level key", "role: worker\n->role: worker\nregion: eu-west-1\n", "region", "unknown field"},
		{"bad role", "role: worker->role: master", "role", `must be "control-plane" or "worker"`},
		{"unparsable duration", "pollInterval: 5s->pollInterval: fast", "worker.pollInterval", "not a duration"},
		{"bad bucket name", "bucket: my-cluster-bootstrap->bucket: My_Bucket", "bucket", "not a valid S3 bucket name"},
		{"bucket as IP", "bucket: my-cluster-bootstrap->bucket: 10.0.0.1", "bucket", "IP address"},
		{"bad apiVersion", "kubestrap.dev/v1alpha1->kubestrap.dev/v9", "apiVersion", "must be"},
		{"bad cri socket", "unix:///run/containerd/containerd.sock->/run/containerd.sock", "kubeadm.criSocket", "unix:///"},
		{"bad registry id", `"111122223333"->"1234"`, "ecr.registryIds[0]", "12-digit"},
		{"unknown kubelet setting", "cgroupDriver: cgroupfs->cgroupDrivr: cgroupfs", "kubeadm.kubeletConfiguration.cgroupDrivr", "unknown field"},
		{"tiny token TTL", "tokenTTL: 2h->tokenTTL: 10s", "controlPlane.tokenTTL", "at least"},
		{"lock lease below 15s", "tokenTTL: 2h->tokenTTL: 2h\n  lockLease: 5s", "controlPlane.lockLease", "at least 15s"},
		{"lock lease with a fraction of a second", "tokenTTL: 2h->tokenTTL: 2h\n  lockLease: 30500ms", "controlPlane.lockLease", "whole seconds"},
		{"node cleanup every 0s", "tokenTTL: 2h->tokenTTL: 2h\n  nodeCleanup: {interval: 0s}", "controlPlane.nodeCleanup.interval", "at least 1s"},
		{"token half-life below the default margin", "tokenTTL: 2h->tokenTTL: 3m", "controlPlane.tokenTTL",
			"3m0s is too short for worker.expiryMargin 2m0s"},
		{"token half-life equal to the margin", "pollInterval: 5s->pollInterval: 5s\n  expiryMargin: 1h", "controlPlane.tokenTTL",
			"set controlPlane.tokenTTL above 2h0m0s (twice worker.expiryMargin) or worker.expiryMargin below 1h0m0s"},
		{"relative kubeadm path", "path: /usr/bin/kubeadm->path: bin/kubeadm", "kubeadm.path", "relative path"},
		{"relative addon path", "tokenTTL: 2h->tokenTTL: 2h\n  addons: [/usr/share/kubestrap/addons/flannel.yaml, addons/extra.yaml]",
			"controlPlane.addons[1]", `"addons/extra.yaml" is not an absolute path`},
		{"duplicate key", "role: worker->role: worker\nrole: control-plane", "role", "already set"},
		{"wrong type", "cluster: demo->cluster: [a, b]", "cluster", "cannot unmarshal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, repl, _ := strings.Cut(tc.edit, "->")
			doc := strings.Replace(goodConfig, old, repl, 1)
			if doc == goodConfig {
				t.Fatalf("edit %q changed nothing", tc.edit)
			}
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatal("bad config accepted")
			}
			if !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not name %q with %q", err, tc.field, tc.says)
			}
		})
	}
}

func TestParseAddons(t *testing.T) {
	cases := []struct {
		name, edit string
		want       []string
	}{
		{"absent: the packaged add-ons", "", []string{FlannelManifest, MetricsServerAddon}},
		{"empty list: none", "tokenTTL: 2h->tokenTTL: 2h\n  addons: []", []string{}},
		{"a list of its own", "tokenTTL: 2h->tokenTTL: 2h\n  addons: [/etc/kubestrap/cni.yaml, " + FlannelManifest + "]",
			[]string{"/etc/kubestrap/cni.yaml", FlannelManifest}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := goodConfig
			if old, repl, ok := strings.Cut(tc.edit, "->"); ok {
				doc = strings.Replace(goodConfig, old, repl, 1)
			}
			for _, role := range []string{string(RoleWorker), string(RoleControlPlane)} {
				cfg, err := Parse([]byte(strings.Replace(doc, "role: worker", "role: "+role, 1)))
				if err != nil {
					t.Fatalf("%s: refused: %v", role, err)
				}
				if !slices.Equal(cfg.ControlPlane.Addons, tc.want) {
					t.Errorf("%s: addons %q, want %q", role, cfg.ControlPlane.Addons, tc.want)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte("apiVersion: kubestrap.dev/v1alpha1\nkind: AgentConfig\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("want FieldErrors, got %v", err)
	}
	for _, f := range []string{"cluster", "role", "bucket"} {
		if !strings.Contains(err.Error(), f+":") {
			t.Errorf("error does not mention %s: %v", f, err)
		}
	}
}

func TestEndpointProblem(t *testing.T) {
	for _, ok := range []string{
		"10.0.1.10:6443", "0.0.0.0:1", "255.255.255.255:65535", "api.demo.internal:443", "localhost:6443",
		"ip-10-0-1-10.eu-west-1.compute.internal:6443", "0x0a.example:6443", "10.0.1.10.nip.io:6443",
		"[fd00::1]:6443", "[::1]:6443", "[::ffff:10.0.1.10]:6443",
	} {
		if p := EndpointProblem(ok); p != "" {
			t.Errorf("%q refused: %s", ok, p)
		}
	}
	// Each bad endpoint differs from a good one in one respect only.
	for _, bad := range []struct{ endpoint, why string }{
		{"10.0.1.10", "no port"},
		{"https://x:1", "URL"},
		{"a b:1", "space in host"},
		{"-x:1", "label starts with a hyphen"},
		{"UPPER.example:1", "uppercase name"},
		{"api.demo.internal.:6443", "trailing dot"},
		{"api..internal:6443", "empty label"},
		{":6443", "empty host"},
		{"x:", "empty port"},
		{"x:+1", "signed port"},
		{"x:-1", "negative port"},
		{"x:0", "port zero"},
		{"x:65536", "port too large"},
		{"x:06443", "port with a leading zero"},
		{"x:00001", "port with leading zeros"},
		{"x:0x1f", "hex port"},
		{"x:6443.0", "fractional port"},
		{"x: 6443", "space in port"},
		{"010.0.1.10:6443", "IPv4 octet with a leading zero (octal)"},
		{"10.0.1.010:6443", "last IPv4 octet with a leading zero"},
		{"0x0a.0.1.10:6443", "hex IPv4 octet"},
		{"10.0.1.0x0a:6443", "hex last IPv4 octet"},
		{"10.1:6443", "short IPv4 form"},
		{"10.0.266:6443", "three-part IPv4 form"},
		{"167772426:6443", "IPv4 as one integer"},
		{"0xa00010a:6443", "IPv4 as one hex integer"},
		{"10.0.1.256:6443", "IPv4 octet above 255"},
		{"10.0.1.10.1:6443", "five IPv4 parts"},
		{"[10.0.1.10]:6443", "brackets around IPv4"},
		{"[api.demo.internal]:6443", "brackets around a name"},
		{"[localhost]:6443", "brackets around a single label"},
		{"[fe80::1%eth0]:6443", "IPv6 zone"},
		{"fd00::1:6443", "IPv6 without brackets"},
		{"[fd00::1]6443", "no colon after the brackets"},
	} {
		if EndpointProblem(bad.endpoint) == "" {
			t.Errorf("%q (%s) accepted", bad.endpoint, bad.why)
		}
	}
}
