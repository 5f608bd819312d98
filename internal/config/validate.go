package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// FieldError says which field of the configuration is wrong and how to fix it.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

var (
	clusterNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	bucketNamePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	k8sVersionPattern  = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)
	accountIDPattern   = regexp.MustCompile(`^[0-9]{12}$`)
	regionPattern      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
)

// IsKubernetesVersion reports whether s is a release version such as v1.37.2.
func IsKubernetesVersion(s string) bool { return k8sVersionPattern.MatchString(s) }

// Validate checks every field and returns all problems found, each naming its field.
func (c *AgentConfig) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}

	if c.APIVersion != APIVersion {
		add("apiVersion", "must be %q, got %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		add("kind", "must be %q, got %q", Kind, c.Kind)
	}
	switch {
	case c.Cluster == "":
		add("cluster", "is required: name the cluster (lowercase letters, digits and '-'); it is also the S3 key prefix")
	case !clusterNamePattern.MatchString(c.Cluster):
		add("cluster", "%q is not a valid cluster name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.Cluster)
	}
	switch c.Role {
	case RoleControlPlane, RoleWorker:
	case "":
		add("role", "is required: set %q or %q", RoleControlPlane, RoleWorker)
	default:
		add("role", "must be %q or %q, got %q", RoleControlPlane, RoleWorker, c.Role)
	}
	if c.Bucket == "" {
		add("bucket", "is required: the S3 bucket that holds <cluster>/join.json")
	} else if reason := bucketNameProblem(c.Bucket); reason != "" {
		add("bucket", "%q is not a valid S3 bucket name: %s", c.Bucket, reason)
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		add("stateDir", "must be an absolute path, got %q", c.StateDir)
	}
	if c.AWS.Region != "" && !regionPattern.MatchString(c.AWS.Region) {
		add("aws.region", "%q is not an AWS region name such as eu-west-1", c.AWS.Region)
	}

	checkDuration := func(field string, d Duration, min time.Duration) {
		if d.invalid != "" {
			add(field, "%s is not a duration: write it like \"30s\" or \"2h\"", d.invalid)
		} else if d.Duration < min {
			add(field, "must be at least %s, got %s", min, d.Duration)
		}
	}
	checkDuration("aws.imdsTimeout", c.AWS.IMDSTimeout, time.Second)
	checkDuration("kubeadm.initTimeout", c.Kubeadm.InitTimeout, 30*time.Second)
	checkDuration("kubeadm.joinTimeout", c.Kubeadm.JoinTimeout, 10*time.Second)
	checkDuration("kubeadm.discoveryTimeout", c.Kubeadm.DiscoveryTimeout, 5*time.Second)
	checkDuration("controlPlane.tokenTTL", c.ControlPlane.TokenTTL, time.Minute)
	for i, p := range c.ControlPlane.Addons {
		if !strings.HasPrefix(p, "/") {
			add(fmt.Sprintf("controlPlane.addons[%d]", i), "%q is not an absolute path: name the manifest file on the node", p)
		}
	}
	checkDuration("controlPlane.certificates.renewBefore", c.ControlPlane.Certificates.RenewBefore, time.Hour)
	checkDuration("controlPlane.certificates.checkInterval", c.ControlPlane.Certificates.CheckInterval, time.Minute)
	checkDuration("controlPlane.lockLease", c.ControlPlane.LockLease, 15*time.Second)
	if d := c.ControlPlane.LockLease.Duration; d > time.Hour || d%time.Second != 0 {
		add("controlPlane.lockLease", "must be whole seconds, at most 1h, got %s", d)
	}
	checkDuration("controlPlane.nodeCleanup.interval", c.ControlPlane.NodeCleanup.Interval, time.Second)
	checkDuration("controlPlane.nodeCleanup.goneAfter", c.ControlPlane.NodeCleanup.GoneAfter, time.Minute)
	if rb := c.ControlPlane.Certificates.RenewBefore.Duration; rb > 180*24*time.Hour {
		add("controlPlane.certificates.renewBefore", "must be at most 180 days (kubeadm issues certificates for one year "+
			"by default: more would renew them at every check), got %s", rb)
	}
	checkDuration("leave.pollInterval", c.Leave.PollInterval, time.Second)
	checkDuration("leave.lifecycleHeartbeatTimeout", c.Leave.LifecycleHeartbeatTimeout, 30*time.Second)
	checkDuration("worker.pollInterval", c.Worker.PollInterval, 100*time.Millisecond)
	checkDuration("worker.expiryMargin", c.Worker.ExpiryMargin, 0)
	if c.ControlPlane.TokenTTL.Duration > 24*time.Hour*365 {
		add("controlPlane.tokenTTL", "must be at most one year, got %s", c.ControlPlane.TokenTTL.Duration)
	}
	// The control plane replaces join info when half of its token's life is
	// left; a worker refuses join info with less than expiryMargin left. Both
	// fields are in every file: the rule holds for the cluster's pair.
	if ttl, margin := c.ControlPlane.TokenTTL, c.Worker.ExpiryMargin; ttl.invalid == "" && margin.invalid == "" &&
		ttl.Duration > 0 && ttl.Duration/2 <= margin.Duration {
		add("controlPlane.tokenTTL", "%s is too short for worker.expiryMargin %s: join info is replaced when half "+
			"the token's life (%s) is left, and workers refuse join info with less than %s left, so workers would "+
			"start refusing each document no later than when it is replaced; set controlPlane.tokenTTL above %s (twice worker.expiryMargin) "+
			"or worker.expiryMargin below %s", ttl.Duration, margin.Duration, ttl.Duration/2, margin.Duration,
			2*margin.Duration, ttl.Duration/2)
	}

	k := c.Kubeadm
	if k.Path == "" {
		add("kubeadm.path", "is required: the kubeadm binary (absolute path or a name on PATH)")
	} else if strings.ContainsRune(k.Path, '/') && !strings.HasPrefix(k.Path, "/") {
		add("kubeadm.path", "%q is a relative path: write an absolute path, or a bare name to look up on PATH", k.Path)
	}
	if !strings.HasPrefix(k.ConfigDir, "/") {
		add("kubeadm.configDir", "must be an absolute path, got %q", k.ConfigDir)
	}
	if !k8sVersionPattern.MatchString(k.KubernetesVersion) {
		add("kubeadm.kubernetesVersion", "%q is not a Kubernetes version such as v1.37.2", k.KubernetesVersion)
	}
	if k.ControlPlaneEndpoint != "" {
		if reason := EndpointProblem(k.ControlPlaneEndpoint); reason != "" {
			add("kubeadm.controlPlaneEndpoint", "%s", reason)
		}
	}
	if k.AdvertiseAddress != "" {
		if _, err := netip.ParseAddr(k.AdvertiseAddress); err != nil {
			add("kubeadm.advertiseAddress", "%q is not an IP address", k.AdvertiseAddress)
		}
	}
	if k.BindPort < 1 || k.BindPort > 65535 {
		add("kubeadm.bindPort", "must be a port between 1 and 65535, got %d", k.BindPort)
	}
	for field, subnet := range map[string]string{"kubeadm.podSubnet": k.PodSubnet, "kubeadm.serviceSubnet": k.ServiceSubnet} {
		for _, s := range strings.Split(subnet, ",") {
			if _, err := netip.ParsePrefix(strings.TrimSpace(s)); err != nil {
				add(field, "%q is not a CIDR such as 10.244.0.0/16", subnet)
				break
			}
		}
	}
	if k.CRISocket != "" && !strings.HasPrefix(k.CRISocket, "unix:///") {
		add("kubeadm.criSocket", "must be a unix:/// URL such as unix:///run/containerd/containerd.sock, got %q", k.CRISocket)
	}
	switch k.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		add("kubeadm.imagePullPolicy", "must be Always, IfNotPresent or Never, got %q", k.ImagePullPolicy)
	}
	for i, a := range k.KubeletExtraArgs {
		if a.Name == "" || strings.HasPrefix(a.Name, "-") {
			add(fmt.Sprintf("kubeadm.kubeletExtraArgs[%d].name", i), "must be a flag name without leading dashes, got %q", a.Name)
		}
	}
	if k.KubeletConfiguration != nil {
		errs = append(errs, kubeletConfigErrors(k.KubeletConfiguration)...)
	}
	if c.NodeName != "" && !clusterNamePattern.MatchString(c.NodeName) && !isDNSSubdomain(c.NodeName) {
		add("nodeName", "%q is not a valid node name (lowercase RFC 1123 name)", c.NodeName)
	}
	for i, id := range c.ECR.RegistryIDs {
		if !accountIDPattern.MatchString(id) {
			add(fmt.Sprintf("ecr.registryIds[%d]", i), "%q is not a 12-digit AWS account ID", id)
		}
	}
	if c.ECR.Enabled && !strings.HasPrefix(c.ECR.ConfigPath, "/") {
		add("ecr.configPath", "must be an absolute path, got %q", c.ECR.ConfigPath)
	}
	if c.Metrics.Address != "" {
		if reason := ListenAddressProblem(c.Metrics.Address); reason != "" {
			add("metrics.address", "%q: %s", c.Metrics.Address, reason)
		}
	}
	return errors.Join(errs...)
}

