//go:build deploy

package deploy

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// policyDoc is the part of an IAM policy document the tests look at.
type policyDoc struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Principal any
		Action    any
		Resource  any
		Condition map[string]map[string]any
	}
}

func parsePolicy(t *testing.T, name, doc string) policyDoc {
	t.Helper()
	var p policyDoc
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatalf("%s is not JSON: %v\n%s", name, err, doc)
	}
	if p.Version != "2012-10-17" || len(p.Statement) == 0 {
		t.Fatalf("%s: want Version 2012-10-17 and statements:\n%s", name, doc)
	}
	return p
}

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			s, _ := e.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

// policyVars are the template variables iam.tf passes, with test values.
func policyVars(bucket, cluster string) map[string]any {
	return map[string]any{
		"bucket_arn":          "arn:aws:s3:::" + bucket,
		"cluster":             cluster,
		"kms_key_arn":         "arn:aws:kms:us-east-1:123456789012:key/0b9e5f1c-2d3a-4b5c-8d6e-7f8091a2b3c4",
		"kms_via_service":     "s3.us-east-1.amazonaws.com",
		"ecr_repository_arns": []string{"arn:aws:ecr:us-east-1:123456789012:repository/" + cluster + "/demo-app"},
	}
}

// TestNodePoliciesShape checks the rendered documents statically: least
// privilege on S3, no wildcard actions, KMS only through S3.
func TestNodePoliciesShape(t *testing.T) {
	needTool(t, "terraform")
	vars := policyVars("kubestrap-test", "demo")
	worker := parsePolicy(t, "worker policy", renderTemplate(t, repoPath(t, "tf", "templates", "worker-policy.json.tftpl"), vars))
	cp := parsePolicy(t, "control-plane policy", renderTemplate(t, repoPath(t, "tf", "templates", "control-plane-policy.json.tftpl"), vars))

	for name, p := range map[string]policyDoc{"worker": worker, "control plane": cp} {
		for _, s := range p.Statement {
			if s.Effect != "Allow" {
				t.Errorf("%s %s: unexpected effect %s", name, s.Sid, s.Effect)
			}
			for _, a := range strs(s.Action) {
				if a == "*" || a == "s3:*" || a == "kms:*" || a == "ecr:*" {
					t.Errorf("%s %s: wildcard action %s", name, s.Sid, a)
				}
				// Neither action has resource-level permissions; DescribeInstances
				// is the control plane's init election (is the lock holder alive).
				if slices.Contains(strs(s.Resource), "*") && a != "ecr:GetAuthorizationToken" &&
					(a != "ec2:DescribeInstances" || name != "control plane") {
					t.Errorf("%s %s: %s on every resource", name, s.Sid, a)
				}
				if a[:4] == "kms:" && s.Condition["StringEquals"]["kms:ViaService"] != "s3.us-east-1.amazonaws.com" {
					t.Errorf("%s %s: KMS use must be limited to S3 (kms:ViaService)", name, s.Sid)
				}
			}
		}
	}
	for _, s := range worker.Statement {
		if slices.Contains(strs(s.Action), "s3:GetObject") && !slices.Equal(strs(s.Resource), []string{"arn:aws:s3:::kubestrap-test/demo/join.json"}) {
			t.Errorf("worker reads %q, want only demo/join.json", strs(s.Resource))
		}
		for _, a := range strs(s.Action) {
			if a == "s3:DeleteObject" {
				t.Errorf("worker may %s", a)
			}
			// A worker writes only leave records.
			if a == "s3:PutObject" && !slices.Equal(strs(s.Resource), []string{"arn:aws:s3:::kubestrap-test/demo/leave/*"}) {
				t.Errorf("worker writes %q, want only demo/leave/*", strs(s.Resource))
			}
		}
	}

	bucketPolicy := parsePolicy(t, "bucket policy", renderTemplate(t, repoPath(t, "tf", "templates", "bucket-policy.json.tftpl"),
		map[string]any{"bucket_arn": "arn:aws:s3:::kubestrap-test", "kms_key_arn": vars["kms_key_arn"]}))
	tlsOnly := false
	for _, s := range bucketPolicy.Statement {
		if s.Effect == "Deny" && s.Principal == "*" && s.Condition["Bool"]["aws:SecureTransport"] == "false" &&
			slices.Equal(strs(s.Resource), []string{"arn:aws:s3:::kubestrap-test", "arn:aws:s3:::kubestrap-test/*"}) {
			tlsOnly = true
		}
	}
	if !tlsOnly {
		t.Error("bucket policy must deny every request without TLS, on the bucket and its objects")
	}
	trust := parsePolicy(t, "trust policy", renderTemplate(t, repoPath(t, "tf", "templates", "ec2-assume-role.json.tftpl"),
		map[string]any{"ec2_service_principal": "ec2.amazonaws.com"}))
	if p, _ := trust.Statement[0].Principal.(map[string]any); len(trust.Statement) != 1 || p["Service"] != "ec2.amazonaws.com" {
		t.Errorf("trust policy must admit only EC2: %+v", trust.Statement)
	}
}

