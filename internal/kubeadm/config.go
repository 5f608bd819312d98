package kubeadm

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstraptokenv1 "k8s.io/kubernetes/cmd/kubeadm/app/apis/bootstraptoken/v1"
	"k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/internal/config"
)

// Node is what the agent knows about the machine it runs on.
type Node struct {
	// Name is the Kubernetes node name.
	Name string
	// IP is the node's private IP address (from IMDS).
	IP string
	// ProviderID is the node's spec.providerID, aws:///<zone>/<instance ID>
	// (from IMDS), or "".
	ProviderID string
}

// NodeRegistration builds the nodeRegistration section shared by init and join.
// The kubelet's node-ip is set to the node's private IP and its provider-id
// to the node's providerID unless the configuration already sets them.
func NodeRegistration(k config.KubeadmConfig, node Node) v1beta4.NodeRegistrationOptions {
	nr := v1beta4.NodeRegistrationOptions{
		Name:                  node.Name,
		CRISocket:             k.CRISocket,
		IgnorePreflightErrors: append([]string(nil), k.IgnorePreflightErrors...),
		ImagePullPolicy:       corev1.PullPolicy(k.ImagePullPolicy),
	}
	hasNodeIP, hasProviderID := false, false
	for _, a := range k.KubeletExtraArgs {
		nr.KubeletExtraArgs = append(nr.KubeletExtraArgs, v1beta4.Arg{Name: a.Name, Value: a.Value})
		hasNodeIP = hasNodeIP || a.Name == "node-ip"
		hasProviderID = hasProviderID || a.Name == "provider-id"
	}
	if !hasNodeIP && node.IP != "" {
		nr.KubeletExtraArgs = append(nr.KubeletExtraArgs, v1beta4.Arg{Name: "node-ip", Value: node.IP})
	}
	// The kubelet writes it into the Node object when it registers; it is
	// how cluster-autoscaler and people map a Node to its instance.
	if !hasProviderID && !hasKubeletConfigProviderID(k) && node.ProviderID != "" {
		nr.KubeletExtraArgs = append(nr.KubeletExtraArgs, v1beta4.Arg{Name: "provider-id", Value: node.ProviderID})
	}
	return nr
}

// InitConfig builds the documents for `kubeadm init --config`: an
// InitConfiguration, a ClusterConfiguration and a KubeletConfiguration. kubernetesVersion is always set so kubeadm never
// looks it up on the internet. The returned endpoint is the control-plane
// endpoint written into the configuration.
//
// token, when set, is created by init as the first join token with ttl, so
// that kubeadm does not create a default one the agent does not manage.
func InitConfig(cfg *config.AgentConfig, node Node, token string, ttl time.Duration) (doc []byte, endpoint string, err error) {
	return initConfig(cfg, node, token, ttl, "")
}

// UploadCertsConfig is the configuration of `kubeadm init phase upload-certs
// --upload-certs --config`: the init configuration with certificateKey, so
// that the key never appears on a command line. The file holds a secret.
func UploadCertsConfig(cfg *config.AgentConfig, node Node, certificateKey string) ([]byte, error) {
	doc, _, err := initConfig(cfg, node, "", 0, certificateKey)
	return doc, err
}

func initConfig(cfg *config.AgentConfig, node Node, token string, ttl time.Duration, certificateKey string) (doc []byte, endpoint string, err error) {
	k := cfg.Kubeadm
	advertise := advertiseAddress(cfg, node)
	endpoint, err = ControlPlaneEndpoint(cfg, node)
	if err != nil {
		return nil, "", err
	}
	initCfg := v1beta4.InitConfiguration{
		TypeMeta:         metav1.TypeMeta{APIVersion: v1beta4.SchemeGroupVersion.String(), Kind: "InitConfiguration"},
		NodeRegistration: NodeRegistration(k, node),
		LocalAPIEndpoint: v1beta4.APIEndpoint{AdvertiseAddress: advertise, BindPort: k.BindPort},
		SkipPhases:       append([]string(nil), k.SkipPhases...),
		CertificateKey:   certificateKey,
	}
	if token != "" {
		ts, err := bootstraptokenv1.NewBootstrapTokenString(token)
		if err != nil {
			return nil, "", fmt.Errorf("initial bootstrap token: %w", err)
		}
		initCfg.BootstrapTokens = []bootstraptokenv1.BootstrapToken{{
			Token:       ts,
			TTL:         &metav1.Duration{Duration: ttl},
			Description: TokenDescription(1),
		}}
	}
	clusterCfg := v1beta4.ClusterConfiguration{
		TypeMeta:             metav1.TypeMeta{APIVersion: v1beta4.SchemeGroupVersion.String(), Kind: "ClusterConfiguration"},
		ClusterName:          cfg.Cluster,
		KubernetesVersion:    k.KubernetesVersion,
		ControlPlaneEndpoint: endpoint,
		ImageRepository:      k.ImageRepository,
		Networking:           v1beta4.Networking{PodSubnet: k.PodSubnet, ServiceSubnet: k.ServiceSubnet},
		APIServer:            v1beta4.APIServer{CertSANs: append([]string(nil), k.CertSANs...)},
	}
	docs := []any{initCfg, clusterCfg, KubeletConfiguration(k)}
	out, err := marshalDocuments(docs...)
	if err != nil {
		return nil, "", err
	}
	return out, endpoint, nil
}

