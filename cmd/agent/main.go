// Command kubestrap is the node bootstrap agent: it runs kubeadm init on the
// control plane and keeps join info fresh in S3, or joins a worker with it.
//
//	kubestrap run [--config F]       the daemon (started by systemd)
//	kubestrap status [--json]        what the agent is doing
//	kubestrap validate --config F    check a configuration file and this machine
//	kubestrap version
//
// Exit codes: 0 success, 1 failure, 2 bad usage or bad configuration (a
// field of the file, or kubeadm.path not an executable on this machine).
// systemd does not restart the agent after exit 2 (RestartPreventExitStatus=2).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit codes (see the package comment).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks bad usage or bad configuration (exit 2): nothing a
// restart can fix.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: kubestrap <command> [flags]

commands:
  run       run the agent (--config, default /etc/kubestrap/config.yaml)
  status    print what the agent is doing (--json for machines)
  validate  check a configuration file and that kubeadm is on this machine
            (--config F; --skip-host-checks checks the file only)
  version   print version information
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = runAgent(ctx, args[1:], stderr)
	case "status":
		err = runStatus(args[1:], stdout, stderr)
	case "validate":
		err = runValidate(args[1:], stdout, stderr)
	case "version", "--version":
		err = runVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "kubestrap: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "kubestrap: %v\n", err)
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitFailure
}
