# Blue/green deployments of the gateways with CodeDeploy (ECS):
#   1. the release workflow registers a task definition with the new image
#      and creates a deployment (AppSpec: .github/workflows/release.yml);
#   2. CodeDeploy starts a replacement task set in the target group that is
#      not live (alb.tf: gateway / gateway_green) and routes the test
#      listener to it;
#   3. the AfterAllowTestTraffic hook (below) checks /readyz of every
#      replacement task and posts one event through the test listener;
#   4. production traffic moves (var.gateway_deployment_config: at once, or
#      canary/linear steps) while the SLO alarms watch;
#   5. the old tasks keep running var.blue_termination_wait_minutes, then
#      stop (deregistration delay and stop timeout: var.drain_seconds).
# A failed hook, a failed deployment or an alarm in ALARM rolls back: traffic
# returns to the original tasks, which are still running.

resource "aws_codedeploy_app" "gateway" {
  compute_platform = "ECS"
  name             = "${local.name}-gateway"
}

data "aws_iam_policy_document" "codedeploy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codedeploy.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "codedeploy" {
  name               = "${local.name}-codedeploy"
  assume_role_policy = data.aws_iam_policy_document.codedeploy_assume.json
}

# AWS's policy for CodeDeploy on ECS: task sets, listeners and rules, the
# alarms, invoking Lambda functions named CodeDeployHook_*, passing the task
# roles to ECS.
resource "aws_iam_role_policy_attachment" "codedeploy" {
  role       = aws_iam_role.codedeploy.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AWSCodeDeployRoleForECS"
}

locals {
  # The SLO alarms (monitoring.tf) that stop and roll back a deployment.
  deployment_rollback_alarms = [
    aws_cloudwatch_metric_alarm.alb_5xx.alarm_name,
    aws_cloudwatch_metric_alarm.alb_p99.alarm_name,
  ]
}

resource "aws_codedeploy_deployment_group" "gateway" {
  app_name               = aws_codedeploy_app.gateway.name
  deployment_group_name  = "${local.name}-gateway"
  service_role_arn       = aws_iam_role.codedeploy.arn
  deployment_config_name = var.gateway_deployment_config

  deployment_style {
    deployment_option = "WITH_TRAFFIC_CONTROL"
    deployment_type   = "BLUE_GREEN"
  }

  auto_rollback_configuration {
    enabled = true
    events  = ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]
  }

  alarm_configuration {
    enabled = true
    alarms  = local.deployment_rollback_alarms
  }

  blue_green_deployment_config {
    deployment_ready_option {
      action_on_timeout = "CONTINUE_DEPLOYMENT"
    }
    terminate_blue_instances_on_deployment_success {
      action                           = "TERMINATE"
      termination_wait_time_in_minutes = var.blue_termination_wait_minutes
    }
  }

  ecs_service {
    cluster_name = aws_ecs_cluster.main.name
    service_name = aws_ecs_service.gateway.name
  }

  load_balancer_info {
    target_group_pair_info {
      prod_traffic_route {
        listener_arns = [aws_lb_listener.https.arn]
      }
      test_traffic_route {
        listener_arns = [aws_lb_listener.test.arn]
      }
      target_group {
        name = aws_lb_target_group.gateway.name
      }
      target_group {
        name = aws_lb_target_group.gateway_green.name
      }
    }
  }

  depends_on = [aws_iam_role_policy_attachment.codedeploy]
}

# --- the AfterAllowTestTraffic smoke-check hook ----------------------------------
#
# terraform/deploy-hooks/gateway_smoke.py. Its name starts with CodeDeployHook_
# because that is what AWSCodeDeployRoleForECS may invoke. The ingest key it
# posts with lives in the secret below; Terraform creates it empty, and the
# operator stores a key of its own once (docs/operations.md, "Release and
# rollback"):
#   cartpulse keys create --name deploy-smoke --scope ingest

