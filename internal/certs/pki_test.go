package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCA issues certificates for a fake pki tree.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(1000 + serial.n)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, cn string, notAfter time.Time) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-10 * 365 * 24 * time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf's PEM certificate and key, valid until notAfter.
func (ca *testCA) issue(t *testing.T, cn string, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// fakePKI is a kubeadm configuration directory with certificates.
type fakePKI struct {
	dir                      string
	ca, etcdCA, frontProxyCA *testCA
}

// leafFiles maps each leaf name to its file (relative) and issuing CA.
var leafFiles = map[string]string{
	"apiserver":                "pki/apiserver",
	"apiserver-kubelet-client": "pki/apiserver-kubelet-client",
	"front-proxy-client":       "pki/front-proxy-client",
	"etcd-server":              "pki/etcd/server",
	"etcd-peer":                "pki/etcd/peer",
	"etcd-healthcheck-client":  "pki/etcd/healthcheck-client",
	"apiserver-etcd-client":    "pki/apiserver-etcd-client",
}

var kubeconfigNames = []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// newFakePKI writes every kubeadm certificate under a temporary directory;
// notAfter gives each name's expiry (names not in it get def).
func newFakePKI(t *testing.T, def time.Time, notAfter map[string]time.Time) *fakePKI {
	t.Helper()
	exp := func(name string) time.Time {
		if e, ok := notAfter[name]; ok {
			return e
		}
		return def
	}
	p := &fakePKI{dir: t.TempDir()}
	p.ca = newCA(t, "kubernetes", exp("ca"))
	p.etcdCA = newCA(t, "etcd-ca", exp("etcd-ca"))
	p.frontProxyCA = newCA(t, "front-proxy-ca", exp("front-proxy-ca"))
	writeFile(t, filepath.Join(p.dir, "pki/ca.crt"), p.ca.pem)
	writeFile(t, filepath.Join(p.dir, "pki/etcd/ca.crt"), p.etcdCA.pem)
	writeFile(t, filepath.Join(p.dir, "pki/front-proxy-ca.crt"), p.frontProxyCA.pem)
	p.reissue(t, exp)
	return p
}

// reissue writes fresh leaves and kubeconfigs (what kubeadm certs renew all does).
func (p *fakePKI) reissue(t *testing.T, exp func(name string) time.Time) {
	t.Helper()
	for name, rel := range leafFiles {
		ca := p.ca
		switch name {
		case "front-proxy-client":
			ca = p.frontProxyCA
		case "etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client":
			ca = p.etcdCA
		}
		c, k := ca.issue(t, name, exp(name))
		writeFile(t, filepath.Join(p.dir, rel+".crt"), c)
		writeFile(t, filepath.Join(p.dir, rel+".key"), k)
	}
	for _, name := range kubeconfigNames {
		c, k := p.ca.issue(t, name, exp(name))
		writeFile(t, filepath.Join(p.dir, name), kubeconfig("https://127.0.0.1:6443", p.ca.pem, c, k))
	}
}

func kubeconfig(server string, ca, cert, key []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: %s
    certificate-authority-data: %s
contexts:
- name: ctx
  context: {cluster: kubernetes, user: admin}
current-context: ctx
users:
- name: other
  user: {token: not-this-one}
- name: admin
  user:
    client-certificate-data: %s
    client-key-data: %s
`, server, b64(ca), b64(cert), b64(key))
}

// tlsCert loads a leaf as a tls.Certificate (to serve it).
func tlsCert(t *testing.T, dir, rel string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, rel+".crt"), filepath.Join(dir, rel+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
