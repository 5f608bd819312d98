package leave

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// imdsServer is IMDSv2: a token PUT, then GETs with the token; paths not in
// values are 404, status answers a path with an error status.
func imdsServer(t *testing.T, values map[string]string, status map[string]int) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
			w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
			_, _ = io.WriteString(w, "tok")
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		path := r.URL.Path[len("/latest/meta-data/"):]
		if code, ok := status[path]; ok {
			w.WriteHeader(code)
			return
		}
		v, ok := values[path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, v+"\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestIMDSMetadataFoundNotFoundAndErrors(t *testing.T) {
	srv := imdsServer(t, map[string]string{PathTargetLifecycleState: "Terminated"}, map[string]int{PathRebalance: http.StatusForbidden})
	md := NewIMDS(aws.Config{}, func(o *sdkimds.Options) { o.Endpoint = srv.URL })
	ctx := context.Background()

	if v, found, err := md.GetMetadata(ctx, PathTargetLifecycleState); err != nil || !found || v != "Terminated" {
		t.Errorf("present path: %q, found %v, err %v; want Terminated, true, nil", v, found, err)
	}
	if v, found, err := md.GetMetadata(ctx, PathSpotInstanceAction); err != nil || found || v != "" {
		t.Errorf("404 path: %q, found %v, err %v; want \"\", false, nil", v, found, err)
	}
	_, found, err := md.GetMetadata(ctx, PathRebalance)
	if err == nil || found {
		t.Errorf("403 path: found %v, err %v; want an error", found, err)
	}
	if errorClass(err) != "HTTP 403" {
		t.Errorf("403 classed %q, want HTTP 403", errorClass(err))
	}
}
