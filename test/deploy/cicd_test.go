//go:build deploy

package deploy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"sigs.k8s.io/yaml"
)

// --- workflow policy ---------------------------------------------------------

// The checks of checkWorkflow; every violation message starts with one of them.
const (
	ruleUnpinned    = "unpinned"        // uses: not pinned by a full commit SHA with a # version comment
	ruleIDToken     = "id-token"        // id-token: write on a job without environment:, or for every job
	ruleApplyBranch = "apply-branch"    // a job running tf-apply that is not limited to pushes to main
	ruleAWSKeys     = "aws-keys"        // secrets.AWS_* or static key inputs
	ruleTopPerms    = "top-permissions" // missing or writing top-level permissions
)

var (
	pinnedUses   = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$`)
	usesLine     = regexp.MustCompile(`^\s*(?:-\s*)?uses:\s*["']?([^\s"'#]+)["']?\s*(#.*)?$`)
	versionNote  = regexp.MustCompile(`^#\s*v\d+\.\d+\.\d+\b`)
	awsSecretRef = regexp.MustCompile(`(?i)secrets\s*(\.\s*|\[\s*['"])AWS_`)
	staticKeyIn  = regexp.MustCompile(`(?im)^\s*aws-(access-key-id|secret-access-key|session-token)\s*:`)
	spaces       = regexp.MustCompile(`\s+`)
)

// checkWorkflow returns the policy violations of one workflow file.
func checkWorkflow(name, raw string) []string {
	var bad []string
	add := func(rule, format string, args ...any) {
		bad = append(bad, rule+": "+name+": "+fmt.Sprintf(format, args...))
	}

	// Pinning, from the text: the version comment is not in the parsed YAML.
	for i, line := range strings.Split(raw, "\n") {
		m := usesLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ref := m[1]
		if strings.HasPrefix(ref, "./") {
			continue // an action of this repository
		}
		if !pinnedUses.MatchString(ref) {
			add(ruleUnpinned, "line %d: %s is not pinned by a 40-hex commit SHA", i+1, ref)
		} else if !versionNote.MatchString(m[2]) {
			add(ruleUnpinned, "line %d: %s has no # vX.Y.Z comment naming the release", i+1, ref)
		}
	}

	if awsSecretRef.MatchString(raw) {
		add(ruleAWSKeys, "refers to secrets.AWS_*: AWS credentials come from OIDC roles only")
	}
	if staticKeyIn.MatchString(raw) {
		add(ruleAWSKeys, "passes static AWS keys to an action")
	}

	var doc map[string]any
	if err := yaml.Unmarshal([]byte(raw), &doc); err != nil {
		add("yaml", "%v", err)
		return bad
	}

	switch perms := doc["permissions"].(type) {
	case map[string]any:
		for scope, level := range perms {
			if level != "read" && level != "none" {
				add(ruleTopPerms, "top-level permissions give %s: %v; grant writes per job", scope, level)
				if scope == "id-token" {
					add(ruleIDToken, "top-level id-token: %v reaches every job", level)
				}
			}
		}
	case nil:
		add(ruleTopPerms, "no top-level permissions: the default token may write")
	default:
		add(ruleTopPerms, "top-level permissions %v: want a map such as {contents: read}", perms)
	}

	jobs, _ := doc["jobs"].(map[string]any)
	for _, id := range sortedKeys(jobs) {
		job, _ := jobs[id].(map[string]any)
		_, bound := job["environment"]
		switch perms := job["permissions"].(type) {
		case map[string]any:
			if perms["id-token"] == "write" && !bound {
				add(ruleIDToken, "job %s has id-token: write without an environment", id)
			}
		case string:
			if perms == "write-all" {
				add(ruleTopPerms, "job %s has permissions: write-all", id)
				if !bound {
					add(ruleIDToken, "job %s gets id-token: write (write-all) without an environment", id)
				}
			}
		}
		if runsTarget(job, "tf-apply") {
			cond, _ := job["if"].(string)
			cond = spaces.ReplaceAllString(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(cond), "${{"), "}}")), " ")
			if !strings.Contains(cond, "github.ref == 'refs/heads/main'") || !strings.Contains(cond, "github.event_name == 'push'") ||
				strings.Contains(cond, "||") || strings.Contains(cond, "!") {
				add(ruleApplyBranch, "job %s runs tf-apply under if: %q, want github.ref == 'refs/heads/main' && github.event_name == 'push'", id, cond)
			}
			if !bound {
				add(ruleApplyBranch, "job %s runs tf-apply without an environment (required reviewers)", id)
			}
		}
	}
	return bad
}

