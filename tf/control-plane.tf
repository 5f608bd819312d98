# The control planes and their endpoint (issue 14, "endpoint from day one").
#
# Every cluster, also a one-node one, has an API endpoint that belongs to no
# instance: an internal Network Load Balancer in the node subnets of every
# availability zone. kubeadm's controlPlaneEndpoint is its DNS name (in the API
# server certificate, in every kubeconfig and in the join info), so a
# control-plane instance can be replaced, or more added, without touching a
# worker.
#
# The control planes are a launch template and an Auto Scaling group of
# control_plane_count instances (1, 3 or 5) across the node subnets. Their
# agents elect one of them through S3 to run kubeadm init; the others join as
# control planes one at a time (docs/design.md, "Control-plane objects").
#
# Auto Scaling replaces an instance only when EC2 reports it impaired
# (health_check_type = "EC2"), never because the load balancer finds its API
# server unready: an API server is unready while kubeadm init or a
# control-plane join runs (which can take longer than any grace period when
# joins queue behind each other), and on every control plane at once when
# etcd loses quorum. Terminating an instance then would throw away its etcd
# data (the root volume) or leave a half-added etcd member behind; the agent
# does not remove the etcd members of terminated instances yet. The load
# balancer's own health check still decides where connections go.

locals {
  control_plane_group_name = "${var.cluster_name}-control-plane"
  # The group's ARN pattern for IAM (the real ARN holds a UUID), as for the workers.
  control_plane_group_arn = "arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.control_plane_group_name}"
}

# --- Endpoint -----------------------------------------------------------------

resource "aws_lb" "api" {
  name               = "${var.cluster_name}-api"
  load_balancer_type = "network"
  internal           = true
  subnets            = local.node_subnet_ids
  ip_address_type    = "ipv4"

  # With one control plane, the load balancer nodes of the other zones must
  # reach it too.
  enable_cross_zone_load_balancing = true

  tags = { Name = "${var.cluster_name}-api" }
}

resource "aws_lb_target_group" "api" {
  name        = "${var.cluster_name}-api"
  vpc_id      = aws_vpc.this.id
  port        = 6443
  protocol    = "TCP"
  target_type = "instance"

  # The target sees the load balancer's private address, not the client's.
  # With client IP preservation on, a control plane whose connection to the
  # endpoint is sent to itself would see its own address as the source and
  # drop the reply (NLB hairpinning); kubeadm and the agent on a control plane
  # use the endpoint. The security group therefore admits 6443 from the VPC.
  preserve_client_ip = "false"

  # A leaving control plane is drained quickly, and its long-lived
  # connections (watches) are closed at the end so clients reconnect to
  # another one.
  deregistration_delay   = 30
  connection_termination = true

  # /readyz is served to anonymous clients in kubeadm clusters
  # (system:public-info-viewer). The load balancer does not verify the
  # certificate of an HTTPS health check.
  health_check {
    enabled             = true
    protocol            = "HTTPS"
    port                = "6443"
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = { Name = "${var.cluster_name}-api" }
}

resource "aws_lb_listener" "api" {
  load_balancer_arn = aws_lb.api.arn
  port              = 6443
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  tags = { Name = "${var.cluster_name}-api" }
}

# --- Control planes -------------------------------------------------------------

resource "aws_launch_template" "control_plane" {
  name_prefix            = "${var.cluster_name}-control-plane-"
  description            = "kubestrap control planes of ${var.cluster_name}"
  image_id               = data.aws_ami.node.id
  instance_type          = var.control_plane_instance_type
  key_name               = var.ssh_key_name
  user_data              = base64encode(module.control_plane_config.user_data)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.control_plane.arn
  }

  network_interfaces {
    associate_public_ip_address = var.public_nodes
    security_groups             = [aws_security_group.nodes.id, aws_security_group.control_plane.id]
    delete_on_termination       = true
  }

  # IMDSv2 only, and one hop: containers on the node cannot reach the
  # instance's credentials. Instance tags stay out of the metadata, as for the
  # workers (tag keys with "/").
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  # etcd lives on the root volume.
  block_device_mappings {
    device_name = data.aws_ami.node.root_device_name

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      delete_on_termination = true
    }
  }

  # The tags the control-plane instance had as an aws_instance (default_tags
  # do not reach tag specifications).
  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.default_tags, { Name = "${var.cluster_name}-control-plane", "kubestrap.dev/role" = "control-plane" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.default_tags, { Name = "${var.cluster_name}-control-plane" })
  }
}

# A new launch template version (AMI, user-data) changes no running control
# plane: there is no instance refresh. Only an instance the group launches
# later (a replacement) starts from it; replace control planes one at a time,
# on purpose (docs/deploy.md).
resource "aws_autoscaling_group" "control_plane" {
  name                = local.control_plane_group_name
  vpc_zone_identifier = local.node_subnet_ids
  min_size            = var.control_plane_count
  max_size            = var.control_plane_count
  desired_capacity    = var.control_plane_count

  # Instances are registered with the endpoint's target group when they are
  # launched and deregistered when they are terminated.
  target_group_arns = [aws_lb_target_group.api.arn]

  # EC2, not ELB: see the top of this file. The grace period covers the first
  # boot (kubeadm init or a control-plane join) for EC2's status checks too.
  health_check_type         = "EC2"
  health_check_grace_period = 600

  # AZRebalance would terminate a healthy control plane (and leave its etcd
  # member behind) to even out the zones after a zone came back.
  suspended_processes = ["AZRebalance"]

  launch_template {
    id      = aws_launch_template.control_plane.id
    version = aws_launch_template.control_plane.latest_version
  }

  # Credentials, the bucket, a route out and the endpoint must be in place
  # before kubestrap starts on first boot (kubeadm init talks to the API
  # server through the endpoint).
  depends_on = [
    aws_iam_role_policy.control_plane,
    aws_iam_role_policy.control_plane_reconciler,
    aws_s3_bucket_policy.bootstrap,
    aws_s3_bucket_server_side_encryption_configuration.bootstrap,
    aws_route.private_nat,
    aws_route.public_internet,
    aws_vpc_endpoint.s3,
    aws_lb_listener.api,
  ]
}
