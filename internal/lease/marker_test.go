package lease

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func validMarker() *Initialized {
	return &Initialized{APIVersion: APIVersion, Kind: MarkerKind, Cluster: "demo", InitializedBy: holder(1), InitializedAt: t0,
		Endpoint: "api.demo.internal:6443", CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)}, Generation: 1}
}

func TestMarkerIsWrittenOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mk := &Marker{Client: e.fake.Client, Bucket: bucket, Key: MarkerKey("demo"), Cluster: "demo"}
	if _, err := mk.Read(ctx, t0); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("read before init: %v, want ErrNotInitialized", err)
	}
	if err := mk.Create(ctx, validMarker()); err != nil {
		t.Fatalf("create: %v", err)
	}
	// The same init again (its answer was lost): fine.
	if err := mk.Create(ctx, validMarker()); err != nil {
		t.Errorf("create again by the same init: %v", err)
	}
	// Another init: refused, naming who initialized.
	other := validMarker()
	other.InitializedBy, other.Generation = holder(2), 2
	err := mk.Create(ctx, other)
	var already *AlreadyInitializedError
	if !errors.As(err, &already) || !errors.Is(err, ErrAlreadyInitialized) || already.Existing.InitializedBy != holder(1) {
		t.Fatalf("second init: %v", err)
	}
	got, err := mk.Read(ctx, t0)
	if err != nil || got.InitializedBy != holder(1) || got.Endpoint != "api.demo.internal:6443" {
		t.Fatalf("read: %+v, %v", got, err)
	}
	if MarkerKey("demo") != "demo/cp/initialized.json" || LockKey("demo", "init") != "demo/cp/init-lock.json" {
		t.Errorf("keys %s %s", MarkerKey("demo"), LockKey("demo", "init"))
	}
	// Another cluster's reader refuses it.
	if _, err := (&Marker{Client: e.fake.Client, Bucket: bucket, Key: MarkerKey("demo"), Cluster: "prod"}).Read(ctx, t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("read as cluster prod: %v", err)
	}
}

func TestMarkerValidation(t *testing.T) {
	for name, mut := range map[string]func(*Initialized){
		"wrong kind":         func(m *Initialized) { m.Kind = "Lock" },
		"wrong cluster":      func(m *Initialized) { m.Cluster = "prod" },
		"bad instance":       func(m *Initialized) { m.InitializedBy = "node-1" },
		"no time":            func(m *Initialized) { m.InitializedAt = time.Time{} },
		"future":             func(m *Initialized) { m.InitializedAt = t0.Add(time.Hour) },
		"URL endpoint":       func(m *Initialized) { m.Endpoint = "https://api:6443" },
		"no hashes":          func(m *Initialized) { m.CACertHashes = nil },
		"bad hash":           func(m *Initialized) { m.CACertHashes = []string{"sha256:AB"} },
		"generation 0":       func(m *Initialized) { m.Generation = 0 },
		"endpoint with flag": func(m *Initialized) { m.Endpoint = "--insecure:6443" },
	} {
		m := validMarker()
		mut(m)
		if err := m.Validate("demo", t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	e := newEnv(t)
	mk := &Marker{Client: e.fake.Client, Bucket: bucket, Key: MarkerKey("demo"), Cluster: "demo"}
	bad := validMarker()
	bad.Endpoint = "10.0.1.10"
	if err := mk.Create(context.Background(), bad); err == nil {
		t.Error("an invalid marker was written")
	}
	// Strict decoding: unknown and duplicate keys.
	good := string(mustMarshal(t, validMarker()))
	for name, body := range map[string]string{
		"unknown key":   strings.Replace(good, `"kind"`, `"force":true,"kind"`, 1),
		"duplicate key": strings.Replace(good, `"generation":1`, `"generation":1,"generation":2`, 1),
		"case variant":  strings.Replace(good, `"endpoint"`, `"Endpoint"`, 1),
	} {
		if _, err := ParseInitialized("s3://b/k", []byte(body), "demo", t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParseInitialized("s3://b/k", []byte(good), "demo", t0); err != nil {
		t.Errorf("valid marker: %v", err)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
