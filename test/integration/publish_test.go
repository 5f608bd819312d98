//go:build integration

package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/kubestrap/kubestrap/internal/join"
)

func TestPublishIsConditionalAndEncryptedWithKMS(t *testing.T) {
	moto := startMoto(t)
	ctx := context.Background()
	s3c := s3Client(moto)
	createBucket(t, s3c, "demo-bootstrap")
	kc := kms.New(kms.Options{Region: "eu-west-1", BaseEndpoint: aws.String(moto),
		Credentials: credentials.NewStaticCredentialsProvider("harness", "harness", "")})
	key, err := kc.CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("kubestrap join info")})
	if err != nil {
		t.Fatal(err)
	}
	keyID := aws.ToString(key.KeyMetadata.Arn)
	store := &join.Store{Client: s3c, Bucket: "demo-bootstrap", Key: join.Key("demo"), KMSKeyID: keyID}
	now := time.Now().UTC().Truncate(time.Second)
	info := &join.Info{APIVersion: join.APIVersion, Kind: join.Kind, Cluster: "demo", APIServerEndpoint: "10.0.1.10:6443",
		Token: "abcdef.0123456789abcdef", CACertHashes: []string{"sha256:0000000000000000000000000000000000000000000000000000000000000000"},
		IssuedAt: now, ExpiresAt: now.Add(time.Hour), Generation: 1}

	etag, err := store.Publish(ctx, info, "")
	if err != nil {
		t.Fatalf("first publish: %v", err)
	}
	head, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("demo-bootstrap"), Key: aws.String("demo/join.json")})
	if err != nil {
		t.Fatal(err)
	}
	if head.ServerSideEncryption != s3types.ServerSideEncryptionAwsKms || aws.ToString(head.SSEKMSKeyId) != keyID {
		t.Errorf("object encryption %q key %q, want aws:kms with %s", head.ServerSideEncryption, aws.ToString(head.SSEKMSKeyId), keyID)
	}
	// A second "first" publish must not overwrite (If-None-Match: *).
	if _, err := store.Publish(ctx, info, ""); !errors.Is(err, join.ErrConflict) {
		t.Errorf("create over an existing object: err %v, want ErrConflict", err)
	}
	// Someone else writes; a publish conditional on our old ETag loses.
	putObject(t, s3c, "demo-bootstrap", "demo/join.json", []byte(`{"someone":"else"}`))
	info.Generation = 2
	if _, err := store.Publish(ctx, info, etag); !errors.Is(err, join.ErrConflict) {
		t.Errorf("publish over a foreign write: err %v, want ErrConflict", err)
	}
	// Conditional GETs: 304 while unchanged.
	f, err := store.Fetch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	again, err := store.Fetch(ctx, f.ETag)
	if err != nil || !again.NotModified {
		t.Errorf("conditional GET on the current ETag: %+v, %v; want not modified", again, err)
	}
}
