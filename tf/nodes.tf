# The nodes: one control-plane instance and a worker Auto Scaling group across
# availability zones. User-data only writes /etc/kubestrap/config.yaml and starts
# kubestrap (templates/user-data.sh.tftpl, via modules/node-config); kubestrap runs
# kubeadm init on the control plane and kubeadm join on every worker, including
# the ones the group (or cluster-autoscaler) adds later.

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
}

module "control_plane_config" {
  source = "./modules/node-config"

  cluster                = var.cluster_name
  role                   = "control-plane"
  bucket                 = aws_s3_bucket.bootstrap.id
  region                 = var.region
  kubernetes_version     = var.kubernetes_version
  control_plane_endpoint = local.control_plane_endpoint
  cert_sans              = distinct(concat([local.control_plane_ip], aws_eip.control_plane[*].public_ip, var.api_server_cert_sans))
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
}

# --- Control plane ------------------------------------------------------------

resource "aws_instance" "control_plane" {
  ami                    = data.aws_ami.node.id
  instance_type          = var.control_plane_instance_type
  subnet_id              = local.node_subnet_ids[0]
  private_ip             = local.control_plane_ip
  vpc_security_group_ids = [aws_security_group.nodes.id, aws_security_group.control_plane.id]
  iam_instance_profile   = aws_iam_instance_profile.control_plane.name
  key_name               = var.ssh_key_name
  user_data              = module.control_plane_config.user_data

  # IMDSv2 only, and one hop: containers on the node cannot reach the
  # instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    encrypted             = true
    delete_on_termination = true
  }

  tags        = { Name = "${var.cluster_name}-control-plane", "kubestrap.dev/role" = "control-plane" }
  volume_tags = { Name = "${var.cluster_name}-control-plane" }

  # etcd lives on the root volume: a newer AMI or a changed user-data must not
  # replace or restart the control plane behind the operator's back. Roll it on
  # purpose with `terraform apply -replace=aws_instance.control_plane`.
  lifecycle {
    ignore_changes = [ami, user_data]
  }

  # Credentials, the bucket and a route out must be in place before kubestrap
  # starts on first boot.
  depends_on = [
    aws_iam_role_policy.control_plane,
    aws_s3_bucket_policy.bootstrap,
    aws_s3_bucket_server_side_encryption_configuration.bootstrap,
    aws_route.private_nat,
    aws_route.public_internet,
    aws_vpc_endpoint.s3,
  ]
}

# With public_nodes, a fixed public address for the API server (it is in the
# certificate); otherwise the API server is reached inside the VPC or a VPN.
resource "aws_eip" "control_plane" {
  count = var.public_nodes ? 1 : 0

  domain = "vpc"

  tags = { Name = "${var.cluster_name}-control-plane" }
}

resource "aws_eip_association" "control_plane" {
  count = var.public_nodes ? 1 : 0

  allocation_id = aws_eip.control_plane[0].id
  instance_id   = aws_instance.control_plane.id
}

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
  name                = "${var.cluster_name}-workers"
  vpc_zone_identifier = local.node_subnet_ids
  min_size            = local.min_nodes
  max_size            = local.max_nodes
  desired_capacity    = var.num_nodes
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
  }

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
