package leave

import (
	"context"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
)

// fakeAutoScaling records the lifecycle calls.
type fakeAutoScaling struct {
	mu         sync.Mutex
	heartbeats []autoscaling.RecordLifecycleActionHeartbeatInput
	completes  []autoscaling.CompleteLifecycleActionInput
	describes  []autoscaling.DescribeAutoScalingInstancesInput
	group      string // DescribeAutoScalingInstances answers with it
}

func (f *fakeAutoScaling) RecordLifecycleActionHeartbeat(_ context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput, _ ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats = append(f.heartbeats, *in)
	return &autoscaling.RecordLifecycleActionHeartbeatOutput{}, nil
}

func (f *fakeAutoScaling) CompleteLifecycleAction(_ context.Context, in *autoscaling.CompleteLifecycleActionInput, _ ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.completes = append(f.completes, *in)
	return &autoscaling.CompleteLifecycleActionOutput{}, nil
}

func (f *fakeAutoScaling) DescribeAutoScalingInstances(_ context.Context, in *autoscaling.DescribeAutoScalingInstancesInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.describes = append(f.describes, *in)
	return &autoscaling.DescribeAutoScalingInstancesOutput{AutoScalingInstances: []astypes.AutoScalingInstanceDetails{
		{InstanceId: aws.String(in.InstanceIds[0]), AutoScalingGroupName: aws.String(f.group)}}}, nil
}

func TestASGLifecycleTakesTheGroupFromTheInstanceTag(t *testing.T) {
	md := newFakeMetadata()
	md.found(PathASGNameTag, "workers-asg")
	api := &fakeAutoScaling{group: "wrong"}
	lc, err := NewASGLifecycle(api, md, ASGConfig{InstanceID: "i-0abc", HookName: "drain"})
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.Heartbeat(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := lc.Complete(context.Background(), LifecycleContinue); err != nil {
		t.Fatal(err)
	}
	hb, c := api.heartbeats[0], api.completes[0]
	if aws.ToString(hb.AutoScalingGroupName) != "workers-asg" || aws.ToString(hb.LifecycleHookName) != "drain" || aws.ToString(hb.InstanceId) != "i-0abc" {
		t.Errorf("heartbeat input group %q hook %q instance %q", aws.ToString(hb.AutoScalingGroupName), aws.ToString(hb.LifecycleHookName), aws.ToString(hb.InstanceId))
	}
	if aws.ToString(c.AutoScalingGroupName) != "workers-asg" || aws.ToString(c.LifecycleHookName) != "drain" ||
		aws.ToString(c.InstanceId) != "i-0abc" || aws.ToString(c.LifecycleActionResult) != "CONTINUE" {
		t.Errorf("complete input group %q hook %q instance %q result %q", aws.ToString(c.AutoScalingGroupName),
			aws.ToString(c.LifecycleHookName), aws.ToString(c.InstanceId), aws.ToString(c.LifecycleActionResult))
	}
	if len(api.describes) != 0 || md.callsTo(PathASGNameTag) != 1 {
		t.Errorf("DescribeAutoScalingInstances calls %d, tag reads %d; want 0 and 1 (looked up once)", len(api.describes), md.callsTo(PathASGNameTag))
	}
}

func TestASGLifecycleDescribesTheInstanceWithoutMetadataTags(t *testing.T) {
	md := newFakeMetadata() // tags/instance/... 404: instance metadata tags off
	api := &fakeAutoScaling{group: "workers-asg"}
	lc, err := NewASGLifecycle(api, md, ASGConfig{InstanceID: "i-0abc", HookName: "drain"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := lc.Heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(api.describes) != 1 || api.describes[0].InstanceIds[0] != "i-0abc" {
		t.Fatalf("DescribeAutoScalingInstances calls %+v, want one for i-0abc", api.describes)
	}
	if g := aws.ToString(api.heartbeats[1].AutoScalingGroupName); g != "workers-asg" {
		t.Errorf("heartbeat group %q, want workers-asg", g)
	}
}

func TestASGLifecycleNeedsInstanceAndHook(t *testing.T) {
	if _, err := NewASGLifecycle(&fakeAutoScaling{}, nil, ASGConfig{InstanceID: "i-0abc"}); err == nil {
		t.Error("no hook name accepted")
	}
}
