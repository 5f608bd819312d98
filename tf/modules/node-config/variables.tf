variable "cluster" {
  description = "Cluster name; also the S3 key prefix of the join info."
  type        = string
}

variable "role" {
  description = "control-plane or worker."
  type        = string

  validation {
    condition     = contains(["control-plane", "worker"], var.role)
    error_message = "The role must be \"control-plane\" or \"worker\"."
  }
}

variable "bucket" {
  description = "S3 bucket holding <cluster>/join.json."
  type        = string
}

variable "region" {
  description = "AWS region of the bucket and the nodes (saves an IMDS lookup)."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes version kubeadm installs, such as v1.37.2 (must match the AMI's kubeadm)."
  type        = string
}

variable "control_plane_endpoint" {
  description = "host:port of the control-plane endpoint (the API load balancer), written into kubeadm's ClusterConfiguration; the same on every control plane (control plane only)."
  type        = string
  default     = ""
}

variable "cert_sans" {
  description = "Extra Subject Alternative Names for the API server certificate (control plane only)."
  type        = list(string)
  default     = []
}

variable "pod_subnet" {
  description = "Pod network CIDR (must match the CNI plugin)."
  type        = string
  default     = "10.244.0.0/16"
}

variable "service_subnet" {
  description = "Service network CIDR."
  type        = string
  default     = "10.96.0.0/12"
}

variable "kms_key_id" {
  description = "KMS key the control plane encrypts join info with (SSE-KMS); empty: the bucket default."
  type        = string
  default     = ""
}

variable "token_ttl" {
  description = "Life of each bootstrap token; join info is replaced at half-life."
  type        = string
  default     = "2h"
}

variable "poll_interval" {
  description = "Mean time between conditional GETs of join.json while a worker waits."
  type        = string
  default     = "5s"
}

variable "ecr_registry_ids" {
  description = "AWS account IDs of the ECR registries the kubelet pulls from; empty: the instance's own account."
  type        = list(string)
  default     = []
}

variable "kubelet_extra_args" {
  description = "Extra kubelet flags, as kubeadm v1beta4 args: [{ name = \"node-labels\", value = \"...\" }]."
  type        = list(object({ name = string, value = string }))
  default     = []
}

variable "environment" {
  description = "KEY=value lines for /etc/default/kubestrap (the unit's EnvironmentFile); empty on real EC2."
  type        = string
  default     = ""
}

variable "leave" {
  description = "Workers: the termination lifecycle hook the agent completes when it leaves (lifecycle_hook_name, autoscaling_group_name, heartbeat_timeout in seconds); null: no hook."
  type = object({
    lifecycle_hook_name    = string
    autoscaling_group_name = string
    heartbeat_timeout      = number
  })
  default = null
}
