//go:build deploy

package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// hclFile is a parsed native-syntax HCL file with its source.
type hclFile struct {
	path string
	src  []byte
	body *hclsyntax.Body
}

func parseHCL(t testing.TB, path string) hclFile {
	t.Helper()
	p := hclparse.NewParser()
	f, diags := p.ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatalf("%s does not parse:\n%s", path, diagText(p, diags))
	}
	return hclFile{path: path, src: f.Bytes, body: f.Body.(*hclsyntax.Body)}
}

func diagText(p *hclparse.Parser, diags hcl.Diagnostics) string {
	var b strings.Builder
	wr := hcl.NewDiagnosticTextWriter(&b, p.Files(), 100, false)
	_ = wr.WriteDiagnostics(diags)
	return b.String()
}

// text is the source of an expression or a range.
func (f hclFile) text(r hcl.Range) string { return string(r.SliceBytes(f.src)) }

// blocks returns the top-level blocks of a type with the given leading labels.
func (f hclFile) blocks(typ string, labels ...string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range f.body.Blocks {
		if b.Type != typ || len(b.Labels) < len(labels) {
			continue
		}
		match := true
		for i, l := range labels {
			if b.Labels[i] != l {
				match = false
			}
		}
		if match {
			out = append(out, b)
		}
	}
	return out
}

// literal evaluates an attribute that must be a constant.
func literal(t testing.TB, f hclFile, body *hclsyntax.Body, name string) string {
	t.Helper()
	attr, ok := body.Attributes[name]
	if !ok {
		t.Errorf("%s:%d: no %s", f.path, body.SrcRange.Start.Line, name)
		return ""
	}
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() || !v.Type().IsPrimitiveType() {
		t.Errorf("%s:%d: %s is not a constant: %s", f.path, attr.SrcRange.Start.Line, name, f.text(attr.Expr.Range()))
		return ""
	}
	switch {
	case v.Type().FriendlyName() == "string":
		return v.AsString()
	case v.Type().FriendlyName() == "bool":
		if v.True() {
			return "true"
		}
		return "false"
	default:
		return v.AsBigFloat().String()
	}
}

