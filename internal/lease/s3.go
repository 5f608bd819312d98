package lease

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
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3API is the part of the S3 client the lock and the marker use.
type S3API interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// DefaultCallTimeout is the deadline of one S3 call, reading the body included.
const DefaultCallTimeout = 30 * time.Second

// object is where a lock or marker lives and how it is written.
type object struct {
	client      S3API
	bucket, key string
	kmsKeyID    string
	callTimeout time.Duration
}

func (o *object) url() string { return "s3://" + o.bucket + "/" + o.key }

func (o *object) timeout() time.Duration {
	if o.callTimeout > 0 {
		return o.callTimeout
	}
	return DefaultCallTimeout
}

// fetched is an object read from S3.
type fetched struct {
	body []byte
	etag string
	// lastModified and serverDate are S3's clock; zero when S3 did not say.
	lastModified time.Time
	serverDate   time.Time
}

// age is how long ago, by S3's clock, the object was last written; ok is
// false when the response lacked Last-Modified or Date.
func (f *fetched) age() (time.Duration, bool) {
	if f.lastModified.IsZero() || f.serverDate.IsZero() {
		return 0, false
	}
	return f.serverDate.Sub(f.lastModified), true
}

// errNoObject means there is no object (404).
var errNoObject = errors.New("no such object")

// get reads the object, at most max+1 bytes, within the call timeout.
// A missing object is errNoObject.
func (o *object) get(ctx context.Context, max int) (*fetched, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	out, err := o.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key)})
	if err != nil {
		if isNotFound(err) {
			return nil, errNoObject
		}
		return nil, fmt.Errorf("get %s: %w", o.url(), err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(io.LimitReader(out.Body, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", o.url(), err)
	}
	f := &fetched{body: body, etag: aws.ToString(out.ETag)}
	if out.LastModified != nil {
		f.lastModified = *out.LastModified
	}
	if t, ok := awsmiddleware.GetServerTime(out.ResultMetadata); ok {
		f.serverDate = t
	}
	return f, nil
}

// writeCond is the precondition of a PUT: create (If-None-Match: *) when
// ifMatch is empty, else replace the object with that ETag.
type writeCond struct{ ifMatch string }

// errPrecondition means a conditional write or delete lost (412): the object
// exists (If-None-Match) or has another ETag (If-Match).
var errPrecondition = errors.New("precondition failed")

// errConcurrent is S3's 409 ConditionalRequestConflict: another conditional
// write to the object was in progress; the outcome is unknown, look again.
var errConcurrent = errors.New("concurrent conditional write")

// put writes v as JSON under cond within the call timeout. It returns the new
// ETag; errPrecondition when the condition failed, errConcurrent on a 409,
// errNoObject when an If-Match PUT found no object.
func (o *object) put(ctx context.Context, v any, cond writeCond) (string, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", o.url(), err)
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(o.bucket),
		Key:           aws.String(o.key),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
		ContentType:   aws.String("application/json"),
		CacheControl:  aws.String("no-store"),
	}
	if cond.ifMatch != "" {
		in.IfMatch = aws.String(cond.ifMatch)
	} else {
		in.IfNoneMatch = aws.String("*")
	}
	if o.kmsKeyID != "" {
		in.ServerSideEncryption = s3types.ServerSideEncryptionAwsKms
		in.SSEKMSKeyId = aws.String(o.kmsKeyID)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	out, err := o.client.PutObject(ctx, in)
	if err != nil {
		switch st := httpStatus(err); {
		case st == http.StatusPreconditionFailed:
			return "", fmt.Errorf("put %s: %w", o.url(), errPrecondition)
		case st == http.StatusConflict:
			return "", fmt.Errorf("put %s: %w", o.url(), errConcurrent)
		case cond.ifMatch != "" && isNoSuchKey(err):
			return "", fmt.Errorf("put %s if it has ETag %s: %w", o.url(), cond.ifMatch, errNoObject)
		}
		return "", fmt.Errorf("put %s: %w", o.url(), err)
	}
	if aws.ToString(out.ETag) == "" {
		return "", fmt.Errorf("put %s: S3 answered without an ETag, so the write cannot be renewed or released conditionally", o.url())
	}
	return aws.ToString(out.ETag), nil
}

// deleteIfMatch deletes the object only if it has etag. It returns
// errPrecondition (412) or errNoObject (404) when nothing was deleted.
func (o *object) deleteIfMatch(ctx context.Context, etag string) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	_, err := o.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(o.bucket), Key: aws.String(o.key), IfMatch: aws.String(etag)})
	if err != nil {
		switch {
		case httpStatus(err) == http.StatusPreconditionFailed:
			return fmt.Errorf("delete %s if it has ETag %s: %w", o.url(), etag, errPrecondition)
		case isNotFound(err):
			return fmt.Errorf("delete %s if it has ETag %s: %w", o.url(), etag, errNoObject)
		}
		return fmt.Errorf("delete %s: %w", o.url(), err)
	}
	return nil
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// isNoSuchKey is S3's NoSuchKey only (a 404 may also be NoSuchBucket).
func isNoSuchKey(err error) bool {
	var nsk *s3types.NoSuchKey
	if errors.As(err, &nsk) {
		return true
	}
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchKey"
}

// isNotFound is a missing object: NoSuchKey, or a bare 404 other than
// NoSuchBucket (HEAD-style answers have no body to name the code).
func isNotFound(err error) bool {
	if isNoSuchKey(err) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchBucket" {
		return false
	}
	var nf *s3types.NotFound
	return errors.As(err, &nf) || httpStatus(err) == http.StatusNotFound
}
