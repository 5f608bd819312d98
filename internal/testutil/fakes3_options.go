package testutil

import (
	"encoding/hex"
	"net/http"
	"strings"
	"sync"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"k8s.io/utils/clock"
)

// FakeS3Option configures NewFakeS3.
type FakeS3Option func(*fakeS3Options)

type fakeS3Options struct {
	clock clock.PassiveClock
}

// WithS3Clock makes the fake S3 tell time by c: objects' Last-Modified and
// every response's Date header come from c, as both come from S3's own clock
// in the real service. The check of the request signature's age is turned
// off, since the SDK signs with the real time.
func WithS3Clock(c clock.PassiveClock) FakeS3Option {
	return func(o *fakeS3Options) { o.clock = c }
}

func newFakeS3Options(opts []FakeS3Option) *fakeS3Options {
	o := &fakeS3Options{}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

func (o *fakeS3Options) backendOptions() []s3mem.Option {
	if o.clock == nil {
		return nil
	}
	return []s3mem.Option{s3mem.WithTimeSource(o.clock)}
}

func (o *fakeS3Options) serverOptions() []gofakes3.Option {
	if o.clock == nil {
		return nil
	}
	return []gofakes3.Option{gofakes3.WithTimeSource(o.clock), gofakes3.WithTimeSkewLimit(0)}
}

// conditionalWrites wraps the gofakes3 handler with what real S3 does and
// gofakes3 v1.2.0 does not:
//   - DELETE with If-Match deletes only an object with that ETag (412
//     PreconditionFailed otherwise, 404 NoSuchKey when there is no object),
//     as S3 does since 2025-09; gofakes3 ignores the header and deletes;
//   - the Date header comes from the fake's clock when it has one.
//
// Every PUT and DELETE is serialized, so that the ETag check of a conditional
// DELETE and the deletion are one atomic step against concurrent writers.
func (o *fakeS3Options) conditionalWrites(backend *s3mem.Backend, next http.Handler) http.Handler {
	var writes sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.clock != nil {
			w.Header().Set("Date", o.clock.Now().UTC().Format(http.TimeFormat))
		}
		if r.Method != http.MethodPut && r.Method != http.MethodDelete {
			next.ServeHTTP(w, r)
			return
		}
		writes.Lock()
		defer writes.Unlock()
		if ifMatch := r.Header.Get("If-Match"); r.Method == http.MethodDelete && ifMatch != "" && r.URL.Query().Get("versionId") == "" {
			bucketName, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			obj, err := backend.HeadObject(bucketName, key)
			if err != nil {
				writeS3Error(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
				return
			}
			etag := `"` + hex.EncodeToString(obj.Hash) + `"`
			if ifMatch != "*" && ifMatch != etag && `"`+ifMatch+`"` != etag {
				writeS3Error(w, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func writeS3Error(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>` + message + `</Message></Error>`))
}
