package leave

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

// AutoScalingAPI is the part of the Auto Scaling client ASGLifecycle uses.
type AutoScalingAPI interface {
	RecordLifecycleActionHeartbeat(ctx context.Context, in *autoscaling.RecordLifecycleActionHeartbeatInput, optFns ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error)
	CompleteLifecycleAction(ctx context.Context, in *autoscaling.CompleteLifecycleActionInput, optFns ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
	DescribeAutoScalingInstances(ctx context.Context, in *autoscaling.DescribeAutoScalingInstancesInput, optFns ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
}

// ASGConfig names the lifecycle action of this instance.
type ASGConfig struct {
	// InstanceID is this instance (required).
	InstanceID string
	// HookName is the termination lifecycle hook's name (required; from the
	// agent's configuration).
	HookName string
	// GroupName is the Auto Scaling group; when empty it is read from the
	// instance tag aws:autoscaling:groupName through IMDS (instance metadata
	// tags enabled), else with DescribeAutoScalingInstances.
	GroupName string
}

// ASGLifecycle is Lifecycle over the Auto Scaling API: the lifecycle action
// is named by group, hook and instance ID (no lifecycle action token: IMDS
// does not give one). The IAM policy needs
// autoscaling:RecordLifecycleActionHeartbeat and
// autoscaling:CompleteLifecycleAction on the group, and
// autoscaling:DescribeAutoScalingInstances (which takes no resource) only
// when instance metadata tags are off.
type ASGLifecycle struct {
	api AutoScalingAPI
	md  Metadata
	cfg ASGConfig

	mu    sync.Mutex
	group string
}

// NewASGLifecycle returns the lifecycle action of cfg.InstanceID; md (may
// be nil when cfg.GroupName is set) reads the group's tag.
func NewASGLifecycle(api AutoScalingAPI, md Metadata, cfg ASGConfig) (*ASGLifecycle, error) {
	if cfg.InstanceID == "" || cfg.HookName == "" {
		return nil, errors.New("ASG lifecycle: instance ID and lifecycle hook name are required")
	}
	return &ASGLifecycle{api: api, md: md, cfg: cfg, group: cfg.GroupName}, nil
}

// Heartbeat records a lifecycle action heartbeat.
func (a *ASGLifecycle) Heartbeat(ctx context.Context) error {
	group, err := a.groupName(ctx)
	if err != nil {
		return err
	}
	_, err = a.api.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(group), LifecycleHookName: aws.String(a.cfg.HookName),
		InstanceId: aws.String(a.cfg.InstanceID)})
	if err != nil {
		return fmt.Errorf("lifecycle heartbeat (group %s, hook %s, instance %s): %w", group, a.cfg.HookName, a.cfg.InstanceID, err)
	}
	return nil
}

// Complete completes the lifecycle action with result (CONTINUE or ABANDON).
func (a *ASGLifecycle) Complete(ctx context.Context, result string) error {
	group, err := a.groupName(ctx)
	if err != nil {
		return err
	}
	_, err = a.api.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName: aws.String(group), LifecycleHookName: aws.String(a.cfg.HookName),
		InstanceId: aws.String(a.cfg.InstanceID), LifecycleActionResult: aws.String(result)})
	if err != nil {
		return fmt.Errorf("complete lifecycle action %s (group %s, hook %s, instance %s): %w", result, group, a.cfg.HookName, a.cfg.InstanceID, err)
	}
	return nil
}

// groupName returns the group's name, looked up once.
func (a *ASGLifecycle) groupName(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.group != "" {
		return a.group, nil
	}
	var tagErr error
	if a.md != nil {
		name, found, err := a.md.GetMetadata(ctx, PathASGNameTag)
		if err == nil && found && name != "" {
			a.group = name
			return name, nil
		}
		tagErr = err
	}
	out, err := a.api.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{a.cfg.InstanceID}})
	if err != nil {
		return "", fmt.Errorf("find the Auto Scaling group of %s: %w", a.cfg.InstanceID, errors.Join(err, tagErr))
	}
	for _, inst := range out.AutoScalingInstances {
		if aws.ToString(inst.InstanceId) == a.cfg.InstanceID && aws.ToString(inst.AutoScalingGroupName) != "" {
			a.group = aws.ToString(inst.AutoScalingGroupName)
			return a.group, nil
		}
	}
	return "", fmt.Errorf("instance %s is in no Auto Scaling group", a.cfg.InstanceID)
}
