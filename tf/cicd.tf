# CI/CD from GitHub Actions without stored AWS keys (docs/cicd.md): GitHub's
# OIDC provider and three roles the workflows assume with
# aws-actions/configure-aws-credentials. Each trusts one GitHub environment of
# one repository, nothing else (sub = repo:<owner/repo>:environment:<env>):
#   <cluster>-github-plan    terraform plan on pull requests: read-only, plus the
#                            state lock file (S3 native locking writes <key>.tflock)
#   <cluster>-github-apply   terraform apply from main: what tf/*.tf manages, scoped
#                            to this cluster's names; cannot change the github-*
#                            roles or the OIDC provider, cannot read join info
#   <cluster>-github-deploy  the demo workflow: push to the demo ECR repository only
# Created only when github_repository is set. The roles cannot change
# themselves: a change to this file is applied by an administrator.

variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows may assume the CI roles. null: no CI/CD resources."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository looks like owner/name."
  }
}

variable "github_environment_plan" {
  description = "GitHub environment of the terraform plan job (pull requests); the plan role trusts only it."
  type        = string
  default     = "terraform-plan"
}

variable "github_environment_apply" {
  description = "GitHub environment of the terraform apply job: required reviewers, deployments from main only. The apply role trusts only it."
  type        = string
  default     = "production"
}

variable "github_environment_deploy" {
  description = "GitHub environment of the demo-app deploy job; the deploy role trusts only it."
  type        = string
  default     = "demo"
}

variable "create_github_oidc_provider" {
  description = "Create the IAM OIDC provider for token.actions.githubusercontent.com. false when the account already has one (there can be only one per URL): it is then looked up."
  type        = bool
  default     = true
}

variable "tf_state_bucket" {
  description = "S3 bucket of the Terraform state (the backend's bucket; created by hand, see docs/cicd.md). Required with github_repository."
  type        = string
  default     = null
}

variable "tf_state_key" {
  description = "Key of the Terraform state in tf_state_bucket (the backend's key); the lock file is <key>.tflock."
  type        = string
  default     = "kubestrap/terraform.tfstate"
}

locals {
  github_enabled = var.github_repository != null
  github_host    = "token.actions.githubusercontent.com"
  iam_arn        = "arn:${local.partition}:iam::${local.account_id}"

  github_oidc_provider_arn = !local.github_enabled ? null : (
    var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn
  )

  # The only subject each role trusts: a job of this repository bound to this environment.
  github_subjects = {
    plan   = "repo:${coalesce(var.github_repository, "-/-")}:environment:${var.github_environment_plan}"
    apply  = "repo:${coalesce(var.github_repository, "-/-")}:environment:${var.github_environment_apply}"
    deploy = "repo:${coalesce(var.github_repository, "-/-")}:environment:${var.github_environment_deploy}"
  }

  # Template variables of the CI policies (templates/github-*.json.tftpl).
  github_policy_vars = {
    cluster                 = var.cluster_name
    region                  = var.region
    partition               = local.partition
    account_id              = local.account_id
    dns_suffix              = local.dns_suffix
    iam_arn                 = local.iam_arn
    state_bucket_arn        = "arn:${local.partition}:s3:::${coalesce(var.tf_state_bucket, "-")}"
    state_object_arn        = "arn:${local.partition}:s3:::${coalesce(var.tf_state_bucket, "-")}/${var.tf_state_key}"
    state_lock_arn          = "arn:${local.partition}:s3:::${coalesce(var.tf_state_bucket, "-")}/${var.tf_state_key}.tflock"
    cluster_bucket_arn      = "arn:${local.partition}:s3:::${local.bucket_name}"
    ecr_repository_arn      = "arn:${local.partition}:ecr:${var.region}:${local.account_id}:repository/${local.ecr_repository_name}"
    kms_key_arns            = "arn:${local.partition}:kms:${var.region}:${local.account_id}:key/*"
    kms_alias_arn           = "arn:${local.partition}:kms:${var.region}:${local.account_id}:alias/${var.cluster_name}-kubestrap"
    node_role_arns          = "${local.iam_arn}:role/${var.cluster_name}-kubestrap-*"
    node_profile_arns       = "${local.iam_arn}:instance-profile/${var.cluster_name}-kubestrap-*"
    github_role_arns        = "${local.iam_arn}:role/${var.cluster_name}-github-*"
    github_oidc_arn         = "${local.iam_arn}:oidc-provider/${local.github_host}"
    worker_group_arn        = local.worker_group_arn
    control_plane_group_arn = local.control_plane_group_arn
    api_lb_arns = [
      "arn:${local.partition}:elasticloadbalancing:${var.region}:${local.account_id}:loadbalancer/net/${var.cluster_name}-api/*",
      "arn:${local.partition}:elasticloadbalancing:${var.region}:${local.account_id}:listener/net/${var.cluster_name}-api/*",
      "arn:${local.partition}:elasticloadbalancing:${var.region}:${local.account_id}:targetgroup/${var.cluster_name}-api/*",
    ]
    ssm_policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
  }

  github_roles = !local.github_enabled ? {} : {
    plan   = "terraform plan of ${var.cluster_name} from GitHub Actions (read-only)"
    apply  = "terraform apply of ${var.cluster_name} from GitHub Actions"
    deploy = "demo-app image push of ${var.cluster_name} from GitHub Actions"
  }

  # The inline policies: the plan role reads; the apply role reads and writes;
  # the deploy role pushes to the demo repository.
  github_role_policies = !local.github_enabled ? {} : {
    plan-read    = { role = "plan", name = "kubestrap-ci-read", template = "github-ci-read-policy.json.tftpl" }
    apply-read   = { role = "apply", name = "kubestrap-ci-read", template = "github-ci-read-policy.json.tftpl" }
    apply-write  = { role = "apply", name = "kubestrap-ci-apply", template = "github-ci-apply-policy.json.tftpl" }
    deploy-write = { role = "deploy", name = "kubestrap-ci-push", template = "github-ci-deploy-policy.json.tftpl" }
  }
}

