package kubeadm

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// Default paths kubeadm writes on a node.
const (
	AdminKubeconfig   = "/etc/kubernetes/admin.conf"
	KubeletKubeconfig = "/etc/kubernetes/kubelet.conf"
	CACertPath        = "/etc/kubernetes/pki/ca.crt"
	// EtcdDataDir is where kubeadm's local etcd keeps its data.
	EtcdDataDir = "/var/lib/etcd"
)

// Paths are the files kubeadm writes under its configuration directory
// (kubeadm.configDir, /etc/kubernetes by default): the one place the agent
// derives them from.
type Paths struct {
	Dir string
}

// Admin is admin.conf, written by kubeadm init.
func (p Paths) Admin() string { return filepath.Join(p.Dir, "admin.conf") }

// Kubelet is kubelet.conf, the node's kubeconfig after init or join.
func (p Paths) Kubelet() string { return filepath.Join(p.Dir, "kubelet.conf") }

// CACert is the cluster CA certificate.
func (p Paths) CACert() string { return filepath.Join(p.Dir, "pki", "ca.crt") }

// CAKey is the cluster CA key: only a control-plane node has it.
func (p Paths) CAKey() string { return filepath.Join(p.Dir, "pki", "ca.key") }

// APIServerManifest is the kube-apiserver static Pod manifest.
func (p Paths) APIServerManifest() string {
	return filepath.Join(p.Dir, "manifests", "kube-apiserver.yaml")
}

type kubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server                   string `json:"server"`
			CertificateAuthority     string `json:"certificate-authority"`
			CertificateAuthorityData string `json:"certificate-authority-data"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		User struct {
			ClientCertificate     string `json:"client-certificate"`
			ClientCertificateData string `json:"client-certificate-data"`
			Token                 string `json:"token"`
		} `json:"user"`
	} `json:"users"`
}

// CheckKubeconfig reports why the kubeconfig at path is not usable by a node
// (missing, unparsable, no server, no CA or no credentials), or nil.
func CheckKubeconfig(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return fmt.Errorf("%s is not a kubeconfig: %w", path, err)
	}
	if len(kc.Clusters) == 0 || kc.Clusters[0].Cluster.Server == "" {
		return fmt.Errorf("%s names no API server", path)
	}
	c := kc.Clusters[0].Cluster
	if c.CertificateAuthority == "" && c.CertificateAuthorityData == "" {
		return fmt.Errorf("%s has no cluster CA", path)
	}
	if len(kc.Users) == 0 {
		return fmt.Errorf("%s has no user credentials", path)
	}
	u := kc.Users[0].User
	if u.ClientCertificate == "" && u.ClientCertificateData == "" && u.Token == "" {
		return fmt.Errorf("%s has no user credentials", path)
	}
	return nil
}
