//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubestrap/kubestrap/internal/etcdmember"
)

// etcdPKI writes a throwaway etcd CA and, in kubeadm's layout under dir,
// pki/etcd/ca.crt, pki/etcd/server.{crt,key} and pki/etcd/peer.{crt,key}
// (both usages, IP SANs 127.0.0.1 to 127.0.0.3: one loopback address per
// member, as each node has its IP) and pki/apiserver-etcd-client.{crt,key}.
func etcdPKI(t *testing.T, dir string) {
	t.Helper()
	write := func(rel string, typ string, der []byte) {
		path := filepath.Join(dir, "pki", rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write("etcd/ca.crt", "CERTIFICATE", caDER)
	issue := func(serial int64, cn, base string, usages ...x509.ExtKeyUsage) {
		key := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages,
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"),
				net.ParseIP("127.0.0.2"), net.ParseIP("127.0.0.3")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(base+".crt", "CERTIFICATE", der)
		write(base+".key", "EC PRIVATE KEY", keyDER)
	}
	issue(2, "etcd-server", "etcd/server", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	issue(3, "etcd-peer", "etcd/peer", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	issue(4, "kube-apiserver-etcd-client", "apiserver-etcd-client", x509.ExtKeyUsageClientAuth)
}

// shmDir is a directory on tmpfs (/dev/shm) when it is usable, else under
// t.TempDir(); it is removed at cleanup.
func shmDir(t *testing.T) string {
	t.Helper()
	if dir, err := os.MkdirTemp("/dev/shm", "kubestrap-etcdmember-"); err == nil {
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		return dir
	}
	return t.TempDir()
}

type etcdNode struct {
	name, ip, clientURL, peerURL string
	proc                         *process
}

// kill9 kills n's etcd with SIGKILL (by its PID: a process this test
// started) and reaps it.
func (n *etcdNode) kill9(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(n.proc.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", n.name, err)
	}
	done := make(chan struct{})
	go func() { _ = n.proc.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not die after SIGKILL", n.name)
	}
}

func memberNames(ms []etcdmember.Member) string {
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// TestEtcdMemberRemoveIfSafe runs three real etcd members (kubeadm's
// v3.7.3) on loopback with client and peer TLS and client certificate
// authentication, kills members with SIGKILL and checks what RemoveIfSafe
// does.
func TestEtcdMemberRemoveIfSafe(t *testing.T) {
	kb := requireEnvDir(t, "KUBE_BIN")
	etcdBin := filepath.Join(kb, "etcd")
	dir := shmDir(t)
	etcdPKI(t, dir)
	p := func(rel string) string { return filepath.Join(dir, "pki", rel) }

	nodes := make([]*etcdNode, 3)
	var initial []string
	for i := range nodes {
		// cp-i on 127.0.0.(i+1), as if each had its node IP.
		nodes[i] = &etcdNode{name: fmt.Sprintf("cp-%d", i), ip: fmt.Sprintf("127.0.0.%d", i+1)}
		nodes[i].clientURL = fmt.Sprintf("https://%s:%d", nodes[i].ip, freePort(t))
		nodes[i].peerURL = fmt.Sprintf("https://%s:%d", nodes[i].ip, freePort(t))
		initial = append(initial, nodes[i].name+"="+nodes[i].peerURL)
	}
	env := cleanEnv(t)
	for _, n := range nodes {
		n.proc = startProcess(t, "etcd-"+n.name, env, etcdBin, "--name="+n.name,
			"--data-dir="+filepath.Join(dir, n.name), "--log-level=warn",
			"--listen-client-urls="+n.clientURL, "--advertise-client-urls="+n.clientURL,
			"--listen-peer-urls="+n.peerURL, "--initial-advertise-peer-urls="+n.peerURL,
			"--initial-cluster="+strings.Join(initial, ","), "--initial-cluster-state=new",
			"--initial-cluster-token=kubestrap-etcdmember", "--listen-metrics-urls=",
			"--heartbeat-interval=100", "--election-timeout=1000",
			"--cert-file="+p("etcd/server.crt"), "--key-file="+p("etcd/server.key"),
			"--trusted-ca-file="+p("etcd/ca.crt"), "--client-cert-auth=true",
			"--peer-cert-file="+p("etcd/peer.crt"), "--peer-key-file="+p("etcd/peer.key"),
			"--peer-trusted-ca-file="+p("etcd/ca.crt"), "--peer-client-cert-auth=true")
	}

	// The client as the node cleanup makes it (NewKubeadm's files), on
	// cp-0's endpoint instead of 127.0.0.1:2379.
	tlsCfg, err := etcdmember.TLSFromFiles(p("etcd/ca.crt"), p("apiserver-etcd-client.crt"), p("apiserver-etcd-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := etcdmember.New(etcdmember.Config{Endpoints: []string{nodes[0].clientURL}, TLS: tlsCfg,
		Timeout: 10 * time.Second, HealthTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	waitFor(t, "three healthy etcd members", 90*time.Second, func() error {
		ms, err := c.Members(ctx)
		if err != nil {
			return err
		}
		if got := memberNames(ms); got != "cp-0,cp-1,cp-2" {
			return fmt.Errorf("members %q", got)
		}
		for _, m := range ms {
			if !c.Healthy(ctx, m) {
				return fmt.Errorf("%s not healthy yet", m)
			}
		}
		return nil
	})

	// The gateway's JSON as this etcd answers it (logged for the record).
	raw := func(method, url, body string) (int, string) {
		t.Helper()
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		defer hc.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		t.Logf("%s %s %s -> %d %s", method, url, body, resp.StatusCode, bytes.TrimSpace(b))
		return resp.StatusCode, string(b)
	}
	if code, body := raw(http.MethodPost, nodes[0].clientURL+"/v3/cluster/member/list", "{}"); code != 200 ||
		!strings.Contains(body, `"member_id":"`) || !strings.Contains(body, `"ID":"`) || !strings.Contains(body, `"peerURLs":["https://127.0.0.2:`) {
		t.Fatalf("member list: %d %s", code, body)
	}
	if code, body := raw(http.MethodGet, nodes[1].clientURL+"/health", ""); code != 200 || !strings.Contains(body, `"health":"true"`) {
		t.Fatalf("/health: %d %s", code, body)
	}
	// A remove of an unknown ID: what RemoveIfSafe takes for "removed meanwhile".
	if code, body := raw(http.MethodPost, nodes[0].clientURL+"/v3/cluster/member/remove", `{"ID":"1"}`); code != 404 ||
		!strings.Contains(body, `"code":5`) || !strings.Contains(body, "member not found") {
		t.Fatalf("remove of an unknown member: %d %s", code, body)
	}

	// A learner added by a join that never started (no name, no client
	// URLs), found by its peer host alone, dead: removed (3 healthy voters).
	learnerPeer := fmt.Sprintf("https://127.0.0.9:%d", freePort(t))
	// etcd refuses reconfigurations ("unhealthy cluster") until its peers
	// have been connected for 5 s.
	waitFor(t, "the learner added", 30*time.Second, func() error {
		code, body := raw(http.MethodPost, nodes[0].clientURL+"/v3/cluster/member/add",
			`{"peerURLs":["`+learnerPeer+`"],"isLearner":true}`)
		if code != 200 || !strings.Contains(body, `"isLearner":true`) {
			time.Sleep(time.Second)
			return fmt.Errorf("member add: %d %s", code, body)
		}
		return nil
	})
	r, err := c.RemoveIfSafe(ctx, etcdmember.Target{Name: "ip-127-0-0-9", PeerHost: "127.0.0.9"})
	t.Logf("unstarted learner: %s by %q: %s (err %v)", r.Decision, r.MatchedBy, r.Reason, err)
	if err != nil || r.Decision != etcdmember.Removed || !r.Member.IsLearner || r.MatchedBy != "peer host" || r.Voters != 3 || r.Healthy != 3 {
		t.Fatalf("unstarted learner: %+v, %v", r, err)
	}

	// A live member is refused, the local one too (by name or peer host).
	for _, tc := range []struct {
		target etcdmember.Target
		reason string
	}{
		{etcdmember.Target{Name: "cp-1"}, "it is alive"},
		{etcdmember.Target{Name: "cp-0"}, "local member"},
		{etcdmember.Target{PeerHost: "127.0.0.1"}, "local member"},
	} {
		r, err := c.RemoveIfSafe(ctx, tc.target)
		t.Logf("%s: %s: %s (err %v)", tc.target, r.Decision, r.Reason, err)
		if err != nil || r.Decision != etcdmember.Refused || !strings.Contains(r.Reason, tc.reason) {
			t.Fatalf("%s: %+v, %v", tc.target, r, err)
		}
	}

	// cp-2 dies: 2 healthy of quorum(3)=2, removed.
	nodes[2].kill9(t)
	var removed etcdmember.Result
	waitFor(t, "RemoveIfSafe(cp-2) to remove the dead member", 30*time.Second, func() error {
		r, err := c.RemoveIfSafe(ctx, etcdmember.Target{Name: "cp-2", PeerHost: "127.0.0.3"})
		t.Logf("dead cp-2: %s by %q: %s (err %v)", r.Decision, r.MatchedBy, r.Reason, err)
		switch {
		case err != nil:
			return err // say, etcd's own check right after the kill: retried
		case r.Decision != etcdmember.Removed:
			// Killing the leader leaves the others without one for an
			// election ("leader changed"): refused until they are
			// healthy again, as the node cleanup retries at its next pass.
			return fmt.Errorf("%s: %s", r.Decision, r.Reason)
		}
		removed = r
		return nil
	})
	if removed.Member.Name != "cp-2" || removed.MatchedBy != "name and peer host" || removed.Voters != 3 || removed.Healthy != 2 {
		t.Errorf("removed %+v", removed)
	}
	ms, err := c.Members(ctx)
	if err != nil || memberNames(ms) != "cp-0,cp-1" {
		t.Fatalf("members after the removal: %v, %v", ms, err)
	}
	r, err = c.RemoveIfSafe(ctx, etcdmember.Target{Name: "cp-2"})
	if err != nil || r.Decision != etcdmember.NotFound {
		t.Fatalf("cp-2 again: %+v, %v", r, err)
	}
	waitFor(t, "cp-1 healthy in the 2-member cluster", 30*time.Second, func() error {
		for _, m := range ms {
			if !c.Healthy(ctx, m) {
				return fmt.Errorf("%s not healthy", m)
			}
		}
		return nil
	})
	if r, err := c.RemoveIfSafe(ctx, etcdmember.Target{Name: "cp-1"}); err != nil || r.Decision != etcdmember.Refused ||
		!strings.Contains(r.Reason, "alive") {
		t.Fatalf("live cp-1 of 2: %+v, %v", r, err)
	}

	// cp-1 dies too: the 2-member cluster has lost quorum (1 of 2); a
	// remove could not commit, so RemoveIfSafe refuses before trying.
	nodes[1].kill9(t)
	start := time.Now()
	r, err = c.RemoveIfSafe(ctx, etcdmember.Target{Name: "cp-1"})
	t.Logf("dead cp-1 of 2: %s: %s (err %v, %s)", r.Decision, r.Reason, err, time.Since(start))
	if err != nil || r.Decision != etcdmember.Refused || r.Voters != 2 || r.Healthy != 0 ||
		!strings.Contains(r.Reason, "the quorum of the 2 voting members (2) must commit") {
		t.Fatalf("dead cp-1 of 2: %+v, %v", r, err)
	}
	if time.Since(start) > 15*time.Second {
		t.Errorf("the refusal took %s", time.Since(start))
	}
	// The member list (served by cp-0 without quorum) still has both.
	if ms, err := c.Members(ctx); err != nil || memberNames(ms) != "cp-0,cp-1" {
		t.Fatalf("members after the refusal: %v, %v", ms, err)
	}
}
