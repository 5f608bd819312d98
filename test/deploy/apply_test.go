//go:build deploy

package deploy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"sigs.k8s.io/yaml"
)

// awsProviderDir finds a local copy of the hashicorp/aws provider for
// `terraform init -plugin-dir` (providers cannot be downloaded here).
func awsProviderDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TF_PLUGIN_DIR")
	if dir == "" {
		dir = "/opt/tf-plugins"
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "registry.terraform.io", "hashicorp", "aws", "*", "linux_*", "terraform-provider-aws_*"))
	if len(matches) == 0 {
		t.Skipf("the hashicorp/aws provider is not in %s (set TF_PLUGIN_DIR to a directory laid out like a terraform plugin dir)", dir)
	}
	return dir
}

// offlineEnv is the environment of terraform against moto: fixed credentials,
// every endpoint on moto, nothing from the user's AWS configuration.
func offlineEnv(t *testing.T, m *motoServer) []string {
	env := append(terraformEnv(t),
		"AWS_ACCESS_KEY_ID="+setupCreds.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+setupCreds.SecretAccessKey,
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_REGION="+motoRegion,
		"AWS_DEFAULT_REGION="+motoRegion,
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL="+m.URL,
	)
	return env
}

// TestTerraformApplyInMoto applies tf/ for real, with the hashicorp/aws provider,
// against moto_server, then reads back what Terraform created: the control-plane
// endpoint (an internal network load balancer across the zones, its TCP 6443
// listener and target group with the HTTPS /readyz health check), the
// control-plane Auto Scaling group behind it and its launch template (IMDSv2,
// the user-data's configuration names the load balancer and kubestrap validate
// accepts it), the worker launch template's configuration, the worker group's
// spread and autoscaler tags, the security group rules, the bucket's
// protection, and the role policies exactly as rendered from the templates.
// It plans three control planes (only the group's size changes), checks that
// control_plane_count refuses even numbers, and finally assumes the two roles Terraform created and
// checks with IAM enforced what their credentials may do.
func TestTerraformApplyInMoto(t *testing.T) {
	tf := needTool(t, "terraform")
	pluginDir := awsProviderDir(t)
	m := startMoto(t, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The node image, as packaging/ami.pkr.hcl would name it.
	ec2c := ec2.NewFromConfig(m.cfg(setupCreds))
	if _, err := ec2c.RegisterImage(ctx, &ec2.RegisterImageInput{
		Name:           aws.String("kubestrap-k8s-v1.37-20261126000000"),
		RootDeviceName: aws.String("/dev/xvda"),
		Architecture:   ec2types.ArchitectureValuesX8664,
	}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	copyTree(t, repoPath(t, "tf"), dir, ".terraform", "terraform.tfstate", "terraform.tfvars", ".terraform.lock.hcl")
	// Test-only provider settings for moto, merged into the real provider block.
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
	env := offlineEnv(t, m)
	mustRun(t, cmdSpec{dir: dir, env: env, timeout: 3 * time.Minute}, tf, "init", "-backend=false", "-input=false", "-no-color", "-plugin-dir="+pluginDir)
	mustRun(t, cmdSpec{dir: dir, env: env, timeout: 3 * time.Minute}, tf, "validate", "-no-color")
	applyArgs := func(cmd string, vars ...string) []string {
		args := []string{cmd, "-input=false", "-no-color",
			"-var", "region=" + motoRegion, "-var", "cluster_name=demo", "-var", "num_nodes=2", "-var", "max_nodes=5",
			"-var", "enable_ssm=true", "-var", `api_allowed_cidrs=["203.0.113.0/24"]`, "-var", `nodeport_allowed_cidrs=["198.51.100.0/24"]`}
		for _, v := range vars {
			args = append(args, "-var", v)
		}
		return args
	}
	apply := func(vars ...string) {
		t.Helper()
		mustRun(t, cmdSpec{dir: dir, env: env, timeout: 8 * time.Minute}, tf, append(applyArgs("apply", vars...), "-auto-approve")...)
	}
	start := time.Now()
	apply()
	t.Logf("terraform apply took %s", time.Since(start).Round(time.Second))

	var outputs map[string]struct{ Value any }
	if err := json.Unmarshal([]byte(mustRun(t, cmdSpec{dir: dir, env: env}, tf, "output", "-json").stdout), &outputs); err != nil {
		t.Fatal(err)
	}
	out := func(name string) string {
		s, _ := outputs[name].Value.(string)
		if s == "" {
			t.Fatalf("output %s is empty: %+v", name, outputs[name])
		}
		return s
	}
	bucket, kmsKey := out("bucket"), out("kms_key_arn")
	if want := "s3://" + bucket + "/demo/join.json"; out("join_info_url") != want {
		t.Errorf("join_info_url = %s, want %s", out("join_info_url"), want)
	}

	asc := autoscaling.NewFromConfig(m.cfg(setupCreds))
	endpoint := out("api_server_endpoint")
	lbDNS := out("api_load_balancer_dns_name")
	tgARN := out("api_target_group_arn")
	if endpoint != lbDNS+":6443" {
		t.Errorf("api_server_endpoint = %s, want the load balancer's DNS name %s with :6443", endpoint, lbDNS)
	}
	for _, gone := range []string{"control_plane_instance_id", "control_plane_private_ip", "control_plane_public_ip"} {
		if _, ok := outputs[gone]; ok {
			t.Errorf("output %s names one control-plane instance; the endpoint is the load balancer now", gone)
		}
	}

	t.Run("endpoint", func(t *testing.T) {
		checkAPIEndpoint(t, ctx, m, ec2c, lbDNS, tgARN)
	})

	t.Run("control plane", func(t *testing.T) {
		g := checkControlPlaneGroup(t, ctx, m, asc, ec2c, out("control_plane_asg_name"), tgARN, 1)
		versions, err := ec2c.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
			LaunchTemplateId: g.LaunchTemplate.LaunchTemplateId, Versions: []string{"$Latest"},
		})
		if err != nil || len(versions.LaunchTemplateVersions) != 1 {
			t.Fatalf("control-plane launch template versions: %v", err)
		}
		data := versions.LaunchTemplateVersions[0].LaunchTemplateData
		if md := data.MetadataOptions; md == nil || md.HttpTokens != ec2types.LaunchTemplateHttpTokensStateRequired ||
			aws.ToInt32(md.HttpPutResponseHopLimit) != 1 || md.HttpEndpoint != ec2types.LaunchTemplateInstanceMetadataEndpointStateEnabled {
			t.Errorf("control-plane metadata options %+v: IMDSv2 must be required, hop limit 1", data.MetadataOptions)
		}
		if data.IamInstanceProfile == nil || !strings.HasSuffix(aws.ToString(data.IamInstanceProfile.Arn), "/demo-kubestrap-control-plane") {
			t.Errorf("control-plane instance profile %+v", data.IamInstanceProfile)
		}
		tags := map[string]string{}
		for _, spec := range data.TagSpecifications {
			if spec.ResourceType == ec2types.ResourceTypeInstance {
				for _, tag := range spec.Tags {
					tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
				}
			}
		}
		for k, v := range map[string]string{"Name": "demo-control-plane", "kubestrap.dev/role": "control-plane",
			"kubestrap.dev/cluster": "demo", "managed-by": "terraform"} {
			if tags[k] != v {
				t.Errorf("control-plane instance tag %s = %q, want %q (tags %v)", k, tags[k], v, tags)
			}
		}
		if len(data.NetworkInterfaces) != 1 || len(data.NetworkInterfaces[0].Groups) != 2 {
			t.Errorf("control-plane network interfaces %+v: want one with the nodes and control-plane security groups", data.NetworkInterfaces)
		}

		cfg := appliedConfig(t, "control-plane", aws.ToString(data.UserData))
		kubeadm, _ := cfg["kubeadm"].(map[string]any)
		cp, _ := cfg["controlPlane"].(map[string]any)
		if cfg["bucket"] != bucket || cp["kmsKeyId"] != kmsKey || kubeadm["controlPlaneEndpoint"] != endpoint {
			t.Errorf("control-plane config does not match the cluster (endpoint %s): %v", endpoint, cfg)
		}
		if sans := strs(kubeadm["certSANs"]); !slices.Contains(sans, lbDNS) {
			t.Errorf("certSANs %q lack the load balancer's DNS name %s", sans, lbDNS)
		}
	})

	t.Run("workers", func(t *testing.T) {
		asgs, err := asc.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
			AutoScalingGroupNames: []string{out("worker_asg_name")},
		})
		if err != nil || len(asgs.AutoScalingGroups) != 1 {
			t.Fatalf("worker group: %v", err)
		}
		g := asgs.AutoScalingGroups[0]
		if aws.ToInt32(g.DesiredCapacity) != 2 || aws.ToInt32(g.MinSize) != 2 || aws.ToInt32(g.MaxSize) != 5 {
			t.Errorf("worker group size desired %d min %d max %d, want 2/2/5", aws.ToInt32(g.DesiredCapacity), aws.ToInt32(g.MinSize), aws.ToInt32(g.MaxSize))
		}
		tags := map[string]string{}
		for _, tag := range g.Tags {
			tags[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
		}
		if tags["k8s.io/cluster-autoscaler/enabled"] != "true" || tags["k8s.io/cluster-autoscaler/demo"] != "owned" {
			t.Errorf("worker group lacks the cluster-autoscaler auto-discovery tags: %v", tags)
		}
		subnets := strings.Split(aws.ToString(g.VPCZoneIdentifier), ",")
		sn, err := ec2c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets})
		if err != nil {
			t.Fatal(err)
		}
		azs := map[string]bool{}
		for _, s := range sn.Subnets {
			azs[aws.ToString(s.AvailabilityZone)] = true
			if aws.ToBool(s.MapPublicIpOnLaunch) {
				t.Errorf("worker subnet %s gives public IPs", aws.ToString(s.SubnetId))
			}
		}
		if len(azs) != 3 {
			t.Errorf("workers span %d availability zones (%v), want 3", len(azs), azs)
		}

		lt := g.LaunchTemplate
		if lt == nil {
			t.Fatal("worker group has no launch template")
		}
		versions, err := ec2c.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
			LaunchTemplateId: lt.LaunchTemplateId, Versions: []string{"$Latest"},
		})
		if err != nil || len(versions.LaunchTemplateVersions) != 1 {
			t.Fatalf("launch template versions: %v", err)
		}
		data := versions.LaunchTemplateVersions[0].LaunchTemplateData
		if data.MetadataOptions == nil || data.MetadataOptions.HttpTokens != ec2types.LaunchTemplateHttpTokensStateRequired {
			t.Errorf("worker metadata options %+v: IMDSv2 must be required", data.MetadataOptions)
		}
		if data.IamInstanceProfile == nil || !strings.HasSuffix(aws.ToString(data.IamInstanceProfile.Arn), "/demo-kubestrap-worker") {
			t.Errorf("worker instance profile %+v", data.IamInstanceProfile)
		}
		cfg := appliedConfig(t, "worker", aws.ToString(data.UserData))
		if cfg["bucket"] != bucket || cfg["cluster"] != "demo" {
			t.Errorf("worker config does not match the cluster: %v", cfg)
		}
	})

	t.Run("security groups", func(t *testing.T) {
		groups, err := ec2c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{
			Filters: []ec2types.Filter{{Name: aws.String("group-name"), Values: []string{"demo-nodes", "demo-control-plane", "demo-workers"}}},
		})
		if err != nil || len(groups.SecurityGroups) != 3 {
			t.Fatalf("security groups: %v %v", groups, err)
		}
		id := map[string]string{}
		for _, g := range groups.SecurityGroups {
			id[strings.TrimPrefix(aws.ToString(g.GroupName), "demo-")] = aws.ToString(g.GroupId)
		}
		rules, err := ec2c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{
			Filters: []ec2types.Filter{{Name: aws.String("group-id"), Values: []string{id["nodes"], id["control-plane"], id["workers"]}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		// "<group> <proto> <from>-<to> <source>" for every ingress rule.
		var ingress []string
		for _, r := range rules.SecurityGroupRules {
			if aws.ToBool(r.IsEgress) {
				continue
			}
			src := aws.ToString(r.CidrIpv4)
			if r.ReferencedGroupInfo != nil {
				for name, gid := range id {
					if gid == aws.ToString(r.ReferencedGroupInfo.GroupId) {
						src = "sg:" + name
					}
				}
			}
			for name, gid := range id {
				if gid == aws.ToString(r.GroupId) {
					ingress = append(ingress, fmt.Sprintf("%s %s %d-%d %s", name, aws.ToString(r.IpProtocol), aws.ToInt32(r.FromPort), aws.ToInt32(r.ToPort), src))
				}
			}
		}
		for _, want := range []string{
			"control-plane tcp 6443-6443 sg:nodes",
			"control-plane tcp 6443-6443 10.0.0.0/16",
			"control-plane tcp 6443-6443 203.0.113.0/24",
			"control-plane tcp 2379-2380 sg:control-plane",
			"control-plane tcp 10250-10250 sg:control-plane",
			"workers tcp 10250-10250 sg:control-plane",
			"workers tcp 30000-32767 10.0.0.0/16",
			"workers tcp 30000-32767 198.51.100.0/24",
		} {
			if !slices.Contains(ingress, want) {
				t.Errorf("no ingress rule %q in %q", want, ingress)
			}
		}
		for _, r := range ingress {
			if strings.HasSuffix(r, " 0.0.0.0/0") {
				t.Errorf("ingress open to the world: %s", r)
			}
			// The VPC reaches the control planes on the API port only.
			if strings.HasPrefix(r, "control-plane ") && strings.HasSuffix(r, " 10.0.0.0/16") && r != "control-plane tcp 6443-6443 10.0.0.0/16" {
				t.Errorf("control-plane ingress from the whole VPC beyond the API port: %s", r)
			}
		}
	})

	s3c := m.s3(setupCreds)
	t.Run("bucket", func(t *testing.T) {
		pab, err := s3c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		c := pab.PublicAccessBlockConfiguration
		if !aws.ToBool(c.BlockPublicAcls) || !aws.ToBool(c.BlockPublicPolicy) || !aws.ToBool(c.IgnorePublicAcls) || !aws.ToBool(c.RestrictPublicBuckets) {
			t.Errorf("public access block %+v", c)
		}
		ver, err := s3c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(bucket)})
		if err != nil || ver.Status != "Enabled" {
			t.Errorf("versioning %v (%v)", ver.Status, err)
		}
		enc, err := s3c.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		rule := enc.ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault
		if rule.SSEAlgorithm != "aws:kms" || aws.ToString(rule.KMSMasterKeyID) != kmsKey {
			t.Errorf("default encryption %s with %s, want aws:kms with %s", rule.SSEAlgorithm, aws.ToString(rule.KMSMasterKeyID), kmsKey)
		}
		pol, err := s3c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		want := renderTemplate(t, repoPath(t, "tf", "templates", "bucket-policy.json.tftpl"),
			map[string]any{"bucket_arn": "arn:aws:s3:::" + bucket, "kms_key_arn": kmsKey})
		sameJSON(t, "bucket policy", aws.ToString(pol.Policy), want)
	})

	t.Run("roles", func(t *testing.T) {
		iamc := iam.NewFromConfig(m.cfg(setupCreds))
		repos, err := ecr.NewFromConfig(m.cfg(setupCreds)).DescribeRepositories(ctx, &ecr.DescribeRepositoriesInput{})
		if err != nil || len(repos.Repositories) != 1 {
			t.Fatalf("ECR repositories: %v", err)
		}
		vars := map[string]any{
			"bucket_arn":          "arn:aws:s3:::" + bucket,
			"cluster":             "demo",
			"kms_key_arn":         kmsKey,
			"kms_via_service":     "s3." + motoRegion + ".amazonaws.com",
			"ecr_repository_arns": []string{aws.ToString(repos.Repositories[0].RepositoryArn)},
		}
		for role, tmpl := range map[string]string{"control-plane": "control-plane-policy.json.tftpl", "worker": "worker-policy.json.tftpl"} {
			got, err := iamc.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("demo-kubestrap-" + role), PolicyName: aws.String("kubestrap")})
			if err != nil {
				t.Fatal(err)
			}
			doc, err := url.QueryUnescape(aws.ToString(got.PolicyDocument))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, role+" policy", doc, renderTemplate(t, repoPath(t, "tf", "templates", tmpl), vars))
			attached, err := iamc.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String("demo-kubestrap-" + role)})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range attached.AttachedPolicies {
				if aws.ToString(p.PolicyName) != "AmazonSSMManagedInstanceCore" {
					t.Errorf("%s has managed policy %s attached", role, aws.ToString(p.PolicyName))
				}
			}
		}
		users, err := iamc.ListUsers(ctx, &iam.ListUsersInput{})
		if err != nil || len(users.Users) != 0 {
			t.Errorf("Terraform must create no IAM users: %v %v", users, err)
		}
	})

	// Raising control_plane_count changes the size of the control-plane group;
	// the endpoint stays and nothing is replaced.
	// A plan without refresh, because moto_server 5.2.1 cannot apply it: its
	// UpdateAutoScalingGroup fails on a launch template version created by
	// CreateLaunchTemplateVersion (an assertion on the user-data's type in
	// moto/ec2/models/launch_templates.py), and it does not implement
	// StartInstanceRefresh, which a second apply of the worker group calls
	// when moto's answers make the launch templates look changed.
	t.Run("three control planes", func(t *testing.T) {
		res := mustRun(t, cmdSpec{dir: dir, env: env, timeout: 3 * time.Minute}, tf,
			append(applyArgs("plan", "control_plane_count=3"), "-refresh=false", "-out=three.plan")...)
		show := mustRun(t, cmdSpec{dir: dir, env: env, timeout: time.Minute}, tf, "show", "-json", "three.plan")
		var plan struct {
			ResourceChanges []struct {
				Address string
				Change  struct {
					Actions       []string
					Before, After map[string]any
				}
			} `json:"resource_changes"`
		}
		if err := json.Unmarshal([]byte(show.stdout), &plan); err != nil {
			t.Fatalf("terraform show -json: %v", err)
		}
		var changed []string
		for _, rc := range plan.ResourceChanges {
			if slices.Equal(rc.Change.Actions, []string{"no-op"}) {
				continue
			}
			changed = append(changed, rc.Address+" "+strings.Join(rc.Change.Actions, ","))
			if rc.Address != "aws_autoscaling_group.control_plane" {
				continue
			}
			a := rc.Change.After
			for _, k := range []string{"desired_capacity", "min_size", "max_size"} {
				if n, _ := a[k].(float64); n != 3 {
					t.Errorf("control-plane group %s = %v after raising control_plane_count, want 3", k, a[k])
				}
			}
			if got := strs(a["target_group_arns"]); !slices.Equal(got, []string{tgARN}) {
				t.Errorf("control-plane group target groups %v after raising control_plane_count, want [%s]", got, tgARN)
			}
		}
		// Nothing is created, replaced or destroyed, the endpoint is not
		// touched, and the control-plane group is updated in place. (moto's
		// answers make the launch templates, the worker group and its
		// lifecycle hook differ from the configuration too: an extra
		// "launch-template" tag specification, empty address lists, a
		// notification target nobody set. Those are updates in place, logged.)
		for _, c := range changed {
			addr, actions, _ := strings.Cut(c, " ")
			if actions != "update" {
				t.Errorf("raising control_plane_count to 3: %s %s; want updates in place only\n%s", addr, actions, res.stdout)
			}
			if strings.HasPrefix(addr, "aws_lb.") || strings.HasPrefix(addr, "aws_lb_target_group.") || strings.HasPrefix(addr, "aws_lb_listener.") {
				t.Errorf("raising control_plane_count to 3 changes the endpoint: %s", c)
			}
		}
		if !slices.Contains(changed, "aws_autoscaling_group.control_plane update") {
			t.Errorf("raising control_plane_count to 3 changes %q, not the control-plane group", changed)
		}
		t.Logf("planned changes (besides the group, moto's differences): %q", changed)
	})

	t.Run("control_plane_count must be 1, 3 or 5", func(t *testing.T) {
		for _, n := range []string{"2", "4", "0", "7"} {
			res := runCmd(t, cmdSpec{dir: dir, env: env, timeout: 3 * time.Minute}, tf, append(applyArgs("plan"), "-refresh=false", "-var", "control_plane_count="+n)...)
			if res.code == 0 || !strings.Contains(strings.Join(strings.Fields(res.stderr+res.stdout), " "), "control_plane_count must be 1, 3 or 5") {
				t.Errorf("plan with control_plane_count=%s: want the validation error, got %s", n, res)
			}
		}
	})

	t.Run("node credentials", func(t *testing.T) {
		// moto applies the bucket policy's Deny statements without evaluating their
		// conditions, and this endpoint is plain HTTP anyway: the TLS-only policy
		// refuses everything, which is right for HTTP. Show that, then remove the
		// policy so the role policies alone decide.
		err := putObject(ctx, s3c, bucket, "demo/join.json", "{}")
		if statusOf(err) != http.StatusForbidden {
			t.Errorf("plain-HTTP PutObject under the TLS-only bucket policy: want 403, got %v", err)
		}
		if _, err := s3c.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatal(err)
		}
		if err := seedBucket(ctx, m, bucket, "demo", false); err != nil {
			t.Fatal(err)
		}
		cpCreds, err := assumeRole(ctx, m, out("control_plane_role_arn"), "i-0controlplane000000")
		if err != nil {
			t.Fatal(err)
		}
		workerCreds, err := assumeRole(ctx, m, out("worker_role_arn"), "i-0worker00000000000")
		if err != nil {
			t.Fatal(err)
		}
		m.enforceAuth(t)
		checkNodePermissions(t, m, bucket, "demo", cpCreds, workerCreds)
	})
}

