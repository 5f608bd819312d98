package nodecleanup

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2API is the part of the EC2 client EC2Instances uses.
type EC2API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
}

// EC2Instances is Instances over DescribeInstances (ec2:DescribeInstances,
// which has no resource-level permissions). The IDs go in an instance-id
// filter, not InstanceIds: one unknown ID would fail the whole call with
// InvalidInstanceID.NotFound.
type EC2Instances struct {
	Client EC2API
	// CallTimeout bounds each request (default 20s).
	CallTimeout time.Duration
}

// filterValues is how many instance IDs go in one request.
const filterValues = 200

// States returns the state of each of ids that EC2 knows.
func (e *EC2Instances) States(ctx context.Context, ids []string) (map[string]string, error) {
	timeout := e.CallTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	states := map[string]string{}
	for len(ids) > 0 {
		batch := ids[:min(filterValues, len(ids))]
		ids = ids[len(batch):]
		in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: batch}}}
		for page := 0; ; page++ {
			if page == 100 {
				return nil, fmt.Errorf("describe instances: more than 100 pages for %d IDs", len(batch))
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			out, err := e.Client.DescribeInstances(cctx, in)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("describe instances: %w", err)
			}
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					if inst.InstanceId != nil && inst.State != nil {
						states[*inst.InstanceId] = string(inst.State.Name)
					}
				}
			}
			if aws.ToString(out.NextToken) == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	return states, nil
}
