# The nodes: the agent configuration of both roles, and the worker Auto Scaling
# group across availability zones (the control planes are in control-plane.tf).
# User-data only writes /etc/kubestrap/config.yaml and starts kubestrap
# (templates/user-data.sh.tftpl, via modules/node-config); kubestrap elects one
# control plane to run kubeadm init, joins the others as control planes, and
# runs kubeadm join on every worker, including the ones the group (or
# cluster-autoscaler) adds later.

data "aws_ami" "node" {
  most_recent = true
  owners      = var.ami_id == null ? var.ami_owners : null

  dynamic "filter" {
    for_each = var.ami_id == null ? { name = var.ami_name_pattern } : { image-id = var.ami_id }
    content {
      name   = filter.key
      values = [filter.value]
    }
  }
}

locals {
  ecr_registry_ids = distinct(concat(
    [local.account_id],
    [for arn in var.ecr_extra_repository_arns : split(":", arn)[4]],
  ))

  worker_kubelet_args = length(var.worker_node_labels) == 0 ? [] : [
    { name = "node-labels", value = join(",", [for k, v in var.worker_node_labels : "${k}=${v}"]) },
  ]

  # The worker group, and the ARN pattern of it that IAM policies use: the real
  # ARN holds a UUID known only once the group exists, and Auto Scaling accepts
  # a "*" in its place (arn:...:autoScalingGroup:*:autoScalingGroupName/<name>).
  worker_group_name = "${var.cluster_name}-workers"
  worker_group_arn  = "arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.worker_group_name}"

  # The termination lifecycle hook of the worker group: a leaving worker sends
  # heartbeats on it while it drains and completes it (CONTINUE) when done.
  worker_lifecycle_hook_name = "kubestrap-leave"

  # Instance types of the mixed instances policy (worker_spot).
  worker_instance_types = length(var.worker_instance_types) > 0 ? var.worker_instance_types : [var.worker_instance_type]
}

check "worker_instance_types_without_spot" {
  assert {
    condition     = var.worker_spot || length(var.worker_instance_types) == 0
    error_message = "worker_instance_types is set but worker_spot is false: the workers run worker_instance_type (${var.worker_instance_type}) only."
  }
}

# Every control plane gets the same endpoint, the API load balancer, and its
# DNS name in the certificate: the agent refuses (Blocked) to join a cluster
# that was initialized with another endpoint.
module "control_plane_config" {
  source = "./modules/node-config"

  cluster                = var.cluster_name
  role                   = "control-plane"
  bucket                 = aws_s3_bucket.bootstrap.id
  region                 = var.region
  kubernetes_version     = var.kubernetes_version
  control_plane_endpoint = local.control_plane_endpoint
  cert_sans              = distinct(concat([local.api_dns_name], var.api_server_cert_sans))
  pod_subnet             = var.pod_subnet
  service_subnet         = var.service_subnet
  kms_key_id             = aws_kms_key.bootstrap.arn
  token_ttl              = var.token_ttl
  ecr_registry_ids       = local.ecr_registry_ids
}

module "worker_config" {
  source = "./modules/node-config"

  cluster            = var.cluster_name
  role               = "worker"
  bucket             = aws_s3_bucket.bootstrap.id
  region             = var.region
  kubernetes_version = var.kubernetes_version
  pod_subnet         = var.pod_subnet
  service_subnet     = var.service_subnet
  ecr_registry_ids   = local.ecr_registry_ids
  kubelet_extra_args = local.worker_kubelet_args
  # The agent completes the termination lifecycle hook when the node leaves.
  leave = {
    lifecycle_hook_name    = local.worker_lifecycle_hook_name
    autoscaling_group_name = local.worker_group_name
    heartbeat_timeout      = var.worker_termination_heartbeat_timeout
  }
}

# --- Control plane ------------------------------------------------------------
# The control planes (a launch template and an Auto Scaling group) and the
# load balancer in front of them are in control-plane.tf.

# --- Workers ------------------------------------------------------------------

