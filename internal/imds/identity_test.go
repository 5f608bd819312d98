package imds

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

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

func TestWaitForIdentityGivesUpAfterTimeout(t *testing.T) {
	api := &bootingIMDS{failures: 1 << 30}
	_, err := WaitForIdentity(context.Background(), api, 1500*time.Millisecond, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "did not answer within 1.5s") {
		t.Errorf("err = %v", err)
	}
}
