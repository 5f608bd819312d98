// Package testutil holds test helpers shared by the unit tests: an
// in-process S3 (gofakes3) that counts requests, the fake kubeadm
// executable, and a clock whose timers fire at once.
package testutil

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// RequestCounts counts the requests an S3 server received.
type RequestCounts struct {
	mu          sync.Mutex
	Gets        int
	Conditional int // GETs carrying If-None-Match
	Puts        int
}

// Snapshot returns a copy of the counts.
func (c *RequestCounts) Snapshot() RequestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return RequestCounts{Gets: c.Gets, Conditional: c.Conditional, Puts: c.Puts}
}

// FakeS3 is an in-process S3 server holding one bucket.
type FakeS3 struct {
	Client *s3.Client
	Bucket string
	Counts *RequestCounts
}

// NewFakeS3 starts gofakes3 on loopback with bucket created; it stops with the test.
// It honours If-None-Match and If-Match on PUT and If-Match on DELETE.
func NewFakeS3(t testing.TB, bucket string, opts ...FakeS3Option) *FakeS3 {
	t.Helper()
	o := newFakeS3Options(opts)
	backend := s3mem.New(o.backendOptions()...)
	faker := gofakes3.New(backend, o.serverOptions()...)
	counts := &RequestCounts{}
	handler := faker.Server()
	srv := httptest.NewServer(o.conditionalWrites(backend, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Real S3 answers a PUT with If-Match on a missing object (removed,
		// or hidden by a delete marker) with 404 NoSuchKey; gofakes3 with 412.
		if r.Method == http.MethodPut && r.Header.Get("If-Match") != "" {
			bucketName, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			if _, err := backend.HeadObject(bucketName, key); err != nil {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>` +
					`<Message>The specified key does not exist.</Message></Error>`))
				return
			}
		}
		counts.mu.Lock()
		switch r.Method {
		case http.MethodGet:
			counts.Gets++
			if r.Header.Get("If-None-Match") != "" {
				counts.Conditional++
			}
		case http.MethodPut:
			counts.Puts++
		}
		counts.mu.Unlock()
		handler.ServeHTTP(w, r)
	})))
	t.Cleanup(srv.Close)
	client := s3.New(s3.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(srv.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:   srv.Client(),
	})
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	*counts = RequestCounts{}
	return &FakeS3{Client: client, Bucket: bucket, Counts: counts}
}

// Put writes body at key unconditionally, as an attacker with write access would.
func (f *FakeS3) Put(t testing.TB, key string, body []byte) {
	t.Helper()
	_, err := f.Client.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(f.Bucket), Key: aws.String(key), Body: bytesReader(body),
	})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Delete removes key, as an operator's `aws s3 rm` would.
func (f *FakeS3) Delete(t testing.TB, key string) {
	t.Helper()
	_, err := f.Client.DeleteObject(context.Background(), &s3.DeleteObjectInput{
		Bucket: aws.String(f.Bucket), Key: aws.String(key),
	})
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}
