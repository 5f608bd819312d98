//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// demoImage is the demo app's image in the cluster's ECR registry (hack/e2e/lib.sh DEMO_IMAGE).
const demoImage = ecrHost + "/kse2e/demo-app:v1"

// podSubnet is kubeadm.podSubnet of the e2e nodes (the agent's default).
var podSubnet = netip.MustParsePrefix("10.244.0.0/16")

// jsonpath runs kubectl get ARGS -o jsonpath=EXPR.
func jsonpath(t *testing.T, expr string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(kubectl(t, append(append([]string{"get"}, args...), "-o", "jsonpath="+expr)...))
}

// kubectlErr runs kubectl and returns its output and error (for polling).
func kubectlErr(args ...string) (string, error) { return script("kubectl.sh", args...) }

// The pod network is the CNI kubestrap ships, applied by the control-plane
// agent from the package's manifest: flannel runs on every node, each node's
// only CNI configuration is flannel's, pods get addresses from the node's
// podCIDR inside kubeadm.podSubnet, and the test network's router knows no
// pod route (pod traffic between nodes is VXLAN between node addresses).
func TestPodNetworkIsTheShippedFlannel(t *testing.T) {
	ns := nodes(t)
	eventually(t, 3*time.Minute, "flannel running and ready on every node", func() (bool, string) {
		out, err := kubectlErr("-n", "kube-flannel", "get", "daemonset", "kube-flannel-ds", "-o",
			"jsonpath={.status.desiredNumberScheduled} {.status.numberReady}")
		f := strings.Fields(out)
		return err == nil && len(f) == 2 && f[0] == strconv.Itoa(len(ns)) && f[1] == f[0],
			fmt.Sprintf("desired/ready %q (%v), %d nodes", out, err, len(ns))
	})
	// Applied by the agent (server-side apply, field manager kubestrap), with
	// the network taken from its configuration.
	managers := jsonpath(t, "{.metadata.managedFields[*].manager}", "-n", "kube-flannel", "configmap", "kube-flannel-cfg")
	if !strings.Contains(managers, "kubestrap") {
		t.Errorf("kube-flannel-cfg field managers %q: not applied by kubestrap", managers)
	}
	var netConf struct {
		Network string
		Backend struct{ Type string }
	}
	raw := jsonpath(t, `{.data.net-conf\.json}`, "-n", "kube-flannel", "configmap", "kube-flannel-cfg")
	if err := json.Unmarshal([]byte(raw), &netConf); err != nil || netConf.Network != podSubnet.String() || netConf.Backend.Type != "vxlan" {
		t.Errorf("flannel net-conf.json %q (%v): want Network %s and the vxlan backend", raw, err, podSubnet)
	}
	cp := agentState(t, "cp")
	if cp.AddonsAppliedAt.IsZero() || cp.AddonsError != "" {
		t.Errorf("cp state: addonsAppliedAt %s, addonsError %q", cp.AddonsAppliedAt, cp.AddonsError)
	}

	for name := range ns {
		cidr := jsonpath(t, "{.spec.podCIDR}", "node", name)
		p, err := netip.ParsePrefix(cidr)
		if err != nil || !podSubnet.Overlaps(p) || p.Bits() <= podSubnet.Bits() {
			t.Errorf("node %s: podCIDR %q is not a subnet of %s", name, cidr, podSubnet)
		}
		confs, err := os.ReadDir(nodeFile(name, "/etc/cni/net.d"))
		var names []string
		for _, c := range confs {
			names = append(names, c.Name())
		}
		if err != nil || len(names) != 1 || names[0] != "10-flannel.conflist" {
			t.Errorf("node %s: /etc/cni/net.d holds %v (%v), want only flannel's 10-flannel.conflist", name, names, err)
		}
		if _, err := os.Stat(nodeFile(name, "/opt/cni/bin/flannel")); err != nil {
			t.Errorf("node %s: flannel's CNI plugin was not installed by its DaemonSet: %v", name, err)
		}
		if out, err := inNode(name, "ip", "-d", "link", "show", "flannel.1"); err != nil || !strings.Contains(out, "vxlan id 1") {
			t.Errorf("node %s: no flannel.1 VXLAN device: %v\n%s", name, err, out)
		}
	}
	out, err := exec.Command("ip", "-n", prefix+"-net", "route", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("routes of the test network's router: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		dst, _, _ := strings.Cut(l, " ")
		if p, err := netip.ParsePrefix(dst); err == nil && p.Overlaps(podSubnet) {
			t.Errorf("the router has a route to the pod network: %q", l)
		}
	}
}

// runPod runs a pod of the demo image on node with args and returns its
// log once it succeeded; the pod is deleted at the end.
func runPod(t *testing.T, name, node string, timeout time.Duration, args ...string) string {
	t.Helper()
	overrides := fmt.Sprintf(`{"spec":{"nodeName":%q}}`, node)
	kubectl(t, append([]string{"run", name, "--image=" + demoImage, "--restart=Never", "--overrides=" + overrides, "--"}, args...)...)
	t.Cleanup(func() { _, _ = kubectlErr("delete", "pod", name, "--ignore-not-found", "--wait=false") })
	eventually(t, timeout, "pod "+name+" on "+node+" succeeded", func() (bool, string) {
		phase, err := kubectlErr("get", "pod", name, "-o", "jsonpath={.status.phase}")
		if strings.TrimSpace(phase) == "Failed" {
			logs, _ := kubectlErr("logs", name)
			t.Fatalf("pod %s failed:\n%s", name, logs)
		}
		return err == nil && strings.TrimSpace(phase) == "Succeeded", fmt.Sprintf("phase %q (%v)", phase, err)
	})
	return kubectl(t, "logs", name)
}

// demoPodNodes returns the nodes the demo app's ready pods run on.
func demoPodNodes(t *testing.T) map[string]bool {
	t.Helper()
	var list struct {
		Items []struct {
			Spec   struct{ NodeName string } `json:"spec"`
			Status struct {
				Conditions []struct{ Type, Status string } `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "pods", "-l", "app=demo-app", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	on := map[string]bool{}
	for _, p := range list.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				on[p.Spec.NodeName] = true
			}
		}
	}
	return on
}

// CoreDNS runs (kubeadm's addon phase, the image built from its Go module)
// and a pod on one worker reaches the demo app's Service by name, answered
// by a demo pod on another node: cluster DNS and cross-node pod traffic
// over the shipped pod network.
func TestDNSResolvesServiceFromAnotherNode(t *testing.T) {
	mustScript(t, "demo-app.sh")
	eventually(t, 3*time.Minute, "CoreDNS available", func() (bool, string) {
		out, err := kubectlErr("-n", "kube-system", "get", "deployment", "coredns", "-o", "jsonpath={.status.readyReplicas}")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return err == nil && n >= 1, fmt.Sprintf("ready replicas %q (%v)", out, err)
	})
	on := demoPodNodes(t)
	client := ""
	for _, w := range []string{"w1", "w2"} {
		if !on[w] {
			client = w
		}
	}
	if client == "" || len(on) == 0 {
		t.Fatalf("want a worker without a demo pod and a demo pod elsewhere; demo pods on %v", on)
	}
	name := "dns-check-" + strconv.FormatInt(time.Now().Unix(), 36)
	logs := runPod(t, name, client, 2*time.Minute, "fetch", "http://demo-app.default.svc.cluster.local/dns")
	var server string
	if i := strings.Index(logs, "node="); i >= 0 {
		server, _, _ = strings.Cut(logs[i+len("node="):], " ")
	}
	if !strings.Contains(logs, "hello from kubestrap demo-app") || server == client || !on[server] {
		t.Errorf("pod on %s asked demo-app.default.svc.cluster.local: answered by node %q (demo pods on %v):\n%s", client, server, on, logs)
	}
	t.Logf("%s -> %s", client, strings.TrimSpace(logs[strings.LastIndex(strings.TrimSpace(logs), "\n")+1:]))
}

// hpaState is the demo HorizontalPodAutoscaler's status and the
// Deployment's ready replicas.
func hpaState(t *testing.T) (current, desired, ready int, cpu string) {
	t.Helper()
	f := strings.Fields(jsonpath(t, "{.status.currentReplicas} {.status.desiredReplicas} {.status.currentMetrics[0].resource.current.averageUtilization}", "hpa", "demo-app") + " - - -")
	current, _ = strconv.Atoi(f[0])
	desired, _ = strconv.Atoi(f[1])
	ready, _ = strconv.Atoi(jsonpath(t, "{.status.readyReplicas}", "deployment", "demo-app"))
	return current, desired, ready, f[2]
}

// The demo app scales on CPU: metrics-server (a kubestrap add-on, built from
// its Go module here) serves the metrics API, a bounded load raises the
// HorizontalPodAutoscaler's replicas above one, and once the load stops it
// brings them back to one.
func TestHPAScalesDemoAppUpAndDown(t *testing.T) {
	mustScript(t, "demo-app.sh")
	eventually(t, 3*time.Minute, "the metrics API available and serving node metrics", func() (bool, string) {
		avail, err := kubectlErr("get", "apiservice", "v1beta1.metrics.k8s.io", "-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`)
		if err != nil || strings.TrimSpace(avail) != "True" {
			return false, fmt.Sprintf("APIService Available=%q (%v)", avail, err)
		}
		top, err := kubectlErr("top", "nodes", "--no-headers")
		return err == nil && strings.Count(strings.TrimSpace(top), "\n")+1 >= len(nodes(t)), fmt.Sprintf("kubectl top nodes: %v\n%s", err, top)
	})
	eventually(t, 3*time.Minute, "the demo app idle at one replica", func() (bool, string) {
		c, d, r, cpu := hpaState(t)
		return c == 1 && d == 1 && r == 1, fmt.Sprintf("current %d desired %d ready %d cpu %s%%", c, d, r, cpu)
	})

	// Load from a pod: 2 loops, each asking for 20 ms of CPU every ~100 ms,
	// for at most 4 minutes (the pod is deleted as soon as the scale-up is seen).
	load := "hpa-load-" + strconv.FormatInt(time.Now().Unix(), 36)
	kubectl(t, "run", load, "--image="+demoImage, "--restart=Never", "--", "load", "http://demo-app/burn?ms=20", "4m", "2")
	t.Cleanup(func() { _, _ = kubectlErr("delete", "pod", load, "--ignore-not-found", "--wait=false") })
	eventually(t, 4*time.Minute, "the HPA scaled the demo app above one replica", func() (bool, string) {
		c, d, r, cpu := hpaState(t)
		return d > 1 && r > 1, fmt.Sprintf("current %d desired %d ready %d cpu %s%%", c, d, r, cpu)
	})
	_, d, r, cpu := hpaState(t)
	t.Logf("under load: desired %d, ready %d, cpu %s%% of the request", d, r, cpu)
	kubectl(t, "delete", "pod", load, "--wait=false")

	eventually(t, 4*time.Minute, "the HPA scaled the demo app back to one replica", func() (bool, string) {
		c, d, r, cpu := hpaState(t)
		return d == 1 && c == 1 && r == 1, fmt.Sprintf("current %d desired %d ready %d cpu %s%%", c, d, r, cpu)
	})
	events := kubectl(t, "get", "events", "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=demo-app,reason=SuccessfulRescale",
		"-o", "custom-columns=MSG:.message", "--no-headers")
	if !strings.Contains(events, "New size: 1") || strings.Count(events, "New size:") < 2 {
		t.Errorf("the HPA's rescale events do not show a scale-up and the way back to 1:\n%s", events)
	}
	t.Logf("HPA events:\n%s", events)
}

// Every Node carries its instance's providerID (aws:///<zone>/<instance
// ID>, from the node's IMDS), which cluster-autoscaler and people use to map
// Nodes to instances; the instance is a real one, running in EC2 (moto).
func TestNodesCarryTheirProviderID(t *testing.T) {
	want := map[string]string{}
	var ids []string
	for name := range nodes(t) {
		id := instanceID(t, name)
		want[name] = "aws:///eu-west-1a/" + id
		ids = append(ids, id)
	}
	for name, w := range want {
		if got := jsonpath(t, "{.spec.providerID}", "node", name); got != w {
			t.Errorf("node %s: providerID %q, want %q", name, got, w)
		}
	}
	states := instanceStates(t, ids...)
	for name := range want {
		id := instanceID(t, name)
		_, gone := os.Stat(filepath.Join(runDir, "nodes", name, "terminated"))
		if s := states[id]; s != "running" && !(gone == nil && (s == "shutting-down" || s == "terminated")) {
			t.Errorf("node %s: its instance %s is %q in EC2, want running", name, id, s)
		}
	}
}
