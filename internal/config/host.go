package config

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CheckHost checks what the configuration needs from the machine it runs on,
// where Validate checks the document alone: kubeadm.path must name an
// executable file (absolute path) or a program found on PATH. lookPath finds
// a program as exec.LookPath does (nil means exec.LookPath). On a control
// plane, every controlPlane.addons entry must be a readable regular file.
// Problems are *FieldErrors, joined.
func (c *AgentConfig) CheckHost(lookPath func(string) (string, error)) error {
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	var errs []error
	if p := c.Kubeadm.Path; p != "" {
		if _, err := lookPath(p); err != nil {
			errs = append(errs, &FieldError{Field: "kubeadm.path", Reason: kubeadmPathReason(p, err)})
		}
	}
	if c.Role == RoleControlPlane {
		for i, p := range c.ControlPlane.Addons {
			if reason := addonFileProblem(p); reason != "" {
				errs = append(errs, &FieldError{Field: fmt.Sprintf("controlPlane.addons[%d]", i), Reason: reason})
			}
		}
	}
	return errors.Join(errs...)
}

// addonFileProblem says why the add-on manifest at path cannot be read, or "".
func addonFileProblem(path string) string {
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Sprintf("%q cannot be read (%v): install the kubestrap package (it ships %s), "+
			"fix the path, or remove the entry", path, errors.Unwrap(err), AddonsDir)
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%q is not a regular file: name a manifest file", path)
	}
	return ""
}

// kubeadmPathReason says why the kubeadm binary at path cannot be run and
// what to do about it.
func kubeadmPathReason(path string, err error) string {
	var execErr *exec.Error
	if errors.As(err, &execErr) && execErr.Err != nil {
		err = execErr.Err
	}
	switch {
	case errors.Is(err, exec.ErrDot):
		return fmt.Sprintf("%q resolves to a file in the current directory, which is never run: write its absolute path", path)
	case filepath.IsAbs(path):
		return fmt.Sprintf("%q is not an executable file (%v): install kubeadm there, or set kubeadm.path to where it is", path, err)
	default:
		return fmt.Sprintf("%q is not found on PATH (%s): install kubeadm, or set kubeadm.path to its absolute path", path, os.Getenv("PATH"))
	}
}
