output "url" {
  description = "Base URL of the service (the ALB's name; point your domain's CNAME/alias at alb_dns_name to match the certificate)."
  value       = "https://${aws_lb.main.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.main.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone id of the load balancer (for a Route 53 alias record)."
  value       = aws_lb.main.zone_id
}

output "ecr_repository_url" {
  description = "Push the image here: <url>:<image_tag>."
  value       = aws_ecr_repository.main.repository_url
}

output "model_bucket" {
  description = "Name of the model bucket."
  value       = aws_s3_bucket.models.id
}

output "model_store" {
  description = "CARTPULSE_MODEL_STORE of the tasks (upload models under it)."
  value       = "s3://${aws_s3_bucket.models.id}/${local.model_prefix}"
}

output "log_bucket" {
  description = "Bucket holding ALB and S3 access logs."
  value       = aws_s3_bucket.logs.id
}

output "ecs_cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.main.name
}

output "gateway_service_name" {
  description = "ECS service of the gateways."
  value       = aws_ecs_service.gateway.name
}

output "processor_service_name" {
  description = "ECS service of the processors (one service, auto-scaled between processor_min_tasks and processor_max_tasks; the tasks share the partitions by lease)."
  value       = aws_ecs_service.processor.name
}

output "metrics_namespace" {
  description = "CloudWatch namespace of the backlog metrics (StreamBacklogEvents, DeadLetterEvents) the gateways publish."
  value       = var.metrics_namespace
}

output "metrics_deployment" {
  description = "Value of the Deployment dimension of those metrics (the Redis key prefix)."
  value       = local.redis_prefix
}

output "migrate_task_definition_arn" {
  description = "Task definition of `cartpulse migrate` (run once per release, see README.md)."
  value       = aws_ecs_task_definition.migrate.arn
}

output "private_subnet_ids" {
  description = "Private subnets (for one-off tasks)."
  value       = aws_subnet.private[*].id
}

output "task_security_group_id" {
  description = "Security group for one-off tasks such as migrate (the processors' group: database and Redis out, nothing in)."
  value       = aws_security_group.processor.id
}

output "rds_endpoint" {
  description = "Postgres endpoint (private)."
  value       = aws_db_instance.main.endpoint
}

output "rds_master_secret_arn" {
  description = "Secrets Manager secret holding the RDS-managed master credentials."
  value       = local.rds_master_secret_arn
}

output "redis_configuration_endpoint" {
  description = "Redis cluster configuration endpoint (private, TLS, port 6379): what the service connects to; the cluster client discovers every shard through it."
  value       = aws_elasticache_replication_group.main.configuration_endpoint_address
}

output "redis_member_ids" {
  description = "Every Redis node (every shard's primary and replicas; which is which changes with failovers)."
  value       = local.redis_member_ids
}

output "redis_user_group_id" {
  description = "ElastiCache user group of the replication group (redis-credentials.sh adds the application user to it)."
  value       = aws_elasticache_user_group.main.user_group_id
}

output "redis_app_user_id" {
  description = "ElastiCache user id of the application user (created and rotated by redis-credentials.sh, not by Terraform)."
  value       = local.redis_app_user_id
}

output "redis_app_user_name" {
  description = "User name the tasks log in to Redis with."
  value       = local.redis_app_user_name
}

output "redis_app_access_string" {
  description = "Redis ACL of the application user (redis-credentials.sh applies it)."
  value       = local.redis_app_access_string
}

output "redis_url_secret_arn" {
  description = "Secrets Manager secret holding CARTPULSE_REDIS_URL; its value is written only by redis-credentials.sh."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "stream_token_secret_arn" {
  description = "Secrets Manager secret holding CARTPULSE_STREAM__TOKEN_SECRET (value written once per stream_token_secret_version, never in state)."
  value       = aws_secretsmanager_secret.stream_token_secret.arn
}

output "sns_alarm_topic_arn" {
  description = "SNS topic every alarm notifies."
  value       = aws_sns_topic.alarms.arn
}

output "task_log_groups" {
  description = "CloudWatch log groups of the tasks."
  value       = { for k, g in aws_cloudwatch_log_group.tasks : k => g.name }
}

# --- for the release workflow (repository variables, docs/operations.md) -------

output "github_deploy_role_arn" {
  description = "AWS_DEPLOY_ROLE_ARN of the release workflow (null without var.github_repository)"
  value       = one(aws_iam_role.github_deploy[*].arn)
}

output "codedeploy_application" {
  description = "CODEDEPLOY_APPLICATION of the release workflow"
  value       = aws_codedeploy_app.gateway.name
}

output "codedeploy_deployment_group" {
  description = "CODEDEPLOY_DEPLOYMENT_GROUP of the release workflow"
  value       = aws_codedeploy_deployment_group.gateway.deployment_group_name
}

output "gateway_smoke_hook_function" {
  description = "The AfterAllowTestTraffic hook (Lambda) named in the gateways' AppSpec"
  value       = aws_lambda_function.gateway_smoke.function_name
}

output "deploy_smoke_ingest_key_secret_arn" {
  description = "Secret holding the ingest key the hook posts with (store it once: docs/operations.md)"
  value       = aws_secretsmanager_secret.deploy_smoke_ingest_key.arn
}

output "task_family_names" {
  description = "Task definition families: GATEWAY_TASK_FAMILY, PROCESSOR_TASK_FAMILY, MIGRATE_TASK_FAMILY"
  value = {
    gateway   = aws_ecs_task_definition.gateway.family
    processor = aws_ecs_task_definition.processor.family
    migrate   = aws_ecs_task_definition.migrate.family
  }
}

output "drain_seconds" {
  description = "shutdown.drain_s of the tasks, the target groups' deregistration delay"
  value       = var.drain_seconds
}

output "lake_store" {
  description = "CARTPULSE_LAKE__STORE of the processors: the data lake's root (docs/data-lake.md)."
  value       = "s3://${aws_s3_bucket.lake.id}/${local.lake_prefix}"
}
