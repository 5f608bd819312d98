//go:build deploy

package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// This file tests what tf/ provides for nodes leaving the cluster (issue 10):
// the termination lifecycle hook of the worker group, the Spot option (mixed
// instances policy, capacity rebalance), and the IAM a leaving node and the
// control plane's dead-Node reconciler need (tf/iam.tf: worker_leave,
// control_plane_reconciler).
//
// What moto_server 5.2.1 can and cannot prove (moto/core/responses.py
// call_action, moto/iam/access_control.py):
//   - it authorizes a call before it dispatches it, and answers an action it
//     does not implement (autoscaling CompleteLifecycleAction and
//     RecordLifecycleActionHeartbeat: moto/autoscaling/responses.py has only
//     Put/Describe/DeleteLifecycleHook) with 500 (NotImplementedError) only
//     after authorizing it. So 403 AccessDenied against 500 is the
//     authorization decision on the action;
//   - it authorizes every autoscaling and ec2 call against the resource "*":
//     a statement whose Resource is the worker group's ARN pattern does not
//     match "*", so moto refuses the real, scoped policy. That the worker may
//     complete lifecycle actions of its own group and of no other is therefore
//     checked on paper (TestLeavePolicies: the exact ARN pattern, evaluated
//     with allows() against real and foreign group ARNs, hostile variants
//     included); moto proves the action names with the policy's Resource
//     widened to "*", and whether it evaluates resources at all is probed.

const (
	leaveCluster   = "demo"
	leaveAccount   = "123456789012" // moto's default account
	leaveGroupName = leaveCluster + "-workers"
	leaveHookName  = "kubestrap-leave"
)

// leaveGroupPattern is the ARN pattern of the worker group IAM policies use.
var leaveGroupPattern = "arn:aws:autoscaling:" + motoRegion + ":" + leaveAccount + ":autoScalingGroup:*:autoScalingGroupName/" + leaveGroupName

// lifecycleActions are what a leaving worker calls on its group.
var lifecycleActions = []string{"autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"}

