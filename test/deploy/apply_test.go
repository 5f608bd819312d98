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
// against moto_server, then reads back what Terraform created: the user-data of
// the control plane and of the worker launch template (kubestrap validate accepts
// both configurations), IMDSv2, the worker group's spread and autoscaler tags,
// the bucket's protection, and the role policies exactly as rendered from the
// templates. Finally it assumes the two roles Terraform created and checks with
// IAM enforced what their credentials may do.
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
	start := time.Now()
	mustRun(t, cmdSpec{dir: dir, env: env, timeout: 8 * time.Minute}, tf, "apply", "-auto-approve", "-input=false", "-no-color",
		"-var", "region="+motoRegion, "-var", "cluster_name=demo", "-var", "num_nodes=2", "-var", "max_nodes=5",
		"-var", "enable_ssm=true", "-var", `api_allowed_cidrs=["203.0.113.0/24"]`, "-var", `nodeport_allowed_cidrs=["198.51.100.0/24"]`)
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

	t.Run("control plane", func(t *testing.T) {
		desc, err := ec2c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{out("control_plane_instance_id")}})
		if err != nil {
			t.Fatal(err)
		}
		inst := desc.Reservations[0].Instances[0]
		if inst.MetadataOptions == nil || inst.MetadataOptions.HttpTokens != ec2types.HttpTokensStateRequired {
			t.Errorf("control plane metadata options %+v: IMDSv2 must be required", inst.MetadataOptions)
		}
		if aws.ToString(inst.PrivateIpAddress) != "10.0.1.10" || out("api_server_endpoint") != "10.0.1.10:6443" {
			t.Errorf("control plane at %s, endpoint %s: want 10.0.1.10:6443", aws.ToString(inst.PrivateIpAddress), out("api_server_endpoint"))
		}
		if inst.IamInstanceProfile == nil || !strings.HasSuffix(aws.ToString(inst.IamInstanceProfile.Arn), "/demo-kubestrap-control-plane") {
			t.Errorf("control plane instance profile %+v", inst.IamInstanceProfile)
		}
		attr, err := ec2c.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
			InstanceId: inst.InstanceId, Attribute: ec2types.InstanceAttributeNameUserData,
		})
		if err != nil {
			t.Fatal(err)
		}
		cfg := appliedConfig(t, "control-plane", aws.ToString(attr.UserData.Value))
		kubeadm, _ := cfg["kubeadm"].(map[string]any)
		cp, _ := cfg["controlPlane"].(map[string]any)
		if cfg["bucket"] != bucket || cp["kmsKeyId"] != kmsKey || kubeadm["controlPlaneEndpoint"] != "10.0.1.10:6443" {
			t.Errorf("control-plane config does not match the cluster: %v", cfg)
		}
		if sans := strs(kubeadm["certSANs"]); !slices.Contains(sans, "10.0.1.10") {
			t.Errorf("certSANs %q lack the control-plane address", sans)
		}
	})

	t.Run("workers", func(t *testing.T) {
		asgs, err := autoscaling.NewFromConfig(m.cfg(setupCreds)).DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
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
			"control-plane tcp 6443-6443 203.0.113.0/24",
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
