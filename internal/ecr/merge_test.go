package ecr

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	testingclock "k8s.io/utils/clock/testing"
)

const (
	ecrHost1 = "111122223333.dkr.ecr.eu-west-1.amazonaws.com"
	ecrHost2 = "444455556666.dkr.ecr.eu-west-1.amazonaws.com"
)

// kubeletConfig is a docker config an operator or the image put there, with
// odd spacing that a re-encoding would change.
const kubeletConfig = `{
	"auths": {
		"ghcr.io": { "auth" : "Z2g6Z2hjci1wdw==",   "email":"ops@example.com" },
		"111122223333.dkr.ecr.eu-west-1.amazonaws.com": {"auth": "QVdTOm9sZC1wYXNzd29yZA==", "identitytoken": "stale"},
		"https://index.docker.io/v1/": {"auth":"ZG9ja2VyOmh1Yi1wdw=="}
	},
	"credsStore": "desktop",
	"credHelpers": {"public.ecr.aws": "ecr-login",
	                "<&>": "x"},
	"HttpHeaders": {"User-Agent": "kubelet"}, "experimental": true, "n": 1.50
}`

func fetched(t *testing.T, accounts ...string) *Credentials {
	t.Helper()
	creds, err := Fetch(context.Background(), &fakeECR{}, accounts)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// members reads an object's keys in order with their raw values.
func members(t *testing.T, data []byte) []member {
	t.Helper()
	ms, err := readObject(data, "test data")
	if err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	return ms
}

func keys(ms []member) []string {
	var ks []string
	for _, m := range ms {
		ks = append(ks, m.key)
	}
	return ks
}

func value(ms []member, key string) json.RawMessage {
	for _, m := range ms {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

func TestWriteMergesKeepingEverythingElseByteForByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(kubeletConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := fetched(t, "111122223333", "444455556666")
	moved, err := Write(path, creds)
	if err != nil || moved != nil {
		t.Fatalf("Write = %+v, %v", moved, err)
	}
	out, _ := os.ReadFile(path)
	if !json.Valid(out) {
		t.Fatalf("not JSON:\n%s", out)
	}
	old, merged := members(t, []byte(kubeletConfig)), members(t, out)
	if got, want := strings.Join(keys(merged), " "), strings.Join(keys(old), " "); got != want {
		t.Errorf("top-level keys %s, want %s in that order", got, want)
	}
	for _, m := range old {
		if m.key != "auths" && !bytes.Equal(value(merged, m.key), m.value) {
			t.Errorf("%s: %s became %s", m.key, m.value, value(merged, m.key))
		}
	}
	oldAuths, auths := members(t, value(old, "auths")), members(t, value(merged, "auths"))
	if got, want := strings.Join(keys(auths), " "), "ghcr.io "+ecrHost1+" https://index.docker.io/v1/ "+ecrHost2; got != want {
		t.Errorf("auths keys %s, want %s", got, want)
	}
	for _, host := range []string{"ghcr.io", "https://index.docker.io/v1/"} {
		if !bytes.Equal(value(auths, host), value(oldAuths, host)) {
			t.Errorf("%s: %s became %s", host, value(oldAuths, host), value(auths, host))
		}
	}
	for _, host := range []string{ecrHost1, ecrHost2} {
		var entry map[string]string
		if err := json.Unmarshal(value(auths, host), &entry); err != nil {
			t.Fatal(err)
		}
		if len(entry) != 1 || entry["auth"] != creds.Registries[host] {
			t.Errorf("%s entry = %v, want only the new auth", host, entry)
		}
	}
	// Writing the same credentials again changes nothing.
	if _, err := Write(path, creds); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, out) {
		t.Errorf("a second Write changed the file:\n%s\n---\n%s", out, again)
	}
}

func TestMergedFileIsReadByARealKeychain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	other := base64.StdEncoding.EncodeToString([]byte("gh:ghcr-pw"))
	if err := os.WriteFile(path, []byte(`{"auths":{"ghcr.io":{"auth":"`+other+`"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(path, fetched(t, "111122223333")); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	t.Setenv("DOCKER_CONFIG", dir)
	for reg, want := range map[string]string{"ghcr.io": "gh/ghcr-pw", ecrHost1: "AWS/secret-password-111122223333"} {
		r, err := name.NewRegistry(reg)
		if err != nil {
			t.Fatal(err)
		}
		auth, err := authn.DefaultKeychain.Resolve(r)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := auth.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username+"/"+cfg.Password != want {
			t.Errorf("%s: keychain resolved user %q", reg, cfg.Username)
		}
	}
}

func TestWriteEdgeCasesOfTheExistingFile(t *testing.T) {
	creds := &Credentials{Registries: map[string]string{ecrHost1: "bmV3Om5ldw=="}}
	for _, tc := range []struct {
		name, existing string
		want           map[string]string // host -> auth in the result
	}{
		{"empty file", "", map[string]string{ecrHost1: "bmV3Om5ldw=="}},
		{"whitespace only", " \n", map[string]string{ecrHost1: "bmV3Om5ldw=="}},
		{"no auths", `{"credsStore":"x"}`, map[string]string{ecrHost1: "bmV3Om5ldw=="}},
		{"null auths", `{"auths":null}`, map[string]string{ecrHost1: "bmV3Om5ldw=="}},
		{"empty auths", `{"auths":{}}`, map[string]string{ecrHost1: "bmV3Om5ldw=="}},
		{"host given twice", `{"auths":{"` + ecrHost1 + `":{"auth":"b2xkOjE="},"a":{"auth":"YTph"},"` + ecrHost1 + `":{"auth":"b2xkOjI="}}}`,
			map[string]string{ecrHost1: "bmV3Om5ldw==", "a": "YTph"}},
		{"auths given twice", `{"auths":{"` + ecrHost1 + `":{"auth":"b2xkOjE="},"a":{"auth":"YTph"}},"auths":{"b":{"auth":"Yjpi"}}}`,
			map[string]string{ecrHost1: "bmV3Om5ldw==", "a": "YTph", "b": "Yjpi"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(tc.existing), 0o600); err != nil {
				t.Fatal(err)
			}
			moved, err := Write(path, creds)
			if err != nil || moved != nil {
				t.Fatalf("Write = %+v, %v", moved, err)
			}
			out, _ := os.ReadFile(path)
			// Read the result the way docker's Go reader does.
			var cfg struct {
				Auths map[string]struct{ Auth string } `json:"auths"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatalf("%v in\n%s", err, out)
			}
			got := map[string]string{}
			for h, a := range cfg.Auths {
				got[h] = a.Auth
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("auths = %v, want %v in\n%s", got, tc.want, out)
			}
			if strings.Count(string(out), ecrHost1) != 1 {
				t.Errorf("%s appears more than once:\n%s", ecrHost1, out)
			}
		})
	}
}

