//go:build deploy

package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

const motoRegion = "us-east-1"

// motoServer is a moto_server this test started, on 127.0.0.1 only.
type motoServer struct {
	URL string
}

// startMoto starts moto_server on a free loopback port. With noAuthActions >= 0
// IAM is enforced after that many authenticated calls (INITIAL_NO_AUTH_ACTION_COUNT);
// with -1 it is off until enforceAuth. The server (and only it: its own process
// group) is stopped when the test ends.
func startMoto(t *testing.T, noAuthActions int) *motoServer {
	t.Helper()
	bin := needTool(t, "moto_server")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	logPath := filepath.Join(t.TempDir(), "moto.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", port)
	// AWS managed policies (AmazonSSMManagedInstanceCore) exist, as in AWS.
	cmd.Env = append(os.Environ(), "MOTO_IAM_LOAD_MANAGED_POLICIES=true")
	if noAuthActions >= 0 {
		cmd.Env = append(cmd.Env, "INITIAL_NO_AUTH_ACTION_COUNT="+strconv.Itoa(noAuthActions))
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
		logFile.Close()
		if t.Failed() {
			if data, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				t.Logf("moto_server log (last lines):\n%s", strings.Join(lines, "\n"))
			}
		}
	})

	m := &motoServer{URL: "http://127.0.0.1:" + port}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("moto_server exited early; see %s", logPath)
		default:
		}
		resp, err := http.Get(m.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server not ready on %s after 60s: %v", m.URL, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// enforceAuth turns IAM enforcement on from the next call.
func (m *motoServer) enforceAuth(t *testing.T) {
	t.Helper()
	resp, err := http.Post(m.URL+"/moto-api/reset-auth", "application/json", strings.NewReader("0"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reset-auth: %s", resp.Status)
	}
}

// cfg is an SDK configuration for moto with fixed credentials; nothing is read
// from the environment or ~/.aws.
func (m *motoServer) cfg(creds aws.Credentials) aws.Config {
	return aws.Config{
		Region:           motoRegion,
		Credentials:      credentials.StaticCredentialsProvider{Value: creds},
		BaseEndpoint:     aws.String(m.URL),
		RetryMaxAttempts: 2,
	}
}

func (m *motoServer) s3(creds aws.Credentials) *s3.Client {
	return s3.NewFromConfig(m.cfg(creds), func(o *s3.Options) { o.UsePathStyle = true })
}

// setupCreds are the credentials of the unauthenticated set-up phase.
var setupCreds = aws.Credentials{AccessKeyID: "AKIAKUBESTRAPSETUP00", SecretAccessKey: "setup"}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func statusOf(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// putObject writes an object (set-up helper).
func putObject(ctx context.Context, c *s3.Client, bucket, key, body string) error {
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body)})
	return err
}

// assumeRole returns temporary credentials of a role, as an instance profile
// would hand them to a node.
func assumeRole(ctx context.Context, m *motoServer, roleArn, session string) (aws.Credentials, error) {
	out, err := sts.NewFromConfig(m.cfg(setupCreds)).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(roleArn), RoleSessionName: aws.String(session),
	})
	if err != nil {
		return aws.Credentials{}, err
	}
	c := out.Credentials
	return aws.Credentials{
		AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken: aws.ToString(c.SessionToken), CanExpire: true, Expires: aws.ToTime(c.Expiration),
	}, nil
}

// permissionCheck is one call made with a node's credentials and the outcome
// the policies must give it.
type permissionCheck struct {
	who     string
	what    string
	allowed bool
	call    func(context.Context) error
}