// leavePolicyProblems checks a worker leave policy: exactly the two lifecycle
// actions, on exactly the worker group's ARN pattern, allowed on the group's
// real ARN (with any UUID) and on no other group's.
func leavePolicyProblems(doc string) []string {
	var p policyDoc
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	var problems []string
	if p.Version != "2012-10-17" {
		problems = append(problems, "Version "+p.Version)
	}
	granted := map[string]bool{}
	for _, s := range p.Statement {
		if s.Effect != "Allow" {
			problems = append(problems, fmt.Sprintf("%s: effect %s", s.Sid, s.Effect))
		}
		if len(s.Condition) != 0 {
			problems = append(problems, fmt.Sprintf("%s: unexpected condition %v", s.Sid, s.Condition))
		}
		for _, a := range strs(s.Action) {
			granted[a] = true
			if strings.ContainsAny(a, "*?") {
				problems = append(problems, fmt.Sprintf("%s: wildcard action %s", s.Sid, a))
			} else if !slices.Contains(lifecycleActions, a) {
				problems = append(problems, fmt.Sprintf("%s: %s is not a lifecycle action a leaving worker needs", s.Sid, a))
			}
		}
		for _, r := range strs(s.Resource) {
			if r == "*" {
				problems = append(problems, fmt.Sprintf("%s: Resource \"*\" grants the actions on every group", s.Sid))
			} else if r != leaveGroupPattern {
				problems = append(problems, fmt.Sprintf("%s: resource %s, want exactly %s", s.Sid, r, leaveGroupPattern))
			}
		}
	}
	for _, a := range lifecycleActions {
		if !granted[a] {
			problems = append(problems, "a leaving worker needs "+a)
		}
	}
	// Evaluated as IAM does on action and resource (allows, cicd_test.go).
	groupARN := func(region, account, uuid, name string) string {
		return "arn:aws:autoscaling:" + region + ":" + account + ":autoScalingGroup:" + uuid + ":autoScalingGroupName/" + name
	}
	const uuid = "6d5f2e4a-0b1c-4d3e-9f8a-7b6c5d4e3f2a"
	for _, a := range lifecycleActions {
		if !allows(p, a, groupARN(motoRegion, leaveAccount, uuid, leaveGroupName)) {
			problems = append(problems, a+" is not allowed on the worker group itself")
		}
		for what, arn := range map[string]string{
			"another group of the account":    groupARN(motoRegion, leaveAccount, uuid, "other-workers"),
			"a group whose name extends it":   groupARN(motoRegion, leaveAccount, uuid, leaveGroupName+"-evil"),
			"a group of the name in a region": groupARN("eu-west-1", leaveAccount, uuid, leaveGroupName),
			"a group of the name elsewhere":   groupARN(motoRegion, "210987654321", uuid, leaveGroupName),
			"a launch configuration":          "arn:aws:autoscaling:" + motoRegion + ":" + leaveAccount + ":launchConfiguration:" + uuid + ":launchConfigurationName/" + leaveGroupName,
			"the resource \"*\"":              "*",
		} {
			if allows(p, a, arn) {
				problems = append(problems, fmt.Sprintf("%s is allowed on %s (%s)", a, what, arn))
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// reconcilerPolicyProblems checks the control plane's reconciler policy:
// ec2:DescribeInstances on "*" (it has no resource-level permissions) and
// nothing else.
func reconcilerPolicyProblems(doc string) []string {
	var p policyDoc
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	var problems []string
	if p.Version != "2012-10-17" {
		problems = append(problems, "Version "+p.Version)
	}
	found := false
	for _, s := range p.Statement {
		if s.Effect != "Allow" || len(s.Condition) != 0 {
			problems = append(problems, fmt.Sprintf("%s: effect %s, condition %v", s.Sid, s.Effect, s.Condition))
		}
		for _, a := range strs(s.Action) {
			if a != "ec2:DescribeInstances" {
				problems = append(problems, fmt.Sprintf("%s: %s is not what the reconciler needs", s.Sid, a))
				continue
			}
			found = true
			if !slices.Equal(strs(s.Resource), []string{"*"}) {
				problems = append(problems, fmt.Sprintf("%s: ec2:DescribeInstances on %q: it supports no resource-level permissions, want \"*\"", s.Sid, strs(s.Resource)))
			}
		}
	}
	if !found {
		problems = append(problems, "the reconciler needs ec2:DescribeInstances")
	}
	sort.Strings(problems)
	return problems
}

// imdsTagKey is what EC2 accepts as an instance tag key when tags are in the
// instance metadata (EC2 user guide, "View tags for your EC2 instances using
// instance metadata"): letters, digits and + - = . , _ : @; no "/" or space;
// not ".", ".." or "_index". Other keys make launches fail.
var imdsTagKey = regexp.MustCompile(`^[A-Za-z0-9+\-=.,_:@]+$`)

func imdsTagProblems(metadataTags string, instanceTagKeys []string) []string {
	if metadataTags != "enabled" {
		return nil
	}
	var problems []string
	for _, k := range instanceTagKeys {
		if !imdsTagKey.MatchString(k) || k == "." || k == ".." || k == "_index" {
			problems = append(problems, fmt.Sprintf("instance tag %q cannot be in the instance metadata: EC2 would refuse to launch the worker", k))
		}
	}
	sort.Strings(problems)
	return problems
}

// TestLeavePolicies renders the two leave policy templates with templatefile()
// and checks them on paper, each rule with a hostile variant that must fail.
func TestLeavePolicies(t *testing.T) {
	needTool(t, "terraform")
	leave := renderTemplate(t, repoPath(t, "tf", "templates", "worker-leave-policy.json.tftpl"), map[string]any{"worker_group_arn": leaveGroupPattern})
	reconciler := renderTemplate(t, repoPath(t, "tf", "templates", "control-plane-reconciler-policy.json.tftpl"), map[string]any{})
	t.Logf("worker leave policy: %s", leave)
	t.Logf("reconciler policy: %s", reconciler)
	checkLeavePolicyDocs(t, leave, reconciler)
}

func checkLeavePolicyDocs(t *testing.T, leave, reconciler string) {
	t.Helper()
	if problems := leavePolicyProblems(leave); len(problems) > 0 {
		t.Errorf("worker leave policy:\n  %s", strings.Join(problems, "\n  "))
	}
	if problems := reconcilerPolicyProblems(reconciler); len(problems) > 0 {
		t.Errorf("control-plane reconciler policy:\n  %s", strings.Join(problems, "\n  "))
	}
	quoted := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	hostile := []struct {
		name, doc string
		check     func(string) []string
	}{
		{"leave: Resource \"*\"", strings.Replace(leave, quoted(leaveGroupPattern), `"*"`, 1), leavePolicyProblems},
		{"leave: every group of the account", strings.Replace(leave, quoted(leaveGroupPattern), quoted(strings.TrimSuffix(leaveGroupPattern, leaveGroupName)+"*"), 1), leavePolicyProblems},
		{"leave: a name prefix", strings.Replace(leave, quoted(leaveGroupPattern), quoted(leaveGroupPattern+"*"), 1), leavePolicyProblems},
		{"leave: SetDesiredCapacity", strings.Replace(leave, `"autoscaling:CompleteLifecycleAction"`, `"autoscaling:CompleteLifecycleAction","autoscaling:SetDesiredCapacity"`, 1), leavePolicyProblems},
		{"leave: a wildcard action", strings.Replace(leave, `"autoscaling:CompleteLifecycleAction"`, `"autoscaling:*LifecycleAction"`, 1), leavePolicyProblems},
		{"leave: no heartbeat", strings.Replace(leave, `,"autoscaling:RecordLifecycleActionHeartbeat"`, "", 1), leavePolicyProblems},
		{"reconciler: TerminateInstances", strings.Replace(reconciler, `"ec2:DescribeInstances"`, `"ec2:DescribeInstances","ec2:TerminateInstances"`, 1), reconcilerPolicyProblems},
		{"reconciler: ec2:Describe*", strings.Replace(reconciler, `"ec2:DescribeInstances"`, `"ec2:Describe*"`, 1), reconcilerPolicyProblems},
	}
	for _, h := range hostile {
		orig := leave
		if strings.HasPrefix(h.name, "reconciler") {
			orig = reconciler
		}
		if h.doc == orig {
			t.Errorf("hostile case %q did not change the document (the test is stale)", h.name)
			continue
		}
		if problems := h.check(h.doc); len(problems) == 0 {
			t.Errorf("hostile case %q passed the checks:\n%s", h.name, h.doc)
		} else {
			t.Logf("hostile %-40s -> %s", h.name, problems[0])
		}
	}
}

// tfWork is a copy of tf/ initialized against moto_server with the local
// hashicorp/aws provider.
type tfWork struct {
	tf, dir string
	env     []string
}

func newTFWork(t *testing.T, m *motoServer) *tfWork {
	t.Helper()
	tf := needTool(t, "terraform")
	pluginDir := awsProviderDir(t)
	dir := t.TempDir()
	copyTree(t, repoPath(t, "tf"), dir, ".terraform", "terraform.tfstate", "terraform.tfvars", ".terraform.lock.hcl")
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
	w := &tfWork{tf: tf, dir: dir, env: offlineEnv(t, m)}
	mustRun(t, cmdSpec{dir: dir, env: w.env, timeout: 3 * time.Minute}, tf, "init", "-backend=false", "-input=false", "-no-color", "-plugin-dir="+pluginDir)
	return w
}

func (w *tfWork) args(cmd string, vars []string) []string {
	args := []string{cmd, "-input=false", "-no-color", "-var", "region=" + motoRegion, "-var", "cluster_name=" + leaveCluster}
	for _, v := range vars {
		args = append(args, "-var", v)
	}
	return args
}

// planned is a plan of tf/ as `terraform show -json` gives it.
type planned struct {
	output    string                         // what terraform plan printed
	values    map[string]map[string]any      // planned values by resource address
	refs      map[string]map[string][]string // references of each resource's arguments
	addresses []string
}

func (w *tfWork) plan(t *testing.T, vars ...string) planned {
	t.Helper()
	res := mustRun(t, cmdSpec{dir: w.dir, env: w.env, timeout: 3 * time.Minute}, w.tf, append(w.args("plan", vars), "-out=plan")...)
	show := mustRun(t, cmdSpec{dir: w.dir, env: w.env, timeout: time.Minute}, w.tf, "show", "-json", "plan")
	var raw struct {
		PlannedValues struct {
			RootModule struct {
				Resources []struct {
					Address string
					Values  map[string]any
				}
			} `json:"root_module"`
		} `json:"planned_values"`
		Configuration struct {
			RootModule struct {
				Resources []struct {
					Address     string
					Expressions map[string]json.RawMessage
				}
			} `json:"root_module"`
		}
	}
	if err := json.Unmarshal([]byte(show.stdout), &raw); err != nil {
		t.Fatalf("terraform show -json: %v", err)
	}
	p := planned{output: res.stdout + res.stderr, values: map[string]map[string]any{}, refs: map[string]map[string][]string{}}
	for _, r := range raw.PlannedValues.RootModule.Resources {
		p.values[r.Address] = r.Values
		p.addresses = append(p.addresses, r.Address)
	}
	for _, r := range raw.Configuration.RootModule.Resources {
		p.refs[r.Address] = map[string][]string{}
		for name, expr := range r.Expressions {
			var e struct{ References []string }
			if json.Unmarshal(expr, &e) == nil {
				p.refs[r.Address][name] = e.References
			}
		}
	}
	return p
}

// resource returns the planned values of a resource, failing the test if it
// is not planned.
func (p planned) resource(t *testing.T, addr string) map[string]any {
	t.Helper()
	v, ok := p.values[addr]
	if !ok {
		t.Fatalf("%s is not planned; planned: %q", addr, p.addresses)
	}
	return v
}

// blocks returns the nested blocks of a planned value.
func blocks(v map[string]any, name string) []map[string]any {
	list, _ := v[name].([]any)
	var out []map[string]any
	for _, e := range list {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// workerInstanceTagKeys are the tags a worker instance gets: the launch
// template's instance tag specification and the group's propagated tags.
func workerInstanceTagKeys(t *testing.T, p planned) []string {
	var keys []string
	for _, ts := range blocks(p.resource(t, "aws_launch_template.worker"), "tag_specifications") {
		if ts["resource_type"] == "instance" {
			tags, _ := ts["tags"].(map[string]any)
			for k := range tags {
				keys = append(keys, k)
			}
		}
	}
	for _, tag := range blocks(p.resource(t, "aws_autoscaling_group.workers"), "tag") {
		if tag["propagate_at_launch"] == true {
			keys = append(keys, fmt.Sprint(tag["key"]))
		}
	}
	sort.Strings(keys)
	return keys
}

// TestLeaveTerraformPlan plans tf/ against moto_server and checks the
// termination lifecycle hook, the Spot option and the leave policies as
// Terraform plans them, with worker_spot off (the default) and on.
func TestLeaveTerraformPlan(t *testing.T) {
	m := startMoto(t, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	registerNodeImage(t, ctx, m)
	w := newTFWork(t, m)

	def := w.plan(t)

	t.Run("lifecycle hook", func(t *testing.T) {
		hook := def.resource(t, "aws_autoscaling_lifecycle_hook.worker_termination")
		want := map[string]any{
			"name":                   leaveHookName,
			"autoscaling_group_name": leaveGroupName,
			"lifecycle_transition":   "autoscaling:EC2_INSTANCE_TERMINATING",
			"heartbeat_timeout":      float64(300),
			"default_result":         "CONTINUE",
		}
		for k, v := range want {
			if hook[k] != v {
				t.Errorf("lifecycle hook %s = %v, want %v", k, hook[k], v)
			}
		}
		if refs := def.refs["aws_autoscaling_lifecycle_hook.worker_termination"]["autoscaling_group_name"]; !slices.Contains(refs, "aws_autoscaling_group.workers.name") {
			t.Errorf("the hook's group is %q, want aws_autoscaling_group.workers.name", refs)
		}
	})

	t.Run("on-demand workers", func(t *testing.T) {
		asg := def.resource(t, "aws_autoscaling_group.workers")
		if asg["capacity_rebalance"] != false {
			t.Errorf("capacity_rebalance = %v without worker_spot, want false", asg["capacity_rebalance"])
		}
		if mip := blocks(asg, "mixed_instances_policy"); len(mip) != 0 {
			t.Errorf("mixed_instances_policy without worker_spot: %v", mip)
		}
		if lt := blocks(asg, "launch_template"); len(lt) != 1 {
			t.Errorf("want the plain launch_template without worker_spot, got %v", asg["launch_template"])
		}
	})

	t.Run("instance metadata tags", func(t *testing.T) {
		md := blocks(def.resource(t, "aws_launch_template.worker"), "metadata_options")
		if len(md) != 1 || md[0]["http_tokens"] != "required" {
			t.Fatalf("worker metadata options %v: IMDSv2 must be required", md)
		}
		keys := workerInstanceTagKeys(t, def)
		setting, _ := md[0]["instance_metadata_tags"].(string)
		t.Logf("worker instance_metadata_tags = %q; instance tag keys %q", setting, keys)
		if problems := imdsTagProblems(setting, keys); len(problems) > 0 {
			t.Errorf("worker launch template:\n  %s", strings.Join(problems, "\n  "))
		}
		// The guard can fail: the worker's tags as they are, with tags in IMDS.
		if problems := imdsTagProblems("enabled", keys); len(problems) == 0 {
			t.Errorf("instance tags %q pass with instance_metadata_tags enabled: the check is stale, or the tags changed (then enable tags in IMDS if the agent needs them)", keys)
		} else {
			t.Logf("with tags in IMDS: %s", strings.Join(problems, "; "))
		}
		if problems := imdsTagProblems("enabled", []string{"Name", "aws:autoscaling:groupName", "kubestrap.dev:role"}); len(problems) > 0 {
			t.Errorf("IMDS-compatible keys refused: %v", problems)
		}
	})

	t.Run("policies", func(t *testing.T) {
		leave, _ := def.resource(t, "aws_iam_role_policy.worker_leave")["policy"].(string)
		reconciler, _ := def.resource(t, "aws_iam_role_policy.control_plane_reconciler")["policy"].(string)
		if leave == "" || reconciler == "" {
			t.Fatalf("the leave policies are not known at plan time: %q %q", leave, reconciler)
		}
		checkLeavePolicyDocs(t, leave, reconciler)
		for addr, role := range map[string]string{
			"aws_iam_role_policy.worker_leave":             "aws_iam_role.worker.id",
			"aws_iam_role_policy.control_plane_reconciler": "aws_iam_role.control_plane.id",
		} {
			if refs := def.refs[addr]["role"]; !slices.Contains(refs, role) {
				t.Errorf("%s is attached to %q, want %s", addr, refs, role)
			}
		}
	})

	t.Run("spot workers", func(t *testing.T) {
		spot := w.plan(t, "worker_spot=true", `worker_instance_types=["t3.medium","t3a.medium","m5.large"]`,
			"on_demand_base_capacity=1", "worker_termination_heartbeat_timeout=600")
		asg := spot.resource(t, "aws_autoscaling_group.workers")
		if asg["capacity_rebalance"] != true {
			t.Errorf("capacity_rebalance = %v with worker_spot, want true", asg["capacity_rebalance"])
		}
		if lt := blocks(asg, "launch_template"); len(lt) != 0 {
			t.Errorf("plain launch_template with worker_spot (the mixed instances policy holds it): %v", lt)
		}
		mip := blocks(asg, "mixed_instances_policy")
		if len(mip) != 1 {
			t.Fatalf("worker_spot: want one mixed_instances_policy, got %v", asg["mixed_instances_policy"])
		}
		dist := blocks(mip[0], "instances_distribution")
		if len(dist) != 1 || dist[0]["on_demand_base_capacity"] != float64(1) || dist[0]["on_demand_percentage_above_base_capacity"] != float64(0) ||
			dist[0]["spot_allocation_strategy"] != "price-capacity-optimized" {
			t.Errorf("instances distribution %v: want 1 on-demand, 0%% above, price-capacity-optimized", dist)
		}
		lts := blocks(mip[0], "launch_template")
		if len(lts) != 1 || len(blocks(lts[0], "launch_template_specification")) != 1 {
			t.Fatalf("mixed instances policy without the launch template: %v", mip)
		}
		var types []string
		for _, o := range blocks(lts[0], "override") {
			types = append(types, fmt.Sprint(o["instance_type"]))
		}
		if !slices.Equal(types, []string{"t3.medium", "t3a.medium", "m5.large"}) {
			t.Errorf("overrides %q, want worker_instance_types in order", types)
		}
		if hook := spot.resource(t, "aws_autoscaling_lifecycle_hook.worker_termination"); hook["heartbeat_timeout"] != float64(600) {
			t.Errorf("heartbeat_timeout = %v, want 600 from worker_termination_heartbeat_timeout", hook["heartbeat_timeout"])
		}
	})

	t.Run("spot workers of the one type", func(t *testing.T) {
		spot := w.plan(t, "worker_spot=true", "worker_instance_type=m5.large", "spot_allocation_strategy=capacity-optimized")
		mip := blocks(spot.resource(t, "aws_autoscaling_group.workers"), "mixed_instances_policy")
		if len(mip) != 1 {
			t.Fatalf("no mixed instances policy: %v", mip)
		}
		lts := blocks(mip[0], "launch_template")
		var types []string
		for _, o := range blocks(lts[0], "override") {
			types = append(types, fmt.Sprint(o["instance_type"]))
		}
		if !slices.Equal(types, []string{"m5.large"}) {
			t.Errorf("overrides %q, want [m5.large] (worker_instance_type)", types)
		}
		if d := blocks(mip[0], "instances_distribution"); len(d) != 1 || d[0]["spot_allocation_strategy"] != "capacity-optimized" || d[0]["on_demand_base_capacity"] != float64(0) {
			t.Errorf("instances distribution %v", d)
		}
	})

	t.Run("types without spot warn", func(t *testing.T) {
		p := w.plan(t, `worker_instance_types=["t3.medium","t3a.medium"]`)
		if !strings.Contains(strings.Join(strings.Fields(p.output), " "), "worker_instance_types is set but worker_spot is false") {
			t.Errorf("plan does not warn that worker_instance_types needs worker_spot:\n%s", p.output)
		}
		if mip := blocks(p.resource(t, "aws_autoscaling_group.workers"), "mixed_instances_policy"); len(mip) != 0 {
			t.Errorf("mixed instances policy without worker_spot: %v", mip)
		}
	})

	t.Run("bad values refused", func(t *testing.T) {
		for v, msg := range map[string]string{
			"worker_termination_heartbeat_timeout=10":         "between 30 and 7200",
			"spot_allocation_strategy=cheapest":               "spot_allocation_strategy is one of",
			"on_demand_base_capacity=-1":                      "on_demand_base_capacity must be",
			`worker_instance_types=["t3.medium","t3.medium"]`: "must not repeat",
		} {
			res := runCmd(t, cmdSpec{dir: w.dir, env: w.env, timeout: 3 * time.Minute}, w.tf, w.args("plan", []string{v})...)
			if res.code == 0 || !strings.Contains(strings.Join(strings.Fields(res.stderr+res.stdout), " "), msg) {
				t.Errorf("plan with %s: want a failure saying %q, got %s", v, msg, res)
			}
		}
	})
}

// TestLeaveApplyInMoto applies tf/ with Spot workers against moto_server and
// reads back the group (capacity rebalance, mixed instances policy), its
// termination lifecycle hook and the leave policies on the roles; then, with
// IAM enforced, checks what the roles' credentials may do.
func TestLeaveApplyInMoto(t *testing.T) {
	m := startMoto(t, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	amiID := registerNodeImage(t, ctx, m)
	w := newTFWork(t, m)
	start := time.Now()
	mustRun(t, cmdSpec{dir: w.dir, env: w.env, timeout: 8 * time.Minute}, w.tf, append(w.args("apply", []string{
		"worker_spot=true", `worker_instance_types=["t3.medium","t3a.medium"]`, "on_demand_base_capacity=1",
		"num_nodes=2", "max_nodes=4",
	}), "-auto-approve")...)
	t.Logf("terraform apply took %s", time.Since(start).Round(time.Second))

	var outputs map[string]struct{ Value any }
	if err := json.Unmarshal([]byte(mustRun(t, cmdSpec{dir: w.dir, env: w.env}, w.tf, "output", "-json").stdout), &outputs); err != nil {
		t.Fatal(err)
	}
	out := func(name string) string {
		s, _ := outputs[name].Value.(string)
		if s == "" {
			t.Fatalf("output %s is empty: %+v", name, outputs[name])
		}
		return s
	}
	if out("worker_lifecycle_hook_name") != leaveHookName || out("worker_asg_name") != leaveGroupName {
		t.Errorf("outputs worker_lifecycle_hook_name=%s worker_asg_name=%s, want %s and %s",
			out("worker_lifecycle_hook_name"), out("worker_asg_name"), leaveHookName, leaveGroupName)
	}

	asc := autoscaling.NewFromConfig(m.cfg(setupCreds))
	groups, err := asc.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{leaveGroupName}})
	if err != nil || len(groups.AutoScalingGroups) != 1 {
		t.Fatalf("worker group: %v", err)
	}
	g := groups.AutoScalingGroups[0]
	groupARN := aws.ToString(g.AutoScalingGroupARN)
	t.Logf("worker group %s", groupARN)

	t.Run("group", func(t *testing.T) {
		if !aws.ToBool(g.CapacityRebalance) {
			t.Error("capacity rebalance is off on the Spot worker group")
		}
		mip := g.MixedInstancesPolicy
		if mip == nil || mip.InstancesDistribution == nil || mip.LaunchTemplate == nil {
			t.Fatalf("the Spot worker group has no mixed instances policy: %+v", mip)
		}
		d := mip.InstancesDistribution
		if aws.ToInt32(d.OnDemandBaseCapacity) != 1 || aws.ToInt32(d.OnDemandPercentageAboveBaseCapacity) != 0 ||
			aws.ToString(d.SpotAllocationStrategy) != "price-capacity-optimized" {
			t.Errorf("instances distribution: base %d, above base %d%%, %s", aws.ToInt32(d.OnDemandBaseCapacity),
				aws.ToInt32(d.OnDemandPercentageAboveBaseCapacity), aws.ToString(d.SpotAllocationStrategy))
		}
		var types []string
		for _, o := range mip.LaunchTemplate.Overrides {
			types = append(types, aws.ToString(o.InstanceType))
		}
		if !slices.Equal(types, []string{"t3.medium", "t3a.medium"}) {
			t.Errorf("overrides %q", types)
		}
		if g.LaunchTemplate != nil {
			t.Errorf("the group has a launch template besides the mixed instances policy: %+v", g.LaunchTemplate)
		}
		if len(g.Instances) != 2 {
			t.Errorf("%d workers, want 2", len(g.Instances))
		}
		// The group's ARN, with the UUID AWS gives it, is what the pattern covers.
		if !globAny([]string{leaveGroupPattern}, groupARN, false) {
			t.Errorf("the worker group's ARN %s does not match the policy's pattern %s", groupARN, leaveGroupPattern)
		}
	})

	t.Run("lifecycle hook", func(t *testing.T) {
		hooks, err := asc.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(leaveGroupName)})
		if err != nil {
			t.Fatal(err)
		}
		if len(hooks.LifecycleHooks) != 1 {
			t.Fatalf("worker group hooks: %+v, want one", hooks.LifecycleHooks)
		}
		h := hooks.LifecycleHooks[0]
		if aws.ToString(h.LifecycleHookName) != leaveHookName || aws.ToString(h.LifecycleTransition) != "autoscaling:EC2_INSTANCE_TERMINATING" ||
			aws.ToInt32(h.HeartbeatTimeout) != 300 || aws.ToString(h.DefaultResult) != "CONTINUE" {
			t.Errorf("hook %s: %s, heartbeat %d s, default %s; want %s: autoscaling:EC2_INSTANCE_TERMINATING, 300 s, CONTINUE",
				aws.ToString(h.LifecycleHookName), aws.ToString(h.LifecycleTransition), aws.ToInt32(h.HeartbeatTimeout), aws.ToString(h.DefaultResult), leaveHookName)
		}
	})

	iamc := iam.NewFromConfig(m.cfg(setupCreds))
	t.Run("role policies", func(t *testing.T) {
		for role, want := range map[string][]string{
			"demo-kubestrap-worker":        {"kubestrap", "kubestrap-leave"},
			"demo-kubestrap-control-plane": {"cluster-autoscaler", "kubestrap", "kubestrap-reconciler"},
		} {
			list, err := iamc.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(role)})
			if err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(list.PolicyNames)
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s inline policies %q, want %q", role, got, want)
			}
		}
		for _, c := range []struct{ role, policy, tmpl string }{
			{"demo-kubestrap-worker", "kubestrap-leave", "worker-leave-policy.json.tftpl"},
			{"demo-kubestrap-control-plane", "kubestrap-reconciler", "control-plane-reconciler-policy.json.tftpl"},
		} {
			got, err := iamc.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(c.role), PolicyName: aws.String(c.policy)})
			if err != nil {
				t.Fatal(err)
			}
			doc, err := url.QueryUnescape(aws.ToString(got.PolicyDocument))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, c.role+" "+c.policy, doc, renderTemplate(t, repoPath(t, "tf", "templates", c.tmpl), map[string]any{"worker_group_arn": leaveGroupPattern}))
		}
	})

	t.Run("credentials", func(t *testing.T) {
		checkLeavePermissions(t, ctx, m, out("worker_role_arn"), out("control_plane_role_arn"), amiID, g)
	})
}

