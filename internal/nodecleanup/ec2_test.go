package nodecleanup

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// pagingEC2 answers an instance-id filter with the instances it knows, one
// per page, and fails a request that names IDs with InstanceIds.
type pagingEC2 struct {
	known    map[string]string
	requests int
	maxIDs   int
}

func (p *pagingEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	p.requests++
	if len(in.InstanceIds) > 0 || len(in.Filters) != 1 || aws.ToString(in.Filters[0].Name) != "instance-id" {
		return nil, errors.New("want exactly one instance-id filter")
	}
	ids := in.Filters[0].Values
	p.maxIDs = max(p.maxIDs, len(ids))
	var matched []string
	for _, id := range ids {
		if _, ok := p.known[id]; ok {
			matched = append(matched, id)
		}
	}
	start := 0
	if in.NextToken != nil {
		_, _ = fmt.Sscan(*in.NextToken, &start)
	}
	out := &ec2.DescribeInstancesOutput{}
	if start < len(matched) {
		id := matched[start]
		out.Reservations = []ec2types.Reservation{{Instances: []ec2types.Instance{{InstanceId: aws.String(id),
			State: &ec2types.InstanceState{Name: ec2types.InstanceStateName(p.known[id])}}}}}
		if start+1 < len(matched) {
			out.NextToken = aws.String(fmt.Sprint(start + 1))
		}
	}
	return out, nil
}

// States asks in batches of at most 200 IDs through a filter (an unknown ID
// does not fail the call), follows every page, and leaves unknown IDs out.
func TestEC2InstancesStates(t *testing.T) {
	fake := &pagingEC2{known: map[string]string{}}
	var ids []string
	for i := range 450 {
		id := fmt.Sprintf("i-%017x", i)
		ids = append(ids, id)
		if i%3 == 0 {
			fake.known[id] = "running"
		}
	}
	fake.known[ids[3]] = "terminated"
	states, err := (&EC2Instances{Client: fake}).States(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != len(fake.known) {
		t.Errorf("%d states, want %d (the known ones)", len(states), len(fake.known))
	}
	if states[ids[3]] != "terminated" || states[ids[0]] != "running" {
		t.Errorf("states of %s, %s: %q, %q", ids[3], ids[0], states[ids[3]], states[ids[0]])
	}
	if _, ok := states[ids[1]]; ok {
		t.Errorf("an unknown instance has a state")
	}
	if fake.maxIDs > 200 {
		t.Errorf("a request named %d IDs, want at most 200", fake.maxIDs)
	}
}

// ipEC2 answers a private-ip-address filter from a list of instances.
type ipEC2 struct{ instances []ec2types.Instance }

func (f *ipEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	if len(in.Filters) != 1 || aws.ToString(in.Filters[0].Name) != "private-ip-address" {
		return nil, errors.New("want exactly one private-ip-address filter")
	}
	var out []ec2types.Instance
	for _, inst := range f.instances {
		for _, ip := range in.Filters[0].Values {
			if aws.ToString(inst.PrivateIpAddress) == ip {
				out = append(out, inst)
			}
		}
	}
	return &ec2.DescribeInstancesOutput{Reservations: []ec2types.Reservation{{Instances: out}}}, nil
}

// StatesByPrivateIP filters by private IP; when a terminated instance and a
// running one have the same address (reused), the running one's state wins,
// whatever the order EC2 lists them in.
func TestEC2InstancesStatesByPrivateIP(t *testing.T) {
	inst := func(ip, state string) ec2types.Instance {
		return ec2types.Instance{PrivateIpAddress: aws.String(ip), State: &ec2types.InstanceState{Name: ec2types.InstanceStateName(state)}}
	}
	for _, order := range [][]ec2types.Instance{
		{inst("10.0.1.3", "terminated"), inst("10.0.1.3", "running"), inst("10.0.1.4", "shutting-down")},
		{inst("10.0.1.3", "running"), inst("10.0.1.3", "terminated"), inst("10.0.1.4", "shutting-down")},
	} {
		e := &EC2Instances{Client: &ipEC2{instances: order}}
		got, err := e.StatesByPrivateIP(context.Background(), []string{"10.0.1.3", "10.0.1.4", "10.0.1.9"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got["10.0.1.3"] != "running" || got["10.0.1.4"] != "shutting-down" {
			t.Errorf("states %v; want 10.0.1.3 running, 10.0.1.4 shutting-down, 10.0.1.9 absent", got)
		}
	}
}
