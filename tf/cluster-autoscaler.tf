# Permissions of cluster-autoscaler (examples/cluster-autoscaler/), which runs on
# the control plane with the control-plane instance role's credentials (IMDSv2).
# See docs/cluster-autoscaler.md for why each action is here and what the deploy
# tests prove (test/deploy/autoscaler_test.go).
#
# Calls cluster-autoscaler's AWS provider makes (v1.36.1,
# cluster-autoscaler/cloudprovider/aws/aws_wrapper.go and aws_util.go):
#   read:   autoscaling:DescribeAutoScalingGroups (auto-discovery by tag, refresh),
#           autoscaling:DescribeScalingActivities (failed scale-ups),
#           autoscaling:DescribeLaunchConfigurations (groups with a launch
#           configuration), ec2:DescribeLaunchTemplateVersions (instance type of
#           a launch template, as the worker group uses), ec2:DescribeInstanceTypes
#           (the instance type list, read at start-up)
#   write:  autoscaling:SetDesiredCapacity (scale up), and
#           autoscaling:TerminateInstanceInAutoScalingGroup (scale down)
# Not granted: ec2:DescribeImages and ec2:GetInstanceTypesFromInstanceRequirements
# (only for groups that choose instance types by attributes, which the worker
# group does not), eks:DescribeNodegroup (only for EKS managed node groups).
#
# The Describe actions do not support resource-level permissions: AWS requires
# "Resource": "*" for them. The two write actions are limited to groups tagged
# k8s.io/cluster-autoscaler/<cluster> = owned, the tag nodes.tf puts on the
# worker group, with Auto Scaling's documented condition key
# autoscaling:ResourceTag/<key>: cluster-autoscaler cannot resize or terminate
# instances of any other group, of this cluster or another.

variable "enable_cluster_autoscaler" {
  description = "Grant the control-plane role the permissions cluster-autoscaler needs (examples/cluster-autoscaler/). Give the worker group room with min_nodes/max_nodes."
  type        = bool
  default     = true
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  count = var.enable_cluster_autoscaler ? 1 : 0

  name = "cluster-autoscaler"
  role = aws_iam_role.control_plane.id
  # The Describe actions have no resource-level permissions ("*"); the two
  # write actions only on groups tagged k8s.io/cluster-autoscaler/<cluster> = owned.
  policy = templatefile("${path.module}/templates/cluster-autoscaler-policy.json.tftpl", { cluster = var.cluster_name })
}