// appliedConfig decodes EC2 user-data (base64), checks the script, and has
// kubestrap validate the configuration it writes.
func appliedConfig(t *testing.T, role, userData string) map[string]any {
	t.Helper()
	script, err := base64.StdEncoding.DecodeString(userData)
	if err != nil {
		t.Fatalf("%s user-data is not base64: %v", role, err)
	}
	checkUserDataScript(t, string(script))
	doc := configFromUserData(t, string(script))
	t.Log(validateConfig(t, role+".yaml", doc))
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["role"] != role {
		t.Errorf("user-data config role %v, want %s", cfg["role"], role)
	}
	return cfg
}

// sameJSON compares two JSON documents by value.
func sameJSON(t *testing.T, name, got, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s (rendered): %v\n%s", name, err, want)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s in AWS differs from the rendered template:\n got: %s\nwant: %s", name, got, want)
	}
}

// checkAPIEndpoint checks the control-plane endpoint in moto: the internal
// network load balancer demo-api in the private node subnets of three zones,
// cross-zone, its one TCP 6443 listener forwarding to the target group, and
// the target group (TCP 6443, instances, HTTPS /readyz health check, client IP
// preservation off, short deregistration delay).
func checkAPIEndpoint(t *testing.T, ctx context.Context, m *motoServer, ec2c *ec2.Client, lbDNS, tgARN string) {
	t.Helper()
	lb := describeLoadBalancer(t, ctx, m, "demo-api")
	if lb.Type != "network" || lb.Scheme != "internal" {
		t.Errorf("load balancer demo-api: type %s scheme %s, want network internal", lb.Type, lb.Scheme)
	}
	if strings.ToLower(lb.DNSName) != lbDNS {
		t.Errorf("load balancer DNS name %s, output api_load_balancer_dns_name %s", lb.DNSName, lbDNS)
	}
	var subnets []string
	zones := map[string]bool{}
	for _, az := range lb.AvailabilityZones {
		subnets = append(subnets, az.SubnetId)
		zones[az.ZoneName] = true
	}
	if len(subnets) != 3 || len(zones) != 3 {
		t.Errorf("load balancer subnets %v in zones %v: want one node subnet in each of 3 zones", subnets, zones)
	}
	if len(subnets) > 0 {
		sn, err := ec2c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sn.Subnets {
			if aws.ToBool(s.MapPublicIpOnLaunch) || !slices.Contains([]string{"10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"}, aws.ToString(s.CidrBlock)) {
				t.Errorf("load balancer subnet %s (%s) is not a private node subnet", aws.ToString(s.SubnetId), aws.ToString(s.CidrBlock))
			}
		}
	}
	if attrs := describeLoadBalancerAttributes(t, ctx, m, lb.LoadBalancerArn); attrs["load_balancing.cross_zone.enabled"] != "true" {
		t.Errorf("load balancer attributes %v: cross-zone load balancing must be on (one control plane serves every zone)", attrs)
	}

	listeners := describeListeners(t, ctx, m, lb.LoadBalancerArn)
	if len(listeners) != 1 {
		t.Fatalf("load balancer listeners %+v: want one", listeners)
	}
	l := listeners[0]
	if l.Port != 6443 || l.Protocol != "TCP" || len(l.DefaultActions) != 1 ||
		l.DefaultActions[0].Type != "forward" || l.DefaultActions[0].TargetGroupArn != tgARN {
		t.Errorf("listener %+v: want TCP 6443 forwarding to %s", l, tgARN)
	}

	tg := describeTargetGroup(t, ctx, m, tgARN)
	t.Logf("target group %s: %+v", tg.TargetGroupName, tg)
	if tg.Protocol != "TCP" || tg.Port != 6443 || tg.TargetType != "instance" || tg.VpcId != lb.VpcId {
		t.Errorf("target group %s %d %s in %s: want TCP 6443 instance targets in the load balancer's VPC %s", tg.Protocol, tg.Port, tg.TargetType, tg.VpcId, lb.VpcId)
	}
	if !slices.Contains(tg.LoadBalancerArns, lb.LoadBalancerArn) {
		t.Errorf("target group load balancers %v lack %s", tg.LoadBalancerArns, lb.LoadBalancerArn)
	}
	if !tg.HealthCheckEnabled || tg.HealthCheckProtocol != "HTTPS" || tg.HealthCheckPort != "6443" || tg.HealthCheckPath != "/readyz" ||
		tg.Matcher.HttpCode != "200" {
		t.Errorf("health check %v %s port %s path %s matcher %s: want HTTPS on 6443 /readyz expecting 200",
			tg.HealthCheckEnabled, tg.HealthCheckProtocol, tg.HealthCheckPort, tg.HealthCheckPath, tg.Matcher.HttpCode)
	}
	if tg.HealthCheckIntervalSeconds != 10 || tg.HealthCheckTimeoutSeconds != 5 || tg.HealthyThresholdCount != 2 || tg.UnhealthyThresholdCount != 2 {
		t.Errorf("health check every %d s, timeout %d s, healthy after %d, unhealthy after %d: want 10, 5, 2, 2",
			tg.HealthCheckIntervalSeconds, tg.HealthCheckTimeoutSeconds, tg.HealthyThresholdCount, tg.UnhealthyThresholdCount)
	}
	attrs := describeTargetGroupAttributes(t, ctx, m, tgARN)
	for k, v := range map[string]string{
		"preserve_client_ip.enabled":                          "false",
		"deregistration_delay.timeout_seconds":                "30",
		"deregistration_delay.connection_termination.enabled": "true",
	} {
		if attrs[k] != v {
			t.Errorf("target group attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
}

// checkControlPlaneGroup checks the control-plane Auto Scaling group: n
// instances (desired = min = max), across the three private node subnets, the
// endpoint's target group, EC2 health checks with a 600 s grace period,
// AZRebalance suspended; its instances running in distinct zones (up to
// three) and registered with the target group.
func checkControlPlaneGroup(t *testing.T, ctx context.Context, m *motoServer, asc *autoscaling.Client, ec2c *ec2.Client, name, tgARN string, n int32) astypes.AutoScalingGroup {
	t.Helper()
	asgs, err := asc.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil || len(asgs.AutoScalingGroups) != 1 {
		t.Fatalf("control-plane group %s: %v", name, err)
	}
	g := asgs.AutoScalingGroups[0]
	if name != "demo-control-plane" {
		t.Errorf("control-plane group name %s, want demo-control-plane", name)
	}
	if aws.ToInt32(g.DesiredCapacity) != n || aws.ToInt32(g.MinSize) != n || aws.ToInt32(g.MaxSize) != n {
		t.Errorf("control-plane group size desired %d min %d max %d, want %d/%d/%d", aws.ToInt32(g.DesiredCapacity), aws.ToInt32(g.MinSize), aws.ToInt32(g.MaxSize), n, n, n)
	}
	if !slices.Equal(g.TargetGroupARNs, []string{tgARN}) {
		t.Errorf("control-plane group target groups %v, want [%s]", g.TargetGroupARNs, tgARN)
	}
	if aws.ToString(g.HealthCheckType) != "EC2" || aws.ToInt32(g.HealthCheckGracePeriod) != 600 {
		t.Errorf("control-plane group health check %s, grace %d s: want EC2 (the load balancer's check must not terminate an initializing control plane), 600 s",
			aws.ToString(g.HealthCheckType), aws.ToInt32(g.HealthCheckGracePeriod))
	}
	var suspended []string
	for _, p := range g.SuspendedProcesses {
		suspended = append(suspended, aws.ToString(p.ProcessName))
	}
	if !slices.Contains(suspended, "AZRebalance") {
		t.Errorf("control-plane group suspended processes %v: want AZRebalance", suspended)
	}
	if g.LaunchTemplate == nil || g.MixedInstancesPolicy != nil {
		t.Fatalf("control-plane group: want a plain launch template, got %+v / %+v", g.LaunchTemplate, g.MixedInstancesPolicy)
	}
	subnets := strings.Split(aws.ToString(g.VPCZoneIdentifier), ",")
	sn, err := ec2c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: subnets})
	if err != nil {
		t.Fatal(err)
	}
	azs := map[string]bool{}
	for _, s := range sn.Subnets {
		azs[aws.ToString(s.AvailabilityZone)] = true
		if aws.ToBool(s.MapPublicIpOnLaunch) {
			t.Errorf("control-plane subnet %s gives public IPs", aws.ToString(s.SubnetId))
		}
	}
	if len(azs) != 3 {
		t.Errorf("control-plane group spans %d availability zones (%v), want 3", len(azs), azs)
	}

	var ids []string
	instanceZones := map[string]bool{}
	for _, i := range g.Instances {
		ids = append(ids, aws.ToString(i.InstanceId))
		instanceZones[aws.ToString(i.AvailabilityZone)] = true
	}
	if int32(len(ids)) != n || len(instanceZones) != min(int(n), 3) {
		t.Errorf("control-plane instances %v in zones %v: want %d in %d zones", ids, instanceZones, n, min(int(n), 3))
	}
	if len(ids) > 0 {
		desc, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range desc.Reservations {
			for _, inst := range r.Instances {
				if inst.State == nil || inst.State.Name != ec2types.InstanceStateNameRunning {
					t.Errorf("control-plane instance %s state %+v", aws.ToString(inst.InstanceId), inst.State)
				}
			}
		}
	}
	targets := registeredTargets(t, ctx, m, tgARN)
	slices.Sort(ids)
	slices.Sort(targets)
	if !slices.Equal(ids, targets) {
		t.Errorf("targets of the endpoint %v, want the control-plane instances %v", targets, ids)
	}
	return g
}