// Graceful node shutdown defaults of the kubelet (KubeletConfiguration): a
// plain `shutdown` (or an instance stop) ends the pods cleanly, critical pods
// last. 150 s fits in EC2's two-minute spot window plus the time the
// instance still runs after it, as the EKS AMI chose; the kubelet holds a
// systemd-logind inhibitor lock for it.
const (
	ShutdownGracePeriod             = "150s"
	ShutdownGracePeriodCriticalPods = "30s"
)

// KubeletConfiguration is the kubelet.config.k8s.io/v1beta1 document of
// kubeadm init (cluster-wide: kubeadm uploads it for every node):
// kubeadm.kubeletConfiguration, with the graceful node shutdown defaults
// where it sets neither shutdownGracePeriod nor
// shutdownGracePeriodCriticalPods.
func KubeletConfiguration(k config.KubeadmConfig) map[string]any {
	kc := make(map[string]any, len(k.KubeletConfiguration)+4)
	for name, v := range k.KubeletConfiguration {
		kc[name] = v
	}
	_, grace := kc["shutdownGracePeriod"]
	_, critical := kc["shutdownGracePeriodCriticalPods"]
	if !grace && !critical {
		kc["shutdownGracePeriod"], kc["shutdownGracePeriodCriticalPods"] = ShutdownGracePeriod, ShutdownGracePeriodCriticalPods
	}
	kc["apiVersion"], kc["kind"] = "kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"
	return kc
}

// ControlPlaneEndpoint is the endpoint of the cluster's API server, the one
// place it is derived: kubeadm.controlPlaneEndpoint when set, else the
// advertise address (default: the node's private IP) with the bind port.
func ControlPlaneEndpoint(cfg *config.AgentConfig, node Node) (string, error) {
	if cfg.Kubeadm.ControlPlaneEndpoint != "" {
		return cfg.Kubeadm.ControlPlaneEndpoint, nil
	}
	addr := advertiseAddress(cfg, node)
	if addr == "" {
		return "", fmt.Errorf("no control-plane endpoint: set kubeadm.controlPlaneEndpoint or kubeadm.advertiseAddress, or run where IMDS gives the private IP")
	}
	return net.JoinHostPort(addr, strconv.Itoa(int(cfg.Kubeadm.BindPort))), nil
}

func advertiseAddress(cfg *config.AgentConfig, node Node) string {
	if cfg.Kubeadm.AdvertiseAddress != "" {
		return cfg.Kubeadm.AdvertiseAddress
	}
	return node.IP
}

// tokenDescriptionPrefix starts the description of every token kubestrap makes.
const tokenDescriptionPrefix = "kubestrap join token"

// TokenDescription is the description kubestrap gives the join token of a generation.
func TokenDescription(generation int64) string {
	return fmt.Sprintf("%s, generation %d", tokenDescriptionPrefix, generation)
}

// IsKubestrapToken reports whether a token's description says kubestrap made it.
func IsKubestrapToken(description string) bool {
	return strings.HasPrefix(description, tokenDescriptionPrefix)
}

// JoinOptions are the discovery parameters of a join.
type JoinOptions struct {
	APIServerEndpoint string
	Token             string
	CACertHashes      []string
	// ControlPlane makes it a control-plane join: this node serves the API
	// (on its advertise address and kubeadm.bindPort) and gets the cluster's
	// certificates from the kubeadm-certs Secret, decrypted with
	// CertificateKey.
	ControlPlane   bool
	CertificateKey string
}

// JoinConfig builds the JoinConfiguration for `kubeadm join --config`, with
// token discovery pinned to the given CA hashes (never unsafe skip).
func JoinConfig(cfg *config.AgentConfig, node Node, opts JoinOptions) ([]byte, error) {
	k := cfg.Kubeadm
	jc := v1beta4.JoinConfiguration{
		TypeMeta:         metav1.TypeMeta{APIVersion: v1beta4.SchemeGroupVersion.String(), Kind: "JoinConfiguration"},
		NodeRegistration: NodeRegistration(k, node),
		Discovery: v1beta4.Discovery{
			BootstrapToken: &v1beta4.BootstrapTokenDiscovery{
				APIServerEndpoint: opts.APIServerEndpoint,
				Token:             opts.Token,
				CACertHashes:      append([]string(nil), opts.CACertHashes...),
			},
		},
		Timeouts: &v1beta4.Timeouts{
			Discovery: &metav1.Duration{Duration: k.DiscoveryTimeout.Duration},
		},
	}
	if opts.ControlPlane {
		jc.ControlPlane = &v1beta4.JoinControlPlane{
			LocalAPIEndpoint: v1beta4.APIEndpoint{AdvertiseAddress: advertiseAddress(cfg, node), BindPort: k.BindPort},
			CertificateKey:   opts.CertificateKey,
		}
	}
	return marshalDocuments(jc)
}

func marshalDocuments(docs ...any) ([]byte, error) {
	var buf bytes.Buffer
	for i, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("encode kubeadm configuration: %w", err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

// hasKubeletConfigProviderID says whether kubeadm.kubeletConfiguration sets providerID.
func hasKubeletConfigProviderID(k config.KubeadmConfig) bool {
	_, ok := k.KubeletConfiguration["providerID"]
	return ok
}
