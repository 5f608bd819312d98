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
	states := map[string]string{}
	err := e.describe(ctx, "instance-id", ids, func(inst ec2types.Instance) {
		if inst.InstanceId != nil && inst.State != nil {
			states[*inst.InstanceId] = string(inst.State.Name)
		}
	})
	return states, err
}

// StatesByPrivateIP returns, for each of ips that an instance EC2 knows has
// as its private IP address, that instance's state; when several have it
// (one terminated, its address already reused), a live one's.
func (e *EC2Instances) StatesByPrivateIP(ctx context.Context, ips []string) (map[string]string, error) {
	states := map[string]string{}
	err := e.describe(ctx, "private-ip-address", ips, func(inst ec2types.Instance) {
		ip := aws.ToString(inst.PrivateIpAddress)
		if ip == "" || inst.State == nil {
			return
		}
		if prev, ok := states[ip]; !ok || gone(prev) {
			states[ip] = string(inst.State.Name)
		}
	})
	return states, err
}

// describe calls DescribeInstances with the filter name=values, at most
// filterValues values a call and 100 pages, each call bounded by
// CallTimeout, and hands each instance to found.
func (e *EC2Instances) describe(ctx context.Context, name string, values []string, found func(ec2types.Instance)) error {
	timeout := e.CallTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	for len(values) > 0 {
		batch := values[:min(filterValues, len(values))]
		values = values[len(batch):]
		in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String(name), Values: batch}}}
		for page := 0; ; page++ {
			if page == 100 {
				return fmt.Errorf("describe instances: more than 100 pages for %d values of %s", len(batch), name)
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			out, err := e.Client.DescribeInstances(cctx, in)
			cancel()
			if err != nil {
				return fmt.Errorf("describe instances: %w", err)
			}
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					found(inst)
				}
			}
			if aws.ToString(out.NextToken) == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	return nil
}
