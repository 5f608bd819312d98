// Package config loads and validates the kubestrap agent configuration file
// (apiVersion kubestrap.dev/v1alpha1, kind AgentConfig).
//
// Decoding is strict: unknown keys, duplicate keys and wrongly typed values are
// errors that name the offending field. Defaults are applied before decoding,
// so a key absent from the file keeps its default.
package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kubestrap/kubestrap/internal/version"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// APIVersion and Kind identify an agent configuration file.
const (
	APIVersion = "kubestrap.dev/v1alpha1"
	Kind       = "AgentConfig"
)

// DefaultPath is where `kubestrap run` looks for its configuration.
const DefaultPath = "/etc/kubestrap/config.yaml"

// Role is the part a node plays in the cluster.
type Role string

// The roles an agent can take.
const (
	RoleControlPlane Role = "control-plane"
	RoleWorker       Role = "worker"
)

// AgentConfig is the whole configuration file.
type AgentConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Cluster names the cluster; it is also the S3 key prefix.
	Cluster string `json:"cluster"`
	Role    Role   `json:"role"`
	// Bucket holds the join info at <cluster>/join.json.
	Bucket string `json:"bucket"`
	// StateDir holds state.json and the generated kubeadm configuration.
	StateDir string `json:"stateDir"`
	// NodeName overrides the Kubernetes node name (default: the host name).
	NodeName string `json:"nodeName,omitempty"`

	AWS          AWSConfig          `json:"aws"`
	Kubeadm      KubeadmConfig      `json:"kubeadm"`
	ControlPlane ControlPlaneConfig `json:"controlPlane"`
	Worker       WorkerConfig       `json:"worker"`
	ECR          ECRConfig          `json:"ecr"`
	Metrics      MetricsConfig      `json:"metrics"`
	Leave        LeaveConfig        `json:"leave"`
}

// LeaveConfig drives how a worker leaves: the agent watches the instance
// metadata service for a spot interruption, an Auto Scaling termination
// (target lifecycle state Terminated) or a rebalance recommendation; on a
// termination it cordons the node and evicts its pods before the deadline,
// on a rebalance it only cordons.
type LeaveConfig struct {
	// Enabled turns the watch on (default true; workers only).
	Enabled bool `json:"enabled"`
	// PollInterval spaces the metadata reads (default 5s).
	PollInterval Duration `json:"pollInterval"`
	// LifecycleHookName is the worker group's termination lifecycle hook
	// (Terraform output worker_lifecycle_hook_name): when set, the agent
	// sends heartbeats while it drains and completes the action (CONTINUE).
	LifecycleHookName string `json:"lifecycleHookName,omitempty"`
	// AutoScalingGroupName is the worker group (Terraform output
	// worker_asg_name); default: looked up with DescribeAutoScalingInstances.
	AutoScalingGroupName string `json:"autoScalingGroupName,omitempty"`
	// LifecycleHeartbeatTimeout is the hook's heartbeat timeout (default
	// 300s): the drain's budget after an Auto Scaling termination notice.
	LifecycleHeartbeatTimeout Duration `json:"lifecycleHeartbeatTimeout"`
}

// AWSConfig overrides what normally comes from IMDS and the SDK defaults.
type AWSConfig struct {
	// Region overrides the region read from IMDS.
	Region string `json:"region,omitempty"`
	// S3UsePathStyle addresses buckets by path, as S3 emulators need.
	S3UsePathStyle bool `json:"s3UsePathStyle,omitempty"`
	// IMDSTimeout bounds how long start-up waits for the instance metadata service.
	IMDSTimeout Duration `json:"imdsTimeout,omitempty"`
}