// checkNodePermissions runs, with IAM enforced, what each role may and may not
// do in the bucket and in ECR. The bucket must hold <cluster>/join.json,
// <cluster>/control-plane.json and other/join.json.
func checkNodePermissions(t *testing.T, m *motoServer, bucket, cluster string, controlPlane, worker aws.Credentials) {
	t.Helper()
	get := func(creds aws.Credentials, key string) func(context.Context) error {
		return func(ctx context.Context) error {
			out, err := m.s3(creds).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
			if err == nil {
				_, err = io.Copy(io.Discard, out.Body)
				out.Body.Close()
			}
			return err
		}
	}
	put := func(creds aws.Credentials, key string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := m.s3(creds).PutObject(ctx, &s3.PutObjectInput{
				Bucket: aws.String(bucket), Key: aws.String(key),
				Body:        bytes.NewReader([]byte(`{"apiVersion":"kubestrap.dev/v1alpha1","kind":"JoinInfo"}`)),
				ContentType: aws.String("application/json"),
			})
			return err
		}
	}
	del := func(creds aws.Credentials, key string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := m.s3(creds).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
			return err
		}
	}
	ecrToken := func(creds aws.Credentials) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := ecr.NewFromConfig(m.cfg(creds)).GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
			return err
		}
	}
	listRoles := func(creds aws.Credentials) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := iam.NewFromConfig(m.cfg(creds)).ListRoles(ctx, &iam.ListRolesInput{})
			return err
		}
	}
	join := cluster + "/join.json"
	leaveRecord := cluster + "/leave/i-0worker00000000000.json"
	// Control-plane join info holds the certificate key: control planes only.
	cpJoin := cluster + "/cp/join.json"
	checks := []permissionCheck{
		{"worker", "GetObject " + join, true, get(worker, join)},
		{"worker", "PutObject " + join, false, put(worker, join)},
		{"worker", "DeleteObject " + join, false, del(worker, join)},
		{"worker", "GetObject " + cluster + "/control-plane.json", false, get(worker, cluster+"/control-plane.json")},
		{"worker", "GetObject other/join.json", false, get(worker, "other/join.json")},
		{"worker", "PutObject " + cluster + "/evil.sh", false, put(worker, cluster+"/evil.sh")},
		{"worker", "PutObject " + cluster + "/cp/join-request.json", false, put(worker, cluster+"/cp/join-request.json")},
		{"worker", "PutObject " + leaveRecord, true, put(worker, leaveRecord)},
		{"worker", "GetObject " + leaveRecord, false, get(worker, leaveRecord)},
		{"worker", "DeleteObject " + leaveRecord, false, del(worker, leaveRecord)},
		{"worker", "PutObject other/leave/i-0worker00000000000.json", false, put(worker, "other/leave/i-0worker00000000000.json")},
		{"worker", "ecr:GetAuthorizationToken", true, ecrToken(worker)},
		{"worker", "iam:ListRoles", false, listRoles(worker)},
		{"control plane", "PutObject " + join, true, put(controlPlane, join)},
		{"control plane", "GetObject " + join, true, get(controlPlane, join)},
		{"control plane", "PutObject " + cluster + "/init.lock", true, put(controlPlane, cluster+"/init.lock")},
		{"control plane", "DeleteObject " + cluster + "/init.lock", true, del(controlPlane, cluster+"/init.lock")},
		{"control plane", "GetObject other/join.json", false, get(controlPlane, "other/join.json")},
		{"control plane", "PutObject other/join.json", false, put(controlPlane, "other/join.json")},
		{"control plane", "PutObject " + cpJoin, true, put(controlPlane, cpJoin)},
		{"control plane", "GetObject " + cpJoin, true, get(controlPlane, cpJoin)},
		{"control plane", "GetObject " + leaveRecord, true, get(controlPlane, leaveRecord)},
		{"control plane", "DeleteObject " + leaveRecord, true, del(controlPlane, leaveRecord)},
		{"control plane", "ecr:GetAuthorizationToken", true, ecrToken(controlPlane)},
		{"control plane", "iam:ListRoles", false, listRoles(controlPlane)},
		// After the control plane's rewrite, the worker still reads the new info.
		{"worker", "GetObject " + join + " (rewritten)", true, get(worker, join)},
		// The control plane wrote cp/join.json above: it exists, and a worker still cannot read it.
		{"worker", "GetObject " + cpJoin + " (exists)", false, get(worker, cpJoin)},
	}
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
			t.Logf("%-13s %-45s %s", c.who, c.what, outcome)
		}
	}
}

// seedBucket creates (optionally) the bucket and the objects the permission
// checks read: 3 or 4 calls.
func seedBucket(ctx context.Context, m *motoServer, bucket, cluster string, create bool) error {
	c := m.s3(setupCreds)
	if create {
		if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
	}
	for key, body := range map[string]string{
		cluster + "/join.json":          `{"apiVersion":"kubestrap.dev/v1alpha1","kind":"JoinInfo","cluster":"` + cluster + `"}`,
		cluster + "/control-plane.json": `{"certificateKey":"secret"}`,
		"other/join.json":               `{"cluster":"other"}`,
	} {
		if err := putObject(ctx, c, bucket, key, body); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	return nil
}
