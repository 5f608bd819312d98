# VPC with one public and one private subnet per availability zone. Private
# subnets reach the internet (package mirrors, registry.k8s.io, ECR) through NAT;
# S3 traffic stays inside the VPC through a gateway endpoint.

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.cluster_name }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = { Name = var.cluster_name }
}

# 10.0.101.0/24, 10.0.102.0/24, ... with the default vpc_cidr.
resource "aws_subnet" "public" {
  count = length(local.azs)

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, 101 + count.index)
  map_public_ip_on_launch = var.public_nodes

  tags = {
    Name                     = "${var.cluster_name}-public-${local.azs[count.index]}"
    "kubernetes.io/role/elb" = "1"
  }
}

# 10.0.1.0/24, 10.0.2.0/24, ... with the default vpc_cidr: the nodes and the
# control-plane load balancer (unless public_nodes).
resource "aws_subnet" "private" {
  count = length(local.azs)

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 1 + count.index)

  tags = {
    Name                              = "${var.cluster_name}-private-${local.azs[count.index]}"
    "kubernetes.io/role/internal-elb" = "1"
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = length(local.azs)

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

locals {
  nat_gateway_count = var.public_nodes ? 0 : (var.single_nat_gateway ? 1 : length(local.azs))
}

resource "aws_eip" "nat" {
  count = local.nat_gateway_count

  domain = "vpc"

  tags = { Name = "${var.cluster_name}-nat-${local.azs[count.index]}" }
}

resource "aws_nat_gateway" "this" {
  count = local.nat_gateway_count

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id

  tags = { Name = "${var.cluster_name}-${local.azs[count.index]}" }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "private" {
  count = length(local.azs)

  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-private-${local.azs[count.index]}" }
}

resource "aws_route" "private_nat" {
  count = local.nat_gateway_count == 0 ? 0 : length(local.azs)

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[min(count.index, local.nat_gateway_count - 1)].id
}

resource "aws_route_table_association" "private" {
  count = length(local.azs)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

data "aws_vpc_endpoint_service" "s3" {
  service      = "s3"
  service_type = "Gateway"
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = data.aws_vpc_endpoint_service.s3.service_name
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat([aws_route_table.public.id], aws_route_table.private[*].id)

  tags = { Name = "${var.cluster_name}-s3" }
}

# --- Security groups ----------------------------------------------------------
# nodes:         every node; node-to-node traffic (pod network, CoreDNS, metrics)
# control_plane: the control planes; API server from the VPC (the endpoint's load
#                balancer), the nodes and admins; etcd and kubelet between them
# workers:       the workers; kubelet from the control plane, NodePorts

resource "aws_security_group" "nodes" {
  name        = "${var.cluster_name}-nodes"
  description = "Every node of ${var.cluster_name}: node-to-node traffic"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-nodes" }
}

resource "aws_security_group" "control_plane" {
  name        = "${var.cluster_name}-control-plane"
  description = "Control plane of ${var.cluster_name}: API server"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-control-plane" }
}

resource "aws_security_group" "workers" {
  name        = "${var.cluster_name}-workers"
  description = "Workers of ${var.cluster_name}: kubelet and NodePorts"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.cluster_name}-workers" }
}

# The pod network (VXLAN, IP-in-IP or native routing, depending on the CNI
# plugin), kubelet-to-kubelet and pod-to-pod traffic between nodes.
resource "aws_vpc_security_group_ingress_rule" "node_to_node" {
  security_group_id            = aws_security_group.nodes.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "-1"
  description                  = "Node to node (pod network)"
}

resource "aws_vpc_security_group_ingress_rule" "api_from_nodes" {
  security_group_id            = aws_security_group.control_plane.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 6443
  to_port                      = 6443
  description                  = "Kubernetes API server from the nodes"
}

# The endpoint's load balancer forwards (and health-checks) from its own
# addresses in the node subnets: client IP preservation is off (control-plane.tf).
resource "aws_vpc_security_group_ingress_rule" "api_from_vpc" {
  security_group_id = aws_security_group.control_plane.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 6443
  to_port           = 6443
  description       = "Kubernetes API server from the VPC (the API load balancer)"
}

resource "aws_vpc_security_group_ingress_rule" "api_from_admins" {
  for_each = toset(var.api_allowed_cidrs)

  security_group_id = aws_security_group.control_plane.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6443
  to_port           = 6443
  description       = "Kubernetes API server from ${each.value}"
}

resource "aws_vpc_security_group_ingress_rule" "etcd_between_control_planes" {
  security_group_id            = aws_security_group.control_plane.id
  referenced_security_group_id = aws_security_group.control_plane.id
  ip_protocol                  = "tcp"
  from_port                    = 2379
  to_port                      = 2380
  description                  = "etcd between control-plane nodes"
}

resource "aws_vpc_security_group_ingress_rule" "kubelet_between_control_planes" {
  security_group_id            = aws_security_group.control_plane.id
  referenced_security_group_id = aws_security_group.control_plane.id
  ip_protocol                  = "tcp"
  from_port                    = 10250
  to_port                      = 10250
  description                  = "kubelet API between control-plane nodes (logs, exec, metrics)"
}

resource "aws_vpc_security_group_ingress_rule" "kubelet_from_control_plane" {
  security_group_id            = aws_security_group.workers.id
  referenced_security_group_id = aws_security_group.control_plane.id
  ip_protocol                  = "tcp"
  from_port                    = 10250
  to_port                      = 10250
  description                  = "kubelet API from the control plane (logs, exec, metrics)"
}

resource "aws_vpc_security_group_ingress_rule" "nodeports_from_vpc" {
  security_group_id = aws_security_group.workers.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 30000
  to_port           = 32767
  description       = "NodePort services from the VPC (load balancers)"
}

resource "aws_vpc_security_group_ingress_rule" "nodeports_from_allowed" {
  for_each = toset(var.nodeport_allowed_cidrs)

  security_group_id = aws_security_group.workers.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 30000
  to_port           = 32767
  description       = "NodePort services from ${each.value}"
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.ssh_allowed_cidrs)

  security_group_id = aws_security_group.nodes.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  description       = "SSH from ${each.value}"
}

# Nodes reach AWS APIs, package mirrors and image registries.
resource "aws_vpc_security_group_egress_rule" "nodes_all" {
  security_group_id = aws_security_group.nodes.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "All outbound"
}
