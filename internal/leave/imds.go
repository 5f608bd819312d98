package leave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	sdkimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/kubestrap/kubestrap/internal/imds"
)

// Metadata reads instance metadata paths (relative to /latest/meta-data/).
// found is false when the path does not exist (HTTP 404), which for the
// leave signals means "no notice"; err is anything else that went wrong.
type Metadata interface {
	GetMetadata(ctx context.Context, path string) (value string, found bool, err error)
}

// The metadata paths the watcher polls, and the instance tag the ASG
// lifecycle reads.
const (
	PathSpotInstanceAction   = "spot/instance-action"
	PathTargetLifecycleState = "autoscaling/target-lifecycle-state"
	PathRebalance            = "events/recommendations/rebalance"
	PathASGNameTag           = "tags/instance/aws:autoscaling:groupName"
)

// maxMetadataValue bounds what is read of one metadata value.
const maxMetadataValue = 64 << 10

// metadataGetter is the part of the SDK's IMDS client IMDS uses.
type metadataGetter interface {
	GetMetadata(ctx context.Context, in *sdkimds.GetMetadataInput, optFns ...func(*sdkimds.Options)) (*sdkimds.GetMetadataOutput, error)
}

// IMDS is Metadata over the AWS SDK's IMDS client, IMDSv2 only.
type IMDS struct {
	client metadataGetter
}

// NewIMDS returns Metadata over an IMDSv2-only client for cfg
// (internal/imds.NewClient; optFns as there).
func NewIMDS(cfg aws.Config, optFns ...func(*sdkimds.Options)) *IMDS {
	return &IMDS{client: imds.NewClient(cfg, optFns...)}
}

// NewIMDSForClient returns Metadata over an existing SDK IMDS client (one
// from internal/imds.NewClient: the agent shares it).
func NewIMDSForClient(client *sdkimds.Client) *IMDS {
	return &IMDS{client: client}
}

// GetMetadata reads path; a 404 answer is found=false with no error.
func (m *IMDS) GetMetadata(ctx context.Context, path string) (string, bool, error) {
	out, err := m.client.GetMetadata(ctx, &sdkimds.GetMetadataInput{Path: path})
	if err != nil {
		var status interface{ HTTPStatusCode() int }
		if errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound {
			return "", false, nil
		}
		return "", false, fmt.Errorf("instance metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, maxMetadataValue))
	if err != nil {
		return "", false, fmt.Errorf("instance metadata %s: read: %w", path, err)
	}
	return strings.TrimSpace(string(b)), true, nil
}
