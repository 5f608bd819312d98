# kubestrap cluster: a VPC across availability zones, a private SSE-KMS bucket for
# the join info, an ECR repository, least-privilege node roles, the control planes
# (an Auto Scaling group behind an internal Network Load Balancer, the cluster's
# API endpoint) and a worker Auto Scaling group. Every node runs the AMI baked by
# packaging/ami.pkr.hcl; EC2 user-data writes /etc/kubestrap/config.yaml and
# starts kubestrap, which runs kubeadm init or join by itself.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.default_tags
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix
  azs        = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  bucket_name         = coalesce(var.bucket_name, "${var.cluster_name}-kubestrap-${local.account_id}-${var.region}")
  ecr_repository_name = coalesce(var.ecr_repository_name, "${var.cluster_name}/demo-app")

  # Nodes live in the private subnets behind NAT, or in the public ones for demos.
  node_subnet_ids = var.public_nodes ? aws_subnet.public[*].id : aws_subnet.private[*].id

  # Tags of every resource (the provider's default_tags), also written into the
  # launch templates' tag specifications, which default_tags do not reach.
  default_tags = merge({
    "kubestrap.dev/cluster" = var.cluster_name
    "managed-by"            = "terraform"
  }, var.tags)

  # The control-plane endpoint: the internal NLB in front of every control
  # plane (control-plane.tf), never one instance's address. It is in the API
  # server certificate and in every kubeconfig, so it must outlive any
  # control-plane instance. DNS is case-insensitive; the agent wants it lowercase.
  api_dns_name           = lower(aws_lb.api.dns_name)
  control_plane_endpoint = "${local.api_dns_name}:6443"

  min_nodes = coalesce(var.min_nodes, var.num_nodes)
  max_nodes = coalesce(var.max_nodes, var.num_nodes)
}
