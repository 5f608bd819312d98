// Package kubeadm runs the kubeadm binary: init, join, reset and token
// commands, each with a configuration file or plain arguments (never a shell
// string), its output streamed line by line into the agent's log with
// secrets redacted, and its failures classified.
package kubeadm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kubestrap/kubestrap/internal/bootstraptoken"
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
	// Lock, when set, serializes runs across agent processes: every run
	// holds it, and the child inherits it so that it outlives a dead agent.
	Lock *Lock
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
	lines, _, err := r.run(ctx, false, args...)
	return lines, err
}

// run is Run; with keepRaw it also returns the unredacted output, which the
// caller must never log.
func (r *Runner) run(ctx context.Context, keepRaw bool, args ...string) (lines, raw []string, err error) {
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = GracePeriod
	if r.Env != nil {
		cmd.Env = r.Env
	}
	var held *Held
	if r.Lock != nil {
		if held, err = r.Lock.Acquire(ctx, nil); err != nil {
			return nil, nil, fmt.Errorf("wait for the kubeadm lock before kubeadm %s: %w", firstWords(args), err)
		}
		defer held.Close()
		// The child holds the lock too: if this process dies, the lock
		// lasts until kubeadm exits.
		cmd.ExtraFiles = []*os.File{held.File()}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("output pipe for kubeadm %s: %w", firstWords(args), err)
	}
	defer pr.Close()
	cmd.Stdout, cmd.Stderr = pw, pw
	// The child holds a copy of the pipe's read end too, so that if this
	// process dies mid-run, kubeadm's next output line does not kill it with
	// SIGPIPE: the orphan finishes (holding the lock) and the next agent
	// finds its result. A copy, because handing pr itself to the child would
	// make it blocking and lose its read deadline.
	keepalive, err := dupFile(pr, "kubeadm-output-keepalive")
	if err != nil {
		_ = pw.Close()
		return nil, nil, fmt.Errorf("output pipe for kubeadm %s: %w", firstWords(args), err)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, keepalive)
	log := r.Log.With(zap.String("command", "kubeadm "+firstWords(args)))
	start := time.Now()
	log.Info("running kubeadm", zap.Strings("args", redactArgs(args)))
	err = cmd.Start()
	_ = pw.Close() // the child has its copy; EOF comes when it exits
	_ = keepalive.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("start kubeadm %s: %w", firstWords(args), err)
	}
	if held != nil {
		held.RecordPID(cmd.Process.Pid)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if keepRaw {
				raw = append(raw, sc.Text())
			}
			line := Redact(sc.Text())
			lines = append(lines, line)
			if strings.TrimSpace(line) != "" {
				log.Info(line, zap.Bool("kubeadmOutput", true))
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	// A descendant that kept kubeadm's output open gets GracePeriod.
	_ = pr.SetReadDeadline(time.Now().Add(GracePeriod))
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
		return lines, nil, &ExitError{Args: args, ExitCode: code, Output: tail, Err: err}
	}
	return lines, raw, nil
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

// UploadCerts runs `kubeadm init phase upload-certs --upload-certs --config
// file` with the admin kubeconfig: kubeadm encrypts the cluster's
// certificates with the file's certificateKey into the kubeadm-certs Secret,
// which it deletes after two hours.
func (r *Runner) UploadCerts(ctx context.Context, configFile, kubeconfig string) error {
	_, err := r.Run(ctx, "init", "phase", "upload-certs", "--upload-certs", "--config", configFile, "--kubeconfig", kubeconfig)
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

// CertsRenewTimeout bounds one `kubeadm certs renew all`.
const CertsRenewTimeout = 5 * time.Minute

// CertsRenewAll runs `kubeadm certs renew all`: kubeadm renews every
// certificate it manages on this control-plane node (never the CAs), the
// client certificates embedded in its kubeconfig files included. It runs
// under the lock like every other run, bounded by CertsRenewTimeout.
func (r *Runner) CertsRenewAll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, CertsRenewTimeout)
	defer cancel()
	_, err := r.Run(ctx, "certs", "renew", "all")
	return err
}

// TokenCreate has kubeadm generate a bootstrap token valid for ttl and
// returns it ("id.secret"). The secret is never on a command line: kubeadm
// makes it and prints it, and only the redacted form reaches the log.
func (r *Runner) TokenCreate(ctx context.Context, kubeconfig string, ttl time.Duration, description string) (string, error) {
	_, raw, err := r.run(ctx, true, "token", "create", "--ttl", ttl.String(),
		"--description", description, "--kubeconfig", kubeconfig)
	if err != nil {
		return "", err
	}
	for i := len(raw) - 1; i >= 0; i-- {
		if t := strings.TrimSpace(raw[i]); bootstraptoken.Valid(t) {
			return t, nil
		}
	}
	return "", errors.New("kubeadm token create printed no token")
}

// Token is a bootstrap token as `kubeadm token list` shows it, without its secret.
type Token struct {
	ID          string
	Description string
	Expires     time.Time
}

// TokenList lists the cluster's bootstrap tokens (IDs only: the secrets are
// redacted before the output is parsed).
func (r *Runner) TokenList(ctx context.Context, kubeconfig string) ([]Token, error) {
	lines, err := r.Run(ctx, "token", "list", "-o", "json", "--kubeconfig", kubeconfig)
	if err != nil {
		return nil, err
	}
	return parseTokenList(strings.Join(lines, "\n"))
}

// parseTokenList decodes the stream of JSON objects `kubeadm token list -o
// json` prints (one per token), skipping klog lines (warnings go to the same
// stream).
func parseTokenList(out string) ([]Token, error) {
	var objects []string
	for _, l := range strings.Split(out, "\n") {
		if !klogLine.MatchString(l) {
			objects = append(objects, l)
		}
	}
	dec := json.NewDecoder(strings.NewReader(strings.Join(objects, "\n")))
	var tokens []Token
	for {
		var t struct {
			Token       string    `json:"token"`
			Description string    `json:"description"`
			Expires     time.Time `json:"expires"`
		}
		err := dec.Decode(&t)
		if errors.Is(err, io.EOF) {
			return tokens, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse kubeadm token list output: %w", err)
		}
		id, _, _ := strings.Cut(t.Token, ".")
		tokens = append(tokens, Token{ID: id, Description: t.Description, Expires: t.Expires})
	}
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
	klogLine   = regexp.MustCompile(`^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] `)
	keyPattern = regexp.MustCompile(`\b[a-f0-9]{64}\b`)
)

// Redact hides bootstrap token secrets and certificate keys in s, keeping
// the token ID so log lines stay useful.
func Redact(s string) string {
	s = bootstraptoken.Redact(s)
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

// dupFile returns a close-on-exec duplicate of f's descriptor as a new
// *os.File, without switching f to blocking mode as f.Fd() would.
func dupFile(f *os.File, name string) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dup int
	var dupErr error
	if err := rc.Control(func(fd uintptr) { dup, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("duplicate %s: %w", name, dupErr)
	}
	return os.NewFile(uintptr(dup), name), nil
}
