// Package kubeadm runs the kubeadm binary: init, join, reset and token
// commands, each with a configuration file or plain arguments (never a shell
// string), its output streamed line by line into the agent's log with
// secrets redacted, and its failures classified.
package kubeadm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// GracePeriod is how long a kubeadm child gets after SIGTERM before SIGKILL.
const GracePeriod = 30 * time.Second

// tailLines is how many output lines an ExitError keeps.
const tailLines = 40

// Runner executes kubeadm.
type Runner struct {
	// Path is the kubeadm binary, absolute or on PATH.
	Path string
	// Env, when not nil, replaces the child's environment.
	Env []string
	Log *zap.Logger
}

// ExitError is a kubeadm run that failed; Output holds its last lines
// (secrets redacted), for classification and for the operator.
type ExitError struct {
	Args     []string
	ExitCode int
	Output   []string
	Err      error
}

func (e *ExitError) Error() string {
	last := ""
	for i := len(e.Output) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(e.Output[i]); l != "" && !strings.HasPrefix(l, "To see the stack trace") {
			last = l
			break
		}
	}
	msg := fmt.Sprintf("kubeadm %s failed (exit %d)", strings.Join(redactArgs(e.Args), " "), e.ExitCode)
	if last != "" {
		msg += ": " + last
	}
	return msg
}

func (e *ExitError) Unwrap() error { return e.Err }

// Run executes kubeadm with args, logging each output line, and returns the
// whole output (secrets redacted). When ctx ends the child gets SIGTERM and
// GracePeriod to exit before it is killed.
func (r *Runner) Run(ctx context.Context, args ...string) ([]string, error) {
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = GracePeriod
	if r.Env != nil {
		cmd.Env = r.Env
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	log := r.Log.With(zap.String("command", "kubeadm "+firstWords(args)))
	start := time.Now()
	log.Info("running kubeadm", zap.Strings("args", redactArgs(args)))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kubeadm %s: %w", firstWords(args), err)
	}
	var (
		lines []string
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := Redact(sc.Text())
			lines = append(lines, line)
			if strings.TrimSpace(line) != "" {
				log.Info(line, zap.Bool("kubeadmOutput", true))
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	_ = pw.Close()
	wg.Wait()
	log.Info("kubeadm finished", zap.Duration("took", time.Since(start)), zap.Bool("ok", err == nil))
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		tail := lines
		if len(tail) > tailLines {
			tail = tail[len(tail)-tailLines:]
		}
		return lines, &ExitError{Args: args, ExitCode: code, Output: tail, Err: err}
	}
	return lines, nil
}

// Init runs `kubeadm init --config file` plus extra flags.
func (r *Runner) Init(ctx context.Context, configFile string, extra ...string) error {
	_, err := r.Run(ctx, append([]string{"init", "--config", configFile}, extra...)...)
	return err
}

// Join runs `kubeadm join --config file`.
func (r *Runner) Join(ctx context.Context, configFile string) error {
	_, err := r.Run(ctx, "join", "--config", configFile)
	return err
}

// Reset runs `kubeadm reset -f`, undoing a partial init or join.
func (r *Runner) Reset(ctx context.Context, criSocket string) error {
	args := []string{"reset", "-f"}
	if criSocket != "" {
		args = append(args, "--cri-socket", criSocket)
	}
	_, err := r.Run(ctx, args...)
	return err
}

// TokenCreate registers token ("id.secret") with the cluster for ttl.
func (r *Runner) TokenCreate(ctx context.Context, kubeconfig, token string, ttl time.Duration, description string) error {
	_, err := r.Run(ctx, "token", "create", token, "--ttl", ttl.String(),
		"--description", description, "--kubeconfig", kubeconfig)
	return err
}

// TokenDelete removes the token with the given ID from the cluster.
func (r *Runner) TokenDelete(ctx context.Context, kubeconfig, tokenID string) error {
	_, err := r.Run(ctx, "token", "delete", tokenID, "--kubeconfig", kubeconfig)
	return err
}

// IsTokenRejected reports whether a failed join was refused because the
// bootstrap token is unknown, expired or does not match the cluster's
// signature: a newer token is needed, retrying the same one cannot help.
func IsTokenRejected(err error) bool {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return false
	}
	for _, l := range ee.Output {
		for _, m := range tokenRejectedMarkers {
			if strings.Contains(l, m) {
				return true
			}
		}
	}
	return false
}

// IsNodeStillRegistered reports whether a failed join was refused because a
// Ready Node of the same name still exists: the node was reset, and the API
// server has not yet noticed its kubelet stopped (node monitor grace period).
func IsNodeStillRegistered(err error) bool {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return false
	}
	for _, l := range ee.Output {
		if strings.Contains(l, "already exists in the cluster") && strings.Contains(l, "a Node with name") {
			return true
		}
	}
	return false
}

var tokenRejectedMarkers = []string{
	"could not find a JWS signature in the cluster-info ConfigMap for token ID",
	"is invalid for this cluster or it has expired",
	"failed to verify JWS signature of received cluster info object",
	"Unauthorized",
}

var (
	tokenPattern = regexp.MustCompile(`\b([a-z0-9]{6})\.[a-z0-9]{16}\b`)
	keyPattern   = regexp.MustCompile(`\b[a-f0-9]{64}\b`)
)

// Redact hides bootstrap token secrets and certificate keys in s, keeping
// the token ID so log lines stay useful.
func Redact(s string) string {
	s = tokenPattern.ReplaceAllString(s, "$1.<redacted>")
	return keyPattern.ReplaceAllString(s, "<redacted>")
}

func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = Redact(a)
	}
	return out
}

func firstWords(args []string) string {
	var w []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") || len(w) == 2 {
			break
		}
		w = append(w, Redact(a))
	}
	return strings.Join(w, " ")
}
