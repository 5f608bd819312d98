package kubeadm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the lock that serializes kubeadm runs, in the
// state directory.
const LockFile = "kubeadm.lock"

// lockPollInterval is how often a waiting Acquire tries the lock again.
const lockPollInterval = 250 * time.Millisecond

// Lock serializes kubeadm runs across agent processes. The lock is an
// flock(2) on a file that the kubeadm child inherits, so it outlives an agent
// that died during a run: the next agent waits for the orphaned kubeadm
// instead of starting a second one next to it.
type Lock struct {
	// Path is the lock file (created 0600 if missing).
	Path string
}

// Held is an acquired lock; Close releases it (unless a child still holds
// the inherited descriptor, in which case the child's exit releases it).
type Held struct {
	file *os.File
}

// File is the locked descriptor, to hand to a child process.
func (h *Held) File() *os.File { return h.file }

// Close releases this process's hold on the lock.
func (h *Held) Close() error { return h.file.Close() }

// Acquire takes the lock, waiting while another process holds it. While it
// waits, onWait (when not nil) is told once the PID recorded by the holder
// (0 when unknown).
func (l *Lock) Acquire(ctx context.Context, onWait func(holderPID int)) (*Held, error) {
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create kubeadm lock directory: %w", err)
	}
	f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open kubeadm lock %s: %w", l.Path, err)
	}
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", l.Path, err)
		}
		if !told && onWait != nil {
			told = true
			onWait(readPID(l.Path))
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPollInterval):
		}
	}
	return &Held{file: f}, nil
}

// RecordPID writes pid into the lock file so that a waiting agent can name
// the process it waits for.
func (h *Held) RecordPID(pid int) {
	if err := h.file.Truncate(0); err != nil {
		return
	}
	_, _ = h.file.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// HolderPID is the PID the last holder recorded (0 when unknown).
func (l *Lock) HolderPID() int { return readPID(l.Path) }

// EndOrphan stops the kubeadm process pid, left running by a dead agent
// past every kubeadm timeout: SIGTERM, then SIGKILL after grace. It refuses
// a pid that is not a kubeadm process (the PID may have been reused).
func EndOrphan(ctx context.Context, pid int, grace time.Duration) error {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("orphaned kubeadm %d: %w", pid, err)
	}
	// kubeadm itself, or a script named kubeadm (argv: interpreter, path).
	argv := strings.SplitN(string(cmdline), "\x00", 3)
	if filepath.Base(argv[0]) != "kubeadm" && (len(argv) < 2 || filepath.Base(argv[1]) != "kubeadm") {
		return fmt.Errorf("process %d holding the kubeadm lock is %q, not kubeadm; not ending it", pid, filepath.Base(argv[0]))
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		return fmt.Errorf("end orphaned kubeadm %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if unix.Kill(pid, 0) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(lockPollInterval):
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	return nil
}
