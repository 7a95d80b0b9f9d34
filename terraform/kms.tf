# Customer-managed keys, rotated yearly:
#   main    — logs, SNS, RDS storage and Performance Insights, ElastiCache, ECR;
#   secrets — Secrets Manager (RDS master password, Redis URL, database URL,
#             stream token secret);
#   models  — the model bucket.
# Separate keys keep the task roles narrow: the execution role may decrypt
# only through Secrets Manager with the secrets key, the task role only
# through S3 with the models key.

data "aws_iam_policy_document" "kms_main" {
  #checkov:skip=CKV_AWS_111:Key policy: Resource "*" means only the key the policy is attached to.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" means only the key the policy is attached to.
  #checkov:skip=CKV_AWS_109:Key policy: the account root keeps administration of its own key (AWS's default), so the key never becomes unmanageable; IAM policies decide who in the account may use it.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # The calls CloudWatch Logs makes with a symmetric key, spelled out (AWS's
  # sample policy grants the same through Encrypt*, ReEncrypt*, … wildcards).
  statement {
    sid = "CloudWatchLogs"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsToEncryptedSns"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "main" {
  description             = "${local.name}: logs, alarms, RDS, ElastiCache, ECR, schedules"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_main.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.name}-main"
  target_key_id = aws_kms_key.main.key_id
}

data "aws_iam_policy_document" "kms_account_only" {
  #checkov:skip=CKV_AWS_111:Key policy: Resource "*" means only the key the policy is attached to.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" means only the key the policy is attached to.
  #checkov:skip=CKV_AWS_109:Key policy: the account root keeps administration of its own key (AWS's default), so the key never becomes unmanageable; IAM policies decide who in the account may use it.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "secrets" {
  description             = "${local.name}: Secrets Manager secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_only.json
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${local.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

resource "aws_kms_key" "models" {
  description             = "${local.name}: model bucket"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_only.json
}

resource "aws_kms_alias" "models" {
  name          = "alias/${local.name}-models"
  target_key_id = aws_kms_key.models.key_id
}
