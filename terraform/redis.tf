# ElastiCache Redis 7 (cluster mode off): a primary and var.redis_replicas
# replicas over the AZs with automatic failover, TLS required in transit,
# AUTH token, at-rest encryption with the main key.

resource "aws_elasticache_subnet_group" "main" {
  name       = "${local.name}-redis"
  subnet_ids = aws_subnet.private[*].id
}

# Events waiting in the partition streams must never be evicted: writes fail
# (and ingest answers 503) rather than memory silently dropping data.
resource "aws_elasticache_parameter_group" "main" {
  name   = "${local.name}-redis${split(".", var.redis_engine_version)[0]}"
  family = "redis${split(".", var.redis_engine_version)[0]}"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}

# Alphanumeric only, so it can stand in a redis:// URL without escaping.
resource "random_password" "redis_auth" {
  length  = 64
  special = false
}

resource "aws_cloudwatch_log_group" "redis_slow" {
  name              = "/${var.project}/${var.environment}/redis-slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_elasticache_replication_group" "main" {
  replication_group_id = local.name
  description          = "cartpulse streams, pub/sub and stream history"
  engine               = "redis"
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.main.name

  num_cache_clusters         = 1 + var.redis_replicas
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.redis_auth.result
  auth_token_update_strategy = var.redis_auth_token_update_strategy

  snapshot_retention_limit   = var.redis_snapshot_retention_days
  snapshot_window            = "01:00-02:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.redis_slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }
}

locals {
  # Member cluster ids follow ElastiCache's naming: <group>-001, -002, …
  redis_member_ids = [for n in range(1 + var.redis_replicas) : format("%s-%03d", local.name, n + 1)]
}
