package kubeadm

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"
)

// Default paths kubeadm writes on a node.
const (
	AdminKubeconfig   = "/etc/kubernetes/admin.conf"
	KubeletKubeconfig = "/etc/kubernetes/kubelet.conf"
	CACertPath        = "/etc/kubernetes/pki/ca.crt"
)

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
