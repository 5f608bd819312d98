package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/smithy-go"
)

// session writes a node's STS session as `aws sts assume-role` prints it.
func session(t *testing.T, dir, node, role, key, secret, token string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"Credentials": map[string]string{"AccessKeyId": key, "SecretAccessKey": secret, "SessionToken": token,
			"Expiration": "2026-12-01T00:00:00+00:00"},
		"AssumedRoleUser": map[string]string{"AssumedRoleId": "AROA:" + node,
			"Arn": "arn:aws:sts::123456789012:assumed-role/" + role + "/i-" + node},
	})
	if err := os.WriteFile(filepath.Join(dir, node+".json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The real Auto Scaling client of the agent, pointed at the proxy: lifecycle
// calls signed with a worker's session are answered and recorded; any other
// key, secret or role is refused with an error the SDK decodes; every other
// request reaches the upstream as it was sent.
func TestProxy(t *testing.T) {
	dir := t.TempDir()
	session(t, dir, "w1", "kse2e-worker", "AKIAW1", "secret-w1", "token-w1")
	session(t, dir, "cp", "kse2e-control-plane", "AKIACP", "secret-cp", "token-cp")

	var upstreamGot []string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		upstreamGot = append(upstreamGot, r.Host+" "+string(b))
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, `<DescribeAutoScalingInstancesResponse><DescribeAutoScalingInstancesResult><AutoScalingInstances/></DescribeAutoScalingInstancesResult></DescribeAutoScalingInstancesResponse>`)
	}))
	defer upstream.Close()
	up, _ := url.Parse(upstream.URL)
	var rec bytes.Buffer
	p := &proxy{forward: newForwarder(up, t.Logf), creds: &credStore{dir: dir}, workerRole: "kse2e-worker",
		hooks: map[string]bool{"g/h": true}, now: time.Now, logf: t.Logf, record: &rec}
	srv := httptest.NewServer(p)
	defer srv.Close()

	client := func(key, secret, token string) *autoscaling.Client {
		return autoscaling.New(autoscaling.Options{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
			Credentials: credentials.NewStaticCredentialsProvider(key, secret, token), RetryMaxAttempts: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	complete := func(c *autoscaling.Client, group string) error {
		_, err := c.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
			AutoScalingGroupName: aws.String(group), LifecycleHookName: aws.String("h"),
			InstanceId: aws.String("i-w1"), LifecycleActionResult: aws.String("CONTINUE")})
		return err
	}
	w1 := client("AKIAW1", "secret-w1", "token-w1")
	if err := complete(w1, "g"); err != nil {
		t.Fatalf("CompleteLifecycleAction as w1: %v", err)
	}
	if _, err := w1.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String("g"), LifecycleHookName: aws.String("h"), InstanceId: aws.String("i-w1")}); err != nil {
		t.Fatalf("RecordLifecycleActionHeartbeat as w1: %v", err)
	}
	for _, c := range []struct {
		name   string
		client *autoscaling.Client
		group  string
		code   string
	}{
		{"control plane", client("AKIACP", "secret-cp", "token-cp"), "g", "AccessDenied"},
		{"unknown key", client("AKIAXX", "secret-w1", "token-w1"), "g", "InvalidClientTokenId"},
		{"wrong secret", client("AKIAW1", "secret-xx", "token-w1"), "g", "SignatureDoesNotMatch"},
		{"wrong token", client("AKIAW1", "secret-w1", "token-xx"), "g", "SignatureDoesNotMatch"},
		{"no such hook", w1, "other", "ValidationError"},
	} {
		var ae smithy.APIError
		if err := complete(c.client, c.group); !errors.As(err, &ae) || ae.ErrorCode() != c.code {
			t.Errorf("%s: %v, want an API error %s", c.name, err, c.code)
		}
	}
	var lines []Record
	for _, l := range strings.Split(strings.TrimSpace(rec.String()), "\n") {
		var r Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("record line %q: %v", l, err)
		}
		lines = append(lines, r)
	}
	if len(lines) != 7 {
		t.Fatalf("%d records, want 7:\n%s", len(lines), rec.String())
	}
	first := lines[0]
	if first.Action != "CompleteLifecycleAction" || first.LifecycleActionResult != "CONTINUE" || first.Node != "w1" ||
		first.AccessKeyID != "AKIAW1" || first.InstanceID != "i-w1" || first.AutoScalingGroupName != "g" ||
		first.LifecycleHookName != "h" || first.Status != 200 || !strings.HasSuffix(first.CallerArn, "/kse2e-worker/i-w1") {
		t.Errorf("first record %+v", first)
	}
	if lines[1].Action != "RecordLifecycleActionHeartbeat" || lines[1].Status != 200 {
		t.Errorf("second record %+v", lines[1])
	}
	if lines[2].Node != "cp" || lines[2].Status != 403 {
		t.Errorf("control plane's record %+v", lines[2])
	}

	// Anything else goes to the upstream unchanged.
	if _, err := w1.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{"i-w1"}}); err != nil {
		t.Fatalf("DescribeAutoScalingInstances through the proxy: %v", err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	if len(upstreamGot) != 1 || !strings.HasPrefix(upstreamGot[0], host+" Action=DescribeAutoScalingInstances&") {
		t.Errorf("upstream got %q, want one DescribeAutoScalingInstances with Host %s", upstreamGot, host)
	}
}