resource "aws_launch_template" "worker" {
  name_prefix            = "${var.cluster_name}-worker-"
  description            = "kubestrap workers of ${var.cluster_name}"
  image_id               = data.aws_ami.node.id
  instance_type          = var.worker_instance_type
  key_name               = var.ssh_key_name
  user_data              = base64encode(module.worker_config.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  network_interfaces {
    associate_public_ip_address = var.public_nodes
    security_groups             = [aws_security_group.nodes.id, aws_security_group.workers.id]
    delete_on_termination       = true
  }

  # IMDSv2 only, and one hop: containers on the node cannot reach the
  # instance's credentials.
  # Instance tags stay out of the metadata (tags/instance): with them in, EC2
  # refuses to launch an instance whose tag keys contain "/" or a space (EC2
  # user guide, "View tags for your EC2 instances using instance metadata"),
  # and every worker carries kubestrap.dev/role and kubernetes.io/cluster/<cluster>.
  # So a worker does not learn its group from aws:autoscaling:groupName in IMDS:
  # the group and lifecycle hook names are Terraform's (outputs worker_asg_name
  # and worker_lifecycle_hook_name), for the agent's configuration.
  # test/deploy/leave_test.go fails if tags are enabled with such keys.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = data.aws_ami.node.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.cluster_name}-worker", "kubestrap.dev/role" = "worker" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.cluster_name}-worker" })
  }
}

resource "aws_autoscaling_group" "workers" {
  name                = local.worker_group_name
  vpc_zone_identifier = local.node_subnet_ids
  min_size            = local.min_nodes
  max_size            = local.max_nodes
  desired_capacity    = var.num_nodes
  health_check_type   = "EC2"

  # On-demand workers (the default): the launch template as it is.
  dynamic "launch_template" {
    for_each = var.worker_spot ? [] : [aws_launch_template.worker]
    content {
      id      = launch_template.value.id
      version = launch_template.value.latest_version
    }
  }

  # Spot workers (worker_spot): the same launch template over
  # worker_instance_types, on_demand_base_capacity on-demand and everything
  # above it Spot.
  dynamic "mixed_instances_policy" {
    for_each = var.worker_spot ? [aws_launch_template.worker] : []
    content {
      instances_distribution {
        on_demand_base_capacity                  = var.on_demand_base_capacity
        on_demand_percentage_above_base_capacity = 0
        spot_allocation_strategy                 = var.spot_allocation_strategy
      }

      launch_template {
        launch_template_specification {
          launch_template_id = mixed_instances_policy.value.id
          version            = mixed_instances_policy.value.latest_version
        }

        dynamic "override" {
          for_each = local.worker_instance_types
          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  # Spot: on a rebalance recommendation (raised interruption risk) Auto Scaling
  # launches a replacement first, then terminates the old worker through the
  # termination lifecycle hook, so it leaves like any other.
  capacity_rebalance = var.worker_spot

  # A new launch template version (AMI, user-data) rolls the workers; each new
  # instance joins by itself.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  # cluster-autoscaler auto-discovery:
  #   --node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/<cluster>
  tag {
    key                 = "k8s.io/cluster-autoscaler/enabled"
    value               = "true"
    propagate_at_launch = false
  }

  tag {
    key                 = "k8s.io/cluster-autoscaler/${var.cluster_name}"
    value               = "owned"
    propagate_at_launch = false
  }

  tag {
    key                 = "kubernetes.io/cluster/${var.cluster_name}"
    value               = "owned"
    propagate_at_launch = true
  }

  # Between min_nodes and max_nodes the size belongs to cluster-autoscaler (or
  # the operator); Terraform sets it only when the group is created. num_nodes
  # still moves it through the min/max defaults.
  lifecycle {
    ignore_changes = [desired_capacity]
  }

  depends_on = [
    aws_iam_role_policy.worker,
    aws_s3_bucket_policy.bootstrap,
    aws_route.private_nat,
    aws_route.public_internet,
    aws_vpc_endpoint.s3,
  ]
}

# Every termination of a worker (scale-in, cluster-autoscaler, instance refresh,
# capacity rebalance, a health-check replacement) waits in Terminating:Wait
# until the node completes the lifecycle action, sends no heartbeat for
# worker_termination_heartbeat_timeout seconds, or the hook's global limit
# (100 x the timeout, at most 48 h) is reached; then the termination goes on
# (CONTINUE, also the default result). What the node may do about it is in
# templates/worker-leave-policy.json.tftpl. A spot interruption does not wait:
# EC2 reclaims the instance after its 2-minute notice, hook or not.
# A resource of its own rather than initial_lifecycle_hook: existing groups get
# it, a new timeout is applied in place, and terraform destroy removes it before
# the group, so destroying does not wait on the hook.
resource "aws_autoscaling_lifecycle_hook" "worker_termination" {
  name                   = local.worker_lifecycle_hook_name
  autoscaling_group_name = aws_autoscaling_group.workers.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.worker_termination_heartbeat_timeout
  default_result         = "CONTINUE"
}
