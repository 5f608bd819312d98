//go:build deploy

package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// TestPackerTemplate parses packaging/ami.pkr.hcl with hcl/v2 and checks what
// the node image must hold; the provisioning script is checked with bash -n and
// shellcheck. (packer itself is not installable here; where it is, the test
// also runs `packer validate -syntax-only`.)
func TestPackerTemplate(t *testing.T) {
	path := repoPath(t, "packaging", "ami.pkr.hcl")
	f := parseHCL(t, path)

	if len(f.blocks("packer")) != 1 {
		t.Error("no packer block (required plugins)")
	} else if !strings.Contains(string(f.src), `source  = "github.com/hashicorp/amazon"`) {
		t.Error("the amazon plugin is not required")
	}

	defaults := map[string]string{}
	for _, v := range f.blocks("variable") {
		if attr, ok := v.Body.Attributes["default"]; ok {
			if val, diags := attr.Expr.Value(nil); !diags.HasErrors() && val.Type().FriendlyName() == "string" {
				defaults[v.Labels[0]] = val.AsString()
			}
		}
	}
	if defaults["kubernetes_minor"] != "v1.37" {
		t.Errorf("kubernetes_minor defaults to %q, want v1.37", defaults["kubernetes_minor"])
	}
	if !strings.HasPrefix(defaults["kubernetes_version"], "v1.37.") || !strings.HasPrefix(defaults["kubernetes_package_version"], "1.37.") {
		t.Errorf("Kubernetes version %q / package %q not pinned to 1.37", defaults["kubernetes_version"], defaults["kubernetes_package_version"])
	}
	if !strings.HasPrefix(defaults["ami_name_prefix"], "kubestrap-k8s-v1.37") {
		t.Errorf("ami_name_prefix %q does not match tf/ var.ami_name_pattern", defaults["ami_name_prefix"])
	}
	if len(f.blocks("variable", "kubestrap_deb")) != 1 {
		t.Error("no kubestrap_deb variable")
	}

	sources := f.blocks("source", "amazon-ebs")
	if len(sources) != 1 {
		t.Fatalf("want one amazon-ebs source, got %d", len(sources))
	}
	src := sources[0].Body
	var filter, metadata *hclsyntax.Block
	for _, b := range src.Blocks {
		switch b.Type {
		case "source_ami_filter":
			filter = b
		case "metadata_options":
			metadata = b
		}
	}
	if filter == nil || !strings.Contains(f.text(filter.Body.Range()), `"debian-${var.debian_release}-${local.deb_arch}-*"`) {
		t.Error("the base image must come from a source_ami_filter on the Debian images")
	}
	if metadata == nil || literal(t, f, metadata.Body, "http_tokens") != "required" {
		t.Error("the build instance must require IMDSv2")
	}
	if literal(t, f, src, "imds_support") != "v2.0" {
		t.Error("the AMI must default its instances to IMDSv2 (imds_support = \"v2.0\")")
	}
	if literal(t, f, src, "encrypt_boot") != "true" {
		t.Error("the AMI's snapshot must be encrypted")
	}

	builds := f.blocks("build")
	if len(builds) != 1 {
		t.Fatalf("want one build block, got %d", len(builds))
	}
	var script string
	for _, b := range builds[0].Body.Blocks {
		if b.Type == "provisioner" && b.Labels[0] == "shell" {
			script = f.text(b.Body.Attributes["script"].Expr.Range())
		}
	}
	if script != `"${path.root}/ami/provision.sh"` {
		t.Fatalf("shell provisioner script = %s, want \"${path.root}/ami/provision.sh\"", script)
	}

	prov := repoPath(t, "packaging", "ami", "provision.sh")
	data, err := os.ReadFile(prov)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`https://pkgs\.k8s\.io/core:/stable:/\$\{KUBERNETES_MINOR\}/deb/`),
		regexp.MustCompile(`"kubelet=\$\{KUBERNETES_PACKAGE_VERSION\}"`),
		regexp.MustCompile(`"kubeadm=\$\{KUBERNETES_PACKAGE_VERSION\}"`),
		regexp.MustCompile(`"kubectl=\$\{KUBERNETES_PACKAGE_VERSION\}"`),
		regexp.MustCompile(`(?m)^apt-mark hold kubelet kubeadm kubectl containerd\.io$`),
		regexp.MustCompile(`(?m)^\s*containerd\.io \\$`),
		regexp.MustCompile(`(?m)^br_netfilter$`),
		regexp.MustCompile(`net\.bridge\.bridge-nf-call-iptables\s+= 1`),
		regexp.MustCompile(`net\.ipv4\.ip_forward\s+= 1`),
		regexp.MustCompile(`SystemdCgroup = true`),
		regexp.MustCompile(`(?m)^apt-get install -y "\$\{KUBESTRAP_DEB\}"$`),
		regexp.MustCompile(`(?m)^systemctl enable kubestrap\.service$`),
	} {
		if !want.Match(data) {
			t.Errorf("provision.sh lacks %s", want)
		}
	}
	if regexp.MustCompile(`(?m)^[^#]*systemctl (start|restart) kubestrap`).Match(data) {
		t.Error("the image build must not start kubestrap (it has no configuration yet)")
	}
	if res := runCmd(t, cmdSpec{}, "bash", "-n", prov); res.code != 0 {
		t.Errorf("bash -n provision.sh: %s", res)
	}
	if sc, err := exec.LookPath("shellcheck"); err == nil {
		scripts, _ := filepath.Glob(repoPath(t, "packaging", "scripts", "*", "*"))
		if res := runCmd(t, cmdSpec{}, sc, append([]string{"--severity=style", prov}, scripts...)...); res.code != 0 {
			t.Errorf("shellcheck: %s", res)
		}
	} else {
		t.Log("shellcheck not installed (make deploy-deps); skipped")
	}
	if packer, err := exec.LookPath("packer"); err == nil {
		if res := runCmd(t, cmdSpec{dir: repoRoot(t)}, packer, "validate", "-syntax-only", path); res.code != 0 {
			t.Errorf("packer validate -syntax-only: %s", res)
		}
	} else {
		t.Log("packer not installed; the template was checked with hcl/v2 only")
	}
}
