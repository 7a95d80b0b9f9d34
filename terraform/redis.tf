# ElastiCache Redis 7 with cluster mode enabled: var.redis_shards shards
# (node groups), each a primary and var.redis_replicas_per_shard replicas in
# other AZs, automatic failover and Multi-AZ, TLS required in transit,
# role-based access control (RBAC) instead of an AUTH token, at-rest
# encryption with the main key.
#
# The service connects through the configuration endpoint (output
# redis_configuration_endpoint, written into the redis-url secret by
# terraform/redis-credentials.sh). It tells a cluster apart with INFO cluster
# and then uses the redis crate's cluster client: that reads the slot map
# (CLUSTER SLOTS) through the endpoint and routes each command to the primary
# owning the key's slot. Every replica-acknowledged ingest WAITs for a replica
# of that shard, hence at least one replica per shard.
#
# Sizing (README.md, "Sizing and resharding Redis"): each shard owns
# 1/redis_shards of the 16384 hash slots. Every partition stream is one slot
# (its hash tag), so a partition's whole ingest lands on one shard, and with
# the default 16 partitions 1, 2 or 4 shards split them evenly while 8 leave
# half the shards without a stream. Size so that each primary's
# DatabaseMemoryUsagePercentage stays under alarm_redis_memory_percent and
# its EngineCPUUtilization under alarm_cpu_percent at peak. Changing
# redis_shards on a running stack is an online resharding (ElastiCache moves
# slots between shards, the cluster client follows the MOVED/ASK redirects);
# changing redis_replicas_per_shard adds or removes replicas online. The AWS
# provider applies both immediately, whatever apply_immediately says.
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

# Cluster mode on (what the AWS default group default.redis7.cluster.on
# sets), plus our own settings. Events waiting in the partition streams must
# never be evicted: writes fail (and ingest answers 503) rather than memory
# silently dropping data.
#
# A separate resource from the cluster-mode-off group "main" that stacks
# created before cluster mode used: the replication group is moved onto this
# one first (README.md, "Moving a stack to cluster mode"), and only then is the
# old group, no longer in use, destroyed.
resource "aws_elasticache_parameter_group" "cluster" {
  name        = "${local.name}-redis${split(".", var.redis_engine_version)[0]}-cluster"
  family      = "redis${split(".", var.redis_engine_version)[0]}"
  description = "cartpulse: cluster mode on, noeviction"

  parameter {
    name  = "cluster-enabled"
    value = "yes"
  }

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
  # (FLUSHALL/FLUSHDB, KEYS, CONFIG, DEBUG, MONITOR, ROLE, CLIENT KILL/LIST,
  # SHUTDOWN, ACL SETUSER, SORT, MIGRATE, CLUSTER's admin subcommands, …),
  # which would let a leaked password wipe, scan or reconfigure the data, and
  # then INFO again:
  #   - INFO is in @dangerous (@slow @dangerous), but the service needs it:
  #     `INFO cluster` at connect tells a cluster from a single node, and
  #     `INFO replication` counts replicas on a single node. Without +info the
  #     service cannot start (it cannot tell what it is talking to).
  #   - Everything else the cluster client and the service send is outside
  #     @dangerous since Redis 7 gave subcommands their own categories:
  #     CLUSTER SLOTS, CLUSTER SHARDS, CLUSTER NODES and CLUSTER INFO are @slow
  #     only; WAIT (@slow @connection), READONLY/ASKING (@connection), SSUBSCRIBE/
  #     SPUBLISH (@pubsub), EVALSHA/SCRIPT LOAD (@scripting), the stream commands
  #     (@stream) and SCAN (@keyspace). So -@dangerous leaves them allowed and no
  #     +cluster|… rule is added (redis_engine_version is held to 7.x; under
  #     Redis 6 the whole CLUSTER command was @dangerous).
  # ElastiCache also disables some commands for every user, whatever the ACL.
  # After a change here run `./redis-credentials.sh acl` (README.md).
  redis_app_access_string = "on ~* &* +@all -@dangerous +info"
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
  parameter_group_name = aws_elasticache_parameter_group.cluster.name

  # Cluster mode enabled: redis_shards node groups of one primary and
  # redis_replicas_per_shard replicas each; ElastiCache spreads each shard's
  # nodes over the subnet group's AZs. A change of either count is applied
  # online (resharding or replica add/remove) and immediately.
  cluster_mode               = "enabled"
  num_node_groups            = var.redis_shards
  replicas_per_node_group    = var.redis_replicas_per_shard
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
  # Every node of every shard, primaries and replicas alike (which is which
  # changes with each failover), for the per-node alarms in monitoring.tf.
  # member_clusters is the authoritative list: a new stack names its nodes
  # <group>-<shard>-<node> (e.g. -0001-001), but a stack moved from cluster
  # mode off started with <group>-001/-002, and replicas removed later (which
  # ElastiCache picks) leave gaps, so the names are not computed here. The provider reports the list as
  # unknown in every plan that changes redis_shards or
  # redis_replicas_per_shard, so the alarms are counted from the variables
  # (known in every plan) and take their node from this sorted list.
  redis_node_count = var.redis_shards * (1 + var.redis_replicas_per_shard)
  redis_member_ids = sort(tolist(aws_elasticache_replication_group.main.member_clusters))
}