// Arg is a command-line argument for a Kubernetes component, as in kubeadm v1beta4.
type Arg struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// KubeadmConfig says how to run kubeadm and what to put in its configuration.
type KubeadmConfig struct {
	// Path is the kubeadm binary: absolute, or a name looked up on PATH.
	Path string `json:"path"`
	// ConfigDir is where kubeadm writes admin.conf, kubelet.conf and pki/
	// (default /etc/kubernetes; change it only where kubeadm's root differs, as in tests).
	ConfigDir string `json:"configDir,omitempty"`
	// KubernetesVersion is always written to the generated configuration so kubeadm
	// never looks it up on the internet.
	KubernetesVersion string `json:"kubernetesVersion"`
	// ControlPlaneEndpoint is host:port (default: the instance's private IP and BindPort).
	ControlPlaneEndpoint string `json:"controlPlaneEndpoint,omitempty"`
	// AdvertiseAddress is the API server's advertise address (default: the private IP).
	AdvertiseAddress string   `json:"advertiseAddress,omitempty"`
	BindPort         int32    `json:"bindPort,omitempty"`
	PodSubnet        string   `json:"podSubnet,omitempty"`
	ServiceSubnet    string   `json:"serviceSubnet,omitempty"`
	CRISocket        string   `json:"criSocket,omitempty"`
	ImageRepository  string   `json:"imageRepository,omitempty"`
	CertSANs         []string `json:"certSANs,omitempty"`
	// ImagePullPolicy is Always, IfNotPresent or Never.
	ImagePullPolicy       string   `json:"imagePullPolicy,omitempty"`
	IgnorePreflightErrors []string `json:"ignorePreflightErrors,omitempty"`
	// SkipPhases are kubeadm init phases to skip (for example addon/kube-proxy).
	SkipPhases       []string `json:"skipPhases,omitempty"`
	KubeletExtraArgs []Arg    `json:"kubeletExtraArgs,omitempty"`
	// KubeletConfiguration, when set, is written as a kubelet.config.k8s.io/v1beta1
	// KubeletConfiguration document for init; its field names are checked strictly.
	KubeletConfiguration map[string]any `json:"kubeletConfiguration,omitempty"`
	// InitTimeout and JoinTimeout bound one kubeadm init or join run.
	InitTimeout Duration `json:"initTimeout,omitempty"`
	JoinTimeout Duration `json:"joinTimeout,omitempty"`
	// DiscoveryTimeout bounds kubeadm's wait for a valid cluster-info signature.
	DiscoveryTimeout Duration `json:"discoveryTimeout,omitempty"`
}

// ControlPlaneConfig drives kubeadm init and the join token lifecycle.
type ControlPlaneConfig struct {
	// TokenTTL is the life of each bootstrap token; join info is refreshed at half-life.
	TokenTTL Duration `json:"tokenTTL"`
	// KMSKeyID, when set, encrypts the published join info with SSE-KMS.
	KMSKeyID string `json:"kmsKeyId,omitempty"`
	// Addons are manifest files on the node (absolute paths) applied with
	// server-side apply once the cluster is initialized, at every start;
	// default: the pod network (flannel) and metrics-server shipped in the
	// package under /usr/share/kubestrap/addons. An empty list applies none.
	Addons []string `json:"addons"`
	// Certificates drives the check and renewal of kubeadm's certificates.
	Certificates CertificatesConfig `json:"certificates"`
	// NodeCleanup drives the deletion of the Nodes of instances EC2 reports
	// terminated.
	NodeCleanup NodeCleanupConfig `json:"nodeCleanup"`
	// LockLease is the lease of the control planes' S3 locks (init, join,
	// uploader): how long a holder that stopped renewing (crashed, cut off)
	// keeps a lock before another control plane may take it over, once EC2
	// says the holder is not running (default 5m).
	LockLease Duration `json:"lockLease"`
}

// NodeCleanupConfig drives the control plane's node cleanup: every Interval
// the agent compares the Nodes (by providerID) and the workers' leave
// records with EC2, and deletes the Node of an instance that EC2 reports
// shutting down or terminated; never one whose instance runs. A Node whose
// instance EC2 no longer knows is deleted only when it posted a leave
// record, or its kubelet has been silent for GoneAfter.
type NodeCleanupConfig struct {
	Enabled   bool     `json:"enabled"`
	Interval  Duration `json:"interval"`
	GoneAfter Duration `json:"goneAfter"`
}

// CertificatesConfig drives the control plane's certificate check: at start
// and every CheckInterval the agent reads the expiry of every
// kubeadm-managed certificate, and renews them all (kubeadm certs renew all,
// then a restart of the static control-plane pods) once the earliest expires
// within RenewBefore.
type CertificatesConfig struct {
	RenewBefore   Duration `json:"renewBefore"`
	CheckInterval Duration `json:"checkInterval"`
}

// Add-on manifests shipped in the kubestrap package.
const (
	AddonsDir          = "/usr/share/kubestrap/addons"
	FlannelManifest    = AddonsDir + "/flannel.yaml"
	MetricsServerAddon = AddonsDir + "/metrics-server.yaml"
)

