# ECS on Fargate: the gateway service (HTTP ingest + WebSockets behind the
# ALB, auto-scaled on CPU and requests), one processor service whose tasks
# share the partitions by lease in Redis (auto-scaled on the stream backlog
# per task), plus the one-off `cartpulse migrate` task definition used by the
# runbook.

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
  for_each          = toset(["gateway", "processor", "migrate", "retrain"])
  name              = "/${var.project}/${var.environment}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  image = "${aws_ecr_repository.main.repository_url}:${var.image_tag}"

  # Prefix of every Redis key (redis.prefix; the service's default). Also the
  # Deployment dimension of the backlog metrics the gateways publish. Changing
  # it on a running stack orphans the streams and their pending entries.
  redis_prefix = "cp"

  # Seconds between SIGTERM and SIGKILL (Fargate's maximum is 120). A gateway
  # keeps serving for the drain (shutdown.drain_s = var.drain_seconds, also the
  # target groups' deregistration delay), then closes its streams and finishes
  # the requests in flight (var.shutdown_finish_seconds). A processor needs at
  # least as long, and enough to finish the batches in hand, checkpoint and
  # release its leases.
  gateway_stop_timeout_s   = var.drain_seconds + var.shutdown_finish_seconds
  processor_stop_timeout_s = max(60, local.gateway_stop_timeout_s)

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
    # Stated explicitly (it is the service's default) because the backlog
    # metric's Deployment dimension, which processor autoscaling and the
    # alarms select on, is this prefix (local.redis_prefix).
    { name = "CARTPULSE_REDIS__PREFIX", value = local.redis_prefix },
    # How long a stopping gateway keeps serving while the load balancer
    # deregisters it; the same number as the deregistration delay (alb.tf).
    # Processors ignore it and hand their partitions over at once.
    { name = "CARTPULSE_SHUTDOWN__DRAIN_S", value = tostring(var.drain_seconds) },
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
    stopTimeout            = local.gateway_stop_timeout_s
  }
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
    name      = "cartpulse"
    command   = ["serve", "--role", "gateway", "--partitions", tostring(var.processor_partitions)]
    dependsOn = local.after_adot
    # Every 10 s each gateway prints the stream backlog to stdout as a
    # CloudWatch Embedded Metric Format line; the awslogs driver ships it to
    # the gateway log group and CloudWatch Logs extracts the metrics
    # (StreamBacklogEvents, DeadLetterEvents in var.metrics_namespace,
    # dimension Deployment = local.redis_prefix). No cloudwatch:PutMetricData
    # needed: the execution role's logs:PutLogEvents is all it takes.
    environment = concat(local.task_environment, local.tracing_environment, [
      { name = "CARTPULSE_LOG__CLOUDWATCH_NAMESPACE", value = var.metrics_namespace },
    ])
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
  }), local.adot_sidecar["gateway"]])
}

# Elastic processors: no --owns, so every task claims a share of the
# partitions by lease in Redis (ceil(partitions / live processors) each). A
# task that dies loses its leases after redis_lease_ms and the others take its
# partitions over; a task that is stopped (scale-in, deployment) gets SIGTERM,
# finishes its batches, checkpoints and releases its leases, so the others
# take over at once. stopTimeout leaves room for that before ECS sends SIGKILL.
resource "aws_ecs_task_definition" "processor" {
  family                   = "${local.name}-processor"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.processor_cpu
  memory                   = var.processor_memory
  execution_role_arn       = aws_iam_role.execution.arn
  # The task role plus writing the data lake (lake.tf).
  task_role_arn = aws_iam_role.processor.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.container_base, {
    name        = "cartpulse"
    command     = ["serve", "--role", "processor", "--partitions", tostring(var.processor_partitions)]
    healthCheck = local.readyz_check
    dependsOn   = local.after_adot
    environment = concat(local.task_environment, local.tracing_environment, [
      { name = "CARTPULSE_REDIS__LEASE_MS", value = tostring(var.redis_lease_ms) },
      # The processors' service level objective counts (dashboard latency,
      # scoring latency) go out as EMF lines too (slo.tf).
      { name = "CARTPULSE_LOG__CLOUDWATCH_NAMESPACE", value = var.metrics_namespace },
      # The processor holding partition 0 archives the event log (lake.tf).
      { name = "CARTPULSE_LAKE__STORE", value = "s3://${aws_s3_bucket.lake.id}/${local.lake_prefix}" },
      { name = "CARTPULSE_LAKE__ARCHIVE_EVERY_S", value = tostring(var.lake_archive_every_s) },
    ])
    # Room for the graceful hand-over before SIGKILL (see the locals above).
    stopTimeout = local.processor_stop_timeout_s
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.tasks["processor"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "processor"
      }
    }
  }), local.adot_sidecar["processor"]])
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

