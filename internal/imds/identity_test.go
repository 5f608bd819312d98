package imds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"go.uber.org/zap"
)

// bootingIMDS fails its first failures calls, as IMDS can while an instance boots.
type bootingIMDS struct {
	calls, failures int
}

func (b *bootingIMDS) GetInstanceIdentityDocument(context.Context, *imds.GetInstanceIdentityDocumentInput, ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error) {
	b.calls++
	if b.calls <= b.failures {
		return nil, errors.New("dial tcp 169.254.169.254:80: connect: network is unreachable")
	}
	out := &imds.GetInstanceIdentityDocumentOutput{}
	out.Region, out.InstanceID, out.AccountID, out.PrivateIP = "eu-west-1", "i-0abc", "111122223333", "10.0.2.7"
	out.AvailabilityZone = "eu-west-1b"
	return out, nil
}

func (b *bootingIMDS) GetMetadata(_ context.Context, in *imds.GetMetadataInput, _ ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	v := map[string]string{"local-ipv4": "10.0.2.8", "local-hostname": "ip-10-0-2-8.eu-west-1.compute.internal"}[in.Path]
	return &imds.GetMetadataOutput{Content: io.NopCloser(strings.NewReader(v + "\n"))}, nil
}

func TestWaitForIdentityRetriesWhileIMDSBoots(t *testing.T) {
	api := &bootingIMDS{failures: 2}
	id, err := WaitForIdentity(context.Background(), api, 30*time.Second, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if api.calls != 3 || id.Region != "eu-west-1" || id.PrivateIP != "10.0.2.8" || id.Hostname != "ip-10-0-2-8.eu-west-1.compute.internal" {
		t.Errorf("calls %d identity %+v", api.calls, id)
	}
}

func TestIdentityProviderIDIsTheAWSForm(t *testing.T) {
	id, err := Fetch(context.Background(), &bootingIMDS{})
	if err != nil {
		t.Fatal(err)
	}
	if got := id.ProviderID(); got != "aws:///eu-west-1b/i-0abc" {
		t.Errorf("ProviderID() = %q, want aws:///eu-west-1b/i-0abc", got)
	}
	id.AvailabilityZone = ""
	if got := id.ProviderID(); got != "" {
		t.Errorf("ProviderID() without a zone = %q, want empty", got)
	}
}

func TestWaitForIdentityGivesUpAfterTimeout(t *testing.T) {
	api := &bootingIMDS{failures: 1 << 30}
	_, err := WaitForIdentity(context.Background(), api, 1500*time.Millisecond, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "did not answer within 1.5s") {
		t.Errorf("err = %v", err)
	}
}

// fakeIMDS answers the token PUT with tokenStatus (0: hang up) and serves the
// identity document to anyone; it counts the metadata requests that came
// without a session token, that is, IMDSv1 requests.
type fakeIMDS struct {
	tokenStatus int
	mu          sync.Mutex
	tokenless   int
	tokenPuts   int
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
		f.tokenPuts++
		if f.tokenStatus == 0 {
			hj, _ := w.(http.Hijacker)
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		w.WriteHeader(f.tokenStatus)
		return
	}
	if r.Header.Get("X-aws-ec2-metadata-token") == "" {
		f.tokenless++
	}
	if r.URL.Path == "/latest/dynamic/instance-identity/document" {
		_, _ = io.WriteString(w, `{"region":"eu-west-1","instanceId":"i-0abc","accountId":"111122223333","privateIp":"10.0.2.7"}`)
		return
	}
	_, _ = io.WriteString(w, "10.0.2.7")
}

func TestNewClientNeverFallsBackToIMDSv1(t *testing.T) {
	// The SDK falls back to IMDSv1 after a 403, 404 or 405 answer to the token
	// PUT, and after a failed PUT; 0 is a PUT whose connection is dropped.
	for _, status := range []int{http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, 0} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			// First the SDK's default client, to show this server does get a
			// tokenless request from a client that falls back.
			control := &fakeIMDS{tokenStatus: status}
			srv := httptest.NewServer(control)
			defer srv.Close()
			endpoint := func(o *imds.Options) { o.Endpoint = srv.URL }
			id, err := Fetch(context.Background(), imds.NewFromConfig(aws.Config{}, endpoint))
			if err != nil || id.InstanceID != "i-0abc" || control.tokenless == 0 {
				t.Fatalf("the SDK's default client did not fall back to IMDSv1 (tokenless requests %d, err %v): the test proves nothing", control.tokenless, err)
			}

			f := &fakeIMDS{tokenStatus: status}
			srv2 := httptest.NewServer(f)
			defer srv2.Close()
			reenable := func(o *imds.Options) { o.EnableFallback = aws.TrueTernary } // NewClient must override it
			client := NewClient(aws.Config{}, func(o *imds.Options) { o.Endpoint = srv2.URL }, reenable)
			_, err = Fetch(context.Background(), client)
			f.mu.Lock()
			defer f.mu.Unlock()
			if err == nil || f.tokenless != 0 {
				t.Errorf("IMDSv2-only client: err %v, %d tokenless requests; want an error and none", err, f.tokenless)
			}
			if f.tokenPuts == 0 {
				t.Errorf("no token PUT was made")
			}
		})
	}
}

func TestNewClientUsesTheToken(t *testing.T) {
	var mu sync.Mutex
	var tokenless int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPut {
			w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
			_, _ = io.WriteString(w, "tok")
			return
		}
		if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
			tokenless++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.Path == "/latest/dynamic/instance-identity/document" {
			_, _ = io.WriteString(w, `{"region":"eu-west-1","instanceId":"i-0abc","privateIp":"10.0.2.7"}`)
			return
		}
		_, _ = io.WriteString(w, "10.0.2.8")
	}))
	defer srv.Close()
	id, err := Fetch(context.Background(), NewClient(aws.Config{}, func(o *imds.Options) { o.Endpoint = srv.URL }))
	if err != nil || id.InstanceID != "i-0abc" || id.PrivateIP != "10.0.2.8" || tokenless != 0 {
		t.Errorf("identity %+v, err %v, tokenless requests %d", id, err, tokenless)
	}
}
