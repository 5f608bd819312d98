//go:build deploy

package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sharedDir holds what several tests reuse (the agent binary, nfpm).
var sharedDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubestrap-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// repoRoot is the directory of the kubestrap go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.Contains(data, []byte("module github.com/kubestrap/kubestrap\n")) {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("go.mod of github.com/kubestrap/kubestrap not found above the working directory")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

// repoPath joins path elements onto the repository root.
func repoPath(t testing.TB, elem ...string) string {
	return filepath.Join(append([]string{repoRoot(t)}, elem...)...)
}

// needTool returns the path of a program, or skips the test when it is missing.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (run `make deploy-deps`): %v", name, err)
	}
	return p
}

// result is what a command did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s\n--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// cmdSpec describes one bounded command run.
type cmdSpec struct {
	dir     string
	env     []string // added to the test's environment
	stdin   string
	timeout time.Duration
}

// runCmd runs a program to completion (or its timeout) and returns its output;
// a failure to start or a timeout fails the test, a non-zero exit does not.
func runCmd(t testing.TB, spec cmdSpec, name string, args ...string) result {
	t.Helper()
	if spec.timeout == 0 {
		spec.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = spec.dir
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Stdin = strings.NewReader(spec.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s %s: timed out after %s\n%s", name, strings.Join(args, " "), spec.timeout, res)
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return res
}

// mustRun is runCmd that fails the test on a non-zero exit.
func mustRun(t testing.TB, spec cmdSpec, name string, args ...string) result {
	t.Helper()
	res := runCmd(t, spec, name, args...)
	if res.code != 0 {
		t.Fatalf("%s %s failed: %s", name, strings.Join(args, " "), res)
	}
	return res
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// kubestrapBin is the agent binary: $KUBESTRAP_BIN (as `make build` makes it),
// or one built the same way for the tests.
func kubestrapBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KUBESTRAP_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("KUBESTRAP_BIN=%s: %v", p, err)
		}
		return p
	}
	root := repoRoot(t)
	binOnce.Do(func() {
		out := filepath.Join(sharedDir, "kubestrap")
		// As `make build`: static and stripped (lintian checks the packaged copy).
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/agent: %v\n%s", err, msg)
			return
		}
		binPath = out
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// validateConfig runs `kubestrap validate` on a configuration document and
// fails the test unless it exits 0.
func validateConfig(t testing.TB, name, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	res := runCmd(t, cmdSpec{timeout: 30 * time.Second}, kubestrapBin(t), "validate", "--skip-host-checks", "--config", path)
	if res.code != 0 {
		t.Fatalf("kubestrap validate rejected %s:\n%s\n--- config\n%s", name, res, doc)
	}
	return strings.TrimSpace(res.stdout + res.stderr)
}

// copyTree copies a directory tree (regular files, directories and symlinks),
// skipping the names in skip at any depth.
func copyTree(t testing.TB, src, dst string, skip ...string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if d.Name() == s && path != src {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// --- terraform ---------------------------------------------------------------

// terraformEnv keeps terraform quiet, offline and away from the user's CLI
// configuration.
func terraformEnv(t testing.TB) []string {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(rc, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{
		"CHECKPOINT_DISABLE=1",
		"TF_IN_AUTOMATION=1",
		"TF_INPUT=0",
		"TF_CLI_CONFIG_FILE=" + rc,
		"TF_PLUGIN_CACHE_DIR=",
		"NO_COLOR=1",
	}
}

// tfEval evaluates an expression with `terraform console` in dir and decodes its
// value (passed through jsonencode and base64encode, so no HCL quoting gets in
// the way) into out.
func tfEval(t testing.TB, dir, expr string, out any) {
	t.Helper()
	tf := needTool(t, "terraform")
	res := mustRun(t, cmdSpec{dir: dir, env: terraformEnv(t), stdin: "base64encode(jsonencode(" + expr + "))\n", timeout: time.Minute},
		tf, "console", "-no-color")
	s := strings.TrimSpace(res.stdout)
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		t.Fatalf("terraform console printed no string for %s:\n%s", expr, res)
	}
	raw, err := base64.StdEncoding.DecodeString(s[1 : len(s)-1])
	if err != nil {
		t.Fatalf("terraform console output: %v\n%s", err, res)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("decode %s: %v\n%s", expr, err, raw)
	}
}

// renderTemplate renders a template file with templatefile() in the real
// terraform, with vars passed as JSON.
func renderTemplate(t testing.TB, path string, vars map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vars.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	tfEval(t, dir, fmt.Sprintf("templatefile(%q, jsondecode(file(\"vars.json\")))", abs), &out)
	return out
}

// configFromUserData extracts the AgentConfig document the user-data script
// writes to /etc/kubestrap/config.yaml.
func configFromUserData(t testing.TB, script string) string {
	t.Helper()
	const start = "cat > /etc/kubestrap/config.yaml.new <<'KUBESTRAP_CONFIG_EOF'\n"
	const end = "\nKUBESTRAP_CONFIG_EOF\n"
	i := strings.Index(script, start)
	if i < 0 {
		t.Fatalf("user-data does not write /etc/kubestrap/config.yaml through the expected heredoc:\n%s", script)
	}
	rest := script[i+len(start):]
	j := strings.Index(rest, end)
	if j < 0 {
		t.Fatalf("user-data heredoc is not terminated:\n%s", script)
	}
	return rest[:j] + "\n"
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
