package kubeadm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeadm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunStreamsOutputWithSecretsRedacted(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := &Runner{Path: script(t, `echo "kubeadm join 10.0.1.10:6443 --token abcdef.0123456789abcdef --certificate-key `+strings.Repeat("a1", 32)+`"
echo "error: token id \"abcdef\" is invalid for this cluster or it has expired" >&2
exit 1
`), Log: zap.New(core)}
	err := r.Join(context.Background(), "/tmp/join.yaml")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode != 1 {
		t.Fatalf("err = %v, want an ExitError with code 1", err)
	}
	if !IsTokenRejected(err) {
		t.Errorf("expired-token output not classified as a token refusal")
	}
	all := err.Error()
	for _, e := range logs.All() {
		all += "\n" + e.Message
	}
	if strings.Contains(all, "0123456789abcdef") || strings.Contains(all, strings.Repeat("a1", 32)) {
		t.Errorf("secret in log or error:\n%s", all)
	}
	if !strings.Contains(all, "--token abcdef.<redacted>") {
		t.Errorf("token ID not kept in the log:\n%s", all)
	}
}

func TestOtherFailuresAreNotTokenRefusals(t *testing.T) {
	r := &Runner{Path: script(t, `echo "[ERROR Port-10250]: Port 10250 is in use"; exit 1`), Log: zap.NewNop()}
	err := r.Join(context.Background(), "/tmp/join.yaml")
	if err == nil || IsTokenRejected(err) {
		t.Errorf("err = %v; a port conflict is not a token refusal", err)
	}
	if IsTokenRejected(errors.New("could not find a JWS signature")) {
		t.Error("a plain error (not kubeadm's output) classified as a token refusal")
	}
}

func TestCancelGivesTheChildSIGTERMFirst(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "terminated")
	r := &Runner{Path: script(t, `trap 'echo cleaned > `+marker+`; exit 143' TERM
while :; do sleep 0.05; done
`), Log: zap.NewNop()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Join(ctx, "/tmp/join.yaml") }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(GracePeriod + 5*time.Second):
		t.Fatal("Join did not return after cancel")
	}
	if b, _ := os.ReadFile(marker); strings.TrimSpace(string(b)) != "cleaned" {
		t.Error("kubeadm child was not given SIGTERM to clean up")
	}
}

func TestRedact(t *testing.T) {
	in := "token abcdef.0123456789abcdef key " + strings.Repeat("0f", 32)
	if got := Redact(in); got != "token abcdef.<redacted> key <redacted>" {
		t.Errorf("Redact = %q", got)
	}
}
