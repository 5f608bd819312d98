// Package errclass names the kind of an error, so that a failure that lasts
// is logged once per kind instead of at every retry: never a request ID, a
// time or any other text that changes from one attempt to the next.
package errclass

import (
	"context"
	"errors"
	"net"

	"github.com/aws/smithy-go"
)

// Of names err's kind: "timeout" (a deadline, or a network timeout),
// "api:<code>" (an AWS API error and its code), "network" (another network
// error) or "other".
func Of(err error) string {
	var apiErr smithy.APIError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &apiErr):
		return "api:" + apiErr.ErrorCode()
	case errors.As(err, &netErr):
		if netErr.Timeout() {
			return "timeout"
		}
		return "network"
	}
	return "other"
}