// runsTarget reports whether a step of the job runs `make ... target`.
func runsTarget(job map[string]any, target string) bool {
	steps, _ := job["steps"].([]any)
	for _, s := range steps {
		step, _ := s.(map[string]any)
		run, _ := step["run"].(string)
		for _, line := range strings.Split(run, "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == "make" && slices.Contains(f[1:], target) {
				return true
			}
		}
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestWorkflowPolicies checks every workflow of .github/workflows against the
// policy: actions pinned by commit, id-token: write only on jobs bound to an
// environment, apply only from pushes to main, no stored AWS keys, read-only
// top-level permissions.
func TestWorkflowPolicies(t *testing.T) {
	files, err := filepath.Glob(repoPath(t, ".github", "workflows", "*.y*ml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	applyJobs, idTokenJobs := 0, 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(f))
		for _, v := range checkWorkflow(filepath.Base(f), string(raw)) {
			t.Error(v)
		}
		var doc struct {
			Jobs map[string]map[string]any
		}
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		for _, job := range doc.Jobs {
			if runsTarget(job, "tf-apply") {
				applyJobs++
			}
			if p, _ := job["permissions"].(map[string]any); p["id-token"] == "write" {
				idTokenJobs++
			}
		}
	}
	for _, want := range []string{"demo-app.yml", "terraform.yml", "test.yml"} {
		if !slices.Contains(names, want) {
			t.Errorf(".github/workflows/%s is missing (have %v)", want, names)
		}
	}
	// The checks above must have had something to check.
	if applyJobs != 1 || idTokenJobs != 3 {
		t.Errorf("found %d jobs running tf-apply (want 1) and %d with id-token: write (want 3: plan, apply, deploy)", applyJobs, idTokenJobs)
	}
	t.Logf("checked %v", names)
}

// TestWorkflowPolicyCatches feeds checkWorkflow small hostile workflows: each
// must be caught by the check for its violation, and the good one by none.
func TestWorkflowPolicyCatches(t *testing.T) {
	const sha = "3d3c42e5aac5ba805825da76410c181273ba90b1"
	good := `name: ok
on: {push: {branches: [main]}}
permissions:
  contents: read
jobs:
  apply:
    if: github.ref == 'refs/heads/main' && github.event_name == 'push'
    runs-on: ubuntu-24.04
    environment: production
    permissions:
      contents: read
      id-token: write
    steps:
      - uses: actions/checkout@` + sha + ` # v7.0.1
      - uses: ./.github/actions/local
      - run: make tf-apply
`
	cases := []struct {
		name, rule string
		old, new   string // good with old replaced by new
	}{
		{"tag instead of SHA", ruleUnpinned, "@" + sha + " # v7.0.1", "@v7 # v7.0.1"},
		{"short SHA", ruleUnpinned, "@" + sha, "@" + sha[:12]},
		{"branch", ruleUnpinned, "@" + sha, "@main"},
		{"SHA without version comment", ruleUnpinned, " # v7.0.1", ""},
		{"quoted tag", ruleUnpinned, "- uses: actions/checkout@" + sha + " # v7.0.1", `- uses: "actions/checkout@v7"`},
		{"id-token without environment", ruleIDToken, "    environment: production\n", ""},
		{"id-token at top level", ruleIDToken, "permissions:\n  contents: read\njobs:", "permissions:\n  contents: read\n  id-token: write\njobs:"},
		{"write-all job without environment", ruleIDToken, "    environment: production\n    permissions:\n      contents: read\n      id-token: write\n", "    permissions: write-all\n"},
		{"apply on any branch", ruleApplyBranch, "    if: github.ref == 'refs/heads/main' && github.event_name == 'push'\n", ""},
		{"apply on pull requests too", ruleApplyBranch, "&& github.event_name == 'push'", "|| github.event_name == 'pull_request'"},
		{"apply from main, any event", ruleApplyBranch, " && github.event_name == 'push'", ""},
		{"apply negated", ruleApplyBranch, "if: github.ref", "if: ${{ !(github.ref"},
		{"apply without environment", ruleApplyBranch, "    environment: production\n    permissions:\n      contents: read\n      id-token: write\n", ""},
		{"apply in a multi-line run", ruleApplyBranch, "    if: github.ref == 'refs/heads/main' && github.event_name == 'push'\n", "    if: true\n"},
		{"secrets.AWS_", ruleAWSKeys, "      - run: make tf-apply\n", "      - run: make tf-apply\n        env:\n          K: ${{ secrets.AWS_SECRET_ACCESS_KEY }}\n"},
		{"secrets['AWS_']", ruleAWSKeys, "      - run: make tf-apply\n", "      - run: make tf-apply\n        env:\n          K: ${{ secrets['aws_access_key_id'] }}\n"},
		{"static key input", ruleAWSKeys, "      - run: make tf-apply\n", "        with:\n          aws-access-key-id: ${{ vars.KEY }}\n      - run: make tf-apply\n"},
		{"no top-level permissions", ruleTopPerms, "permissions:\n  contents: read\njobs:", "jobs:"},
		{"top-level write-all", ruleTopPerms, "permissions:\n  contents: read\njobs:", "permissions: write-all\njobs:"},
		{"top-level contents: write", ruleTopPerms, "permissions:\n  contents: read\njobs:", "permissions:\n  contents: write\njobs:"},
	}
	if v := checkWorkflow("good.yml", good); len(v) != 0 {
		t.Fatalf("the good workflow fails the policy: %v", v)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.old) {
				t.Fatalf("test case does not apply: %q not in the good workflow", c.old)
			}
			hostile := strings.Replace(good, c.old, c.new, 1)
			if c.name == "apply in a multi-line run" {
				hostile = strings.Replace(hostile, "      - run: make tf-apply\n", "      - run: |\n          echo plan\n          make tf-plan tf-apply\n", 1)
			}
			v := checkWorkflow("hostile.yml", hostile)
			caught := false
			for _, msg := range v {
				caught = caught || strings.HasPrefix(msg, c.rule+": ")
			}
			if !caught {
				t.Errorf("%s not caught (violations: %q) in:\n%s", c.rule, v, hostile)
			}
		})
	}
}

// --- make targets without AWS ------------------------------------------------

