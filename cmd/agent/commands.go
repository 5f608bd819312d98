package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/kubestrap/kubestrap/internal/addons"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/version"
)

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kubestrap "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return usageError{errors.New("help requested")}
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// loadConfig reads and validates the configuration file and checks that
// this machine has what it names (the kubeadm binary): what `run` and
// `validate` need. Every problem is a usageError, exit 2, which systemd does
// not restart (RestartPreventExitStatus=2).
func loadConfig(path string) (*config.AgentConfig, error) {
	cfg, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckHost(exec.LookPath); err != nil {
		return nil, usageError{fmt.Errorf("config %s: %w", path, err)}
	}
	if cfg.Role == config.RoleControlPlane && len(cfg.ControlPlane.Addons) > 0 {
		// The manifests must parse: a broken file is a bad configuration,
		// not something to retry.
		if _, err := addons.Load(cfg.ControlPlane.Addons, cfg.Kubeadm.PodSubnet); err != nil {
			return nil, usageError{fmt.Errorf("config %s: controlPlane.addons: %w", path, err)}
		}
	}
	return cfg, nil
}

// readConfig reads and validates the configuration file alone.
func readConfig(path string) (*config.AgentConfig, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

func runValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	path := fs.String("config", "", "configuration file to check")
	skipHost := fs.Bool("skip-host-checks", false, "check the file only, not this machine (kubeadm.path), as away from the node")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" {
		return usageError{errors.New("validate needs --config FILE")}
	}
	load := loadConfig
	if *skipHost {
		load = readConfig
	}
	cfg, err := load(*path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid %s config for cluster %q (bucket %s)\n", *path, cfg.Role, cfg.Cluster, cfg.Bucket)
	return nil
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := map[string]string{
		"version": version.Version, "commit": version.Commit,
		"kubernetesVersion": version.KubernetesVersion, "go": runtime.Version(),
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	fmt.Fprintf(stdout, "kubestrap %s (commit %s, Kubernetes %s, %s)\n", v["version"], v["commit"], v["kubernetesVersion"], v["go"])
	return nil
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	path := fs.String("config", config.DefaultPath, "configuration file (for stateDir)")
	stateDir := fs.String("state-dir", "", "state directory (overrides the config's stateDir)")
	asJSON := fs.Bool("json", false, "print state.json for machines")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir := *stateDir
	if dir == "" {
		cfg, err := readConfig(*path) // status needs stateDir only, not kubeadm
		if err != nil {
			return err
		}
		dir = cfg.StateDir
	}
	st, err := state.Load(dir)
	if err != nil {
		return err
	}
	if st.Phase == "" {
		return fmt.Errorf("no state in %s: the agent has not run on this node yet", state.Path(dir))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprint(stdout, formatStatus(st, time.Now()))
	return nil
}

func formatStatus(st *state.State, now time.Time) string {
	var b strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-20s %s\n", k+":", v)
		}
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		d := t.Sub(now).Round(time.Second)
		if d >= 0 {
			return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), d)
		}
		return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), -d)
	}
	line("Role", st.Role)
	line("Cluster", st.Cluster)
	line("Node", st.NodeName)
	line("Phase", string(st.Phase))
	line("Status", st.Message)
	if st.JoinGeneration > 0 {
		line("Join info", fmt.Sprintf("generation %d, token %s", st.JoinGeneration, st.TokenID))
	}
	line("API server", st.APIEndpoint)
	line("Token expires", when(st.TokenExpiresAt))
	line("Last publish", when(st.LastPublish))
	line("Initialized", when(st.InitializedAt))
	line("Initialized by", st.InitializedBy)
	line("Init lock holder", st.InitLockHolder)
	line("Uploader (publishes)", st.UploaderLockHolder)
	line("Joined control plane", when(st.ControlPlaneJoinedAt))
	if st.ControlPlaneInfoGeneration > 0 {
		line("CP join info", fmt.Sprintf("generation %d, certificates uploaded %s", st.ControlPlaneInfoGeneration, when(st.CertificatesUploadedAt)))
	}
	line("Joined", when(st.JoinedAt))
	line("Add-ons applied", when(st.AddonsAppliedAt))
	line("Add-ons error", st.AddonsError)
	line("Certs expire", when(st.CertificatesExpireAt))
	line("Certs renewed", when(st.CertificatesRenewedAt))
	if len(st.ECRRegistries) > 0 || st.ECRError != "" {
		line("ECR registries", strings.Join(st.ECRRegistries, ", "))
		line("ECR creds expire", when(st.ECRExpiresAt))
		line("ECR refreshed", when(st.ECRRefreshedAt))
		line("ECR error", st.ECRError)
	}
	line("Metrics error", st.MetricsError)
	line("Updated", when(st.UpdatedAt))
	return b.String()
}
