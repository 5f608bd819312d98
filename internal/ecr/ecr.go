// Package ecr fetches ECR pull credentials with GetAuthorizationToken and
// merges them into the kubelet's docker config file (0600, atomic), keeping
// every other registry's entry as it was.
package ecr

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
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
		//lint:ignore SA1019 RegistryIds is deprecated upstream but still honoured, and is how one asks for several accounts.
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

// DockerConfig renders creds in the docker config.json format the kubelet
// reads, as a fresh file: {"auths": {host: {"auth": ...}}}.
func DockerConfig(creds *Credentials) ([]byte, error) {
	return mergeDockerConfig(nil, creds)
}

// MovedAside tells that Write found a file it could not parse and moved it
// aside before writing a fresh one.
type MovedAside struct {
	// Path is where the old file is now: <path>.invalid-<unix time>.
	Path string
	// Reason says why it could not be parsed; it never quotes the content.
	Reason string
}

// Write merges creds into the docker config file at path and writes the
// result 0600, atomically: the "auths" entries of creds' hosts are replaced
// (or added), and every other key, every other registry's entry and the order
// of both are kept, each untouched value byte for byte. A missing or empty
// file is written fresh.
//
// An existing file that cannot be parsed (not JSON, not an object, "auths" not
// an object) is moved aside to <path>.invalid-<unix time>, 0600, and a fresh
// file is written; the returned *MovedAside says so, for the caller to warn.
// Refusing to write would leave the kubelet without ECR credentials until
// someone repairs the file, and overwriting it would silently destroy what an
// operator put there: moving it aside keeps both the node working and the data.
//
// Read-merge-write is not atomic against another writer of the same file;
// nothing else on the node is expected to write it while the agent runs.
func Write(path string, creds *Credentials) (*MovedAside, error) {
	return write(path, creds, time.Now())
}

func write(path string, creds *Credentials, now time.Time) (*MovedAside, error) {
	existing, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read existing docker config %s: %w", path, err)
	}
	var moved *MovedAside
	b, err := mergeDockerConfig(existing, creds)
	var invalid *invalidConfigError
	if errors.As(err, &invalid) {
		aside, merr := moveAside(path, now)
		if merr != nil {
			return nil, fmt.Errorf("docker config %s cannot be parsed (%s) and cannot be moved aside: %w", path, invalid.reason, merr)
		}
		moved = &MovedAside{Path: aside, Reason: invalid.reason}
		b, err = DockerConfig(creds)
	}
	if err != nil {
		return moved, err
	}
	if err := fsutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return moved, fmt.Errorf("write ECR credentials: %w", err)
	}
	return moved, nil
}

// moveAside renames path to <path>.invalid-<unix time> (with a -N suffix if
// that exists already) and makes it 0600: it may hold credentials.
func moveAside(path string, now time.Time) (string, error) {
	base := fmt.Sprintf("%s.invalid-%d", path, now.Unix())
	aside := base
	for n := 1; ; n++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s-%d", base, n)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("move %s aside: %w", path, err)
	}
	if fi, err := os.Lstat(aside); err == nil && fi.Mode().IsRegular() {
		if err := os.Chmod(aside, 0o600); err != nil {
			return aside, fmt.Errorf("chmod %s: %w", aside, err)
		}
	}
	return aside, nil
}

// invalidConfigError means an existing docker config cannot be merged into.
type invalidConfigError struct{ reason string }

func (e *invalidConfigError) Error() string { return "invalid docker config: " + e.reason }

// member is one key of a JSON object with its value's bytes as they were.
type member struct {
	key   string
	value json.RawMessage
}

// readObject reads data as one JSON object, keeping its keys in order (and
// repeated ones) and each value's bytes. Its errors never quote data.
func readObject(data []byte, what string) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, &invalidConfigError{describeSyntax(err, what)}
	}
	if tok != json.Delim('{') {
		return nil, &invalidConfigError{what + " is not a JSON object"}
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &invalidConfigError{describeSyntax(err, what)}
		}
		key, _ := tok.(string) // the decoder allows only a string here
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, &invalidConfigError{describeSyntax(err, what)}
		}
		members = append(members, member{key, value})
	}
	if _, err := dec.Token(); err != nil {
		return nil, &invalidConfigError{describeSyntax(err, what)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &invalidConfigError{what + " has data after its end"}
	}
	return members, nil
}

func describeSyntax(err error, what string) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s is not valid JSON (syntax error at byte %d)", what, se.Offset)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return what + " is truncated JSON"
	}
	return what + " is not valid JSON"
}

// mergeDockerConfig returns existing with creds' hosts set in "auths"; see
// Write. An empty existing is a fresh file.
func mergeDockerConfig(existing []byte, creds *Credentials) ([]byte, error) {
	var top []member
	if len(bytes.TrimSpace(existing)) > 0 {
		var err error
		if top, err = readObject(existing, "the file"); err != nil {
			return nil, err
		}
	}
	lastAuths := -1
	for i, m := range top {
		if m.key == "auths" {
			lastAuths = i
		}
	}
	if lastAuths < 0 {
		top = append([]member{{key: "auths", value: json.RawMessage("null")}}, top...)
		lastAuths = 0
	}
	ecrEntry := func(host string) json.RawMessage {
		return json.RawMessage("{\n      \"auth\": " + string(jsonString(creds.Registries[host])) + "\n    }")
	}
	var buf bytes.Buffer
	buf.WriteString("{")
	for i, m := range top {
		if i > 0 {
			buf.WriteString(",")
		}
		buf.WriteString("\n  ")
		buf.Write(jsonString(m.key))
		buf.WriteString(": ")
		if m.key != "auths" {
			buf.Write(m.value)
			continue
		}
		// Every "auths" loses the entries of creds' hosts; the last one, the
		// one a reader ends with, gets the new entries.
		var auths []member
		if !bytes.Equal(bytes.TrimSpace(m.value), []byte("null")) {
			var err error
			if auths, err = readObject(m.value, `"auths"`); err != nil {
				return nil, err
			}
		}
		placed := map[string]bool{}
		var kept []member
		for _, a := range auths {
			if _, ours := creds.Registries[a.key]; !ours {
				kept = append(kept, a)
			} else if i == lastAuths && !placed[a.key] {
				kept = append(kept, member{a.key, ecrEntry(a.key)})
				placed[a.key] = true
			}
		}
		if i == lastAuths {
			for _, host := range creds.Hosts() {
				if !placed[host] {
					kept = append(kept, member{host, ecrEntry(host)})
				}
			}
		}
		writeObject(&buf, kept, "    ")
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

// writeObject writes members as an object whose keys are indented by indent;
// values are written as they are.
func writeObject(buf *bytes.Buffer, members []member, indent string) {
	if len(members) == 0 {
		buf.WriteString("{}")
		return
	}
	buf.WriteString("{")
	for i, m := range members {
		if i > 0 {
			buf.WriteString(",")
		}
		buf.WriteString("\n" + indent)
		buf.Write(jsonString(m.key))
		buf.WriteString(": ")
		buf.Write(m.value)
	}
	buf.WriteString("\n" + indent[:len(indent)-2] + "}")
}

// jsonString encodes s as a JSON string, without HTML escaping.
func jsonString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
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