// checkLeavePermissions assumes the node roles (and two probe roles), turns IAM
// enforcement on and checks the leave permissions.
func checkLeavePermissions(t *testing.T, ctx context.Context, m *motoServer, workerRole, cpRole, amiID string, g astypes.AutoScalingGroup) {
	groupARN := aws.ToString(g.AutoScalingGroupARN)
	instance := aws.ToString(g.Instances[0].InstanceId)
	iamc := iam.NewFromConfig(m.cfg(setupCreds))
	trust := renderTemplate(t, repoPath(t, "tf", "templates", "ec2-assume-role.json.tftpl"), map[string]any{"ec2_service_principal": "ec2.amazonaws.com"})
	leave := renderTemplate(t, repoPath(t, "tf", "templates", "worker-leave-policy.json.tftpl"), map[string]any{"worker_group_arn": leaveGroupPattern})
	probeRole := func(name, doc string) string {
		t.Helper()
		out, err := iamc.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(name), AssumeRolePolicyDocument: aws.String(trust)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := iamc.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: out.Role.RoleName, PolicyName: aws.String("probe"), PolicyDocument: aws.String(doc)}); err != nil {
			t.Fatalf("put %s policy: %v\n%s", name, err, doc)
		}
		return aws.ToString(out.Role.Arn)
	}
	// The worker's leave policy with its Resource widened to "*": what moto can
	// decide about the actions.
	anyGroup := probeRole("leave-actions-any-group", strings.Replace(leave, `"`+leaveGroupPattern+`"`, `"*"`, 1))
	// Allowed CompleteLifecycleAction on exactly the group's real ARN: if moto
	// refuses it, moto does not evaluate autoscaling resources.
	exactARN := probeRole("leave-resource-probe", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",`+
		`"Action":"autoscaling:CompleteLifecycleAction","Resource":"`+groupARN+`"}]}`)

	creds := map[string]aws.Credentials{}
	for name, arn := range map[string]string{"worker": workerRole, "control plane": cpRole, "any-group probe": anyGroup, "resource probe": exactARN} {
		c, err := assumeRole(ctx, m, arn, "i-0leave"+strings.ReplaceAll(name, " ", ""))
		if err != nil {
			t.Fatalf("assume %s: %v", name, err)
		}
		creds[name] = c
	}
	m.enforceAuth(t)
	if _, err := autoscaling.NewFromConfig(m.cfg(setupCreds)).DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("IAM enforcement is not on: unknown credentials got %v", err)
	}

	complete := func(who string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := autoscaling.NewFromConfig(m.cfg(creds[who])).CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
				AutoScalingGroupName: aws.String(leaveGroupName), LifecycleHookName: aws.String(leaveHookName),
				InstanceId: aws.String(instance), LifecycleActionResult: aws.String("CONTINUE"),
			})
			return err
		}
	}
	heartbeat := func(who string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := autoscaling.NewFromConfig(m.cfg(creds[who])).RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
				AutoScalingGroupName: aws.String(leaveGroupName), LifecycleHookName: aws.String(leaveHookName), InstanceId: aws.String(instance),
			})
			return err
		}
	}
	describeInstances := func(who string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := ec2.NewFromConfig(m.cfg(creds[who])).DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instance}})
			return err
		}
	}

	// authorized: moto let the call through its IAM check. For an action moto
	// does not implement the answer is then 500 (NotImplementedError after
	// authorization); a refusal is 403 AccessDenied.
	type outcome int
	const (
		allowed outcome = iota
		authorized
		denied
	)
	checks := []struct {
		who, what string
		want      outcome
		call      func(context.Context) error
	}{
		{"any-group probe", "autoscaling:CompleteLifecycleAction (leave policy, Resource *)", authorized, complete("any-group probe")},
		{"any-group probe", "autoscaling:RecordLifecycleActionHeartbeat (leave policy, Resource *)", authorized, heartbeat("any-group probe")},
		{"control plane", "autoscaling:CompleteLifecycleAction", denied, complete("control plane")},
		{"control plane", "autoscaling:RecordLifecycleActionHeartbeat", denied, heartbeat("control plane")},
		{"control plane", "ec2:DescribeInstances", allowed, describeInstances("control plane")},
		{"control plane", "ec2:StopInstances", denied, func(ctx context.Context) error {
			_, err := ec2.NewFromConfig(m.cfg(creds["control plane"])).StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{instance}})
			return err
		}},
		{"worker", "ec2:DescribeInstances", denied, describeInstances("worker")},
		{"worker", "autoscaling:SetDesiredCapacity " + leaveGroupName, denied, func(ctx context.Context) error {
			_, err := autoscaling.NewFromConfig(m.cfg(creds["worker"])).SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{
				AutoScalingGroupName: aws.String(leaveGroupName), DesiredCapacity: aws.Int32(4),
			})
			return err
		}},
		{"worker", "autoscaling:TerminateInstanceInAutoScalingGroup " + instance, denied, func(ctx context.Context) error {
			_, err := autoscaling.NewFromConfig(m.cfg(creds["worker"])).TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
				InstanceId: aws.String(instance), ShouldDecrementDesiredCapacity: aws.Bool(false),
			})
			return err
		}},
		{"worker", "autoscaling:DescribeAutoScalingGroups", denied, func(ctx context.Context) error {
			_, err := autoscaling.NewFromConfig(m.cfg(creds["worker"])).DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
			return err
		}},
		{"worker", "ec2:TerminateInstances " + instance, denied, func(ctx context.Context) error {
			_, err := ec2.NewFromConfig(m.cfg(creds["worker"])).TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instance}})
			return err
		}},
		{"worker", "ec2:RunInstances", denied, func(ctx context.Context) error {
			_, err := ec2.NewFromConfig(m.cfg(creds["worker"])).RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(amiID), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
			return err
		}},
	}
	for _, c := range checks {
		err := c.call(ctxT(t))
		var got outcome
		switch {
		case err == nil:
			got = allowed
		case isAccessDenied(err):
			got = denied
		case statusOf(err) == http.StatusInternalServerError:
			got = authorized
		default:
			t.Errorf("%s: %s: unexpected answer: %v", c.who, c.what, err)
			continue
		}
		ok := got == c.want || (c.want == authorized && got == allowed)
		names := map[outcome]string{allowed: "allowed", authorized: "authorized (moto: 500 not implemented)", denied: "denied (403 AccessDenied)"}
		if !ok {
			t.Errorf("%s: %s: %s, want %s (%v)", c.who, c.what, names[got], names[c.want], err)
			continue
		}
		t.Logf("%-15s %-70s %s", c.who, c.what, names[got])
	}
	// Nothing the denied calls tried happened.
	// (The control plane reads the group through its cluster-autoscaler policy.)
	if err := wantDesired(ctx, autoscaling.NewFromConfig(m.cfg(creds["control plane"])), leaveGroupName, 2); err != nil {
		t.Error(err)
	}

	t.Run("worker completes its group's lifecycle actions", func(t *testing.T) {
		probeErr := complete("resource probe")(ctxT(t))
		calls := map[string]func(context.Context) error{"CompleteLifecycleAction": complete("worker"), "RecordLifecycleActionHeartbeat": heartbeat("worker")}
		if isAccessDenied(probeErr) {
			// moto refuses even exactly the group's ARN: the worker's pattern
			// is refused for the same reason, which says nothing about AWS.
			for name, call := range calls {
				if err := call(ctxT(t)); !isAccessDenied(err) {
					t.Errorf("worker: %s: moto refused the exact-ARN probe but not the worker's pattern: %v", name, err)
				}
			}
			t.Skipf("NOT PROVEN IN MOTO: moto_server authorizes autoscaling calls against the resource \"*\", so a statement "+
				"allowing CompleteLifecycleAction on exactly %s is refused (403), and so is the worker's policy on the pattern %s "+
				"(both observed). Proven on paper: TestLeavePolicies and TestLeaveTerraformPlan/policies (exactly that pattern; "+
				"allowed on the group's ARN with any UUID, refused on other groups, regions, accounts; a hostile Resource \"*\" "+
				"fails). The action names are proven above in moto with the Resource widened to \"*\".", groupARN, leaveGroupPattern)
		}
		for name, call := range calls {
			if err := call(ctxT(t)); isAccessDenied(err) {
				t.Errorf("worker: %s on its own group refused although moto evaluates resources: %v", name, err)
			} else {
				t.Logf("worker: %s on %s authorized (%v)", name, leaveGroupName, err)
			}
		}
	})
}
