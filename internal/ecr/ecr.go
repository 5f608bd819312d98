// Package ecr fetches ECR pull credentials with GetAuthorizationToken and
// writes them for the kubelet as a docker config file (0600, atomic).
package ecr

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"

	"github.com/kubestrap/kubestrap/internal/fsutil"
)

// API is the part of the ECR client the agent uses.
type API interface {
	GetAuthorizationToken(ctx context.Context, in *ecr.GetAuthorizationTokenInput, optFns ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error)
}

// Credentials are the pull credentials for a set of registry endpoints.
type Credentials struct {
	// Registries maps a registry host (123456789012.dkr.ecr.eu-west-1.amazonaws.com)
	// to its base64 "user:password" auth string.
	Registries map[string]string
	// ExpiresAt is the earliest expiry among them.
	ExpiresAt time.Time
}

// Hosts lists the registry hosts, sorted.
func (c *Credentials) Hosts() []string {
	hosts := make([]string, 0, len(c.Registries))
	for h := range c.Registries {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// Fetch asks ECR for an authorization token for registryIDs (none: the
// caller's own account).
func Fetch(ctx context.Context, client API, registryIDs []string) (*Credentials, error) {
	in := &ecr.GetAuthorizationTokenInput{}
	if len(registryIDs) > 0 {
		//nolint:staticcheck // RegistryIds is deprecated upstream but still honoured, and is how one asks for several accounts.
		in.RegistryIds = registryIDs
	}
	out, err := client.GetAuthorizationToken(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("ecr GetAuthorizationToken: %w", err)
	}
	creds := &Credentials{Registries: map[string]string{}}
	for _, d := range out.AuthorizationData {
		host, err := registryHost(aws.ToString(d.ProxyEndpoint))
		if err != nil {
			return nil, err
		}
		token := aws.ToString(d.AuthorizationToken)
		raw, err := base64.StdEncoding.DecodeString(token)
		if err != nil || !strings.Contains(string(raw), ":") {
			return nil, fmt.Errorf("ecr returned a malformed authorization token for %s", host)
		}
		creds.Registries[host] = token
		if d.ExpiresAt != nil && (creds.ExpiresAt.IsZero() || d.ExpiresAt.Before(creds.ExpiresAt)) {
			creds.ExpiresAt = *d.ExpiresAt
		}
	}
	if len(creds.Registries) == 0 {
		return nil, fmt.Errorf("ecr GetAuthorizationToken returned no authorization data")
	}
	return creds, nil
}

func registryHost(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("ecr returned an unusable proxy endpoint %q", endpoint)
	}
	return u.Host, nil
}

type dockerAuth struct {
	Auth string `json:"auth"`
}

type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

// DockerConfig renders creds in the docker config.json format the kubelet reads.
func DockerConfig(creds *Credentials) ([]byte, error) {
	cfg := dockerConfig{Auths: map[string]dockerAuth{}}
	for host, auth := range creds.Registries {
		cfg.Auths[host] = dockerAuth{Auth: auth}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode docker config: %w", err)
	}
	return append(b, '\n'), nil
}

// Write stores creds at path as a docker config file, 0600, atomically.
func Write(path string, creds *Credentials) error {
	b, err := DockerConfig(creds)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("write ECR credentials: %w", err)
	}
	return nil
}

// RefreshDelay says when to fetch new credentials: at half their remaining
// life, at most maxDelay from now; credentials already expired (or without an
// expiry) are refreshed after fallback.
func RefreshDelay(now, expiresAt time.Time, fallback, maxDelay time.Duration) time.Duration {
	left := expiresAt.Sub(now)
	if expiresAt.IsZero() || left <= 0 {
		return fallback
	}
	d := left / 2
	if d > maxDelay {
		d = maxDelay
	}
	return d
}
