# Inputs of the kubestrap cluster. Only region is required; see
# terraform.tfvars.example and docs/deploy.md.

variable "region" {
  description = "AWS region of the cluster."
  type        = string
}

variable "cluster_name" {
  description = "Cluster name: the S3 key prefix of the join info, and the prefix of every resource name. Lowercase letters, digits and '-'."
  type        = string
  default     = "demo"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,22}[a-z0-9])?$", var.cluster_name))
    error_message = "cluster_name must be 1-24 lowercase letters, digits and '-', starting and ending with a letter or digit (it goes into the bucket name)."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version kubeadm installs; must match the kubeadm baked into the AMI (packaging/ami.pkr.hcl)."
  type        = string
  default     = "v1.37.2"

  validation {
    condition     = can(regex("^v1\\.[0-9]+\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version looks like v1.37.2."
  }
}

# --- Node image ---------------------------------------------------------------

variable "ami_id" {
  description = "AMI of the nodes. Default: the newest AMI named like ami_name_pattern owned by ami_owners (built by packaging/ami.pkr.hcl)."
  type        = string
  default     = null
}

variable "ami_name_pattern" {
  description = "Name pattern of the node AMI when ami_id is not set."
  type        = string
  default     = "kubestrap-k8s-v1.37-*"
}

variable "ami_owners" {
  description = "Owners of the node AMI when ami_id is not set."
  type        = list(string)
  default     = ["self"]
}

# --- Nodes --------------------------------------------------------------------

variable "num_nodes" {
  description = "Number of workers the Auto Scaling group starts with. With min_nodes and max_nodes left unset it also fixes the size; with a wider range, cluster-autoscaler owns the size."
  type        = number
  default     = 2

  validation {
    condition     = var.num_nodes >= 0
    error_message = "num_nodes must not be negative."
  }
}

variable "min_nodes" {
  description = "Minimum size of the worker group (default: num_nodes)."
  type        = number
  default     = null
}

variable "max_nodes" {
  description = "Maximum size of the worker group (default: num_nodes). Raise it for cluster-autoscaler."
  type        = number
  default     = null
}

variable "control_plane_count" {
  description = "Number of control-plane instances (1, 3 or 5), behind the internal load balancer that is the cluster's API endpoint. An odd number: etcd needs a majority. Raise it on a running cluster to add control planes; never lower it (the agent does not remove etcd members yet)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 3, 5], var.control_plane_count)
    error_message = "control_plane_count must be 1, 3 or 5: etcd needs a majority of its members, so an even count adds a machine without surviving one more loss."
  }
}

variable "control_plane_instance_type" {
  description = "Instance type of the control plane (kubeadm needs at least 2 vCPUs and 2 GiB)."
  type        = string
  default     = "t3.medium"
}

variable "worker_instance_type" {
  description = "Instance type of the workers."
  type        = string
  default     = "t3.medium"
}

variable "worker_spot" {
  description = "Run the workers as Spot Instances: a mixed instances policy over worker_instance_types (on_demand_base_capacity on-demand, the rest Spot) and capacity rebalance."
  type        = bool
  default     = false
}

variable "worker_instance_types" {
  description = "Instance types of the workers with worker_spot (several similar sizes give Spot more pools). Empty: [worker_instance_type]. Ignored without worker_spot."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.worker_instance_types) == length(distinct(var.worker_instance_types))
    error_message = "worker_instance_types must not repeat a type."
  }
}

variable "on_demand_base_capacity" {
  description = "With worker_spot: the first this many workers are on-demand; everything above is Spot."
  type        = number
  default     = 0

  validation {
    condition     = var.on_demand_base_capacity >= 0 && floor(var.on_demand_base_capacity) == var.on_demand_base_capacity
    error_message = "on_demand_base_capacity must be a whole number, 0 or more."
  }
}

