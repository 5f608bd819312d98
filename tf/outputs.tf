output "cluster_name" {
  description = "Cluster name (the S3 key prefix)."
  value       = var.cluster_name
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per availability zone."
  value       = aws_subnet.public[*].id
}

output "bucket" {
  description = "Bootstrap bucket."
  value       = aws_s3_bucket.bootstrap.id
}

output "join_info_url" {
  description = "Where the control plane publishes join info and workers read it."
  value       = "s3://${aws_s3_bucket.bootstrap.id}/${var.cluster_name}/join.json"
}

output "kms_key_arn" {
  description = "KMS key encrypting the bootstrap bucket."
  value       = aws_kms_key.bootstrap.arn
}

output "ecr_repository_url" {
  description = "ECR repository for the cluster's images (docker push <url>:<tag>)."
  value       = aws_ecr_repository.app.repository_url
}

output "api_server_endpoint" {
  description = "The cluster's control-plane endpoint (host:port): the internal API load balancer, kubeadm's controlPlaneEndpoint on every control plane, and what the workers join."
  value       = local.control_plane_endpoint
}

output "api_load_balancer_dns_name" {
  description = "DNS name of the internal Network Load Balancer in front of the control planes (in the API server certificate)."
  value       = local.api_dns_name
}

output "api_target_group_arn" {
  description = "Target group of the control planes behind the API load balancer (aws elbv2 describe-target-health)."
  value       = aws_lb_target_group.api.arn
}

output "control_plane_asg_name" {
  description = "Auto Scaling group of the control planes (its instances: aws autoscaling describe-auto-scaling-groups)."
  value       = aws_autoscaling_group.control_plane.name
}

output "worker_asg_name" {
  description = "Worker Auto Scaling group (tagged for cluster-autoscaler auto-discovery)."
  value       = aws_autoscaling_group.workers.name
}

output "worker_lifecycle_hook_name" {
  description = "Termination lifecycle hook of the worker group: the hook a leaving worker completes (with worker_asg_name and its instance id)."
  value       = aws_autoscaling_lifecycle_hook.worker_termination.name
}

output "control_plane_role_arn" {
  description = "IAM role of the control plane."
  value       = aws_iam_role.control_plane.arn
}

output "worker_role_arn" {
  description = "IAM role of the workers."
  value       = aws_iam_role.worker.arn
}

output "ami_id" {
  description = "AMI the nodes run."
  value       = data.aws_ami.node.id
}
