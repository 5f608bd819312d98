// Package imds reads the instance identity (region, instance ID, account,
// private IP) from the EC2 instance metadata service, IMDSv2 only, retrying
// while the service is not up yet at boot.
package imds

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"go.uber.org/zap"

	"github.com/kubestrap/kubestrap/internal/backoff"
)

// API is the part of the SDK's IMDS client the agent uses.
type API interface {
	GetInstanceIdentityDocument(ctx context.Context, in *imds.GetInstanceIdentityDocumentInput, optFns ...func(*imds.Options)) (*imds.GetInstanceIdentityDocumentOutput, error)
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, optFns ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

// NewClient returns an IMDS client for cfg that speaks IMDSv2 only: when the
// session token cannot be had (the SDK otherwise falls back to tokenless
// IMDSv1 requests after a 403, 404 or 405 answer to the token PUT, or when that
// PUT fails or times out) the call fails instead. optFns apply first; the
// fallback stays disabled whatever they set.
func NewClient(cfg aws.Config, optFns ...func(*imds.Options)) *imds.Client {
	optFns = append(optFns[:len(optFns):len(optFns)], func(o *imds.Options) { o.EnableFallback = aws.FalseTernary })
	return imds.NewFromConfig(cfg, optFns...)
}

// Identity is what the agent needs to know about its instance.
type Identity struct {
	Region     string `json:"region"`
	InstanceID string `json:"instanceId"`
	AccountID  string `json:"accountId"`
	PrivateIP  string `json:"privateIp"`
	// AvailabilityZone is the instance's zone (eu-west-1a).
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	// Hostname is the instance's local hostname (ip-10-0-2-7...), when IMDS has it.
	Hostname string `json:"hostname,omitempty"`
}

// Fetch reads the identity once.
func Fetch(ctx context.Context, client API) (*Identity, error) {
	doc, err := client.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil {
		return nil, fmt.Errorf("read instance identity document: %w", err)
	}
	id := &Identity{
		Region:     doc.Region,
		InstanceID: doc.InstanceID,
		AccountID:  doc.AccountID,
		PrivateIP:  doc.PrivateIP,

		AvailabilityZone: doc.AvailabilityZone,
	}
	if id.Region == "" || id.InstanceID == "" {
		return nil, fmt.Errorf("instance identity document lacks region or instance ID")
	}
	if ip, err := getString(ctx, client, "local-ipv4"); err == nil && ip != "" {
		id.PrivateIP = ip
	}
	if h, err := getString(ctx, client, "local-hostname"); err == nil {
		id.Hostname = h
	}
	return id, nil
}

// ProviderID is the node's spec.providerID in the form the AWS cloud
// provider, cluster-autoscaler and aws-node-termination-handler use,
// aws:///<zone>/<instance ID>, or "" without a zone or instance ID.
func (id *Identity) ProviderID() string {
	if id == nil || id.AvailabilityZone == "" || id.InstanceID == "" {
		return ""
	}
	return "aws:///" + id.AvailabilityZone + "/" + id.InstanceID
}

func getString(ctx context.Context, client API, path string) (string, error) {
	out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", err
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, 4096))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// WaitForIdentity calls Fetch until it succeeds, ctx ends or timeout passes,
// backing off between attempts: at boot IMDS may not answer yet.
func WaitForIdentity(ctx context.Context, client API, timeout time.Duration, log *zap.Logger) (*Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b := backoff.New(500*time.Millisecond, 10*time.Second)
	for attempt := 1; ; attempt++ {
		id, err := Fetch(ctx, client)
		if err == nil {
			return id, nil
		}
		delay := b.Next()
		log.Warn("instance metadata service not answering yet; retrying",
			zap.Int("attempt", attempt), zap.Duration("retryIn", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("instance metadata service did not answer within %s: %w", timeout, err)
		case <-t.C:
		}
	}
}