// WorkerConfig drives the wait for join info.
type WorkerConfig struct {
	// PollInterval is the longest wait between conditional GETs of join.json;
	// each wait is drawn from 75-100% of it.
	PollInterval Duration `json:"pollInterval"`
	// ExpiryMargin is the least remaining token life accepted in join info.
	ExpiryMargin Duration `json:"expiryMargin,omitempty"`
}

// ECRConfig drives the ECR pull credentials written for the kubelet.
type ECRConfig struct {
	Enabled bool `json:"enabled"`
	// RegistryIDs are AWS account IDs (default: the instance's own account).
	RegistryIDs []string `json:"registryIds,omitempty"`
	// ConfigPath is the docker config file the kubelet reads.
	ConfigPath string `json:"configPath"`
}

// MetricsConfig drives the agent's HTTP listener for /metrics, /healthz and
// /readyz.
type MetricsConfig struct {
	// Address is the host:port the listener binds (default
	// DefaultMetricsAddress, loopback only); empty disables the listener.
	Address string `json:"address"`
}

// DefaultMetricsAddress is the default metrics.address: loopback only, so
// nothing is exposed beyond the node unless the operator asks for it.
const DefaultMetricsAddress = "127.0.0.1:9464"

// Duration is a time.Duration written as a Go duration string ("5s", "2h").
// A value that does not parse is kept aside so that Validate can report it
// with the name of its field.
type Duration struct {
	time.Duration
	invalid string
}

// UnmarshalJSON parses a duration string such as "90s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(b, &s); err != nil {
		d.invalid = string(b)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.invalid = s
		return nil
	}
	d.Duration, d.invalid = v, ""
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%q", d.Duration.String())), nil
}

// Defaults returns a configuration holding every default value.
func Defaults() AgentConfig {
	return AgentConfig{
		StateDir: "/var/lib/kubestrap",
		AWS:      AWSConfig{IMDSTimeout: Duration{Duration: 5 * time.Minute}},
		Kubeadm: KubeadmConfig{
			Path:              "kubeadm",
			ConfigDir:         "/etc/kubernetes",
			KubernetesVersion: version.KubernetesVersion,
			BindPort:          6443,
			PodSubnet:         "10.244.0.0/16",
			ServiceSubnet:     "10.96.0.0/12",
			InitTimeout:       Duration{Duration: 10 * time.Minute},
			JoinTimeout:       Duration{Duration: 5 * time.Minute},
			DiscoveryTimeout:  Duration{Duration: 2 * time.Minute},
		},
		ControlPlane: ControlPlaneConfig{TokenTTL: Duration{Duration: 2 * time.Hour},
			Addons:    []string{FlannelManifest, MetricsServerAddon},
			LockLease: Duration{Duration: 5 * time.Minute},
			NodeCleanup: NodeCleanupConfig{Enabled: true, Interval: Duration{Duration: 20 * time.Second},
				GoneAfter: Duration{Duration: 10 * time.Minute}},
			Certificates: CertificatesConfig{RenewBefore: Duration{Duration: 30 * 24 * time.Hour},
				CheckInterval: Duration{Duration: 24 * time.Hour}}},
		Worker:  WorkerConfig{PollInterval: Duration{Duration: 5 * time.Second}, ExpiryMargin: Duration{Duration: 2 * time.Minute}},
		ECR:     ECRConfig{Enabled: true, ConfigPath: "/var/lib/kubelet/config.json"},
		Metrics: MetricsConfig{Address: DefaultMetricsAddress},
		Leave: LeaveConfig{Enabled: true, PollInterval: Duration{Duration: 5 * time.Second},
			LifecycleHeartbeatTimeout: Duration{Duration: 300 * time.Second}},
	}
}

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*AgentConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates a configuration document.
func Parse(data []byte) (*AgentConfig, error) {
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	cfg := Defaults()
	strictErrs, err := sigsjson.UnmarshalStrict(jsonData, &cfg, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, describeDecodeError(err)
	}
	if len(strictErrs) > 0 {
		return nil, errors.Join(mapErrs(strictErrs)...)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func mapErrs(errs []error) []error {
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		out = append(out, fmt.Errorf("%v: remove it or check its spelling", e))
	}
	return out
}

func describeDecodeError(err error) error {
	return fmt.Errorf("decode: %w", err)
}
