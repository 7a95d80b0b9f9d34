# ECS on Fargate: the gateway service (HTTP ingest + WebSockets behind the
# ALB, auto-scaled) and one processor service per partition range (each owns
# its partitions exclusively, so exactly one task runs per range), plus the
# one-off `cartpulse migrate` task definition used by the runbook.

resource "aws_ecs_cluster" "main" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "main" {
  cluster_name       = aws_ecs_cluster.main.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "tasks" {
  for_each          = toset(["gateway", "processor", "migrate"])
  name              = "/${var.project}/${var.environment}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  image = "${aws_ecr_repository.main.repository_url}:${var.image_tag}"

  # Plain settings only; secrets go through local.task_secrets.
  task_environment = [
    { name = "CARTPULSE_LISTEN", value = "0.0.0.0:${local.container_port}" },
    # Only the ALB reaches the gateways; it appends the client's address to
    # X-Forwarded-For (alb.tf). Trusting exactly the public subnets the ALB
    # nodes live in lets the per-address limits (console login) see clients,
    # while addresses a client writes into the header itself are never taken.
    { name = "CARTPULSE_HTTP__TRUSTED_PROXIES", value = join(",", aws_subnet.public[*].cidr_block) },
    # The console is only served over HTTPS (alb.tf): the session cookie is
    # __Host-cartpulse_console, Secure, and responses carry HSTS.
    { name = "CARTPULSE_CONSOLE__SECURE_COOKIES", value = "true" },
    { name = "CARTPULSE_MODEL_STORE", value = "s3://${aws_s3_bucket.models.id}/${local.model_prefix}" },
    { name = "CARTPULSE_LOG", value = var.log_level },
    { name = "CARTPULSE_LOG__FORMAT", value = "json" },
    { name = "CARTPULSE_DATABASE__MAX_CONNECTIONS", value = tostring(var.db_max_connections_per_task) },
    { name = "AWS_REGION", value = local.region },
  ]

  readyz_check = {
    command     = ["CMD", "/usr/local/bin/busybox", "wget", "-q", "-T", "2", "-O", "/dev/null", "http://127.0.0.1:${local.container_port}/readyz"]
    interval    = 15
    timeout     = 5
    retries     = 3
    startPeriod = 60
  }

  # Everything a cartpulse container shares: read-only root filesystem (only
  # /tmp is writable), non-root user, no privileges, logs to CloudWatch.
  container_base = {
    image                  = local.image
    essential              = true
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    privileged             = false
    environment            = local.task_environment
    secrets                = local.task_secrets
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    linuxParameters        = { initProcessEnabled = true }
    stopTimeout            = 30
  }

  processors = { for r in var.processor_ranges : r => r }
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${local.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.gateway_cpu
  memory                   = var.gateway_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name         = "cartpulse"
    command      = ["serve", "--role", "gateway", "--partitions", tostring(var.processor_partitions)]
    portMappings = [{ containerPort = local.container_port, protocol = "tcp", name = "http" }]
    healthCheck  = local.readyz_check
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks["gateway"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "gateway"
      }
    }
  })])
}

resource "aws_ecs_task_definition" "processor" {
  for_each                 = local.processors
  family                   = "${local.name}-processor-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.processor_cpu
  memory                   = var.processor_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "cartpulse"
    command     = ["serve", "--role", "processor", "--partitions", tostring(var.processor_partitions), "--owns", each.value]
    healthCheck = local.readyz_check
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks["processor"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "processor-${each.key}"
      }
    }
  })])
}

# Run once per release before the services move to it (terraform/README.md):
#   aws ecs run-task --task-definition <migrate_task_definition_arn> …
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${local.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 512
  memory                   = 1024
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "cartpulse"
    command     = ["migrate"]
    stopTimeout = 120
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks["migrate"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "migrate"
      }
    }
  })])
}

resource "aws_ecs_service" "gateway" {
  name                              = "${local.name}-gateway"
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_min_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 60
  enable_ecs_managed_tags           = true
  propagate_tags                    = "SERVICE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "cartpulse"
    container_port   = local.container_port
  }

  # Auto-scaling owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https, aws_iam_role_policy.execution, aws_secretsmanager_secret_version.database_url]
}

# One task per range, never two at once: a deployment stops the old task
# before starting the new one (minimum 0 %, maximum 100 %), so a partition is
# never consumed by two owners; unacknowledged entries are reclaimed.
resource "aws_ecs_service" "processor" {
  for_each                = local.processors
  name                    = "${local.name}-processor-${each.key}"
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.processor[each.key].arn
  desired_count           = 1
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.processor.id]
    assign_public_ip = false
  }

  depends_on = [aws_iam_role_policy.execution, aws_secretsmanager_secret_version.database_url]
}

# --- gateway auto-scaling ------------------------------------------------------

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.gateway_min_count
  max_capacity       = var.gateway_max_count
}

resource "aws_appautoscaling_policy" "gateway_cpu" {
  name               = "${local.name}-gateway-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.gateway_cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "gateway_requests" {
  name               = "${local.name}-gateway-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.gateway_requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.main.arn_suffix}/${aws_lb_target_group.gateway.arn_suffix}"
    }
  }
}