func TestWriteMovesAnUnparsableFileAside(t *testing.T) {
	now := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	// Each file holds another registry's password that must neither be lost
	// nor quoted in the reason.
	const pw = "Z2g6Z2hjci1wdw=="
	for _, tc := range []struct{ name, existing, reason string }{
		{"not JSON", `auths: {ghcr.io: ` + pw + `}`, "the file is not valid JSON"},
		{"truncated", `{"auths": {"ghcr.io": {"auth": "` + pw + `"}`, "the file is truncated JSON"},
		{"top level an array", `[{"auths": {"ghcr.io": {"auth": "` + pw + `"}}}]`, "the file is not a JSON object"},
		{"auths an array", `{"auths": [{"ghcr.io": "` + pw + `"}]}`, `"auths" is not a JSON object`},
		{"auths a string", `{"auths": "` + pw + `"}`, `"auths" is not a JSON object`},
		{"data after the object", `{"auths": {"ghcr.io": {"auth": "` + pw + `"}}} {}`, "the file has data after its end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.json")
			if err := os.WriteFile(path, []byte(tc.existing), 0o644); err != nil {
				t.Fatal(err)
			}
			// Something already has the first name: it must not be overwritten.
			taken := fmt.Sprintf("%s.invalid-%d", path, now.Unix())
			if tc.name == "truncated" {
				if err := os.WriteFile(taken, []byte("earlier"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			creds := &Credentials{Registries: map[string]string{ecrHost1: "bmV3Om5ldw=="}}
			moved, err := write(path, creds, now)
			if err != nil {
				t.Fatal(err)
			}
			wantPath := taken
			if tc.name == "truncated" {
				wantPath += "-1"
				if b, _ := os.ReadFile(taken); string(b) != "earlier" {
					t.Errorf("an earlier file moved aside was overwritten")
				}
			}
			if moved == nil || moved.Path != wantPath || !strings.Contains(moved.Reason, tc.reason) {
				t.Fatalf("moved = %+v, want %s because %s", moved, wantPath, tc.reason)
			}
			if strings.Contains(moved.Reason, pw) {
				t.Errorf("reason quotes the file: %s", moved.Reason)
			}
			aside, _ := os.ReadFile(moved.Path)
			fi, _ := os.Stat(moved.Path)
			if string(aside) != tc.existing || fi.Mode().Perm() != 0o600 {
				t.Errorf("moved-aside file %q mode %v, want the old content, 0600", aside, fi.Mode().Perm())
			}
			fresh, _ := DockerConfig(creds)
			if out, _ := os.ReadFile(path); !bytes.Equal(out, fresh) {
				t.Errorf("new file:\n%s\nwant a fresh one:\n%s", out, fresh)
			}
		})
	}
}

func TestNoECRPasswordInErrorsOrLogs(t *testing.T) {
	creds := fetched(t, "111122223333")
	secrets := []string{"secret-password", creds.Registries[ecrHost1]}
	check := func(what, s string) {
		t.Helper()
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("%s leaks an ECR password: %s", what, s)
			}
		}
	}
	dir := t.TempDir()
	notADir := filepath.Join(dir, "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(notADir, "config.json"), // the parent is a file
		dir,                                   // the path is a directory
	} {
		_, err := Write(path, creds)
		if err == nil {
			t.Fatalf("Write(%s) succeeded", path)
		}
		check("Write error", err.Error())
	}
	// The refresher's logs, for a good write, a file moved aside and a failure.
	core, logs := observer.New(zap.DebugLevel)
	path := filepath.Join(dir, "kubelet", "config.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	r := NewRefresher(Refresher{Client: &fakeECR{}, RegistryIDs: []string{"111122223333"}, Path: path,
		Clock: testingclock.NewFakeClock(now), Log: zap.New(core)})
	_ = r.Run(canceledAfter(t, r))
	if err := os.WriteFile(path, []byte("{"+creds.Registries[ecrHost1]), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = r.Run(canceledAfter(t, r))
	r.Path = filepath.Join(notADir, "config.json")
	_ = r.Run(canceledAfter(t, r))
	if logs.Len() < 3 {
		t.Fatalf("want logs of three attempts, have %d", logs.Len())
	}
	sawMoved := false
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		check("log entry", e.Message+" "+string(b))
		sawMoved = sawMoved || strings.Contains(e.Message, "moved it aside")
	}
	if !sawMoved {
		t.Errorf("no warning about the file moved aside")
	}
}

