# ElastiCache Redis 7 (cluster mode off): a primary and var.redis_replicas
# replicas over the AZs with automatic failover, TLS required in transit,
# role-based access control (RBAC) instead of an AUTH token, at-rest
# encryption with the main key.
#
# Access: the replication group uses a user group holding
#   - a "default" user that is switched off (every user group must contain a
#     user named default; switched off, a connection must log in as another
#     user before any command), and
#   - the application user local.redis_app_user_id, which
#     terraform/redis-credentials.sh creates with a generated password,
#     adds to the group and writes into the redis-url secret. Terraform never
#     sees that password, so it is neither in state nor in any plan; rotating
#     it needs no Terraform run (README.md, "Redis credentials").

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

locals {
  # The application's RBAC user (created by terraform/redis-credentials.sh).
  redis_app_user_id   = "${local.name}-app"
  redis_app_user_name = var.project
  # Every key and channel, every command except the @dangerous category
  # (FLUSHALL/FLUSHDB, KEYS, CONFIG, DEBUG, MONITOR, INFO, CLIENT KILL, SHUTDOWN,
  # ACL, SORT, …), none of which cartpulse sends. ElastiCache disables some of
  # these anyway; the rest would let a leaked password wipe or scan the data.
  redis_app_access_string = "on ~* &* +@all -@dangerous"
}

resource "aws_elasticache_user" "default_disabled" {
  user_id              = "${local.name}-default"
  user_name            = "default"
  engine               = "redis"
  access_string        = "off -@all"
  no_password_required = true
}

resource "aws_elasticache_user_group" "main" {
  user_group_id = local.name
  engine        = "redis"
  user_ids      = [aws_elasticache_user.default_disabled.user_id]

  # terraform/redis-credentials.sh adds the application user (its password
  # must stay out of Terraform); Terraform must not take it out again.
  lifecycle {
    ignore_changes = [user_ids]
  }
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
  user_group_ids             = [aws_elasticache_user_group.main.user_group_id]
  # DELETE is how an existing group moves from its old AUTH token to the user
  # group above (the token is dropped as the group is attached; README.md,
  # "Moving a stack from the AUTH token to RBAC"). A new group has no token
  # and never uses it.
  auth_token_update_strategy = "DELETE"

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
