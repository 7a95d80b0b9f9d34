# Scheduled retraining (docs/model.md, "Scheduled retraining"): EventBridge
# Scheduler starts one Fargate task running `cartpulse retrain` on
# var.retrain_schedule (daily). The task judges the candidate in shadow
# against the active version on the sessions closed since it was trained
# (promoting it only when significantly better by var.retrain_margin), then
# trains a new candidate on the recorded sessions, publishes it to the model
# bucket and puts it in shadow. Every decision is in model_promotions.
#
# The task runs with a role of its own: it may read and write objects under
# the model prefix (the serving tasks may only read them), and nothing else.

resource "aws_iam_role" "retrain" {
  name               = "${local.name}-retrain"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "retrain" {
  source_policy_documents = [data.aws_iam_policy_document.task.json]
  statement {
    sid       = "PublishModels"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.models.arn}/${local.model_prefix}/*"]
  }
  statement {
    sid       = "EncryptModelsViaS3"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.models.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "retrain" {
  name   = "read-and-publish-models"
  role   = aws_iam_role.retrain.id
  policy = data.aws_iam_policy_document.retrain.json
}

resource "aws_ecs_task_definition" "retrain" {
  family                   = "${local.name}-retrain"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.retrain_cpu
  memory                   = var.retrain_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.retrain.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name = "cartpulse"
    command = [
      "retrain",
      "--margin", tostring(var.retrain_margin),
      "--min-sessions", tostring(var.retrain_min_sessions),
      # The only writable place of the read-only root filesystem.
      "--work-dir", "/tmp/retrain",
    ]
    stopTimeout = 120
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks["retrain"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "retrain"
      }
    }
  })])
}

# --- the schedule ------------------------------------------------------------

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "retrain_scheduler" {
  name               = "${local.name}-retrain-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
}

# The scheduler may start this task family in this cluster, and hand the
# task exactly its two roles.
data "aws_iam_policy_document" "retrain_scheduler" {
  statement {
    sid       = "RunRetrainTask"
    actions   = ["ecs:RunTask"]
    resources = ["arn:aws:ecs:${local.region}:${local.account_id}:task-definition/${aws_ecs_task_definition.retrain.family}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.main.arn]
    }
  }
  # The schedule is encrypted with the main key; the scheduler reads it with this role.
  statement {
    sid       = "DecryptSchedule"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["scheduler.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "PassRetrainRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.retrain.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "retrain_scheduler" {
  name   = "run-retrain-task"
  role   = aws_iam_role.retrain_scheduler.id
  policy = data.aws_iam_policy_document.retrain_scheduler.json
}

resource "aws_scheduler_schedule" "retrain" {
  name                         = "${local.name}-retrain"
  schedule_expression          = var.retrain_schedule
  schedule_expression_timezone = "UTC"
  kms_key_arn                  = aws_kms_key.main.arn

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_ecs_cluster.main.arn
    role_arn = aws_iam_role.retrain_scheduler.arn

    ecs_parameters {
      task_definition_arn = aws_ecs_task_definition.retrain.arn
      launch_type         = "FARGATE"
      task_count          = 1

      network_configuration {
        subnets          = aws_subnet.private[*].id
        security_groups  = [aws_security_group.processor.id]
        assign_public_ip = false
      }
    }

    # A missed run is not retried: the next day's run judges and trains anyway.
    retry_policy {
      maximum_retry_attempts = 0
    }
  }
}

# A retraining task that fails (no settled sessions, the store or the
# database unreachable) writes its error to the log group; this alarm
# notifies when the scheduler could not start it at all.
resource "aws_cloudwatch_metric_alarm" "retrain_not_started" {
  alarm_name          = "${local.name}-retrain-not-started"
  alarm_description   = "EventBridge Scheduler failed to start the retraining task (cartpulse retrain): see docs/model.md, \"Scheduled retraining\""
  namespace           = "AWS/Scheduler"
  metric_name         = "TargetErrorCount"
  dimensions          = { ScheduleGroup = "default" }
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
