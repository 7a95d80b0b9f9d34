# The release workflow's AWS access: GitHub's OIDC tokens, no long-lived keys.
# A workflow run for a tag of var.github_repository matching
# var.release_tag_pattern may assume the deploy role; the role may push to this
# stack's ECR repository, register task definitions, run the migrate task,
# deploy the gateways through CodeDeploy and move the processor service to a
# new task definition. Nothing else: no Terraform, no IAM beyond passing the
# two task roles to ECS, no other service or repository.

locals {
  github_deploy      = var.github_repository != null
  github_oidc_url    = "token.actions.githubusercontent.com"
  ecs_task_def_arn   = "arn:${local.partition}:ecs:${local.region}:${local.account_id}:task-definition"
  codedeploy_arn_pfx = "arn:${local.partition}:codedeploy:${local.region}:${local.account_id}"
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = local.github_deploy && var.github_oidc_provider_arn == null ? 1 : 0
  url            = "https://${local.github_oidc_url}"
  client_id_list = ["sts.amazonaws.com"]
}

locals {
  github_oidc_provider_arn = coalesce(var.github_oidc_provider_arn, one(aws_iam_openid_connect_provider.github[*].arn), "none")
}

data "aws_iam_policy_document" "github_deploy_assume" {
  count = local.github_deploy ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
    # Tag pushes of this one repository only: not branches, pull requests or forks.
    condition {
      test     = "StringLike"
      variable = "${local.github_oidc_url}:sub"
      values   = ["repo:${var.github_repository}:ref:refs/tags/${var.release_tag_pattern}"]
    }
  }
}

resource "aws_iam_role" "github_deploy" {
  count                = local.github_deploy ? 1 : 0
  name                 = "${local.name}-github-deploy"
  description          = "Release workflow of ${var.github_repository}: push the image, migrate, deploy"
  assume_role_policy   = data.aws_iam_policy_document.github_deploy_assume[0].json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "github_deploy" {
  count = local.github_deploy ? 1 : 0

  statement {
    sid = "EcrAuth"
    # GetAuthorizationToken has no resource-level permissions.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PushThisRepository"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:DescribeImages",
    ]
    resources = [aws_ecr_repository.main.arn]
  }
  statement {
    sid = "TaskDefinitions"
    # RegisterTaskDefinition and DescribeTaskDefinition have no resource-level
    # permissions; what a registered definition may do is bounded by the roles
    # it may pass (PassTaskRoles below).
    actions   = ["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }
  statement {
    sid       = "RunMigrate"
    actions   = ["ecs:RunTask"]
    resources = ["${local.ecs_task_def_arn}/${aws_ecs_task_definition.migrate.family}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.main.arn]
    }
  }
  statement {
    sid       = "WatchTasks"
    actions   = ["ecs:DescribeTasks"]
    resources = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.main.name}/*"]
  }
  statement {
    sid       = "Services"
    actions   = ["ecs:DescribeServices"]
    resources = [aws_ecs_service.gateway.id, aws_ecs_service.processor.id]
  }
  statement {
    sid       = "RollProcessors"
    actions   = ["ecs:UpdateService"]
    resources = [aws_ecs_service.processor.id]
  }
  statement {
    sid       = "PassTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
  statement {
    sid = "DeployGateways"
    actions = [
      "codedeploy:CreateDeployment", "codedeploy:GetDeployment", "codedeploy:StopDeployment",
      "codedeploy:GetDeploymentGroup",
    ]
    resources = [aws_codedeploy_deployment_group.gateway.arn]
  }
  statement {
    sid       = "GatewayRevisions"
    actions   = ["codedeploy:RegisterApplicationRevision", "codedeploy:GetApplicationRevision", "codedeploy:GetApplication"]
    resources = ["${local.codedeploy_arn_pfx}:application:${aws_codedeploy_app.gateway.name}"]
  }
  statement {
    sid       = "DeploymentConfigs"
    actions   = ["codedeploy:GetDeploymentConfig"]
    resources = ["${local.codedeploy_arn_pfx}:deploymentconfig:*"]
  }
  statement {
    sid       = "ReadMigrateLogs"
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = ["${aws_cloudwatch_log_group.tasks["migrate"].arn}:*"]
  }
}

resource "aws_iam_role_policy" "github_deploy" {
  count  = local.github_deploy ? 1 : 0
  name   = "release-cartpulse"
  role   = aws_iam_role.github_deploy[0].id
  policy = data.aws_iam_policy_document.github_deploy[0].json
}
