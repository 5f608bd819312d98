# The bootstrap bucket: the control plane publishes <cluster>/join.json here and
# workers read it. Private, versioned, SSE-KMS with the cluster's own key, TLS only.

resource "aws_kms_key" "bootstrap" {
  description             = "kubestrap ${var.cluster_name}: join info in s3://${local.bucket_name}"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  # No key policy here: the default one delegates to IAM, and the node roles'
  # policies (templates/*-policy.json.tftpl) allow use through S3 only.
}

resource "aws_kms_alias" "bootstrap" {
  name          = "alias/${var.cluster_name}-kubestrap"
  target_key_id = aws_kms_key.bootstrap.key_id
}

resource "aws_s3_bucket" "bootstrap" {
  bucket        = local.bucket_name
  force_destroy = var.bucket_force_destroy
}

resource "aws_s3_bucket_ownership_controls" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.bootstrap.arn
    }
    bucket_key_enabled = true
  }
}

# join.json is rewritten at every token refresh (hourly with the default TTL):
# keep old versions (with long-expired tokens) only briefly.
resource "aws_s3_bucket_lifecycle_configuration" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id

  rule {
    id     = "expire-old-join-info"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.bootstrap]
}

resource "aws_s3_bucket_policy" "bootstrap" {
  bucket = aws_s3_bucket.bootstrap.id
  policy = templatefile("${path.module}/templates/bucket-policy.json.tftpl", {
    bucket_arn  = aws_s3_bucket.bootstrap.arn
    kms_key_arn = aws_kms_key.bootstrap.arn
  })

  depends_on = [aws_s3_bucket_public_access_block.bootstrap]
}