// makeEnv is the environment of a `make` run by these tests: terraform offline
// and quiet, nothing of the caller's AWS configuration.
func makeEnv(t *testing.T, extra ...string) []string {
	env := append(terraformEnv(t), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PROFILE=", "MAKEFLAGS=")
	return append(env, extra...)
}

// scratchTF is a copy of tf/ that terraform may write into.
func scratchTF(t *testing.T, moto bool) string {
	t.Helper()
	dir := t.TempDir()
	copyTree(t, repoPath(t, "tf"), dir, ".terraform", "terraform.tfstate", "terraform.tfvars", ".terraform.lock.hcl", "backend.tf", "tfplan", "tfplan.txt")
	if moto {
		override := `provider "aws" {
  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
`
		if err := os.WriteFile(filepath.Join(dir, "moto_override.tf"), []byte(override), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestCICDMakeTerraformChecks runs the check job of terraform.yml: make
// tf-fmt-check tf-validate (on a copy of tf/, providers from the local plugin dir).
func TestCICDMakeTerraformChecks(t *testing.T) {
	needTool(t, "terraform")
	pluginDir := awsProviderDir(t)
	dir := scratchTF(t, false)
	res := runCmd(t, cmdSpec{dir: repoRoot(t), env: makeEnv(t), timeout: 5 * time.Minute}, "make", "--no-print-directory",
		"tf-fmt-check", "tf-validate", "TF_DIR="+dir, "TF_INIT_ARGS=-plugin-dir="+pluginDir)
	if res.code != 0 || !strings.Contains(res.stdout, "The configuration is valid") {
		t.Fatalf("make tf-fmt-check tf-validate: %s", res)
	}

	// tf-fmt-check must fail on a badly formatted file.
	if err := os.WriteFile(filepath.Join(dir, "ugly.tf"), []byte("locals {\nx=1\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := runCmd(t, cmdSpec{dir: repoRoot(t), env: makeEnv(t)}, "make", "--no-print-directory", "tf-fmt-check", "TF_DIR="+dir); res.code == 0 {
		t.Errorf("make tf-fmt-check passed a badly formatted file: %s", res)
	}
}

// TestCICDMakeDemoImage runs `make demo-image` and reads the tarball: one image
// tagged IMAGE_REPO:IMAGE_TAG, one layer holding a static /demo-app, its
// entrypoint; the same commit gives the same digest; the binary serves.
func TestCICDMakeDemoImage(t *testing.T) {
	needTool(t, "tar")
	dir := t.TempDir()
	const repo = "123456789012.dkr.ecr.us-east-1.amazonaws.com/demo/demo-app"
	build := func(out string) string {
		res := runCmd(t, cmdSpec{dir: repoRoot(t), env: makeEnv(t, "GOFLAGS="), timeout: 5 * time.Minute}, "make", "--no-print-directory",
			"demo-image", "DEMO_IMAGE_TAR="+out, "IMAGE_REPO="+repo, "IMAGE_TAG=0123abc")
		if res.code != 0 {
			t.Fatalf("make demo-image: %s", res)
		}
		m := regexp.MustCompile(`\((sha256:[0-9a-f]{64})\)`).FindStringSubmatch(res.stdout)
		if m == nil {
			t.Fatalf("make demo-image printed no digest: %s", res)
		}
		return m[1]
	}
	tarPath := filepath.Join(dir, "demo.tar")
	digest := build(tarPath)
	if again := build(filepath.Join(dir, "again.tar")); again != digest {
		t.Errorf("two builds of one commit: %s and %s; want one digest", digest, again)
	}

	files := readTar(t, tarPath)
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 || !slices.Equal(manifest[0].RepoTags, []string{repo + ":0123abc"}) {
		t.Fatalf("want one image %s:0123abc with one layer, got %+v", repo, manifest)
	}
	var cfg struct {
		Architecture, OS string
		Config           struct{ Entrypoint []string }
	}
	if err := json.Unmarshal(files[manifest[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || !slices.Equal(cfg.Config.Entrypoint, []string{"/demo-app"}) {
		t.Errorf("image config %+v: want linux/amd64, entrypoint /demo-app", cfg)
	}
	layerPath := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(layerPath, files[manifest[0].Layers[0]], 0o644); err != nil {
		t.Fatal(err)
	}
	layer := readTar(t, layerPath)
	bin, ok := layer["demo-app"]
	if !ok {
		t.Fatalf("the layer has no /demo-app: %v", sortedKeys(anyMap(layer)))
	}
	binPath := filepath.Join(dir, "demo-app")
	if err := os.WriteFile(binPath, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(binPath)
	if err != nil {
		t.Fatalf("/demo-app is not an ELF binary: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("/demo-app is dynamically linked; the image has no libc")
		}
	}
	f.Close()

	// It serves /healthz (loopback only, bounded).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(binPath)
	cmd.Env = []string{"LISTEN_ADDR=" + addr, "POD_NAME=test"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var body []byte
	for i := 0; i < 50; i++ {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("the image's /demo-app answered /healthz with %q, want ok", body)
	}
}

func anyMap(m map[string][]byte) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// readTar returns the regular files of a tar archive by name (without ./).
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	head := make([]byte, 2)
	if _, err := io.ReadFull(f, head); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(io.MultiReader(bytes.NewReader(head), f))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r = zr
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = data
	}
}

// --- the CI roles in moto ----------------------------------------------------

// allows evaluates an identity policy the way IAM does for Allow and Deny
// statements, on action and resource only: conditions are ignored, so an
// "allowed" may still be narrowed by a condition, and a "denied" holds whatever
// the conditions say.
func allows(p policyDoc, action, resource string) bool {
	allowed := false
	for _, s := range p.Statement {
		if !globAny(strs(s.Action), action, true) || !globAny(strs(s.Resource), resource, false) {
			continue
		}
		if s.Effect == "Deny" {
			return false
		}
		allowed = allowed || s.Effect == "Allow"
	}
	return allowed
}

func globAny(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		re := "^" + strings.ReplaceAll(strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*"), `\?`, ".") + "$"
		if fold {
			re = "(?i)" + re
		}
		if regexp.MustCompile(re).MatchString(s) {
			return true
		}
	}
	return false
}

// ciRoles is what the CI part of tf/ (cicd.tf) created in moto.
type ciRoles struct {
	arn      map[string]string    // plan, apply, deploy
	trust    map[string]policyDoc // trust policies as IAM holds them
	policy   map[string]policyDoc // the inline policies as IAM holds them
	provider string               // OIDC provider ARN
}

// TestCICDRolesInMoto applies the CI part of tf/ (the OIDC provider and the
// plan, apply and deploy roles) with the hashicorp/aws provider against
// moto_server, then, with IAM enforced, checks what each role's credentials may
// do, and runs `make tf-plan` with the plan role against the S3 backend with
// its lock file.
func TestCICDRolesInMoto(t *testing.T) {
	tf := needTool(t, "terraform")
	needTool(t, "make")
	pluginDir := awsProviderDir(t)
	m := startMoto(t, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	const (
		repo         = "kubestrap/kubestrap"
		stateBucket  = "kubestrap-tfstate-test"
		stateKey     = "kubestrap/terraform.tfstate"
		clusterBkt   = "demo-kubestrap-123456789012-us-east-1"
		emptyStateFn = `{"version":4,"terraform_version":"1.11.4","serial":1,"lineage":"7d4e6d0c-6a52-4c55-9c40-cicdtest0001","outputs":{},"resources":[],"check_results":null}`
	)
	lockKey := stateKey + ".tflock"

	// Set-up, IAM not yet enforced: what the account holds before the roles act.
	s3c := m.s3(setupCreds)
	for _, b := range []string{stateBucket, clusterBkt} {
		if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	must(t, putObject(ctx, s3c, stateBucket, stateKey, emptyStateFn))
	must(t, putObject(ctx, s3c, stateBucket, "other/terraform.tfstate", emptyStateFn))
	must(t, putObject(ctx, s3c, clusterBkt, "demo/join.json", `{"token":"abcdef.0123456789abcdef"}`))
	ecrc := ecr.NewFromConfig(m.cfg(setupCreds))
	repoARNs := map[string]string{}
	for _, r := range []string{"demo/demo-app", "other/app"} {
		out, err := ecrc.CreateRepository(ctx, &ecr.CreateRepositoryInput{RepositoryName: aws.String(r)})
		if err != nil {
			t.Fatal(err)
		}
		repoARNs[r] = aws.ToString(out.Repository.RepositoryArn)
	}
	iamc := iam.NewFromConfig(m.cfg(setupCreds))
	ec2Trust := renderTemplate(t, repoPath(t, "tf", "templates", "ec2-assume-role.json.tftpl"), map[string]any{"ec2_service_principal": "ec2.amazonaws.com"})
	for _, r := range []string{"demo-kubestrap-worker", "other-role"} {
		if _, err := iamc.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(r), AssumeRolePolicyDocument: aws.String(ec2Trust)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ec2.NewFromConfig(m.cfg(setupCreds)).RegisterImage(ctx, &ec2.RegisterImageInput{
		Name: aws.String("kubestrap-k8s-v1.37-20261126000000"), RootDeviceName: aws.String("/dev/xvda"), Architecture: ec2types.ArchitectureValuesX8664,
	}); err != nil {
		t.Fatal(err)
	}

	// terraform apply of the CI resources only (-target), local state.
	dir := scratchTF(t, true)
	env := offlineEnv(t, m)
	mustRun(t, cmdSpec{dir: dir, env: env, timeout: 3 * time.Minute}, tf, "init", "-backend=false", "-input=false", "-no-color", "-plugin-dir="+pluginDir)
	mustRun(t, cmdSpec{dir: dir, env: env, timeout: 5 * time.Minute}, tf, "apply", "-auto-approve", "-input=false", "-no-color",
		"-target=aws_iam_role_policy.github", "-var", "region="+motoRegion, "-var", "cluster_name=demo",
		"-var", "github_repository="+repo, "-var", "tf_state_bucket="+stateBucket, "-var", "tf_state_key="+stateKey)
	var outputs map[string]struct{ Value any }
	if err := json.Unmarshal([]byte(mustRun(t, cmdSpec{dir: dir, env: env}, tf, "output", "-json").stdout), &outputs); err != nil {
		t.Fatal(err)
	}
	roles := ciRoles{arn: map[string]string{}, trust: map[string]policyDoc{}, policy: map[string]policyDoc{}}
	roles.provider, _ = outputs["github_oidc_provider_arn"].Value.(string)
	for _, r := range []string{"plan", "apply", "deploy"} {
		roles.arn[r], _ = outputs["github_"+r+"_role_arn"].Value.(string)
		if !strings.HasSuffix(roles.arn[r], ":role/demo-github-"+r) {
			t.Fatalf("output github_%s_role_arn = %q", r, roles.arn[r])
		}
		got, err := iamc.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("demo-github-" + r)})
		if err != nil {
			t.Fatal(err)
		}
		roles.trust[r] = parsePolicy(t, r+" trust policy", unescape(t, aws.ToString(got.Role.AssumeRolePolicyDocument)))
		// All inline policies of the role, as one document.
		names, err := iamc.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String("demo-github-" + r)})
		if err != nil || len(names.PolicyNames) == 0 {
			t.Fatalf("demo-github-%s inline policies: %v %v", r, names, err)
		}
		var merged policyDoc
		for _, n := range names.PolicyNames {
			pol, err := iamc.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("demo-github-" + r), PolicyName: aws.String(n)})
			if err != nil {
				t.Fatal(err)
			}
			doc := parsePolicy(t, r+" policy "+n, unescape(t, aws.ToString(pol.PolicyDocument)))
			merged.Version = doc.Version
			merged.Statement = append(merged.Statement, doc.Statement...)
		}
		roles.policy[r] = merged
		t.Logf("demo-github-%s: inline policies %v, %d statements", r, names.PolicyNames, len(merged.Statement))
		attached, err := iamc.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String("demo-github-" + r)})
		if err != nil || len(attached.AttachedPolicies) != 0 {
			t.Errorf("demo-github-%s: managed policies %v (%v), want none", r, attached, err)
		}
	}

	t.Run("trust", func(t *testing.T) {
		// moto does not check the conditions of a web identity trust policy
		// (AssumeRoleWithWebIdentity below succeeds with any token), so the
		// documents IAM holds are checked here: GitHub's issuer, audience
		// sts.amazonaws.com, and exactly one subject: the role's environment.
		prov, err := iamc.GetOpenIDConnectProvider(ctx, &iam.GetOpenIDConnectProviderInput{OpenIDConnectProviderArn: aws.String(roles.provider)})
		if err != nil {
			t.Fatalf("OIDC provider %q: %v", roles.provider, err)
		}
		if !strings.HasSuffix(roles.provider, ":oidc-provider/token.actions.githubusercontent.com") || !slices.Equal(prov.ClientIDList, []string{"sts.amazonaws.com"}) {
			t.Errorf("OIDC provider %s with audiences %v", roles.provider, prov.ClientIDList)
		}
		want := map[string]string{
			"plan":   "repo:" + repo + ":environment:terraform-plan",
			"apply":  "repo:" + repo + ":environment:production",
			"deploy": "repo:" + repo + ":environment:demo",
		}
		for r, sub := range want {
			if err := checkGitHubTrust(roles.trust[r], roles.provider, sub); err != nil {
				t.Errorf("%s role: %v", r, err)
			}
		}
		// The check itself catches a trust policy open to any branch or repository.
		for name, doc := range map[string]string{
			"StringLike sub": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + roles.provider + `"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"token.actions.githubusercontent.com:aud":"sts.amazonaws.com"},"StringLike":{"token.actions.githubusercontent.com:sub":"repo:` + repo + `:*"}}}]}`,
			"no audience":    `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + roles.provider + `"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"token.actions.githubusercontent.com:sub":"` + want["apply"] + `"}}}]}`,
			"other subject":  `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"` + roles.provider + `"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"token.actions.githubusercontent.com:aud":"sts.amazonaws.com","token.actions.githubusercontent.com:sub":"repo:` + repo + `:ref:refs/heads/main"}}}]}`,
		} {
			if checkGitHubTrust(parsePolicy(t, name, doc), roles.provider, want["apply"]) == nil {
				t.Errorf("checkGitHubTrust accepted %s", name)
			}
		}
	})

	// Web identity credentials of each role, as configure-aws-credentials gets them.
	creds := map[string]aws.Credentials{}
	for r, arn := range roles.arn {
		out, err := sts.NewFromConfig(m.cfg(setupCreds)).AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
			RoleArn: aws.String(arn), RoleSessionName: aws.String("github-" + r), WebIdentityToken: aws.String("header.payload.signature"),
		})
		if err != nil {
			t.Fatalf("AssumeRoleWithWebIdentity %s: %v", r, err)
		}
		c := out.Credentials
		creds[r] = aws.Credentials{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey), SessionToken: aws.ToString(c.SessionToken)}
	}
	m.enforceAuth(t)
	if _, err := m.s3(setupCreds).ListBuckets(ctx, &s3.ListBucketsInput{}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("IAM enforcement is not on: %v", err)
	}

	t.Run("enforced in moto", func(t *testing.T) {
		// moto resolves resources for S3 (bucket, key) and IAM (role); for EC2
		// and ECR it authorizes the action against "*", so only their
		// action-level outcomes are checked here (the rest: "policy documents").
		get := func(r, bucket, key string) func(context.Context) error {
			return func(ctx context.Context) error {
				out, err := m.s3(creds[r]).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
				if err == nil {
					io.Copy(io.Discard, out.Body)
					out.Body.Close()
				}
				return err
			}
		}
		put := func(r, bucket, key string) func(context.Context) error {
			return func(ctx context.Context) error { return putObject(ctx, m.s3(creds[r]), bucket, key, emptyStateFn) }
		}
		del := func(r, bucket, key string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := m.s3(creds[r]).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
				return err
			}
		}
		getVersioning := func(r, bucket string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := m.s3(creds[r]).GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(bucket)})
				return err
			}
		}
		putVersioning := func(r, bucket string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := m.s3(creds[r]).PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: aws.String(bucket),
					VersioningConfiguration: &s3types.VersioningConfiguration{Status: s3types.BucketVersioningStatusEnabled}})
				return err
			}
		}
		getRole := func(r, role string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := iam.NewFromConfig(m.cfg(creds[r])).GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String(role)})
				return err
			}
		}
		putRolePolicy := func(r, role string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := iam.NewFromConfig(m.cfg(creds[r])).PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(role),
					PolicyName: aws.String("escalate"), PolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)})
				return err
			}
		}
		createRole := func(r string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := iam.NewFromConfig(m.cfg(creds[r])).CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("demo-github-extra"), AssumeRolePolicyDocument: aws.String(ec2Trust)})
				return err
			}
		}
		describeVpcs := func(r string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := ec2.NewFromConfig(m.cfg(creds[r])).DescribeVpcs(ctx, &ec2.DescribeVpcsInput{})
				return err
			}
		}
		createVpc := func(r string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := ec2.NewFromConfig(m.cfg(creds[r])).CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16")})
				return err
			}
		}
		ecrToken := func(r string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := ecr.NewFromConfig(m.cfg(creds[r])).GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
				return err
			}
		}
		ecrDelete := func(r, name string) func(context.Context) error {
			return func(ctx context.Context) error {
				_, err := ecr.NewFromConfig(m.cfg(creds[r])).DeleteRepository(ctx, &ecr.DeleteRepositoryInput{RepositoryName: aws.String(name)})
				return err
			}
		}
		runPermissionChecks(t, []permissionCheck{
			{"plan", "GetObject state", true, get("plan", stateBucket, stateKey)},
			{"plan", "PutObject state", false, put("plan", stateBucket, stateKey)},
			{"plan", "PutObject state lock file", true, put("plan", stateBucket, lockKey)},
			{"plan", "DeleteObject state lock file", true, del("plan", stateBucket, lockKey)},
			{"plan", "GetObject other state", false, get("plan", stateBucket, "other/terraform.tfstate")},
			{"plan", "GetBucketVersioning cluster bucket", true, getVersioning("plan", clusterBkt)},
			{"plan", "PutBucketVersioning cluster bucket", false, putVersioning("plan", clusterBkt)},
			{"plan", "GetObject demo/join.json", false, get("plan", clusterBkt, "demo/join.json")},
			{"plan", "iam:GetRole demo-kubestrap-worker", true, getRole("plan", "demo-kubestrap-worker")},
			{"plan", "iam:GetRole other-role", false, getRole("plan", "other-role")},
			{"plan", "iam:PutRolePolicy demo-kubestrap-worker", false, putRolePolicy("plan", "demo-kubestrap-worker")},
			{"plan", "iam:PutRolePolicy demo-github-plan", false, putRolePolicy("plan", "demo-github-plan")},
			{"plan", "iam:CreateRole", false, createRole("plan")},
			{"plan", "ec2:DescribeVpcs", true, describeVpcs("plan")},
			{"plan", "ec2:CreateVpc", false, createVpc("plan")},
			{"plan", "ecr:DeleteRepository", false, ecrDelete("plan", "demo/demo-app")},

			{"apply", "GetObject state", true, get("apply", stateBucket, stateKey)},
			{"apply", "PutObject state", true, put("apply", stateBucket, stateKey)},
			{"apply", "PutObject other state", false, put("apply", stateBucket, "other/terraform.tfstate")},
			{"apply", "PutBucketVersioning cluster bucket", true, putVersioning("apply", clusterBkt)},
			{"apply", "PutBucketVersioning state bucket", false, putVersioning("apply", stateBucket)},
			{"apply", "GetObject demo/join.json", false, get("apply", clusterBkt, "demo/join.json")},
			{"apply", "iam:PutRolePolicy demo-kubestrap-worker", true, putRolePolicy("apply", "demo-kubestrap-worker")},
			{"apply", "iam:PutRolePolicy other-role", false, putRolePolicy("apply", "other-role")},
			{"apply", "iam:PutRolePolicy demo-github-apply (itself)", false, putRolePolicy("apply", "demo-github-apply")},
			{"apply", "iam:PutRolePolicy demo-github-deploy", false, putRolePolicy("apply", "demo-github-deploy")},
			{"apply", "ec2:CreateVpc", true, createVpc("apply")},

			{"deploy", "ecr:GetAuthorizationToken", true, ecrToken("deploy")},
			{"deploy", "ecr:DeleteRepository demo/demo-app", false, ecrDelete("deploy", "demo/demo-app")},
			{"deploy", "GetObject state", false, get("deploy", stateBucket, stateKey)},
			{"deploy", "GetObject demo/join.json", false, get("deploy", clusterBkt, "demo/join.json")},
			{"deploy", "ec2:DescribeVpcs", false, describeVpcs("deploy")},
			{"deploy", "iam:GetRole demo-kubestrap-worker", false, getRole("deploy", "demo-kubestrap-worker")},
		})
	})

	t.Run("policy documents", func(t *testing.T) {
		// What moto cannot decide (resources of ECR, KMS, IAM creates), from the
		// documents IAM holds, evaluated on action and resource (allows).
		const acct, region = "123456789012", motoRegion
		role := func(name string) string { return "arn:aws:iam::" + acct + ":role/" + name }
		key := "arn:aws:kms:" + region + ":" + acct + ":key/0b9e5f1c-2d3a-4b5c-8d6e-7f8091a2b3c4"
		elb := func(res string) string { return "arn:aws:elasticloadbalancing:" + region + ":" + acct + ":" + res }
		group := func(name string) string {
			return "arn:aws:autoscaling:" + region + ":" + acct + ":autoScalingGroup:6d3b1f0e-0000-4000-8000-000000000001:autoScalingGroupName/" + name
		}
		cases := []struct {
			role, action, resource string
			allowed                bool
		}{
			{"deploy", "ecr:PutImage", repoARNs["demo/demo-app"], true},
			{"deploy", "ecr:InitiateLayerUpload", repoARNs["demo/demo-app"], true},
			{"deploy", "ecr:CompleteLayerUpload", repoARNs["demo/demo-app"], true},
			{"deploy", "ecr:PutImage", repoARNs["other/app"], false},
			{"deploy", "ecr:InitiateLayerUpload", repoARNs["other/app"], false},
			{"deploy", "ecr:DeleteRepository", repoARNs["demo/demo-app"], false},
			{"deploy", "ecr:SetRepositoryPolicy", repoARNs["demo/demo-app"], false},
			{"deploy", "ecr:PutImageTagMutability", repoARNs["demo/demo-app"], false},

			{"plan", "ecr:DescribeRepositories", repoARNs["demo/demo-app"], true},
			{"plan", "ecr:PutImage", repoARNs["demo/demo-app"], false},
			{"plan", "kms:DescribeKey", key, true},
			{"plan", "kms:ScheduleKeyDeletion", key, false},
			{"plan", "kms:Decrypt", key, false},
			{"plan", "iam:GetOpenIDConnectProvider", roles.provider, true},

			{"apply", "ecr:CreateRepository", repoARNs["demo/demo-app"], true},
			{"apply", "ecr:CreateRepository", repoARNs["other/app"], false},
			{"apply", "ecr:PutImage", repoARNs["demo/demo-app"], false},
			{"apply", "kms:EnableKeyRotation", key, true},
			{"apply", "kms:Decrypt", key, false},
			{"apply", "iam:CreateRole", role("demo-kubestrap-control-plane"), true},
			{"apply", "iam:CreateRole", role("demo-github-extra"), false},
			{"apply", "iam:UpdateAssumeRolePolicy", role("demo-github-apply"), false},
			{"apply", "iam:CreateOpenIDConnectProvider", roles.provider, false},
			{"apply", "iam:PassRole", role("demo-kubestrap-worker"), true},
			{"apply", "iam:PassRole", role("demo-github-apply"), false},
			{"apply", "iam:PassRole", role("other-role"), false},
			{"apply", "iam:CreateUser", "arn:aws:iam::" + acct + ":user/demo", false},
			{"apply", "iam:CreateAccessKey", "arn:aws:iam::" + acct + ":user/demo", false},
			{"apply", "s3:GetObject", "arn:aws:s3:::" + clusterBkt + "/demo/join.json", false},
			{"apply", "s3:PutBucketPolicy", "arn:aws:s3:::" + clusterBkt, true},
			{"apply", "s3:PutBucketPolicy", "arn:aws:s3:::" + stateBucket, false},

			// The control-plane endpoint and group (tf/control-plane.tf).
			{"plan", "elasticloadbalancing:DescribeTargetHealth", "*", true},
			{"plan", "elasticloadbalancing:CreateLoadBalancer", elb("loadbalancer/net/demo-api/0123456789abcdef"), false},
			{"apply", "elasticloadbalancing:CreateLoadBalancer", elb("loadbalancer/net/demo-api/0123456789abcdef"), true},
			{"apply", "elasticloadbalancing:CreateLoadBalancer", elb("loadbalancer/net/other-api/0123456789abcdef"), false},
			{"apply", "elasticloadbalancing:CreateListener", elb("loadbalancer/net/demo-api/0123456789abcdef"), true},
			{"apply", "elasticloadbalancing:ModifyListener", elb("listener/net/demo-api/0123456789abcdef/fedcba9876543210"), true},
			{"apply", "elasticloadbalancing:ModifyTargetGroupAttributes", elb("targetgroup/demo-api/0123456789abcdef"), true},
			{"apply", "elasticloadbalancing:ModifyTargetGroupAttributes", elb("targetgroup/other-api/0123456789abcdef"), false},
			{"apply", "elasticloadbalancing:RegisterTargets", elb("targetgroup/demo-api/0123456789abcdef"), false},
			{"apply", "autoscaling:UpdateAutoScalingGroup", group("demo-control-plane"), true},
			{"apply", "autoscaling:SuspendProcesses", group("demo-control-plane"), true},
			{"apply", "autoscaling:UpdateAutoScalingGroup", group("other-control-plane"), false},
			{"apply", "autoscaling:StartInstanceRefresh", group("demo-control-plane"), false},
			{"apply", "autoscaling:PutLifecycleHook", group("demo-control-plane"), false},
		}
		for _, c := range cases {
			if got := allows(roles.policy[c.role], c.action, c.resource); got != c.allowed {
				t.Errorf("%s role: %s on %s: allowed=%v, want %v", c.role, c.action, c.resource, got, c.allowed)
			}
		}
		// The plan role only reads: Get*, List*, Describe*, except the lock file.
		for _, s := range roles.policy["plan"].Statement {
			lockOnly := slices.Equal(strs(s.Resource), []string{"arn:aws:s3:::" + stateBucket + "/" + lockKey})
			for _, a := range strs(s.Action) {
				verb := a[strings.Index(a, ":")+1:]
				readOnly := strings.HasPrefix(verb, "Get") || strings.HasPrefix(verb, "List") || strings.HasPrefix(verb, "Describe")
				if !readOnly && !(lockOnly && (a == "s3:PutObject" || a == "s3:DeleteObject")) {
					t.Errorf("plan role statement %s: %s is not read-only", s.Sid, a)
				}
			}
		}
		// No role may use a bare * action or a service wildcard.
		for r, p := range roles.policy {
			for _, s := range p.Statement {
				for _, a := range strs(s.Action) {
					if a == "*" || strings.HasSuffix(a, ":*") {
						t.Errorf("%s role statement %s: action %s", r, s.Sid, a)
					}
				}
			}
		}
	})

	t.Run("make tf-plan with the plan role", func(t *testing.T) {
		planDir := scratchTF(t, true)
		backend := filepath.Join(t.TempDir(), "moto.s3.tfbackend")
		// workspace_key_prefix = "": with IAM enforced, moto's signature check
		// rejects a ListObjectsV2 whose prefix holds a '/' (the backend lists
		// "env:/" by default); AWS does not care.
		cfg := fmt.Sprintf(`bucket = %q
key    = %q
region = %q
endpoints = {
  s3  = %q
  sts = %q
}
use_path_style              = true
skip_credentials_validation = true
skip_requesting_account_id  = true
skip_metadata_api_check     = true
skip_region_validation      = true
workspace_key_prefix        = ""
`, stateBucket, stateKey, motoRegion, m.URL, m.URL)
		if err := os.WriteFile(backend, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		as := func(r string) []string {
			c := creds[r]
			return append(offlineEnv(t, m), "AWS_ACCESS_KEY_ID="+c.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+c.SecretAccessKey,
				"AWS_SESSION_TOKEN="+c.SessionToken, "TF_VAR_region="+motoRegion, "MAKEFLAGS=")
		}
		makeTF := func(r string, targets ...string) result {
			args := append([]string{"--no-print-directory"}, targets...)
			args = append(args, "TF_DIR="+planDir, "TF_BACKEND_CONFIG="+backend, "TF_INIT_ARGS=-plugin-dir="+pluginDir, "TF_LOCK_TIMEOUT=0s")
			return runCmd(t, cmdSpec{dir: repoRoot(t), env: as(r), timeout: 5 * time.Minute}, "make", args...)
		}
		stateNow := func() string {
			out, err := m.s3(creds["apply"]).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(stateBucket), Key: aws.String(stateKey)})
			if err != nil {
				t.Fatal(err)
			}
			defer out.Body.Close()
			b, _ := io.ReadAll(out.Body)
			return string(b)
		}
		lockExists := func() bool {
			_, err := m.s3(creds["apply"]).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(stateBucket), Key: aws.String(lockKey)})
			if err != nil && statusOf(err) != http.StatusNotFound {
				t.Fatalf("HeadObject %s: %v", lockKey, err)
			}
			return err == nil
		}
		before := stateNow()

		res := makeTF("plan", "tf-plan")
		if res.code != 0 {
			t.Fatalf("make tf-plan with the plan role: %s", res)
		}
		if !strings.Contains(res.stdout, `Successfully configured the backend "s3"`) {
			t.Errorf("make tf-plan did not use the S3 backend: %s", res)
		}
		if text, err := os.ReadFile(filepath.Join(planDir, "tfplan.txt")); err != nil || !strings.Contains(string(text), "aws_s3_bucket.bootstrap will be created") {
			t.Errorf("tfplan.txt: %v\n%s", err, text)
		}
		if lockExists() {
			t.Errorf("%s left behind after the plan", lockKey)
		}

		// A lock held by someone else (an apply in progress): the plan waits
		// TF_LOCK_TIMEOUT (0s here) and fails without touching the state.
		lockInfo := `{"ID":"6b7c1a0e-0000-4000-8000-000000000001","Operation":"OperationTypeApply","Who":"someone@elsewhere","Version":"1.11.4","Created":"2026-11-29T00:00:00Z","Path":"` + stateBucket + `/` + stateKey + `"}`
		must(t, putObject(ctx, m.s3(creds["apply"]), stateBucket, lockKey, lockInfo))
		res = makeTF("plan", "tf-plan")
		if res.code == 0 || !strings.Contains(res.stderr+res.stdout, "Error acquiring the state lock") {
			t.Errorf("make tf-plan under a held lock: want a lock error, got %s", res)
		}
		if _, err := m.s3(creds["apply"]).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(stateBucket), Key: aws.String(lockKey)}); err != nil {
			t.Fatal(err)
		}

		// The plan role cannot apply: every create is refused, the state stays.
		res = makeTF("plan", "tf-apply")
		out := res.stdout + res.stderr
		if res.code == 0 || !(strings.Contains(out, "403") || strings.Contains(out, "AccessDenied") || strings.Contains(out, "UnauthorizedOperation")) {
			t.Errorf("make tf-apply with the plan role: want access denied, got %s", res)
		} else if i := strings.Index(out, "Error: "); i >= 0 {
			t.Logf("make tf-apply with the plan role failed as it must: %s", strings.SplitN(out[i:], "\n", 2)[0])
		}
		if after := stateNow(); after != before {
			t.Errorf("the plan role changed the state:\n%s", after)
		}
	})
}

