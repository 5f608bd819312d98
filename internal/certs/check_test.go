package certs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

var now0 = time.Date(2026, 11, 26, 5, 30, 0, 0, time.UTC)

func TestNamesAreKubeadmCheckExpirationNames(t *testing.T) {
	want := []string{"admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
		"controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server", "front-proxy-client",
		"scheduler.conf", "super-admin.conf", "ca", "etcd-ca", "front-proxy-ca"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v\nwant     %v", got, want)
	}
}

func TestCheckReportsEachCertificatesExpiry(t *testing.T) {
	want := map[string]time.Time{}
	for i, n := range Names() {
		// A distinct expiry per name, whole seconds (x509 precision).
		want[n] = now0.Add(time.Duration(i+1) * 24 * time.Hour)
	}
	p := newFakePKI(t, now0, want)
	certs, err := Check(kubeadm.Paths{Dir: p.dir})
	if err != nil {
		t.Fatal(err)
	}
	got := Expiries(certs)
	if len(got) != len(want) {
		t.Errorf("%d expiries, want %d: %v", len(got), len(want), got)
	}
	for n, w := range want {
		if !got[n].Equal(w) {
			t.Errorf("%s expires %v, want %v", n, got[n], w)
		}
	}
	for _, c := range certs {
		wantCA := c.Name == "ca" || c.Name == "etcd-ca" || c.Name == "front-proxy-ca"
		if c.CA != wantCA {
			t.Errorf("%s: CA %v, want %v", c.Name, c.CA, wantCA)
		}
		if c.Missing || c.Err != nil {
			t.Errorf("%s: missing %v err %v", c.Name, c.Missing, c.Err)
		}
	}
	if e, _ := Earliest(certs); e.Name != "admin.conf" {
		t.Errorf("earliest %s, want admin.conf (CAs never count)", e.Name)
	}
}

func TestEarliestIgnoresCAs(t *testing.T) {
	p := newFakePKI(t, now0.Add(300*24*time.Hour), map[string]time.Time{
		"ca": now0.Add(time.Hour), "etcd-server": now0.Add(100 * 24 * time.Hour)})
	certs, _ := Check(kubeadm.Paths{Dir: p.dir})
	e, ok := Earliest(certs)
	if !ok || e.Name != "etcd-server" {
		t.Fatalf("earliest %s (%v), want etcd-server: a CA expiring sooner is not renewable", e.Name, ok)
	}
}

func TestCheckSkipsMissingFilesAndReportsThem(t *testing.T) {
	p := newFakePKI(t, now0.Add(200*24*time.Hour), nil)
	// External etcd: no etcd directory; an old node: no super-admin.conf.
	if err := os.RemoveAll(filepath.Join(p.dir, "pki", "etcd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(p.dir, "super-admin.conf")); err != nil {
		t.Fatal(err)
	}
	certs, err := Check(kubeadm.Paths{Dir: p.dir})
	if err != nil {
		t.Fatalf("missing files are not errors: %v", err)
	}
	var missing []string
	for _, c := range certs {
		if c.Missing {
			missing = append(missing, c.Name)
			if !c.NotAfter.IsZero() {
				t.Errorf("%s missing but has an expiry", c.Name)
			}
		}
	}
	want := []string{"etcd-healthcheck-client", "etcd-peer", "etcd-server", "super-admin.conf", "etcd-ca"}
	if !slices.Equal(missing, want) {
		t.Errorf("missing %v, want %v", missing, want)
	}
	if _, ok := Expiries(certs)["etcd-server"]; ok {
		t.Error("Expiries lists a missing certificate")
	}
}

func TestCheckReportsUnreadableFilesAndGoesOn(t *testing.T) {
	p := newFakePKI(t, now0.Add(200*24*time.Hour), nil)
	writeFile(t, filepath.Join(p.dir, "pki", "apiserver.crt"), []byte("not a certificate"))
	writeFile(t, filepath.Join(p.dir, "scheduler.conf"), []byte("apiVersion: v1\nusers: [{name: u, user: {token: x}}]\n"))
	certs, err := Check(kubeadm.Paths{Dir: p.dir})
	if err == nil || !strings.Contains(err.Error(), "apiserver:") || !strings.Contains(err.Error(), "scheduler.conf:") {
		t.Fatalf("err %v, want it to name apiserver and scheduler.conf", err)
	}
	ok := 0
	for _, c := range certs {
		switch c.Name {
		case "apiserver", "scheduler.conf":
			if c.Err == nil {
				t.Errorf("%s: no Err", c.Name)
			}
		default:
			if c.Err == nil && !c.NotAfter.IsZero() {
				ok++
			}
		}
	}
	if ok != len(Names())-2 {
		t.Errorf("%d certificates read, want the other %d", ok, len(Names())-2)
	}
}

func TestCheckReadsAClientCertificateFileNamedByAKubeconfig(t *testing.T) {
	p := newFakePKI(t, now0.Add(200*24*time.Hour), nil)
	exp := now0.Add(50 * 24 * time.Hour)
	c, _ := p.ca.issue(t, "system:kube-scheduler", exp)
	writeFile(t, filepath.Join(p.dir, "sched.pem"), c)
	writeFile(t, filepath.Join(p.dir, "scheduler.conf"), []byte(
		"apiVersion: v1\nkind: Config\nusers: [{name: s, user: {client-certificate: sched.pem, client-key: sched.pem}}]\n"))
	certs, err := Check(kubeadm.Paths{Dir: p.dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := Expiries(certs)["scheduler.conf"]; !got.Equal(exp) {
		t.Errorf("scheduler.conf expires %v, want %v", got, exp)
	}
}

func TestKubeletRotationEnabled(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, doc string
		want      bool
		err       bool
	}{
		{"on", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: true\n", true, false},
		{"off", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: false\n", false, false},
		{"absent", "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n", false, false},
		{"not kubelet", "kind: Pod\nrotateCertificates: true\n", false, true},
		{"not yaml", "rotateCertificates: [", false, true},
	} {
		path := filepath.Join(dir, c.name+".yaml")
		writeFile(t, path, []byte(c.doc))
		got, err := KubeletRotationEnabled(path)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%s: got %v, %v; want %v, error %v", c.name, got, err, c.want, c.err)
		}
	}
	if _, err := KubeletRotationEnabled(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("no error for a missing file")
	}
}
