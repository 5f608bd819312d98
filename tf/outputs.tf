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

output "control_plane_instance_id" {
  description = "Control-plane instance (aws ssm start-session --target <id> with enable_ssm)."
  value       = aws_instance.control_plane.id
}

output "control_plane_private_ip" {
  description = "Fixed private address of the control plane."
  value       = local.control_plane_ip
}

output "control_plane_public_ip" {
  description = "Public address of the control plane (public_nodes only)."
  value       = one(aws_eip.control_plane[*].public_ip)
}

output "api_server_endpoint" {
  description = "API server endpoint the workers join."
  value       = local.control_plane_endpoint
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
