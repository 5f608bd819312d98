package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/testutil"
)

func s3Count(t *testing.T, m *Metrics, op, result string) float64 {
	t.Helper()
	s := find(parse(t, m.Expose()), S3RequestsTotal, map[string]string{"operation": op, "result": result})
	if s == nil {
		t.Fatalf("no series %s{operation=%q,result=%q}", S3RequestsTotal, op, result)
	}
	return value(s)
}

// s3Total sums every S3 request series.
func s3Total(t *testing.T, m *Metrics) float64 {
	t.Helper()
	total := 0.0
	for _, s := range parse(t, m.Expose())[S3RequestsTotal].GetMetric() {
		total += value(s)
	}
	return total
}

func TestS3MiddlewareCountsTheJoinStoresRequests(t *testing.T) {
	fake := testutil.NewFakeS3(t, "demo-bootstrap")
	m := New("v", "control-plane")
	client := s3.New(fake.Client.Options(), func(o *s3.Options) { o.APIOptions = append(o.APIOptions, m.AddS3Middleware) })
	store := &join.Store{Client: client, Bucket: fake.Bucket, Key: join.Key("demo")}
	ctx := context.Background()

	if _, err := store.Fetch(ctx, ""); !errors.Is(err, join.ErrNotFound) {
		t.Fatalf("fetch before publish: %v", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	info := &join.Info{APIVersion: join.APIVersion, Kind: join.Kind, Cluster: "demo", APIServerEndpoint: "10.0.1.10:6443",
		Token: "abcdef.0123456789abcdef", CACertHashes: []string{"sha256:" + strings.Repeat("0f", 32)},
		KubernetesVersion: "v1.37.2", IssuedAt: now, ExpiresAt: now.Add(2 * time.Hour), Generation: 1}
	etag, err := store.Publish(ctx, info, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Fetch(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if f, err := store.Fetch(ctx, etag); err != nil || !f.NotModified {
		t.Fatalf("conditional fetch: %+v %v", f, err)
	}
	if _, err := store.Publish(ctx, info, `"not-the-etag"`); !errors.Is(err, join.ErrConflict) {
		t.Fatalf("publish with a stale ETag: %v", err)
	}

	for _, c := range []struct {
		op, result string
		want       float64
	}{
		{"GetObject", S3NotFound, 1},
		{"PutObject", S3OK, 1},
		{"GetObject", S3OK, 1},
		{"GetObject", S3NotModified, 1},
		{"PutObject", S3PreconditionFailed, 1},
	} {
		if got := s3Count(t, m, c.op, c.result); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.op, c.result, got, c.want)
		}
	}
	if total, sent := s3Total(t, m), fake.Counts.Snapshot(); total != float64(sent.Gets+sent.Puts) {
		t.Errorf("counted %v S3 requests, the server saw %d GETs and %d PUTs", total, sent.Gets, sent.Puts)
	}
}

// standIn answers every request with the status its path names (/b/403 ...).
func standIn(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var status int
		key := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		switch key {
		case "403":
			status = 403
		case "409":
			status = 409
		case "500":
			status = 500
		case "503":
			status = 503
		case "301":
			status = 301
		default:
			status = 200
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if status != 200 {
			_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>Test</Code><Message>x</Message></Error>`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func standInClient(m *Metrics, url string, attempts int) *s3.Client {
	return s3.New(s3.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(url), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		}),
		APIOptions: []func(*middleware.Stack) error{m.AddS3Middleware},
	})
}

func TestS3MiddlewareClassesByStatus(t *testing.T) {
	srv := standIn(t)
	m := New("v", "worker")
	client := standInClient(m, srv.URL, 1)
	ctx := context.Background()
	for _, key := range []string{"403", "409", "500", "301", "ok"} {
		_, _ = client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String(key)})
	}
	_, _ = client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String("b")})
	for _, c := range []struct{ op, result string }{
		{"GetObject", S3AccessDenied}, {"GetObject", S3Other4xx}, {"GetObject", S3ServerError},
		{"GetObject", S3Other}, {"GetObject", S3OK}, {"other", S3OK},
	} {
		if got := s3Count(t, m, c.op, c.result); got != 1 {
			t.Errorf("%s %s = %v, want 1", c.op, c.result, got)
		}
	}
	if total := s3Total(t, m); total != 6 {
		t.Errorf("%v requests counted, want 6", total)
	}
}

func TestS3MiddlewareCountsEveryAttemptAndNetworkFailures(t *testing.T) {
	srv := standIn(t)
	m := New("v", "worker")
	ctx := context.Background()
	// A 503 is retried by the SDK: three attempts, three requests.
	_, _ = standInClient(m, srv.URL, 3).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("503")})
	if got := s3Count(t, m, "GetObject", S3ServerError); got != 3 {
		t.Errorf("5xx with 3 attempts counted %v, want 3", got)
	}
	// Nothing listens: no HTTP answer at all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	_, err = standInClient(m, closed, 1).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"),
		Body: strings.NewReader("{}")})
	if err == nil {
		t.Fatal("PutObject to a closed port succeeded")
	}
	if got := s3Count(t, m, "PutObject", S3Network); got != 1 {
		t.Errorf("network failure counted %v, want 1", got)
	}
}
