package errclass

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/aws/smithy-go"
)

func TestOf(t *testing.T) {
	timeoutErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("put (request id %d): %w", 7, &smithy.GenericAPIError{Code: "AccessDenied", Message: "no"}), "api:AccessDenied"},
		{fmt.Errorf("put (request id %d): %w", 8, &smithy.GenericAPIError{Code: "AccessDenied", Message: "other text"}), "api:AccessDenied"},
		{fmt.Errorf("list: %w", timeoutErr), "timeout"},
		{fmt.Errorf("list: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), "network"},
		{errors.New("something else"), "other"},
	} {
		if got := Of(tc.err); got != tc.want {
			t.Errorf("Of(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