// tfFiles parses every .tf file under tf/.
func tfFiles(t testing.TB) []hclFile {
	t.Helper()
	var files []hclFile
	root := repoPath(t, "tf")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".terraform" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".tf") {
			files = append(files, parseHCL(t, path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("found only %d .tf files under %s", len(files), root)
	}
	return files
}

// TestHCLParses parses every Terraform file and template, and the Packer
// template, with hashicorp/hcl/v2.
func TestHCLParses(t *testing.T) {
	for _, f := range tfFiles(t) {
		rel, _ := filepath.Rel(repoRoot(t), f.path)
		t.Logf("%s: %d blocks", rel, len(f.body.Blocks))
	}
	for _, name := range []string{"main.tf", "variables.tf", "outputs.tf", "network.tf", "iam.tf", "s3.tf", "ecr.tf", "nodes.tf", "control-plane.tf", "versions.tf"} {
		if _, err := os.Stat(repoPath(t, "tf", name)); err != nil {
			t.Errorf("tf/%s: %v", name, err)
		}
	}

	templates, _ := filepath.Glob(repoPath(t, "tf", "templates", "*.tftpl"))
	if len(templates) < 5 {
		t.Errorf("want the user-data and four policy templates, found %q", templates)
	}
	for _, path := range templates {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, diags := hclsyntax.ParseTemplate(src, path, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s is not a valid template: %s", path, diags.Error())
		}
	}

	parseHCL(t, repoPath(t, "packaging", "ami.pkr.hcl"))
}

// walkBodies calls fn on body and every nested block body.
func walkBodies(body *hclsyntax.Body, fn func(*hclsyntax.Body)) {
	fn(body)
	for _, b := range body.Blocks {
		walkBodies(b.Body, fn)
	}
}

// TestTerraformSecurityRules checks docs/design.md's security rules in the source:
// no static keys, IMDSv2 required on every instance, policy documents only from
// the templates, the bucket locked down, the workers discoverable by
// cluster-autoscaler.
func TestTerraformSecurityRules(t *testing.T) {
	files := tfFiles(t)
	find := func(typ string, labels ...string) (hclFile, *hclsyntax.Block) {
		t.Helper()
		for _, f := range files {
			if bs := f.blocks(typ, labels...); len(bs) > 0 {
				return f, bs[0]
			}
		}
		t.Fatalf("no %s %q block in tf/", typ, labels)
		return hclFile{}, nil
	}

	var instances, policies int
	for _, f := range files {
		for _, b := range f.body.Blocks {
			kind := ""
			if len(b.Labels) > 0 {
				kind = b.Labels[0]
			}
			switch {
			case b.Type == "resource" && (kind == "aws_iam_access_key" || kind == "aws_iam_user" ||
				kind == "aws_iam_user_policy" || kind == "aws_iam_user_policy_attachment"):
				t.Errorf("%s:%d: resource %s: nodes use instance profiles, never IAM users or access keys", f.path, b.TypeRange.Start.Line, kind)
			case b.Type == "data" && kind == "aws_iam_policy_document":
				t.Errorf("%s:%d: policy documents belong in tf/templates/*.json.tftpl", f.path, b.TypeRange.Start.Line)
			case b.Type == "resource" && (kind == "aws_instance" || kind == "aws_launch_template"):
				instances++
				var md *hclsyntax.Block
				for _, nb := range b.Body.Blocks {
					if nb.Type == "metadata_options" {
						md = nb
					}
				}
				if md == nil {
					t.Errorf("%s:%d: %s.%s has no metadata_options (IMDSv2 must be required)", f.path, b.TypeRange.Start.Line, kind, b.Labels[1])
					continue
				}
				if v := literal(t, f, md.Body, "http_tokens"); v != "required" {
					t.Errorf("%s: %s.%s: http_tokens = %q, want \"required\"", f.path, kind, b.Labels[1], v)
				}
			case b.Type == "resource" && (kind == "aws_iam_role_policy" || kind == "aws_s3_bucket_policy"):
				policies++
				attr := b.Body.Attributes["policy"]
				if attr == nil || !strings.HasPrefix(f.text(attr.Expr.Range()), `templatefile("${path.module}/templates/`) {
					t.Errorf("%s:%d: %s.%s: the policy must be templatefile(\"${path.module}/templates/...\")", f.path, b.TypeRange.Start.Line, kind, b.Labels[1])
				}
			}
			walkBodies(b.Body, func(body *hclsyntax.Body) {
				for name, attr := range body.Attributes {
					if name == "access_key" || name == "secret_key" || (name == "token" && kind == "aws") {
						t.Errorf("%s:%d: %s: no static AWS credentials in Terraform", f.path, attr.SrcRange.Start.Line, name)
					}
				}
			})
		}
	}
	if instances != 2 {
		t.Errorf("want the control-plane and the worker launch templates, found %d", instances)
	}
	// The two node roles', their two leave policies (worker_leave,
	// control_plane_reconciler in tf/iam.tf), cluster-autoscaler's
	// (tf/cluster-autoscaler.tf) and the GitHub Actions roles' (tf/cicd.tf, one
	// for_each block), and the bucket policy.
	if policies != 7 {
		t.Errorf("want 6 role policy blocks and the bucket policy, found %d", policies)
	}

	f, role := find("resource", "aws_iam_role", "worker")
	if got := f.text(role.Body.Attributes["assume_role_policy"].Expr.Range()); got != "local.assume_role_policy" {
		t.Errorf("worker trust policy = %s, want local.assume_role_policy (the template)", got)
	}

	f, pab := find("resource", "aws_s3_bucket_public_access_block", "bootstrap")
	for _, k := range []string{"block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"} {
		if literal(t, f, pab.Body, k) != "true" {
			t.Errorf("public access block: %s must be true", k)
		}
	}
	f, ver := find("resource", "aws_s3_bucket_versioning", "bootstrap")
	if literal(t, f, ver.Body.Blocks[0].Body, "status") != "Enabled" {
		t.Error("bucket versioning must be Enabled")
	}
	f, sse := find("resource", "aws_s3_bucket_server_side_encryption_configuration", "bootstrap")
	def := sse.Body.Blocks[0].Body.Blocks[0]
	if def.Type != "apply_server_side_encryption_by_default" || literal(t, f, def.Body, "sse_algorithm") != "aws:kms" {
		t.Error("bucket default encryption must be aws:kms")
	}
	f, key := find("resource", "aws_kms_key", "bootstrap")
	if literal(t, f, key.Body, "enable_key_rotation") != "true" {
		t.Error("the bucket key must rotate")
	}

	f, asg := find("resource", "aws_autoscaling_group", "workers")
	tags := map[string]string{}
	for _, b := range asg.Body.Blocks {
		if b.Type == "tag" {
			tags[f.text(b.Body.Attributes["key"].Expr.Range())] = f.text(b.Body.Attributes["value"].Expr.Range())
		}
	}
	for k, v := range map[string]string{
		`"k8s.io/cluster-autoscaler/enabled"`:             `"true"`,
		`"k8s.io/cluster-autoscaler/${var.cluster_name}"`: `"owned"`,
	} {
		if tags[k] != v {
			t.Errorf("worker group tag %s = %s, want %s (cluster-autoscaler auto-discovery)", k, tags[k], v)
		}
	}
	if got := f.text(asg.Body.Attributes["desired_capacity"].Expr.Range()); got != "var.num_nodes" {
		t.Errorf("worker group desired_capacity = %s, want var.num_nodes", got)
	}
	if got := f.text(asg.Body.Attributes["vpc_zone_identifier"].Expr.Range()); got != "local.node_subnet_ids" {
		t.Errorf("worker group subnets = %s, want local.node_subnet_ids (one per AZ)", got)
	}

	// User-data comes from the one template, with its two variables.
	m := parseHCL(t, repoPath(t, "tf", "modules", "node-config", "main.tf"))
	src := string(m.src)
	if !strings.Contains(src, `templatefile("${path.module}/../../templates/user-data.sh.tftpl", {`) ||
		!strings.Contains(src, "config_yaml = yamlencode(local.config)") || !strings.Contains(src, "environment = var.environment") {
		t.Error("modules/node-config must render templates/user-data.sh.tftpl with config_yaml = yamlencode(...) and environment")
	}
}
