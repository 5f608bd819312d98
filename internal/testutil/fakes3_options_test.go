package testutil

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestFakeS3ConditionalDeleteAndClock(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC))
	f := NewFakeS3(t, "bkt", WithS3Clock(fc))
	ctx := context.Background()
	put, err := f.Client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k"), Body: strings.NewReader("one"), IfNoneMatch: aws.String("*")})
	if err != nil {
		t.Fatal(err)
	}
	fc.Step(42 * time.Second)
	get, err := f.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	get.Body.Close()
	date, ok := awsmiddleware.GetServerTime(get.ResultMetadata)
	if !ok || get.LastModified == nil || date.Sub(*get.LastModified) != 42*time.Second {
		t.Errorf("Date %s (%v), Last-Modified %v: want 42 s apart on the fake clock", date, ok, get.LastModified)
	}
	status := func(err error) int {
		var re *awshttp.ResponseError
		if errors.As(err, &re) {
			return re.HTTPStatusCode()
		}
		return 0
	}
	del := func(etag string) error {
		_, err := f.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bkt"), Key: aws.String("k"), IfMatch: aws.String(etag)})
		return err
	}
	if err := del(`"0123"`); status(err) != http.StatusPreconditionFailed {
		t.Errorf("delete with a wrong ETag: %v, want 412", err)
	}
	if err := del(aws.ToString(put.ETag)); err != nil {
		t.Errorf("delete with the ETag: %v", err)
	}
	if err := del(aws.ToString(put.ETag)); status(err) != http.StatusNotFound {
		t.Errorf("delete of a missing object: %v, want 404", err)
	}
}
