package kubeadm

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// CACertHash returns the discovery hash of the cluster CA certificate in PEM
// file path: "sha256:" and the hex SHA-256 of its SubjectPublicKeyInfo, as
// kubeadm prints it for --discovery-token-ca-cert-hash.
func CACertHash(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read CA certificate: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s holds no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("parse CA certificate %s: %w", path, err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// APIServerHealthy asks the API server named in the kubeconfig at path for
// /readyz, trusting only the kubeconfig's CA, and returns nil when it answers ok.
func APIServerHealthy(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) == 0 {
		return fmt.Errorf("%s is not a usable kubeconfig", path)
	}
	c := kc.Clusters[0].Cluster
	caPEM, err := base64.StdEncoding.DecodeString(c.CertificateAuthorityData)
	if err != nil || len(caPEM) == 0 {
		if c.CertificateAuthority == "" {
			return fmt.Errorf("%s has no cluster CA", path)
		}
		if caPEM, err = os.ReadFile(c.CertificateAuthority); err != nil {
			return fmt.Errorf("read cluster CA: %w", err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: cluster CA is not PEM", path)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Server, "/")+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("API server URL in %s: %w", path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("API server %s: %w", c.Server, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server %s is not ready: HTTP %d %s", c.Server, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