# Gateways deploy blue/green through CodeDeploy (codedeploy.tf): a deployment
# starts a replacement task set in the other target group, checks it on the
# test listener, moves production traffic over and rolls back on a failed
# check or an SLO alarm. CodeDeploy owns the task definition and the target
# group from then on, so Terraform ignores them after creation; releases go
# through the release workflow (docs/operations.md, "Release and rollback").
# Switching an existing service to this controller replaces the service.
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

  deployment_controller {
    type = "CODE_DEPLOY"
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

  # Auto-scaling owns the task count after creation, CodeDeploy the task
  # definition and which target group is live.
  lifecycle {
    ignore_changes = [desired_count, task_definition, load_balancer]
  }

  depends_on = [aws_lb_listener.https, aws_iam_role_policy.execution, aws_secretsmanager_secret_version.database_url]
}

# One service for all processors; auto-scaling (below) owns the task count.
# Processors share the partitions by lease, so two generations may overlap:
# a deployment starts the new tasks first (100 %/200 %), they claim
# partitions as the old ones hand theirs over on SIGTERM, and a partition
# pauses only for its hand-over and the new owner's replay.
resource "aws_ecs_service" "processor" {
  name                    = "${local.name}-processor"
  cluster                 = aws_ecs_cluster.main.id
  task_definition         = aws_ecs_task_definition.processor.arn
  desired_count           = var.processor_min_tasks
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.processor.id]
    assign_public_ip = false
  }

  # Auto-scaling owns the task count after creation; the release workflow
  # moves the service to each release's task definition (a new revision of
  # this family, rendered from the newest one, so settings Terraform changes
  # here go out with the next release).
  lifecycle {
    ignore_changes = [desired_count, task_definition]
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

# Requests per target of the production target group at creation: after a
# blue/green deployment production traffic is in the other group, whose count
# this policy does not see, so it stops holding tasks in; the CPU policy still
# does (target tracking scales in only when every policy agrees).
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

# --- processor auto-scaling ----------------------------------------------------
#
# Target tracking on the stream backlog per running processor task, computed
# with metric math:
#   StreamBacklogEvents (var.metrics_namespace, Deployment = redis prefix;
#     every gateway prints the whole backlog every 10 s as EMF, so the Average
#     over the gateways is the backlog)
#   / RunningTaskCount (ECS/ContainerInsights, this cluster and service;
#     Container Insights is enabled on the cluster above).
# Target tracking rather than step scaling on the backlog alone: the quotient
# falls as tasks are added, which is what target tracking needs, and it
# sizes the fleet in proportion (backlog / target) instead of in fixed steps.
# With no running task the expression falls back to the whole backlog, so the
# policy still scales out. When either metric is missing (no gateway emitting,
# Container Insights late) the expression has no value and nothing changes.
#
# Scale-out reacts within about a minute (cooldown 60 s); scale-in is slow
# (cooldown 300 s, and target tracking scales in only after 15 minutes below
# target). A scale-in stops tasks with SIGTERM: each hands its partitions over
# at once (stopTimeout leaves it local.processor_stop_timeout_s seconds).
# Never more tasks than partitions (validated): a task without a partition is
# idle.

resource "aws_appautoscaling_target" "processor" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.processor.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.processor_min_tasks
  max_capacity       = var.processor_max_tasks
}

resource "aws_appautoscaling_policy" "processor_backlog" {
  name               = "${local.name}-processor-backlog"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.processor.service_namespace
  resource_id        = aws_appautoscaling_target.processor.resource_id
  scalable_dimension = aws_appautoscaling_target.processor.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.processor_backlog_target_per_task
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    customized_metric_specification {
      metrics {
        id          = "backlog"
        label       = "Events waiting in the partition streams"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = var.metrics_namespace
            metric_name = "StreamBacklogEvents"
            dimensions {
              name  = "Deployment"
              value = local.redis_prefix
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        label       = "Running processor tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.main.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.processor.name
            }
          }
        }
      }
      metrics {
        id          = "per_task"
        label       = "Backlog per running processor task"
        expression  = "IF(tasks >= 1, backlog / tasks, backlog)"
        return_data = true
      }
    }
  }
}
