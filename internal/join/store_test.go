package join_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	. "github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/join/jointest"
)

// s3Server starts handler as an S3 endpoint and returns a Store on it, with a
// real S3 client (path style, static credentials). Handlers that stall must
// return when release is closed, which happens before the server stops.
func s3Server(t *testing.T, callTimeout time.Duration, handler func(w http.ResponseWriter, r *http.Request, release <-chan struct{})) *Store {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler(w, r, release) }))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: stalled handlers end, then the server stops
	client := s3.New(s3.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(srv.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	return &Store{Client: client, Bucket: "demo-bootstrap", Key: Key("demo"), CallTimeout: callTimeout}
}

// stall blocks until the client goes away or the test ends.
func stall(r *http.Request, release <-chan struct{}) {
	select {
	case <-r.Context().Done():
	case <-release:
	}
}

// within runs f and fails the test unless it returns within limit.
func within(t *testing.T, limit time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		if took := time.Since(start); took > limit {
			t.Errorf("returned after %s, want within %s", took, limit)
		}
		return err
	case <-time.After(limit + 5*time.Second):
		t.Fatalf("still blocked after %s", limit+5*time.Second)
		return nil
	}
}

func TestFetchDeadlineCoversAStalledBody(t *testing.T) {
	store := s3Server(t, 300*time.Millisecond, func(w http.ResponseWriter, r *http.Request, release <-chan struct{}) {
		// Headers and the start of the body, then nothing.
		w.Header().Set("ETag", `"abc"`)
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"apiVersion":`))
		w.(http.Flusher).Flush()
		stall(r, release)
	})
	err := within(t, 3*time.Second, func() error {
		f, err := store.Fetch(context.Background(), "")
		if err == nil {
			t.Errorf("fetched %q from a stalled body", f.Body)
		}
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "s3://demo-bootstrap/demo/join.json") {
		t.Errorf("err = %v, want a deadline error naming the object", err)
	}
}

func TestFetchDeadlineCoversStalledHeaders(t *testing.T) {
	store := s3Server(t, 300*time.Millisecond, func(_ http.ResponseWriter, r *http.Request, release <-chan struct{}) {
		stall(r, release)
	})
	err := within(t, 3*time.Second, func() error {
		_, err := store.Fetch(context.Background(), `"abc"`)
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
}

func TestPublishDeadline(t *testing.T) {
	store := s3Server(t, 300*time.Millisecond, func(_ http.ResponseWriter, r *http.Request, release <-chan struct{}) {
		_, _ = io.Copy(io.Discard, r.Body)
		stall(r, release)
	})
	info := validInfo(t)
	err := within(t, 3*time.Second, func() error {
		_, err := store.Publish(context.Background(), info, `"abc"`)
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
}

func TestCallerDeadlineShorterThanCallTimeoutWins(t *testing.T) {
	// CallTimeout zero: the 30s default, which the caller's shorter deadline beats.
	store := s3Server(t, 0, func(_ http.ResponseWriter, r *http.Request, release <-chan struct{}) {
		stall(r, release)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := within(t, 3*time.Second, func() error {
		_, err := store.Fetch(ctx, "")
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
	if DefaultCallTimeout != 30*time.Second {
		t.Errorf("DefaultCallTimeout = %s", DefaultCallTimeout)
	}
}

// s3Error answers like S3 does with an error document.
func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+
		`<Error><Code>`+code+`</Code><Message>`+code+`</Message><RequestId>R1</RequestId><HostId>H1</HostId></Error>`)
}

func TestPublishOfADeletedObjectIsNotFound(t *testing.T) {
	// Real S3 answers a PUT with If-Match on a key that is gone (deleted, or
	// a delete marker on top) with 404 NoSuchKey.
	var ifMatch, ifNoneMatch string
	store := s3Server(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
		_, _ = io.Copy(io.Discard, r.Body)
		ifMatch, ifNoneMatch = r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
		if r.Method != http.MethodPut || ifMatch == "" {
			t.Errorf("%s If-Match %q If-None-Match %q, want a PUT with If-Match", r.Method, ifMatch, ifNoneMatch)
		}
		s3Error(w, http.StatusNotFound, "NoSuchKey")
	})
	_, err := store.Publish(context.Background(), validInfo(t), `"abc"`)
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "s3://demo-bootstrap/demo/join.json") || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("err = %v, want the object and what happened", err)
	}
	if strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("error leaks the token secret: %v", err)
	}
}

func TestPublishErrorsThatAreNotADeletedObject(t *testing.T) {
	for _, tc := range []struct {
		name, prevETag, code string
		status               int
		want, notWant        error
	}{
		{"missing bucket", `"abc"`, "NoSuchBucket", http.StatusNotFound, nil, ErrNotFound},
		{"NoSuchKey to a first write", "", "NoSuchKey", http.StatusNotFound, nil, ErrNotFound},
		{"lost race", `"abc"`, "PreconditionFailed", http.StatusPreconditionFailed, ErrConflict, ErrNotFound},
		{"concurrent write", "", "ConditionalRequestConflict", http.StatusConflict, ErrConflict, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := s3Server(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request, _ <-chan struct{}) {
				_, _ = io.Copy(io.Discard, r.Body)
				s3Error(w, tc.status, tc.code)
			})
			_, err := store.Publish(context.Background(), validInfo(t), tc.prevETag)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || errors.Is(err, tc.notWant) {
				t.Errorf("err = %v, want %v and not %v", err, tc.want, tc.notWant)
			}
		})
	}
}

func validInfo(t *testing.T) *Info {
	t.Helper()
	info, err := Parse(jointest.MustJSON(jointest.ValidDoc()), jointest.Expect())
	if err != nil {
		t.Fatal(err)
	}
	return info
}