// TestNodePoliciesInMoto renders the role policies with terraform's
// templatefile(), applies them in moto_server and, with IAM enforced, checks what
// each role's credentials can do: a worker reads join.json and nothing else; the
// control plane writes it.
func TestNodePoliciesInMoto(t *testing.T) {
	needTool(t, "terraform")
	const bucket, cluster = "kubestrap-deploy-test", "demo"
	vars := policyVars(bucket, cluster)
	docs := map[string]string{
		"control-plane": renderTemplate(t, repoPath(t, "tf", "templates", "control-plane-policy.json.tftpl"), vars),
		"worker":        renderTemplate(t, repoPath(t, "tf", "templates", "worker-policy.json.tftpl"), vars),
	}
	trust := renderTemplate(t, repoPath(t, "tf", "templates", "ec2-assume-role.json.tftpl"), map[string]any{"ec2_service_principal": "ec2.amazonaws.com"})

	// Set-up runs unauthenticated: exactly these calls, then IAM is enforced.
	const setupCalls = 4 + 2*2 + 2 // bucket + 3 objects, 2 x (role + policy), 2 x AssumeRole
	m := startMoto(t, setupCalls)
	ctx := ctxT(t)
	if err := seedBucket(ctx, m, bucket, cluster, true); err != nil {
		t.Fatal(err)
	}
	iamc := iam.NewFromConfig(m.cfg(setupCreds))
	arns := map[string]string{}
	for _, role := range []string{"control-plane", "worker"} {
		out, err := iamc.CreateRole(ctx, &iam.CreateRoleInput{
			RoleName: aws.String(cluster + "-kubestrap-" + role), AssumeRolePolicyDocument: aws.String(trust),
		})
		if err != nil {
			t.Fatalf("create role %s: %v", role, err)
		}
		arns[role] = aws.ToString(out.Role.Arn)
		if _, err := iamc.PutRolePolicy(ctx, &iam.PutRolePolicyInput{
			RoleName: out.Role.RoleName, PolicyName: aws.String("kubestrap"), PolicyDocument: aws.String(docs[role]),
		}); err != nil {
			t.Fatalf("put %s policy (moto validates the document): %v\n%s", role, err, docs[role])
		}
	}
	cpCreds, err := assumeRole(ctx, m, arns["control-plane"], "i-0controlplane000000")
	if err != nil {
		t.Fatal(err)
	}
	workerCreds, err := assumeRole(ctx, m, arns["worker"], "i-0worker00000000000")
	if err != nil {
		t.Fatal(err)
	}

	// IAM is on now: the unknown set-up key is refused.
	_, err = m.s3(setupCreds).ListBuckets(ctx, &s3.ListBucketsInput{})
	if err == nil || statusOf(err) != http.StatusForbidden {
		t.Fatalf("IAM enforcement is not on after %d set-up calls: %v", setupCalls, err)
	}

	checkNodePermissions(t, m, bucket, cluster, cpCreds, workerCreds)
}
