package join

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3API is the part of the S3 client that join info needs.
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Key returns the S3 key of a cluster's join info.
func Key(cluster string) string { return cluster + "/join.json" }

// ErrNotFound means the join info object does not exist (yet), or, from
// Publish with a previous ETag, that it was deleted since: publish again as a
// first write (prevETag "").
var ErrNotFound = errors.New("join info object not found")

// ErrAccessDenied means S3 refused the read. Real S3 answers 403, not 404,
// for a missing object when the caller may not list the bucket, so before the
// first publish a worker sees this too.
var ErrAccessDenied = errors.New("access denied")

// ErrConflict means a conditional write lost against another writer.
var ErrConflict = errors.New("join info was changed by another writer")

// Store reads and writes one cluster's join info object.
type Store struct {
	Client S3API
	Bucket string
	Key    string
	// KMSKeyID, when set, makes Publish use SSE-KMS with this key.
	KMSKeyID string
	// CallTimeout bounds each S3 call, reading the response body included,
	// so that a stalled connection cannot block the caller (default
	// DefaultCallTimeout).
	CallTimeout time.Duration
}

// DefaultCallTimeout is the deadline of one S3 call when Store.CallTimeout is zero.
const DefaultCallTimeout = 30 * time.Second

func (s *Store) callTimeout() time.Duration {
	if s.CallTimeout > 0 {
		return s.CallTimeout
	}
	return DefaultCallTimeout
}

// URL names the object for humans: s3://bucket/key.
func (s *Store) URL() string { return "s3://" + s.Bucket + "/" + s.Key }

// Fetched is the result of a conditional GET.
type Fetched struct {
	// NotModified is true when the object still has the ETag passed to Fetch.
	NotModified bool
	ETag        string
	Body        []byte
}

// Fetch GETs the object, conditionally on etag (If-None-Match) when it is not
// empty. At most MaxSize+1 bytes are read, so Parse can refuse oversize objects.
// The call, body included, ends after CallTimeout.
func (s *Store) Fetch(ctx context.Context, etag string) (*Fetched, error) {
	// The deadline must hold until the body is read: cancel only on return.
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
	defer cancel()
	in := &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(s.Key)}
	if etag != "" {
		in.IfNoneMatch = aws.String(etag)
	}
	out, err := s.Client.GetObject(ctx, in)
	if err != nil {
		switch {
		case httpStatus(err) == http.StatusNotModified:
			return &Fetched{NotModified: true, ETag: etag}, nil
		case isNotFound(err):
			return nil, ErrNotFound
		case httpStatus(err) == http.StatusForbidden:
			return nil, fmt.Errorf("get %s: %w", s.URL(), ErrAccessDenied)
		}
		return nil, fmt.Errorf("get %s: %w", s.URL(), err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(io.LimitReader(out.Body, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.URL(), err)
	}
	return &Fetched{ETag: aws.ToString(out.ETag), Body: body}, nil
}

// Publish writes info. With prevETag set the write succeeds only if the object
// still has that ETag (If-Match); with prevETag empty only if no object exists
// (If-None-Match: *). A lost race returns ErrConflict, never a silent overwrite;
// an object deleted since prevETag was read (S3 answers 404 NoSuchKey to the
// If-Match) returns ErrNotFound. The call ends after CallTimeout.
func (s *Store) Publish(ctx context.Context, info *Info, prevETag string) (string, error) {
	body, err := json.Marshal(info)
	if err != nil {
		return "", fmt.Errorf("encode join info: %w", err)
	}
	return s.put(ctx, body, prevETag)
}

// PublishControlPlane writes control-plane join info, on the same terms as
// Publish (the Store's Key is then ControlPlaneKey). An error never holds
// the document.
func (s *Store) PublishControlPlane(ctx context.Context, info *ControlPlaneInfo, prevETag string) (string, error) {
	body, err := json.Marshal(info)
	if err != nil {
		return "", fmt.Errorf("encode control-plane join info: %w", err)
	}
	return s.put(ctx, body, prevETag)
}

// RequestControlPlaneInfo writes a control-plane join request (the Store's
// Key is then ControlPlaneJoinRequestKey), unconditionally: the newest
// request is the one that counts.
func (s *Store) RequestControlPlaneInfo(ctx context.Context, r *ControlPlaneJoinRequest) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode control-plane join request: %w", err)
	}
	in := &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(s.Key), Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json")}
	if s.KMSKeyID != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryptionAwsKms
		in.SSEKMSKeyId = aws.String(s.KMSKeyID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
	defer cancel()
	if _, err := s.Client.PutObject(ctx, in); err != nil {
		return fmt.Errorf("put %s: %w", s.URL(), err)
	}
	return nil
}

// Delete removes the object if it still has etag (If-Match). An object
// already gone, or replaced since (a newer request), is not an error.
func (s *Store) Delete(ctx context.Context, etag string) error {
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
	defer cancel()
	_, err := s.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(s.Key), IfMatch: aws.String(etag)})
	if err != nil && !isNotFound(err) && httpStatus(err) != http.StatusPreconditionFailed {
		return fmt.Errorf("delete %s: %w", s.URL(), err)
	}
	return nil
}

func (s *Store) put(ctx context.Context, body []byte, prevETag string) (string, error) {
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.Bucket),
		Key:           aws.String(s.Key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/json"),
		CacheControl:  aws.String("no-store"),
	}
	if prevETag != "" {
		in.IfMatch = aws.String(prevETag)
	} else {
		in.IfNoneMatch = aws.String("*")
	}
	if s.KMSKeyID != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryptionAwsKms
		in.SSEKMSKeyId = aws.String(s.KMSKeyID)
	}
	ctx, cancel := context.WithTimeout(ctx, s.callTimeout())
	defer cancel()
	out, err := s.Client.PutObject(ctx, in)
	if err != nil {
		if st := httpStatus(err); st == http.StatusPreconditionFailed || st == http.StatusConflict {
			return "", fmt.Errorf("put %s: %w", s.URL(), ErrConflict)
		}
		if prevETag != "" && isNoSuchKey(err) {
			return "", fmt.Errorf("put %s if it still has ETag %s: the object was deleted: %w", s.URL(), prevETag, ErrNotFound)
		}
		return "", fmt.Errorf("put %s: %w", s.URL(), err)
	}
	return aws.ToString(out.ETag), nil
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNoSuchKey is true for S3's NoSuchKey answer only: a 404 may also be
// NoSuchBucket, which is no reason to publish as a first write.
func isNoSuchKey(err error) bool {
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchKey"
}

func isNotFound(err error) bool {
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var nf *s3types.NotFound
	return errors.As(err, &nf) || httpStatus(err) == http.StatusNotFound
}
