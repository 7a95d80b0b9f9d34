# Alarms → one SNS topic (encrypted with the main key). Subscribe an e-mail
# address with var.alarm_email, or anything else to the sns_alarm_topic_arn output.

resource "aws_sns_topic" "alarms" {
  name              = "${local.name}-alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
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

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
  # The whole load balancer, not one target group: blue/green deployments
  # (codedeploy.tf) move production traffic between the two gateway target
  # groups, and these alarms, which also roll a deployment back, must follow it.
  alb_dimensions = {
    LoadBalancer = aws_lb.main.arn_suffix
  }
  ecs_services = {
    gateway   = aws_ecs_service.gateway.name
    processor = aws_ecs_service.processor.name
  }
  # The backlog metrics the gateways publish as EMF (ecs.tf).
  backlog_dimensions = { Deployment = local.redis_prefix }
}

# 5xx from the ALB itself (no healthy target, timeouts) plus 5xx from the tasks.
resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  alarm_name          = "${local.name}-alb-5xx"
  alarm_description   = "More than ${var.alarm_alb_5xx_per_minute} 5xx answers per minute (ALB + targets) for 3 minutes"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_alb_5xx_per_minute
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "total"
    expression  = "FILL(elb, 0) + FILL(target, 0)"
    label       = "5xx per minute"
    return_data = true
  }
  metric_query {
    id = "elb"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "target"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = local.alb_dimensions
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_p99" {
  alarm_name          = "${local.name}-target-response-p99"
  alarm_description   = "Gateway p99 response time above ${var.alarm_p99_response_time_s} s for 5 minutes"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = local.alb_dimensions
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_p99_response_time_s
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "ecs_cpu" {
  for_each            = local.ecs_services
  alarm_name          = "${local.name}-${each.key}-cpu"
  alarm_description   = "${each.key}: average CPU above ${var.alarm_cpu_percent} % for 15 minutes"
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  dimensions          = { ClusterName = aws_ecs_cluster.main.name, ServiceName = each.value }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_cpu_percent
  treat_missing_data  = "missing"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The processors fall behind: the events waiting in the partition streams stay
# high although auto-scaling had time to react (the default threshold is above
# what processor_max_tasks tasks at their target hold). Every gateway reports
# the whole backlog, so the Average over them is the backlog. No data at all
# means no gateway is publishing it, and then processor auto-scaling is blind
# too: that counts as breaching.
resource "aws_cloudwatch_metric_alarm" "stream_backlog" {
  alarm_name          = "${local.name}-stream-backlog"
  alarm_description   = "More than ${var.alarm_stream_backlog_events} events waiting in the partition streams for ${var.alarm_stream_backlog_minutes} minutes (processors behind; at redis.max_backlog ingest answers 503), or no backlog metric from the gateways (processor auto-scaling blind)"
  namespace           = var.metrics_namespace
  metric_name         = "StreamBacklogEvents"
  dimensions          = local.backlog_dimensions
  statistic           = "Average"
  period              = 60
  evaluation_periods  = var.alarm_stream_backlog_minutes
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_stream_backlog_events
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Entries in the dead-letter stream ({prefix}:events:dead): events the edge
# parser refused or that failed redis.max_attempts deliveries. The metric is
# the stream's length, so the alarm stays on until someone has looked at them
# and emptied the stream (the service only caps it at about 100,000 entries).
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${local.name}-dead-letters"
  alarm_description   = "Events in the dead-letter stream (XRANGE ${local.redis_prefix}:events:dead - + shows them with the reason)"
  namespace           = var.metrics_namespace
  metric_name         = "DeadLetterEvents"
  dimensions          = local.backlog_dimensions
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  alarm_name          = "${local.name}-rds-cpu"
  alarm_description   = "RDS average CPU above ${var.alarm_cpu_percent} % for 15 minutes"
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.main.identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_cpu_percent
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "rds_free_storage" {
  alarm_name          = "${local.name}-rds-free-storage"
  alarm_description   = "RDS free storage below ${var.alarm_rds_free_storage_gb} GiB"
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.main.identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = var.alarm_rds_free_storage_gb * 1024 * 1024 * 1024
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Per Redis node: every node of every shard (local.redis_node_count of them,
# each taking its id from the sorted member list in redis.tf). Primaries and
# replicas both: roles swap on failover, and a replica that runs out of
# memory stops replicating. The alarm names carry the position in that list
# (a resharding can move a position to another node), the description and the
# dimension the node id.
resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  count               = local.redis_node_count
  alarm_name          = "${local.name}-redis-node-${count.index + 1}-memory"
  alarm_description   = "Redis node ${local.redis_member_ids[count.index]}: memory use above ${var.alarm_redis_memory_percent} % for 10 minutes (noeviction: writes to its shard fail when full; add shards or a larger node type)"
  namespace           = "AWS/ElastiCache"
  metric_name         = "DatabaseMemoryUsagePercentage"
  dimensions          = { CacheClusterId = local.redis_member_ids[count.index] }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_redis_memory_percent
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# The Redis engine thread (EngineCPUUtilization, not the host's CPUUtilization,
# which on multi-core nodes hides a saturated engine): a hot shard.
resource "aws_cloudwatch_metric_alarm" "redis_engine_cpu" {
  count               = local.redis_node_count
  alarm_name          = "${local.name}-redis-node-${count.index + 1}-engine-cpu"
  alarm_description   = "Redis node ${local.redis_member_ids[count.index]}: engine CPU above ${var.alarm_cpu_percent} % for 15 minutes (add shards or a larger node type)"
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { CacheClusterId = local.redis_member_ids[count.index] }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_cpu_percent
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# A replica behind its primary: ingest WAITs for a replica of the shard, so
# sustained lag means timed-out acknowledgements (503). Only nodes that are
# replicas at the time publish ReplicationLag; the primaries' alarms see no
# data and stay OK.
resource "aws_cloudwatch_metric_alarm" "redis_replication_lag" {
  count               = local.redis_node_count
  alarm_name          = "${local.name}-redis-node-${count.index + 1}-replication-lag"
  alarm_description   = "Redis node ${local.redis_member_ids[count.index]}: as a replica, more than ${var.alarm_redis_replication_lag_s} s behind its primary for 5 minutes (ingest acknowledgements wait for a replica)"
  namespace           = "AWS/ElastiCache"
  metric_name         = "ReplicationLag"
  dimensions          = { CacheClusterId = local.redis_member_ids[count.index] }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_redis_replication_lag_s
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
