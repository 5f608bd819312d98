package kubeadm

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/internal/config"
)

func testConfig() *config.AgentConfig {
	c := config.Defaults()
	c.APIVersion, c.Kind, c.Cluster, c.Bucket, c.Role = config.APIVersion, config.Kind, "demo", "b-bucket", config.RoleControlPlane
	return &c
}

func TestInitConfigDefaultsEndpointToPrivateIPAndAlwaysSetsVersion(t *testing.T) {
	doc, endpoint, err := InitConfig(testConfig(), Node{Name: "ip-10-0-1-10", IP: "10.0.1.10"}, "abcdef.0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if endpoint != "10.0.1.10:6443" {
		t.Errorf("endpoint = %q", endpoint)
	}
	s := string(doc)
	for _, want := range []string{"kind: InitConfiguration", "kind: ClusterConfiguration", "kubernetesVersion: v1.37.2",
		"controlPlaneEndpoint: 10.0.1.10:6443", "advertiseAddress: 10.0.1.10", "name: node-ip", "value: 10.0.1.10",
		"description: kubestrap join token, generation 1", "ttl: 1h0m0s"} {
		if !strings.Contains(s, want) {
			t.Errorf("init configuration lacks %q:\n%s", want, s)
		}
	}
}

func TestNodeRegistrationSetsProviderIDUnlessTheConfigDoes(t *testing.T) {
	node := Node{Name: "w", IP: "10.0.2.7", ProviderID: "aws:///eu-west-1a/i-0abc"}
	args := func(cfg *config.AgentConfig) []string {
		var out []string
		for _, a := range NodeRegistration(cfg.Kubeadm, node).KubeletExtraArgs {
			if a.Name == "provider-id" {
				out = append(out, a.Value)
			}
		}
		return out
	}
	if got := args(testConfig()); len(got) != 1 || got[0] != node.ProviderID {
		t.Errorf("provider-id args %q, want [%s]", got, node.ProviderID)
	}
	own := testConfig()
	own.Kubeadm.KubeletExtraArgs = []config.Arg{{Name: "provider-id", Value: "aws:///x/i-1"}}
	if got := args(own); len(got) != 1 || got[0] != "aws:///x/i-1" {
		t.Errorf("with the config's own provider-id: %q, want only it", got)
	}
	inKubeletConfig := testConfig()
	inKubeletConfig.Kubeadm.KubeletConfiguration = map[string]any{"providerID": "aws:///x/i-2"}
	if got := args(inKubeletConfig); len(got) != 0 {
		t.Errorf("with providerID in kubeletConfiguration: provider-id args %q, want none", got)
	}
	node.ProviderID = ""
	if got := args(testConfig()); len(got) != 0 {
		t.Errorf("without a providerID from IMDS: provider-id args %q, want none", got)
	}
}

func TestInitConfigNeedsAnEndpoint(t *testing.T) {
	if _, _, err := InitConfig(testConfig(), Node{Name: "x"}, "", time.Hour); err == nil {
		t.Error("no IP and no endpoint accepted")
	}
}

func TestJoinConfigPinsTheCAAndKeepsUserNodeIP(t *testing.T) {
	cfg := testConfig()
	cfg.Kubeadm.KubeletExtraArgs = []config.Arg{{Name: "node-ip", Value: "10.9.9.9"}}
	doc, err := JoinConfig(cfg, Node{Name: "w", IP: "10.0.2.7"}, JoinOptions{APIServerEndpoint: "10.0.1.10:6443",
		Token: "abcdef.0123456789abcdef", CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	var jc map[string]any
	if err := yaml.Unmarshal(doc, &jc); err != nil {
		t.Fatal(err)
	}
	d := jc["discovery"].(map[string]any)["bootstrapToken"].(map[string]any)
	if d["unsafeSkipCAVerification"] == true || len(d["caCertHashes"].([]any)) != 1 {
		t.Errorf("discovery = %v", d)
	}
	if strings.Contains(string(doc), "10.0.2.7") || !strings.Contains(string(doc), "10.9.9.9") {
		t.Errorf("user's node-ip not kept:\n%s", doc)
	}
}

func TestKubeletConfigurationDefaultsGracefulShutdownUnlessConfigured(t *testing.T) {
	k := testConfig().Kubeadm
	kc := KubeletConfiguration(k)
	if kc["shutdownGracePeriod"] != ShutdownGracePeriod || kc["shutdownGracePeriodCriticalPods"] != ShutdownGracePeriodCriticalPods {
		t.Errorf("defaults: %v", kc)
	}
	if kc["kind"] != "KubeletConfiguration" || kc["apiVersion"] != "kubelet.config.k8s.io/v1beta1" {
		t.Errorf("type: %v", kc)
	}
	k.KubeletConfiguration = map[string]any{"shutdownGracePeriod": "0s", "failSwapOn": false}
	kc = KubeletConfiguration(k)
	if kc["shutdownGracePeriod"] != "0s" || kc["shutdownGracePeriodCriticalPods"] != nil || kc["failSwapOn"] != false {
		t.Errorf("the configuration's own shutdownGracePeriod must win and no default be added: %v", kc)
	}
}
