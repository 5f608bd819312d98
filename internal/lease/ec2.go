package lease

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// EC2API is the part of the EC2 client EC2HolderAlive uses.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// EC2HolderAlive returns a HolderAliveFunc that asks EC2: an instance that is
// pending or running is alive; one that is stopping, stopped, shutting down or
// terminated, or that EC2 does not know (InvalidInstanceID.NotFound), is not.
// Any other error means "cannot tell" (the lock is then not taken over).
// It needs ec2:DescribeInstances.
func EC2HolderAlive(client EC2API) HolderAliveFunc {
	return func(ctx context.Context, holder string) (bool, error) {
		out, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{holder}})
		if err != nil {
			var apiErr smithy.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode() == "InvalidInstanceID.NotFound" {
				return false, nil
			}
			return false, fmt.Errorf("describe instance %s: %w", holder, err)
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if inst.InstanceId == nil || *inst.InstanceId != holder || inst.State == nil {
					continue
				}
				switch inst.State.Name {
				case ec2types.InstanceStateNamePending, ec2types.InstanceStateNameRunning:
					return true, nil
				default:
					return false, nil
				}
			}
		}
		// Terminated instances drop out of DescribeInstances after about an hour.
		return false, nil
	}
}