variable "spot_allocation_strategy" {
  description = "With worker_spot: how Auto Scaling picks Spot pools."
  type        = string
  default     = "price-capacity-optimized"

  validation {
    condition     = contains(["price-capacity-optimized", "capacity-optimized", "capacity-optimized-prioritized", "lowest-price"], var.spot_allocation_strategy)
    error_message = "spot_allocation_strategy is one of price-capacity-optimized, capacity-optimized, capacity-optimized-prioritized, lowest-price."
  }
}

variable "worker_termination_heartbeat_timeout" {
  description = "Seconds the worker group's termination lifecycle hook holds a terminating worker (Terminating:Wait) before Auto Scaling goes on by itself (CONTINUE); a heartbeat from the node extends it."
  type        = number
  default     = 300

  validation {
    condition     = var.worker_termination_heartbeat_timeout >= 30 && var.worker_termination_heartbeat_timeout <= 7200
    error_message = "worker_termination_heartbeat_timeout must be between 30 and 7200 seconds (the range Auto Scaling accepts)."
  }
}

variable "root_volume_size" {
  description = "Root volume size of every node, in GiB (encrypted gp3)."
  type        = number
  default     = 30
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH to the nodes; null for none (prefer SSM with enable_ssm)."
  type        = string
  default     = null
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the node roles so operators can use Session Manager instead of SSH."
  type        = bool
  default     = false
}

# --- Kubernetes ---------------------------------------------------------------

variable "pod_subnet" {
  description = "Pod network CIDR; must match the CNI plugin and not overlap vpc_cidr."
  type        = string
  default     = "10.244.0.0/16"
}

variable "service_subnet" {
  description = "Service network CIDR; must not overlap vpc_cidr or pod_subnet."
  type        = string
  default     = "10.96.0.0/12"
}

variable "api_server_cert_sans" {
  description = "Extra names or addresses in the API server certificate (for example your own DNS name for the API load balancer); the load balancer's DNS name is always in."
  type        = list(string)
  default     = []
}

variable "token_ttl" {
  description = "Life of each bootstrap token the control plane publishes; join info is replaced at half-life."
  type        = string
  default     = "2h"
}

variable "worker_node_labels" {
  description = "Labels the workers register with (kubelet --node-labels)."
  type        = map(string)
  default     = {}
}

# --- Network ------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC."
  type        = string
  default     = "10.0.0.0/16"
}

variable "az_count" {
  description = "Number of availability zones for subnets and the worker group (at least 2)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2
    error_message = "az_count must be at least 2 so the workers span availability zones."
  }
}

variable "public_nodes" {
  description = "Put the nodes in the public subnets with public IPs (no NAT gateway). For demos only; the default keeps nodes private behind NAT. The API load balancer stays internal either way."
  type        = bool
  default     = false
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) rather than one per availability zone (survives the loss of a zone)."
  type        = bool
  default     = true
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the control-plane instances' API port (6443) directly, e.g. an admin network or VPN. Nodes always can. The internal API load balancer is reachable from wherever the VPC is routed (it forwards from its own VPC addresses, which the control planes admit)."
  type        = list(string)
  default     = []
}

variable "ssh_allowed_cidrs" {
  description = "CIDRs allowed to SSH (22) to the nodes."
  type        = list(string)
  default     = []
}

variable "nodeport_allowed_cidrs" {
  description = "CIDRs allowed to reach NodePort services (30000-32767) on the workers, e.g. for the demo app. The VPC always can (for load balancers)."
  type        = list(string)
  default     = []
}

# --- Storage ------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the bootstrap bucket. Default: <cluster_name>-kubestrap-<account id>-<region>."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy delete the bootstrap bucket with its objects and versions."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  description = "Days old versions of the join info are kept (it is rewritten at every token refresh)."
  type        = number
  default     = 7
}

variable "ecr_repository_name" {
  description = "Name of the ECR repository for the cluster's images. Default: <cluster_name>/demo-app."
  type        = string
  default     = null
}

variable "ecr_extra_repository_arns" {
  description = "Further ECR repositories the nodes may pull from."
  type        = list(string)
  default     = []
}

variable "ecr_force_delete" {
  description = "Let terraform destroy delete the ECR repository with its images."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
