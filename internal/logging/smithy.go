package logging

import (
	"fmt"

	smithylogging "github.com/aws/smithy-go/logging"
	"go.uber.org/zap"
)

// AWSLogger routes the AWS SDK's own log messages into zap, so that they
// reach the journal with everything else instead of raw stderr.
func AWSLogger(z *zap.Logger) smithylogging.Logger {
	return smithylogging.LoggerFunc(func(c smithylogging.Classification, format string, v ...any) {
		msg := fmt.Sprintf(format, v...)
		if c == smithylogging.Warn {
			z.Warn(msg)
			return
		}
		z.Debug(msg)
	})
}
