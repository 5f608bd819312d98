package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// minimalConfig is a valid configuration whose kubeadm.path is path.
func minimalConfig(path string) *AgentConfig {
	cfg := Defaults()
	cfg.APIVersion, cfg.Kind, cfg.Cluster, cfg.Role, cfg.Bucket = APIVersion, Kind, "demo", RoleWorker, "demo-bootstrap"
	cfg.Kubeadm.Path = path
	return &cfg
}

func TestTokenTTLMustOutliveExpiryMargin(t *testing.T) {
	cases := []struct {
		ttl, margin time.Duration
		ok          bool
	}{
		{2 * time.Hour, 2 * time.Minute, true},                  // the defaults
		{2 * time.Minute, 20 * time.Second, true},               // the e2e cluster's
		{4*time.Minute + time.Second, 2 * time.Minute, true},    // half-life just longer
		{time.Minute, 0, true},                                  // no margin
		{4 * time.Minute, 2 * time.Minute, false},               // half-life equal to the margin
		{3 * time.Minute, 2 * time.Minute, false},               // half-life shorter
		{time.Hour, 2 * time.Hour, false},                       // margin longer than the whole life
		{24 * time.Hour, 12*time.Hour + time.Nanosecond, false}, // just over
		{24 * time.Hour, 12*time.Hour - time.Nanosecond, true},  // just under
		{365 * 24 * time.Hour, 183 * 24 * time.Hour, false},     // the longest TTL
	}
	for _, tc := range cases {
		cfg := minimalConfig("/usr/bin/kubeadm")
		cfg.ControlPlane.TokenTTL.Duration, cfg.Worker.ExpiryMargin.Duration = tc.ttl, tc.margin
		err := cfg.Validate()
		if tc.ok {
			if err != nil {
				t.Errorf("tokenTTL %s, expiryMargin %s refused: %v", tc.ttl, tc.margin, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "controlPlane.tokenTTL" {
			t.Errorf("tokenTTL %s, expiryMargin %s: want a controlPlane.tokenTTL error, got %v", tc.ttl, tc.margin, err)
			continue
		}
		for _, want := range []string{tc.ttl.String(), tc.margin.String(), (tc.ttl / 2).String(), (2 * tc.margin).String()} {
			if !strings.Contains(fe.Reason, want) {
				t.Errorf("tokenTTL %s, expiryMargin %s: %q does not give %s", tc.ttl, tc.margin, fe.Reason, want)
			}
		}
	}
	// An unparsable field is reported as such, not compared.
	cfg := minimalConfig("/usr/bin/kubeadm")
	cfg.ControlPlane.TokenTTL = Duration{invalid: "soon"}
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "too short for worker.expiryMargin") {
		t.Errorf("unparsable tokenTTL: %v", err)
	}
}

// TestValidateDoesNotLookAtTheHost: Validate is pure; a kubeadm that is not
// on this machine is CheckHost's business.
func TestValidateDoesNotLookAtTheHost(t *testing.T) {
	if err := minimalConfig("/nonexistent/kubeadm").Validate(); err != nil {
		t.Errorf("Validate looked at the host: %v", err)
	}
}

func writeProgram(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckHostNamesKubeadmPath(t *testing.T) {
	dir := t.TempDir()
	exe := writeProgram(t, dir, "kubeadm", 0o755)
	plain := writeProgram(t, dir, "kubeadm.txt", 0o644)
	onPath := t.TempDir()
	writeProgram(t, onPath, "kubeadm-on-path", 0o755)
	t.Setenv("PATH", onPath)

	for _, ok := range []string{exe, "kubeadm-on-path"} {
		if err := minimalConfig(ok).CheckHost(nil); err != nil {
			t.Errorf("kubeadm.path %q refused: %v", ok, err)
		}
	}
	for _, tc := range []struct{ path, says string }{
		{filepath.Join(dir, "missing"), "is not an executable file"},
		{plain, "is not an executable file"},
		{dir, "is not an executable file"},
		{"kubeadm-elsewhere", "is not found on PATH (" + onPath + ")"},
	} {
		err := minimalConfig(tc.path).CheckHost(nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "kubeadm.path" || !strings.Contains(fe.Reason, tc.says) ||
			!strings.Contains(fe.Reason, tc.path) {
			t.Errorf("kubeadm.path %q: want a kubeadm.path error saying %q, got %v", tc.path, tc.says, err)
		}
	}

	// The look-up is the caller's: CheckHost asks it about kubeadm.path.
	var asked []string
	err := minimalConfig("kubeadm").CheckHost(func(p string) (string, error) {
		asked = append(asked, p)
		return "/opt/bin/kubeadm", nil
	})
	if err != nil || len(asked) != 1 || asked[0] != "kubeadm" {
		t.Errorf("injected lookPath: asked %q, err %v", asked, err)
	}
}

// fieldErrors returns every *FieldError in err (CheckHost joins them).
func fieldErrors(err error) map[string]string {
	out := map[string]string{}
	var walk func(error)
	walk = func(err error) {
		var fe *FieldError
		switch e := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		default:
			if errors.As(err, &fe) {
				out[fe.Field] = fe.Reason
			}
		}
	}
	walk(err)
	return out
}

func TestCheckHostNamesAddonFiles(t *testing.T) {
	dir := t.TempDir()
	kubeadm := writeProgram(t, dir, "kubeadm", 0o755)
	manifest := filepath.Join(dir, "flannel.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-flannel}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "metrics-server.yaml")
	subdir := filepath.Join(dir, "addons.d")
	if err := os.Mkdir(subdir, 0o755); err != nil {
		t.Fatal(err)
	}
	controlPlane := func(addons ...string) *AgentConfig {
		cfg := minimalConfig(kubeadm)
		cfg.Role = RoleControlPlane
		cfg.ControlPlane.Addons = addons
		return cfg
	}

	if err := controlPlane(manifest).CheckHost(nil); err != nil {
		t.Errorf("a readable manifest refused: %v", err)
	}
	got := fieldErrors(controlPlane(manifest, missing, subdir).CheckHost(nil))
	if len(got) != 2 {
		t.Fatalf("field errors %v, want controlPlane.addons[1] and [2]", got)
	}
	for field, says := range map[string][]string{
		"controlPlane.addons[1]": {missing, "cannot be read", "no such file", AddonsDir},
		"controlPlane.addons[2]": {subdir, "is not a regular file"},
	} {
		for _, s := range says {
			if !strings.Contains(got[field], s) {
				t.Errorf("%s: reason %q does not say %q", field, got[field], s)
			}
		}
	}

	// A worker applies no add-ons: the files need not be there.
	worker := controlPlane(missing, subdir)
	worker.Role = RoleWorker
	if err := worker.CheckHost(nil); err != nil {
		t.Errorf("worker with missing add-on files refused: %v", err)
	}
	// An empty list is none.
	for _, none := range [][]string{{}, nil} {
		if err := controlPlane(none...).CheckHost(nil); err != nil {
			t.Errorf("control plane with addons %#v refused: %v", none, err)
		}
	}
}

func TestValidateNamesARelativeAddonPath(t *testing.T) {
	for _, role := range []Role{RoleControlPlane, RoleWorker} {
		cfg := minimalConfig("/usr/bin/kubeadm")
		cfg.Role = role
		cfg.ControlPlane.Addons = []string{"/usr/share/kubestrap/addons/flannel.yaml", "flannel.yaml", "./ms.yaml"}
		got := fieldErrors(cfg.Validate())
		if len(got) != 2 || !strings.Contains(got["controlPlane.addons[1]"], `"flannel.yaml" is not an absolute path`) ||
			!strings.Contains(got["controlPlane.addons[2]"], `"./ms.yaml" is not an absolute path`) {
			t.Errorf("%s: field errors %v, want controlPlane.addons[1] and [2] not absolute", role, got)
		}
		cfg.ControlPlane.Addons = []string{}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: empty addons refused: %v", role, err)
		}
	}
}
