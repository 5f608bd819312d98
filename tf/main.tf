# kubestrap cluster: a VPC across availability zones, a private SSE-KMS bucket for
# the join info, an ECR repository, least-privilege node roles, one control-plane
# instance and a worker Auto Scaling group. Every node runs the AMI baked by
# packaging/ami.pkr.hcl; EC2 user-data writes /etc/kubestrap/config.yaml and
# starts kubestrap, which runs kubeadm init or join by itself.

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({
      "kubestrap.dev/cluster" = var.cluster_name
      "managed-by"            = "terraform"
    }, var.tags)
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
  node_subnet_ids   = var.public_nodes ? aws_subnet.public[*].id : aws_subnet.private[*].id
  node_subnet_cidrs = var.public_nodes ? aws_subnet.public[*].cidr_block : aws_subnet.private[*].cidr_block

  # A fixed address for the control plane: the API server endpoint workers join
  # (and keep using) survives a replacement of the instance.
  control_plane_ip       = cidrhost(local.node_subnet_cidrs[0], 10)
  control_plane_endpoint = "${local.control_plane_ip}:6443"

  min_nodes = coalesce(var.min_nodes, var.num_nodes)
  max_nodes = coalesce(var.max_nodes, var.num_nodes)
}
