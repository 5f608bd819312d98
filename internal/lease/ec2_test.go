package lease

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

type fakeEC2 struct {
	state ec2types.InstanceStateName
	err   error
}

func (f fakeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if f.err != nil {
		return nil, f.err
	}
	if f.state == "" {
		return &ec2.DescribeInstancesOutput{}, nil
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: []ec2types.Instance{
		{InstanceId: aws.String(in.InstanceIds[0]), State: &ec2types.InstanceState{Name: f.state}}}}}}, nil
}

func TestEC2HolderAlive(t *testing.T) {
	h := holder(1)
	for _, tc := range []struct {
		ec2     fakeEC2
		alive   bool
		wantErr bool
	}{
		{fakeEC2{state: ec2types.InstanceStateNamePending}, true, false},
		{fakeEC2{state: ec2types.InstanceStateNameRunning}, true, false},
		{fakeEC2{state: ec2types.InstanceStateNameStopping}, false, false},
		{fakeEC2{state: ec2types.InstanceStateNameStopped}, false, false},
		{fakeEC2{state: ec2types.InstanceStateNameShuttingDown}, false, false},
		{fakeEC2{state: ec2types.InstanceStateNameTerminated}, false, false},
		{fakeEC2{}, false, false},
		{fakeEC2{err: &smithy.GenericAPIError{Code: "InvalidInstanceID.NotFound"}}, false, false},
		{fakeEC2{err: &smithy.GenericAPIError{Code: "RequestLimitExceeded"}}, false, true},
		{fakeEC2{err: errors.New("network down")}, false, true},
	} {
		alive, err := EC2HolderAlive(tc.ec2)(context.Background(), h)
		if alive != tc.alive || (err != nil) != tc.wantErr {
			t.Errorf("%+v: alive %v, err %v", tc.ec2, alive, err)
		}
	}
}