// canceledAfter returns a context that ends as soon as r reported one attempt.
func canceledAfter(t *testing.T, r *Refresher) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.OnUpdate = func(*Credentials, error) { cancel() }
	return ctx
}

func TestRefresherCallTimeoutCoversAStalledAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers bool
	}{{"headers then no body", true}, {"no headers", false}} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if tc.headers {
					w.Header().Set("Content-Type", "application/x-amz-json-1.1")
					w.Header().Set("Content-Length", "1000")
					w.WriteHeader(http.StatusOK)
					_, _ = w.Write([]byte(`{"authorizationData":[`))
					w.(http.Flusher).Flush()
				}
				select {
				case <-r.Context().Done():
				case <-release:
				}
			}))
			t.Cleanup(srv.Close)
			t.Cleanup(func() { close(release) })
			client := ecr.New(ecr.Options{
				Region:       "eu-west-1",
				BaseEndpoint: aws.String(srv.URL),
				Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
			})
			var mu sync.Mutex
			var results []error
			r := NewRefresher(Refresher{Client: client, Path: filepath.Join(t.TempDir(), "config.json"),
				Clock: testingclock.NewFakeClock(now), Log: zap.NewNop(), CallTimeout: 300 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r.OnUpdate = func(_ *Credentials, err error) {
				mu.Lock()
				results = append(results, err)
				mu.Unlock()
				cancel()
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			select {
			case <-done:
			case <-time.After(8 * time.Second):
				t.Fatal("the refresher is still blocked after 8s")
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the attempt ended after %s, want about 300ms", took)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(results) != 1 || results[0] == nil || !strings.Contains(results[0].Error(), "deadline exceeded") {
				t.Errorf("results = %v, want one deadline error", results)
			}
		})
	}
}
