# Node roles and instance profiles. No IAM users and no access keys: nodes get
# short-lived credentials from their instance profile through IMDSv2.
# The policy documents are templates (templates/*.json.tftpl) so the deploy tests
# render exactly these documents and apply them in moto_server.
#   control plane: read/write <cluster>/* in the bucket
#   workers:       read <cluster>/join.json only
#   both:          the bucket key through S3 only, ECR pull
#   leaving:       see worker_leave and control_plane_reconciler below

locals {
  ecr_repository_arns = concat([aws_ecr_repository.app.arn], var.ecr_extra_repository_arns)

  node_policy_vars = {
    bucket_arn          = aws_s3_bucket.bootstrap.arn
    cluster             = var.cluster_name
    kms_key_arn         = aws_kms_key.bootstrap.arn
    kms_via_service     = "s3.${var.region}.${local.dns_suffix}"
    ecr_repository_arns = local.ecr_repository_arns
  }

  assume_role_policy = templatefile("${path.module}/templates/ec2-assume-role.json.tftpl", {
    ec2_service_principal = "ec2.${local.dns_suffix}"
  })
}

resource "aws_iam_role" "control_plane" {
  name               = "${var.cluster_name}-kubestrap-control-plane"
  description        = "kubestrap control plane of ${var.cluster_name}"
  assume_role_policy = local.assume_role_policy
}

resource "aws_iam_role_policy" "control_plane" {
  name   = "kubestrap"
  role   = aws_iam_role.control_plane.id
  policy = templatefile("${path.module}/templates/control-plane-policy.json.tftpl", local.node_policy_vars)
}

resource "aws_iam_instance_profile" "control_plane" {
  name = "${var.cluster_name}-kubestrap-control-plane"
  role = aws_iam_role.control_plane.name
}

resource "aws_iam_role" "worker" {
  name               = "${var.cluster_name}-kubestrap-worker"
  description        = "kubestrap workers of ${var.cluster_name}"
  assume_role_policy = local.assume_role_policy
}

resource "aws_iam_role_policy" "worker" {
  name   = "kubestrap"
  role   = aws_iam_role.worker.id
  policy = templatefile("${path.module}/templates/worker-policy.json.tftpl", local.node_policy_vars)
}

resource "aws_iam_instance_profile" "worker" {
  name = "${var.cluster_name}-kubestrap-worker"
  role = aws_iam_role.worker.name
}

# Leaving the cluster (issue 10), each in a policy of its own so the node
# policies above keep their template variables:
#   workers:       complete and heartbeat lifecycle actions of the worker group
#                  only (templates/worker-leave-policy.json.tftpl)
#   control plane: ec2:DescribeInstances, to confirm with EC2 that the instance
#                  of a Node is gone before deleting the Node
#                  (templates/control-plane-reconciler-policy.json.tftpl)
resource "aws_iam_role_policy" "worker_leave" {
  name = "kubestrap-leave"
  role = aws_iam_role.worker.id
  policy = templatefile("${path.module}/templates/worker-leave-policy.json.tftpl", {
    worker_group_arn = local.worker_group_arn
  })
}

resource "aws_iam_role_policy" "control_plane_reconciler" {
  name   = "kubestrap-reconciler"
  role   = aws_iam_role.control_plane.id
  policy = templatefile("${path.module}/templates/control-plane-reconciler-policy.json.tftpl", {})
}

# Optional shell access through Session Manager (no SSH keys, no open port 22).
resource "aws_iam_role_policy_attachment" "ssm" {
  for_each = var.enable_ssm ? {
    control_plane = aws_iam_role.control_plane.name
    worker        = aws_iam_role.worker.name
  } : {}

  role       = each.value
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}
