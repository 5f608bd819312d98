package metrics

import (
	"context"
	"net/http"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// s3MiddlewareID names the middleware on the S3 client's stack.
const s3MiddlewareID = "kubestrap/metrics/S3Requests"

// AddS3Middleware adds the request counter (S3RequestsTotal) to an S3
// client's middleware stack; use it in s3.Options.APIOptions. It sits in the
// deserialize step, which runs once per HTTP attempt, so retries count too.
func (m *Metrics) AddS3Middleware(stack *middleware.Stack) error {
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc(s3MiddlewareID,
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
			middleware.DeserializeOutput, middleware.Metadata, error,
		) {
			out, md, err := next.HandleDeserialize(ctx, in)
			status := 0
			if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Response != nil {
				status = resp.StatusCode
			}
			m.s3Request(middleware.GetOperationName(ctx), s3Result(status))
			return out, md, err
		}), middleware.Before)
}

// s3Result classifies an S3 answer by its HTTP status (0: no answer).
func s3Result(status int) string {
	switch {
	case status == 0:
		return S3Network
	case status >= 200 && status < 300:
		return S3OK
	case status == http.StatusNotModified:
		return S3NotModified
	case status == http.StatusNotFound:
		return S3NotFound
	case status == http.StatusPreconditionFailed:
		return S3PreconditionFailed
	case status == http.StatusForbidden:
		return S3AccessDenied
	case status >= 400 && status < 500:
		return S3Other4xx
	case status >= 500 && status < 600:
		return S3ServerError
	}
	return S3Other
}