func bucketNameProblem(name string) string {
	switch {
	case len(name) < 3 || len(name) > 63:
		return "it must be 3 to 63 characters long"
	case !bucketNamePattern.MatchString(name):
		return "use lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"
	case strings.Contains(name, ".."):
		return "it must not contain two adjacent periods"
	case net.ParseIP(name) != nil:
		return "it must not be formatted as an IP address"
	case strings.HasPrefix(name, "xn--") || strings.HasPrefix(name, "sthree-"):
		return "it must not start with xn-- or sthree-"
	case strings.HasSuffix(name, "-s3alias") || strings.HasSuffix(name, "--ol-s3"):
		return "it must not end with -s3alias or --ol-s3"
	}
	return ""
}

// EndpointProblem says what is wrong with a host:port endpoint, or returns ""
// when it is a plain host:port: the host a canonical dotted-quad IPv4 address
// (10.0.1.10; no leading zeros, no short, octal or hex forms), an IPv6 address
// in brackets ([fd00::10], no zone) or an RFC 1123 DNS name in lowercase whose
// last label is not a number (resolvers read such a name as an IPv4 address),
// and the port a decimal number 1-65535 without sign or leading zeros.
// Brackets around anything but an IPv6 address are refused.
func EndpointProblem(endpoint string) string {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return "must be host:port, such as 10.0.1.10:6443"
	}
	if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" || port[0] == '0' {
		return "port must be a decimal number between 1 and 65535, without sign or leading zeros"
	}
	if n, _ := strconv.Atoi(port); n < 1 || n > 65535 {
		return "port must be a decimal number between 1 and 65535, without sign or leading zeros"
	}
	if strings.HasPrefix(endpoint, "[") {
		addr, err := netip.ParseAddr(host)
		switch {
		case err != nil || !addr.Is6():
			return "brackets are only for an IPv6 address, such as [fd00::10]:6443"
		case addr.Zone() != "":
			return "host must not carry an IPv6 zone"
		}
		return ""
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if !addr.Is4() {
			// SplitHostPort leaves no colon in an unbracketed host; be safe anyway.
			return "an IPv6 address must be in brackets, such as [fd00::10]:6443"
		}
		return ""
	}
	labels := strings.Split(host, ".")
	if last := labels[len(labels)-1]; numericLabelPattern.MatchString(last) {
		return "host is not a canonical IPv4 address: write four decimal numbers 0-255 without leading zeros, such as 10.0.1.10"
	}
	if !isDNSSubdomain(host) {
		return "host must be an IPv4 address, a bracketed IPv6 address or an RFC 1123 DNS name"
	}
	return ""
}

// ListenAddressProblem says what is wrong with a listen address, or returns
// "" when it is host:port with the host an IP address (IPv6 in brackets),
// "localhost", or empty (every interface), and the port a decimal number
// 1-65535.
func ListenAddressProblem(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "must be host:port, such as 127.0.0.1:9464 (empty disables the listener)"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return "port must be a decimal number between 1 and 65535"
	}
	if host == "" || host == "localhost" {
		return ""
	}
	a, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "host must be an IP address of this node (IPv6 in brackets), localhost, or empty for every interface"
	case a.Zone() != "":
		return "host must not carry an IPv6 zone"
	case a.Is6() && !strings.HasPrefix(addr, "["):
		return "an IPv6 address must be in brackets, such as [::1]:9464"
	}
	return ""
}

// numericLabelPattern matches a label that IPv4 parsers (inet_aton, the URL
// standard) read as a number: decimal, octal with a leading 0, or 0x hex.
var numericLabelPattern = regexp.MustCompile(`^([0-9]+|0[xX][0-9a-fA-F]*)$`)

var dnsLabelPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func isDNSSubdomain(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if !dnsLabelPattern.MatchString(label) {
			return false
		}
	}
	return true
}
