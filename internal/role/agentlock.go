package role

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// AgentLockFile is the file in the state directory on which the agent holds
// an exclusive flock(2) for its whole life.
const AgentLockFile = "agent.lock"

// ErrAnotherAgent means another agent process holds agent.lock.
var ErrAnotherAgent = errors.New("another kubestrap agent process runs on this node")

// AgentLock is this process's exclusive flock on <stateDir>/agent.lock.
// While it is held no other agent process runs on this node, so a lease
// held in this instance's name in S3 (lease.Lock.ReclaimOwn) can only have
// been left by an earlier, dead run of the agent. The descriptor is
// close-on-exec: kubeadm children do not inherit it, so the lock ends with
// the agent process (also by kill -9).
type AgentLock struct {
	Path string

	mu   sync.Mutex
	file *os.File
}

// LockAgent takes the agent lock in dir without waiting. When another
// process holds it the error wraps ErrAnotherAgent and names its PID.
func LockAgent(dir string) (*AgentLock, error) {
	path := filepath.Join(dir, AgentLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open agent lock %s: %w", path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := "unknown"
			if b, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(b)) != "" {
				pid = strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("%w (pid %s holds %s); only one may run, stop the other one", ErrAnotherAgent, pid, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The PID is for the message of a second agent only; a failure to
	// record it does not matter.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &AgentLock{Path: path, file: f}, nil
}

// Held reports whether this process still holds the lock (nil: no).
func (a *AgentLock) Held() bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.file != nil
}

// Close releases the lock.
func (a *AgentLock) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file = nil
	return err
}
