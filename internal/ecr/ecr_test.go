package ecr

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"go.uber.org/zap"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/kubestrap/kubestrap/internal/testutil"
)

var now = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// fakeECR answers GetAuthorizationToken like ECR, failing the first failures calls.
type fakeECR struct {
	mu       sync.Mutex
	calls    int
	failures int
	ids      [][]string
}

func (f *fakeECR) GetAuthorizationToken(_ context.Context, in *ecr.GetAuthorizationTokenInput, _ ...func(*ecr.Options)) (*ecr.GetAuthorizationTokenOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	//lint:ignore SA1019 the agent sends RegistryIds (see ecr.go); the fake reads what it sent
	f.ids = append(f.ids, in.RegistryIds)
	if f.calls <= f.failures {
		return nil, errors.New("ThrottlingException: rate exceeded")
	}
	//lint:ignore SA1019 as above
	accounts := in.RegistryIds
	if len(accounts) == 0 {
		accounts = []string{"111122223333"}
	}
	out := &ecr.GetAuthorizationTokenOutput{}
	for _, a := range accounts {
		out.AuthorizationData = append(out.AuthorizationData, ecrtypes.AuthorizationData{
			AuthorizationToken: aws.String(base64.StdEncoding.EncodeToString([]byte("AWS:secret-password-" + a))),
			ProxyEndpoint:      aws.String("https://" + a + ".dkr.ecr.eu-west-1.amazonaws.com"),
			ExpiresAt:          aws.Time(now.Add(12 * time.Hour)),
		})
	}
	return out, nil
}

func TestWrittenCredentialsAreReadByARealKeychain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	creds, err := Fetch(context.Background(), &fakeECR{}, []string{"111122223333", "444455556666"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(path, creds); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	// go-containerregistry's default keychain reads $DOCKER_CONFIG/config.json,
	// as docker and crane do.
	t.Setenv("DOCKER_CONFIG", dir)
	for _, acct := range []string{"111122223333", "444455556666"} {
		reg, err := name.NewRegistry(acct + ".dkr.ecr.eu-west-1.amazonaws.com")
		if err != nil {
			t.Fatal(err)
		}
		auth, err := authn.DefaultKeychain.Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := auth.Authorization()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != "AWS" || cfg.Password != "secret-password-"+acct {
			t.Errorf("%s: keychain resolved user %q", acct, cfg.Username)
		}
	}
}

func TestWriteIsAtomicAndLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(`{"auths":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := &Credentials{Registries: map[string]string{"r.example": "dTpw"}}
	if _, err := Write(path, creds); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestRefresherRetriesThenRefreshesAtHalfLife(t *testing.T) {
	dir := t.TempDir()
	api := &fakeECR{failures: 2}
	clk := testutil.NewInstantClock(now)
	var mu sync.Mutex
	var results []error
	r := &Refresher{Client: api, Path: filepath.Join(dir, "config.json"), Clock: clk, Log: zap.NewNop(),
		OnUpdate: func(_ *Credentials, err error) { mu.Lock(); results = append(results, err); mu.Unlock() }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(results) < 4 || results[0] == nil || results[1] == nil || results[2] != nil || results[3] != nil {
		t.Fatalf("results = %v; want two failures then successes", results)
	}
	if _, err := os.Stat(r.Path); err != nil {
		t.Errorf("credentials not written: %v", err)
	}
}

func TestRefreshDelay(t *testing.T) {
	if d := RefreshDelay(now, now.Add(12*time.Hour), time.Hour, 6*time.Hour); d != 6*time.Hour {
		t.Errorf("12h creds refresh in %s, want 6h", d)
	}
	if d := RefreshDelay(now, now.Add(2*time.Hour), time.Hour, 6*time.Hour); d != time.Hour {
		t.Errorf("2h creds refresh in %s, want 1h", d)
	}
	// moto hands out tokens that expired in 2015.
	if d := RefreshDelay(now, time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, 6*time.Hour); d != time.Hour {
		t.Errorf("expired creds refresh in %s, want the 1h fallback", d)
	}
}

func TestRefresherRewritesAMissingFileAndOnKick(t *testing.T) {
	dir := t.TempDir()
	api := &fakeECR{}
	clk := testingclock.NewFakeClock(now)
	r := NewRefresher(Refresher{Client: api, Path: filepath.Join(dir, "config.json"), Clock: clk, Log: zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	calls := func() int { api.mu.Lock(); defer api.mu.Unlock(); return api.calls }
	waitIdle := func() {
		deadline := time.Now().Add(10 * time.Second)
		for !clk.HasWaiters() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	waitIdle()
	if calls() != 1 {
		t.Fatalf("calls = %d after start, want 1", calls())
	}
	// kubeadm reset empties /var/lib/kubelet: the next check rewrites the file.
	if err := os.Remove(r.Path); err != nil {
		t.Fatal(err)
	}
	clk.Step(15 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for calls() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	waitIdle()
	if _, err := os.Stat(r.Path); err != nil || calls() != 2 {
		t.Fatalf("file not rewritten after it disappeared (calls %d): %v", calls(), err)
	}
	// A kick (after a join) refreshes at once, without waiting for the schedule.
	r.Kick()
	for calls() != 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if calls() != 3 {
		t.Errorf("calls = %d after Kick, want 3", calls())
	}
}

// A temporary file of an interrupted write (it holds full credentials) is
// removed when the refresher starts; other files in the directory stay.
func TestRefresherRemovesTempFilesOfAKilledWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	leftover := filepath.Join(dir, ".config.json.tmp-4242")
	other := filepath.Join(dir, "config.yaml")
	for _, p := range []string{leftover, other} {
		if err := os.WriteFile(p, []byte(`{"auths":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clk := testingclock.NewFakeClock(now)
	r := NewRefresher(Refresher{Client: &fakeECR{}, Path: path, Clock: clk, Log: zap.NewNop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !clk.HasWaiters() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("temporary file of an interrupted write left in place")
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("an unrelated file was removed: %v", err)
	}
}