resource "aws_secretsmanager_secret" "deploy_smoke_ingest_key" {
  #checkov:skip=CKV2_AWS_57:An API key of the service itself (cartpulse keys create), not a credential AWS can rotate; revoke and replace it with cartpulse keys revoke/create and put-secret-value.
  name                    = "${local.name}/deploy-smoke-ingest-key"
  description             = "cartpulse ingest key the blue/green smoke-check hook posts one event with"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = 7
}

data "archive_file" "gateway_smoke" {
  type        = "zip"
  source_file = "${path.module}/deploy-hooks/gateway_smoke.py"
  output_path = "${path.module}/.terraform/gateway_smoke.zip"
}

resource "aws_cloudwatch_log_group" "gateway_smoke" {
  name              = "/aws/lambda/CodeDeployHook_${local.name}-gateway-smoke"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "gateway_smoke" {
  name               = "${local.name}-gateway-smoke"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "gateway_smoke" {
  statement {
    sid       = "ReportHookStatus"
    actions   = ["codedeploy:PutLifecycleEventHookExecutionStatus"]
    resources = [aws_codedeploy_deployment_group.gateway.arn]
  }
  statement {
    sid = "FindReplacementTasks"
    # Describe* of Elastic Load Balancing has no resource-level permissions.
    actions   = ["elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeTargetHealth"]
    resources = ["*"]
  }
  statement {
    sid       = "ReadSmokeKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.deploy_smoke_ingest_key.arn]
  }
  statement {
    sid       = "DecryptSmokeKeyViaSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.secrets.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:SecretARN"
      values   = [aws_secretsmanager_secret.deploy_smoke_ingest_key.arn]
    }
  }
  statement {
    sid       = "DecryptEnvironment"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.gateway_smoke.arn}:*"]
  }
  # Lambda in a VPC: its network interfaces, only in the private subnets and
  # with the hook's security group.
  statement {
    sid = "DescribeNetworkInterfaces"
    # No resource-level permissions for Describe*.
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }
  statement {
    sid     = "CreateNetworkInterfaces"
    actions = ["ec2:CreateNetworkInterface"]
    resources = concat(
      ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*", aws_security_group.deploy_hook.arn],
      aws_subnet.private[*].arn,
    )
  }
  statement {
    sid       = "ManageNetworkInterfaces"
    actions   = ["ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*"]
    condition {
      test     = "ArnEquals"
      variable = "ec2:Subnet"
      values   = aws_subnet.private[*].arn
    }
  }
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "gateway_smoke" {
  name   = "gateway-smoke-hook"
  role   = aws_iam_role.gateway_smoke.id
  policy = data.aws_iam_policy_document.gateway_smoke.json
}

resource "aws_lambda_function" "gateway_smoke" {
  #checkov:skip=CKV_AWS_116:Invoked synchronously by CodeDeploy, which records a failed or timed-out hook and rolls the deployment back; a dead-letter queue would hold nothing to act on.
  #checkov:skip=CKV_AWS_272:The code is one file of this repository, zipped by Terraform at apply time; code signing would need a signing profile and a build step this stack does not have.
  function_name                  = "CodeDeployHook_${local.name}-gateway-smoke"
  description                    = "Blue/green AfterAllowTestTraffic: /readyz of the replacement gateways, one event through the test listener"
  role                           = aws_iam_role.gateway_smoke.arn
  runtime                        = "python3.13"
  handler                        = "gateway_smoke.handler"
  filename                       = data.archive_file.gateway_smoke.output_path
  source_code_hash               = data.archive_file.gateway_smoke.output_base64sha256
  timeout                        = 300
  memory_size                    = 256
  reserved_concurrent_executions = 2
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    variables = {
      TEST_LISTENER_ARN     = aws_lb_listener.test.arn
      TEST_URL              = "https://${aws_lb.main.dns_name}:${var.test_listener_port}"
      CONTAINER_PORT        = tostring(local.container_port)
      INGEST_KEY_SECRET_ARN = aws_secretsmanager_secret.deploy_smoke_ingest_key.arn
      READY_TIMEOUT_S       = "180"
    }
  }

  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.deploy_hook.id]
  }

  tracing_config {
    mode = "Active"
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.gateway_smoke.name
  }

  depends_on = [aws_iam_role_policy.gateway_smoke]
}
