// Package certs watches the certificates kubeadm issued on a control-plane
// node and renews them before they expire: Check reads every expiry from
// the files, the Renewer runs `kubeadm certs renew all` below a threshold
// and restarts the static control-plane pods so that they load the new
// certificates, and KubeletRotationEnabled asserts that the kubelet keeps
// rotating its own client certificate.
//
// kubeadm issues its leaf certificates for one year and its CAs for ten; a
// cluster that is never upgraded (an upgrade renews them) stops on the day
// the first leaf expires. kubeadm cannot renew a CA, so CAs are reported
// only.
package certs

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

// Cert is one kubeadm-managed certificate.
type Cert struct {
	// Name as `kubeadm certs check-expiration` prints it (apiserver,
	// admin.conf, etcd-ca ...).
	Name string
	// Path is the certificate file, or the kubeconfig that embeds it.
	Path string
	// CA certificates are reported, never renewed (kubeadm cannot).
	CA bool
	// Missing: the file does not exist on this node (external etcd has no
	// etcd certificates, a node made before v1.29 no super-admin.conf).
	Missing bool
	// NotAfter is the expiry (zero when Missing or Err).
	NotAfter time.Time
	// Err: the file exists but holds no readable certificate.
	Err error
}

// source is where kubeadm keeps one certificate.
type source struct {
	name, rel  string
	kubeconfig bool
	ca         bool
}

// sources lists what `kubeadm certs check-expiration` lists, in its order:
// the certificates, then the CAs.
var sources = []source{
	{name: "admin.conf", rel: "admin.conf", kubeconfig: true},
	{name: "apiserver", rel: "pki/apiserver.crt"},
	{name: "apiserver-etcd-client", rel: "pki/apiserver-etcd-client.crt"},
	{name: "apiserver-kubelet-client", rel: "pki/apiserver-kubelet-client.crt"},
	{name: "controller-manager.conf", rel: "controller-manager.conf", kubeconfig: true},
	{name: "etcd-healthcheck-client", rel: "pki/etcd/healthcheck-client.crt"},
	{name: "etcd-peer", rel: "pki/etcd/peer.crt"},
	{name: "etcd-server", rel: "pki/etcd/server.crt"},
	{name: "front-proxy-client", rel: "pki/front-proxy-client.crt"},
	{name: "scheduler.conf", rel: "scheduler.conf", kubeconfig: true},
	{name: "super-admin.conf", rel: "super-admin.conf", kubeconfig: true},
	{name: "ca", rel: "pki/ca.crt", ca: true},
	{name: "etcd-ca", rel: "pki/etcd/ca.crt", ca: true},
	{name: "front-proxy-ca", rel: "pki/front-proxy-ca.crt", ca: true},
}

// Names are the certificate names Check reports, in order.
func Names() []string {
	n := make([]string, len(sources))
	for i, s := range sources {
		n[i] = s.name
	}
	return n
}

// IsCA says whether name (one of Names()) is a certificate authority, which
// kubeadm cannot renew.
func IsCA(name string) bool {
	for _, s := range sources {
		if s.name == name {
			return s.ca
		}
	}
	return false
}

// Check reads the expiry of every kubeadm-managed certificate under the
// configuration directory (paths.Dir: pki/ and the kubeconfig files). It
// returns one Cert per name in Names(), missing files marked Missing; the
// error joins the files that exist but could not be read (their Cert has
// Err set), and the other Certs are valid either way.
func Check(paths kubeadm.Paths) ([]Cert, error) {
	var errs []error
	out := make([]Cert, 0, len(sources))
	for _, s := range sources {
		c := Cert{Name: s.name, Path: filepath.Join(paths.Dir, filepath.FromSlash(s.rel)), CA: s.ca}
		var cert *x509.Certificate
		var err error
		if s.kubeconfig {
			cert, err = kubeconfigCert(c.Path)
		} else {
			cert, err = ReadCert(c.Path)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.Missing = true
		case err != nil:
			c.Err = err
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		default:
			c.NotAfter = cert.NotAfter
		}
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// Expiries maps the name of every certificate that was read to its expiry.
func Expiries(certs []Cert) map[string]time.Time {
	m := make(map[string]time.Time, len(certs))
	for _, c := range certs {
		if !c.Missing && c.Err == nil {
			m[c.Name] = c.NotAfter
		}
	}
	return m
}

// Earliest returns the renewable (non-CA) certificate that expires first,
// and false when none was read.
func Earliest(certs []Cert) (Cert, bool) {
	var best Cert
	found := false
	for _, c := range certs {
		if c.CA || c.Missing || c.Err != nil {
			continue
		}
		if !found || c.NotAfter.Before(best.NotAfter) {
			best, found = c, true
		}
	}
	return best, found
}

// ReadCert parses the first PEM certificate of the file at path.
func ReadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parsePEM(b, path)
}

func parsePEM(b []byte, what string) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", what)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate in %s: %w", what, err)
		}
		return cert, nil
	}
}

// kubeconfigFile is the part of a kubeconfig that names a client certificate.
type kubeconfigFile struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			User string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
		} `json:"user"`
	} `json:"users"`
}

// kubeconfigCert returns the client certificate of the kubeconfig at path
// (the current context's user, else the first): embedded, as kubeadm
// writes them, or in a file the kubeconfig names.
func kubeconfigCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kc kubeconfigFile
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("%s is not a kubeconfig: %w", path, err)
	}
	if len(kc.Users) == 0 {
		return nil, fmt.Errorf("%s has no user", path)
	}
	user := kc.Users[0].User
	for _, c := range kc.Contexts {
		if c.Name != kc.CurrentContext {
			continue
		}
		for _, u := range kc.Users {
			if u.Name == c.Context.User {
				user = u.User
			}
		}
	}
	switch {
	case user.ClientCertificateData != "":
		der, err := base64.StdEncoding.DecodeString(user.ClientCertificateData)
		if err != nil {
			return nil, fmt.Errorf("%s: client-certificate-data: %w", path, err)
		}
		return parsePEM(der, path+" client-certificate-data")
	case user.ClientCertificate != "":
		p := user.ClientCertificate
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), p)
		}
		cert, err := ReadCert(p)
		if errors.Is(err, fs.ErrNotExist) {
			// The kubeconfig exists; its certificate file does not: that is broken, not missing.
			return nil, fmt.Errorf("%s names client certificate %s, which does not exist", path, p)
		}
		return cert, err
	}
	return nil, fmt.Errorf("%s has no client certificate", path)
}

// KubeletRotationEnabled reports whether the KubeletConfiguration at path
// (/var/lib/kubelet/config.yaml) has the kubelet rotate its client
// certificate (rotateCertificates: true, what kubeadm writes): the kubelet
// then renews kubelet-client-current.pem itself before it expires, and
// kubeadm's certificate renewal does not cover it.
func KubeletRotationEnabled(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read kubelet configuration: %w", err)
	}
	var kc struct {
		Kind               string `json:"kind"`
		RotateCertificates *bool  `json:"rotateCertificates"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return false, fmt.Errorf("parse kubelet configuration %s: %w", path, err)
	}
	if kc.Kind != "KubeletConfiguration" {
		return false, fmt.Errorf("%s is not a KubeletConfiguration (kind %q)", path, kc.Kind)
	}
	// The kubelet's default is false: absent means off.
	return kc.RotateCertificates != nil && *kc.RotateCertificates, nil
}
