//go:build e2e

package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/certs"
)

// servedCert returns the API server certificate's "expire date" as curl
// sees it from the aws host, and its serial.
func servedCert(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+prefix+"-aws", "--", "curl", "-skv", "--max-time", "5", "-o", "/dev/null", "https://10.200.0.10:6443/livez")
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`expire date: (.*)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("no certificate from the API server:\n%s", out)
	}
	return strings.TrimSpace(m[1])
}

// The control plane's certificates, issued by the test with ten days left
// (kubeadm's certificateValidityPeriod set to 240h for one `kubeadm certs
// renew all`, then back to a year): the agent sees them within its 30-day
// threshold at its next check (its start), renews them with kubeadm,
// restarts the static control-plane pods one at a time, and the API server
// then presents the new certificate; the workers stay Ready throughout, the
// Node has a CertificatesRenewed event and the expiry is in the metrics.
func TestCertificatesNearExpiryAreRenewed(t *testing.T) {
	setValidity := func(d string) {
		t.Helper()
		cm := kubectl(t, "-n", "kube-system", "get", "configmap", "kubeadm-config", "-o", "jsonpath={.data.ClusterConfiguration}")
		cm = regexp.MustCompile(`(?m)^certificateValidityPeriod: .*\n`).ReplaceAllString(cm, "")
		cm += "certificateValidityPeriod: " + d + "\n"
		patch := fmt.Sprintf(`{"data":{"ClusterConfiguration":%s}}`, strconv.Quote(cm))
		kubectl(t, "-n", "kube-system", "patch", "configmap", "kubeadm-config", "--type", "merge", "-p", patch)
	}
	setValidity("240h0m0s")
	t.Cleanup(func() { setValidity("8760h0m0s") })
	if out, err := inNode("cp", "kubeadm", "certs", "renew", "all"); err != nil {
		t.Fatalf("kubeadm certs renew all (short lifetime): %v\n%s", err, out)
	}
	setValidity("8760h0m0s")
	short, err := certNotAfter(nodeFile("cp", "/etc/kubernetes/pki/apiserver.crt"))
	if err != nil || time.Until(short) > 11*24*time.Hour {
		t.Fatalf("the test's short-lived apiserver certificate expires %s (%v), want within 10 days", short, err)
	}
	before := servedCert(t)
	t.Logf("served certificate before the agent's check: expires %s (file: %s)", before, short)

	// The workers Ready now must stay Ready throughout.
	readyBefore := map[string]bool{}
	for name, n := range nodes(t) {
		if strings.HasPrefix(name, "w") && n.ready() {
			readyBefore[name] = true
		}
	}
	for _, n := range []string{"cp", "w1", "w2"} {
		on, err := certs.KubeletRotationEnabled(nodeFile(n, "/var/lib/kubelet/config.yaml"))
		if err != nil || !on {
			t.Errorf("%s: the kubelet's client certificate rotation is off (%v): kubeadm's default must stay", n, err)
		}
	}
	start := time.Now()
	systemctl(t, "cp", "restart", "kubestrap")
	notReady := map[string]bool{}
	eventually(t, 6*time.Minute, "the agent renewed the certificates, restarted the static pods, and the API server serves the new certificate", func() (bool, string) {
		for name, n := range nodes(t) {
			if readyBefore[name] && !n.ready() {
				notReady[name] = true
			}
		}
		served := servedCert(t)
		exp, err := time.Parse("Jan 2 15:04:05 2006 MST", strings.Join(strings.Fields(served), " "))
		renewed := agentState(t, "cp").CertificatesRenewedAt
		return err == nil && time.Until(exp) > 300*24*time.Hour && renewed.After(start),
			fmt.Sprintf("served expiry %s, certificatesRenewedAt %s", served, renewed)
	})
	t.Logf("renewed and served %s after the agent's restart", time.Since(start).Round(time.Second))
	for name := range notReady {
		t.Errorf("worker %s was NotReady during the renewal", name)
	}
	if n := len(logEntries(t, "cp", "kubeadm certificates renewed and loaded by the control plane")); n == 0 {
		t.Errorf("cp: no \"kubeadm certificates renewed and loaded by the control plane\" journal entry")
	}
	events := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name=cp,reason=CertificatesRenewed", "--no-headers")
	if strings.TrimSpace(events) == "" {
		t.Errorf("cp: no CertificatesRenewed event on its Node")
	}
	if v := sum(scrape(t, "cp"), "kubestrap_certificate_expiry_timestamp_seconds", `cert="apiserver"`); time.Until(time.Unix(int64(v), 0)) < 300*24*time.Hour {
		t.Errorf("cp: kubestrap_certificate_expiry_timestamp_seconds{cert=\"apiserver\"} = %v, want the renewed expiry", v)
	}
}

// certNotAfter reads a PEM certificate file's expiry.
func certNotAfter(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return time.Time{}, fmt.Errorf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return c.NotAfter, nil
}