check "github_state_bucket" {
  assert {
    condition     = !local.github_enabled || var.tf_state_bucket != null
    error_message = "github_repository is set: tf_state_bucket must name the state bucket of the S3 backend."
  }
}

resource "aws_iam_openid_connect_provider" "github" {
  count = local.github_enabled && var.create_github_oidc_provider ? 1 : 0

  url            = "https://${local.github_host}"
  client_id_list = ["sts.amazonaws.com"]
  # GitHub's published certificate thumbprints; IAM no longer checks them for
  # this provider, older provider versions still require the argument.
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = local.github_enabled && !var.create_github_oidc_provider ? 1 : 0

  url = "https://${local.github_host}"
}

resource "aws_iam_role" "github" {
  for_each = local.github_roles

  name                 = "${var.cluster_name}-github-${each.key}"
  description          = each.value
  max_session_duration = 3600
  assume_role_policy = templatefile("${path.module}/templates/github-oidc-trust.json.tftpl", {
    provider_arn = local.github_oidc_provider_arn
    host         = local.github_host
    subject      = local.github_subjects[each.key]
  })
}

resource "aws_iam_role_policy" "github" {
  for_each = local.github_role_policies

  name   = each.value.name
  role   = aws_iam_role.github[each.value.role].id
  policy = templatefile("${path.module}/templates/${each.value.template}", local.github_policy_vars)
}

output "github_oidc_provider_arn" {
  description = "IAM OIDC provider of GitHub Actions (null without github_repository)."
  value       = local.github_oidc_provider_arn
}

output "github_plan_role_arn" {
  description = "Role of the terraform plan job: repository variable AWS_PLAN_ROLE_ARN."
  value       = try(aws_iam_role.github["plan"].arn, null)
}

output "github_apply_role_arn" {
  description = "Role of the terraform apply job: repository variable AWS_APPLY_ROLE_ARN."
  value       = try(aws_iam_role.github["apply"].arn, null)
}

output "github_deploy_role_arn" {
  description = "Role of the demo-app deploy job: repository variable AWS_DEPLOY_ROLE_ARN."
  value       = try(aws_iam_role.github["deploy"].arn, null)
}
