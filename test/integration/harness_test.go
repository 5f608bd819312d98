//go:build integration

// Package integration runs kubestrap against real components on loopback:
// moto_server (S3, ECR, STS), ec2-metadata-mock (IMDSv2 only) and the real
// kubeadm v1.37.2 with a host-process control plane (etcd, kube-apiserver,
// kube-controller-manager). The harness starts and stops every process itself,
// by PID. Run with `make integration`.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kubestrap/kubestrap/internal/testutil/emulators"
)

// repoRoot is the module root.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func requireEnvDir(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv(name)
	if dir == "" {
		t.Fatalf("%s is not set: run the integration tests with `make integration`", name)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := emulators.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// process is a child started by the harness; it is stopped by PID at cleanup.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func startProcess(t *testing.T, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		p.stop(t)
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", name, b)
		}
	})
	return p
}

// stop sends SIGTERM to the process group and SIGKILL after 15s.
func (p *process) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Logf("%s did not stop on SIGTERM; killed", p.name)
	}
}

// waitFor polls check (bounded by timeout) until it returns nil.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
}

// cleanEnv is the environment for children: no AWS settings or credentials
// from the machine, so that only what a test sets is used.
func cleanEnv(t *testing.T, extra ...string) []string {
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "JOURNAL_STREAM=") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty)
	return append(env, extra...)
}

// startMoto runs moto_server on a free loopback port and returns its URL.
func startMoto(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	startProcess(t, "moto", cleanEnv(t), "moto_server", "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "moto_server", 30*time.Second, func() error { return emulators.MotoReady(url) })
	return url
}

// startIMDS runs ec2-metadata-mock, IMDSv2 only, on a free loopback port
// serving inst and instance-role credentials, and returns its endpoint URL.
func startIMDS(t *testing.T, inst emulators.Instance) string {
	t.Helper()
	tools := requireEnvDir(t, "TOOLS_BIN")
	port := freePort(t)
	home := t.TempDir()
	path := filepath.Join(home, "aemm-config.json")
	if err := os.WriteFile(path, emulators.IMDSConfig(inst, port), 0o600); err != nil {
		t.Fatal(err)
	}
	// An instance without interruption notices: ec2-metadata-mock serves a
	// spot interruption, a rebalance recommendation and an Auto Scaling
	// termination from its start unless they are delayed (here by a year).
	startProcess(t, "imds", cleanEnv(t, "HOME="+home), filepath.Join(tools, "ec2-metadata-mock"), "-c", path,
		"--mock-delay-sec", "31536000", "--rebalance-delay-sec", "31536000", "--asg-termination-delay-sec", "31536000")
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "ec2-metadata-mock", 30*time.Second, func() error { return emulators.IMDSReady(url) })
	return url
}

// s3Client talks to moto with throwaway credentials (moto accepts any).
func s3Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("harness", "harness", ""),
	})
}

func createBucket(t *testing.T, c *s3.Client, bucket string) {
	t.Helper()
	_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraintEuWest1}})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
}

func putObject(t *testing.T, c *s3.Client, bucket, key string, body []byte) {
	t.Helper()
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// buildAgent builds cmd/agent into dir with extra linker flags.
func buildAgent(t *testing.T, dir string, ldflags string) string {
	t.Helper()
	out := filepath.Join(dir, "kubestrap")
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, "./cmd/agent")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	return out
}