// checkGitHubTrust checks a role's trust policy: one statement allowing
// sts:AssumeRoleWithWebIdentity to GitHub's OIDC provider, with audience
// sts.amazonaws.com and exactly the subject sub, both StringEquals, and no
// other condition.
func checkGitHubTrust(p policyDoc, provider, sub string) error {
	if len(p.Statement) != 1 {
		return fmt.Errorf("%d statements, want 1", len(p.Statement))
	}
	s := p.Statement[0]
	principal, _ := s.Principal.(map[string]any)
	if s.Effect != "Allow" || !slices.Equal(strs(s.Action), []string{"sts:AssumeRoleWithWebIdentity"}) || len(principal) != 1 || principal["Federated"] != provider {
		return fmt.Errorf("statement %+v: want Allow sts:AssumeRoleWithWebIdentity for %s only", s, provider)
	}
	if len(s.Condition) != 1 || len(s.Condition["StringEquals"]) != 2 {
		return fmt.Errorf("conditions %v: want StringEquals on aud and sub only", s.Condition)
	}
	eq := s.Condition["StringEquals"]
	if !slices.Equal(strs(eq["token.actions.githubusercontent.com:aud"]), []string{"sts.amazonaws.com"}) {
		return fmt.Errorf("audience %v, want sts.amazonaws.com", eq["token.actions.githubusercontent.com:aud"])
	}
	if !slices.Equal(strs(eq["token.actions.githubusercontent.com:sub"]), []string{sub}) {
		return fmt.Errorf("subject %v, want %s", eq["token.actions.githubusercontent.com:sub"], sub)
	}
	return nil
}

// runPermissionChecks runs calls with IAM enforced and compares each outcome
// with the expected one (a denial must be a 403).
func runPermissionChecks(t *testing.T, checks []permissionCheck) {
	t.Helper()
	for _, c := range checks {
		err := c.call(ctxT(t))
		switch {
		case c.allowed && err != nil:
			t.Errorf("%s: %s must be allowed: %v", c.who, c.what, err)
		case !c.allowed && err == nil:
			t.Errorf("%s: %s must be denied, but succeeded", c.who, c.what)
		case !c.allowed && statusOf(err) != http.StatusForbidden:
			t.Errorf("%s: %s must be denied with 403, got: %v", c.who, c.what, err)
		default:
			outcome := "allowed"
			if !c.allowed {
				outcome = "denied (403)"
			}
			t.Logf("%-7s %-50s %s", c.who, c.what, outcome)
		}
	}
}

// unescape decodes a policy document as IAM returns it (URL-encoded).
func unescape(t *testing.T, doc string) string {
	t.Helper()
	s, err := url.QueryUnescape(doc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
