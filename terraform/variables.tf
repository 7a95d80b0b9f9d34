# Every input of the stack. Required ones have no default; the rest default to
# a production-shaped setting. See terraform.tfvars.example.

# --- naming and region -------------------------------------------------------

variable "project" {
  description = "Name prefix of every resource."
  type        = string
  default     = "cartpulse"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,16}$", var.project))
    error_message = "project: 2-17 lowercase letters, digits or hyphens, starting with a letter (load balancer names are capped at 32 characters)."
  }
}

variable "environment" {
  description = "Environment name (part of every resource name), e.g. prod or staging."
  type        = string
  default     = "prod"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.environment))
    error_message = "environment: 2-10 lowercase letters or digits, starting with a letter."
  }
}

variable "aws_region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.aws_region))
    error_message = "aws_region must look like eu-west-1."
  }
}

variable "tags" {
  description = "Extra tags for every resource (Project, Environment and ManagedBy are always set)."
  type        = map(string)
  default     = {}
}

# --- network -----------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC; /16 to /20. Public and private subnets of each AZ are carved from it."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR between /16 and /20."
  }
}

variable "availability_zones" {
  description = "Letters of the availability zones to spread over (e.g. [\"a\", \"b\"] for eu-west-1a and eu-west-1b); a public and a private subnet in each. An explicit list keeps the network fixed when AWS adds zones."
  type        = list(string)
  default     = ["a", "b"]
  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4 && length(distinct(var.availability_zones)) == length(var.availability_zones) && alltrue([for z in var.availability_zones : can(regex("^[a-z]$", z))])
    error_message = "availability_zones must list 2 to 4 distinct zone letters, e.g. [\"a\", \"b\"]."
  }
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per AZ (true: survives an AZ outage) or a single shared one (false: cheaper)."
  type        = bool
  default     = true
}

variable "flow_log_retention_days" {
  description = "Days VPC flow logs are kept in CloudWatch."
  type        = number
  default     = 365
  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch retention of at least one year (365, 400, 545, 731, …)."
  }
}

# --- load balancer -----------------------------------------------------------

variable "certificate_arn" {
  description = "ARN of the ACM certificate for the HTTPS listener (same region)."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "alb_ingress_cidrs" {
  description = "IPv4 CIDRs allowed to reach the load balancer on 443 (and 80, which only redirects)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
  validation {
    condition     = length(var.alb_ingress_cidrs) > 0 && alltrue([for c in var.alb_ingress_cidrs : can(cidrhost(c, 0))])
    error_message = "alb_ingress_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "alb_idle_timeout_s" {
  description = "ALB idle timeout in seconds. WebSocket connections count as idle between frames; the hub's heartbeats keep them well inside this."
  type        = number
  default     = 3600
  validation {
    condition     = var.alb_idle_timeout_s >= 60 && var.alb_idle_timeout_s <= 4000
    error_message = "alb_idle_timeout_s must be between 60 and 4000 (the ALB maximum)."
  }
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion (turn off only to destroy the stack)."
  type        = bool
  default     = true
}

variable "waf_rate_limit_per_5min" {
  description = "WAF: requests per 5 minutes from one IP beyond which it is blocked (shops send batches, so keep it high)."
  type        = number
  default     = 20000
  validation {
    condition     = var.waf_rate_limit_per_5min >= 100 && var.waf_rate_limit_per_5min <= 2000000000
    error_message = "waf_rate_limit_per_5min must be between 100 and 2,000,000,000."
  }
}

variable "log_bucket_retention_days" {
  description = "Days ALB and S3 access logs are kept."
  type        = number
  default     = 365
  validation {
    condition     = var.log_bucket_retention_days >= 30 && var.log_bucket_retention_days <= 3650
    error_message = "log_bucket_retention_days must be between 30 and 3650."
  }
}

# --- container image and tasks -----------------------------------------------

variable "image_tag" {
  description = "Tag of the cartpulse image in the stack's ECR repository (tags are immutable: use the git commit, e.g. 3f2c1ab)."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag other than latest."
  }
}

variable "log_retention_days" {
  description = "Days the tasks' CloudWatch logs are kept."
  type        = number
  default     = 365
  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention of at least one year (365, 400, 545, 731, …)."
  }
}

variable "log_level" {
  description = "tracing filter for the tasks (CARTPULSE_LOG), e.g. info or cartpulse=debug,info."
  type        = string
  default     = "info"
  validation {
    condition     = can(regex("^[a-z_=,:0-9]+$", var.log_level))
    error_message = "log_level must be a tracing filter such as info or cartpulse=debug,info."
  }
}

variable "gateway_cpu" {
  description = "Fargate CPU units of one gateway task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.gateway_cpu)
    error_message = "gateway_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "gateway_memory" {
  description = "Memory (MiB) of one gateway task; must be valid for gateway_cpu on Fargate."
  type        = number
  default     = 2048
  validation {
    condition     = var.gateway_memory >= 512 && var.gateway_memory <= 122880
    error_message = "gateway_memory must be between 512 and 122880 MiB."
  }
}

variable "gateway_min_count" {
  description = "Fewest gateway tasks auto-scaling may run (at least 2 for availability)."
  type        = number
  default     = 2
  validation {
    condition     = var.gateway_min_count >= 1 && var.gateway_min_count <= 100
    error_message = "gateway_min_count must be between 1 and 100."
  }
}

variable "gateway_max_count" {
  description = "Most gateway tasks auto-scaling may run."
  type        = number
  default     = 10
  validation {
    condition     = var.gateway_max_count >= 1 && var.gateway_max_count <= 200
    error_message = "gateway_max_count must be between 1 and 200."
  }
  validation {
    condition     = var.gateway_max_count >= var.gateway_min_count
    error_message = "gateway_max_count must not be below gateway_min_count."
  }
}

variable "gateway_cpu_target_percent" {
  description = "Target tracking: average gateway CPU utilisation to hold."
  type        = number
  default     = 60
  validation {
    condition     = var.gateway_cpu_target_percent >= 20 && var.gateway_cpu_target_percent <= 90
    error_message = "gateway_cpu_target_percent must be between 20 and 90."
  }
}

variable "gateway_requests_per_target" {
  description = "Target tracking: ALB requests per gateway task per minute (ALBRequestCountPerTarget) to hold."
  type        = number
  default     = 3000
  validation {
    condition     = var.gateway_requests_per_target >= 10 && var.gateway_requests_per_target <= 1000000
    error_message = "gateway_requests_per_target must be between 10 and 1,000,000."
  }
}

variable "processor_partitions" {
  description = "Number of Redis Stream partitions (cartpulse --partitions P). Changing it re-partitions the streams: drain first."
  type        = number
  default     = 16
  validation {
    condition     = var.processor_partitions >= 1 && var.processor_partitions <= 1024 && floor(var.processor_partitions) == var.processor_partitions
    error_message = "processor_partitions must be a whole number from 1 to 1024."
  }
}

# Removed: processors no longer own fixed ranges (one service, partitions
# shared by lease). Kept only so that a terraform.tfvars still setting it
# fails with directions instead of a warning that is easy to miss.
variable "processor_ranges" {
  description = "REMOVED. Processors are one auto-scaled service sharing the partitions by lease (processor_min_tasks, processor_max_tasks). Leave unset; see README.md, \"Moving to elastic processors\"."
  type        = list(string)
  default     = null
  validation {
    condition     = var.processor_ranges == null
    error_message = "processor_ranges was removed: processors are now one auto-scaled ECS service that shares the partitions by lease. Delete processor_ranges from terraform.tfvars, set processor_min_tasks/processor_max_tasks, and follow README.md, \"Moving to elastic processors\" (the per-range services must be destroyed before the new one starts)."
  }
}

variable "processor_min_tasks" {
  description = "Fewest processor tasks auto-scaling may run (also the count the service is created with). At least 2 keeps processing going while one task is replaced."
  type        = number
  default     = 2
  validation {
    condition     = var.processor_min_tasks >= 1 && floor(var.processor_min_tasks) == var.processor_min_tasks
    error_message = "processor_min_tasks must be a whole number of at least 1."
  }
}

variable "processor_max_tasks" {
  description = "Most processor tasks auto-scaling may run. At most processor_partitions: each task aims at ceil(partitions / tasks) partitions, so a task beyond the partition count would hold none and sit idle."
  type        = number
  default     = 8
  validation {
    condition     = var.processor_max_tasks >= 1 && floor(var.processor_max_tasks) == var.processor_max_tasks
    error_message = "processor_max_tasks must be a whole number of at least 1."
  }
  validation {
    condition     = var.processor_max_tasks >= var.processor_min_tasks
    error_message = "processor_max_tasks must not be below processor_min_tasks."
  }
  validation {
    condition     = var.processor_max_tasks <= var.processor_partitions
    error_message = "processor_max_tasks must not exceed processor_partitions (a processor without a partition is idle)."
  }
}

variable "processor_backlog_target_per_task" {
  description = "Target tracking: events waiting in the partition streams (StreamBacklogEvents) per running processor task to hold. Lower scales out earlier. Keep processor_max_tasks x this below the service's redis.max_backlog (default 1,000,000), beyond which gateways answer 503."
  type        = number
  default     = 20000
  validation {
    condition     = var.processor_backlog_target_per_task >= 100 && var.processor_backlog_target_per_task <= 1000000
    error_message = "processor_backlog_target_per_task must be between 100 and 1,000,000 events."
  }
}

variable "redis_lease_ms" {
  description = "Lease of a processor on a partition (CARTPULSE_REDIS__LEASE_MS): a processor that dies without stopping (lost task, SIGKILL) keeps its partitions this long before the others take them over. Shorter fails over faster but needs steadier Redis round trips (leases are renewed every third of it)."
  type        = number
  default     = 5000
  validation {
    condition     = var.redis_lease_ms >= 300 && var.redis_lease_ms <= 600000 && floor(var.redis_lease_ms) == var.redis_lease_ms
    error_message = "redis_lease_ms must be a whole number of milliseconds from 300 to 600000 (the service's range)."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the backlog metrics the gateways publish as EMF log lines (CARTPULSE_LOG__CLOUDWATCH_NAMESPACE): StreamBacklogEvents and DeadLetterEvents, dimension Deployment = the Redis key prefix. Processor auto-scaling and the backlog alarms read them."
  type        = string
  default     = "cartpulse"
  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 letters, digits or . _ / # : - and must not start with AWS/."
  }
}

variable "processor_cpu" {
  description = "Fargate CPU units of one processor task."
  type        = number
  default     = 2048
  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.processor_cpu)
    error_message = "processor_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "processor_memory" {
  description = "Memory (MiB) of one processor task; must be valid for processor_cpu on Fargate."
  type        = number
  default     = 4096
  validation {
    condition     = var.processor_memory >= 512 && var.processor_memory <= 122880
    error_message = "processor_memory must be between 512 and 122880 MiB."
  }
}

# --- database ----------------------------------------------------------------

variable "db_engine_version" {
  description = "RDS PostgreSQL major (or major.minor) version; minor upgrades are applied automatically."
  type        = string
  default     = "16"
  validation {
    condition     = can(regex("^1[4-9](\\.[0-9]+)?$", var.db_engine_version))
    error_message = "db_engine_version must be PostgreSQL 14 or later, e.g. 16 or 16.4."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "db_instance_class must look like db.t4g.medium."
  }
}

variable "db_allocated_storage_gb" {
  description = "Initial RDS storage (GiB, gp3)."
  type        = number
  default     = 50
  validation {
    condition     = var.db_allocated_storage_gb >= 20 && var.db_allocated_storage_gb <= 65536
    error_message = "db_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "db_max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling (GiB); must be at least db_allocated_storage_gb."
  type        = number
  default     = 500
  validation {
    condition     = var.db_max_allocated_storage_gb >= 20 && var.db_max_allocated_storage_gb <= 65536
    error_message = "db_max_allocated_storage_gb must be between 20 and 65536."
  }
  validation {
    condition     = var.db_max_allocated_storage_gb >= var.db_allocated_storage_gb
    error_message = "db_max_allocated_storage_gb must be at least db_allocated_storage_gb."
  }
}

variable "db_multi_az" {
  description = "Run RDS with a synchronous standby in another AZ (switch off only for non-production)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 14
  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

variable "db_deletion_protection" {
  description = "Protect the database from deletion (a final snapshot is taken on destroy either way)."
  type        = bool
  default     = true
}

variable "db_name" {
  description = "Name of the application database."
  type        = string
  default     = "cartpulse"
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase PostgreSQL identifier."
  }
}

variable "db_username" {
  description = "Master user name; its password is generated and rotated by RDS in Secrets Manager (manage_master_user_password)."
  type        = string
  default     = "cartpulse"
  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,15}$", var.db_username)) && !contains(["postgres", "admin", "rdsadmin"], var.db_username)
    error_message = "db_username must be a lowercase identifier of at most 16 characters and not a reserved name."
  }
}

variable "db_max_connections_per_task" {
  description = "Connection pool size of each task (CARTPULSE_DATABASE__MAX_CONNECTIONS); tasks x pool must stay below the instance's max_connections."
  type        = number
  default     = 8
  validation {
    condition     = var.db_max_connections_per_task >= 1 && var.db_max_connections_per_task <= 200
    error_message = "db_max_connections_per_task must be between 1 and 200."
  }
}

# --- redis -------------------------------------------------------------------

variable "redis_engine_version" {
  description = "ElastiCache Redis OSS engine version (7.x)."
  type        = string
  default     = "7.1"
  validation {
    condition     = can(regex("^7\\.[0-9]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be a Redis 7 version such as 7.1."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.medium"
  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must look like cache.t4g.medium."
  }
}

variable "redis_shards" {
  description = "Shards (node groups) of the Redis cluster; each owns 1/redis_shards of the 16384 hash slots and takes the writes for them on one primary (how evenly the partition streams spread: README.md). Changing it on a running stack is an online resharding (README.md, \"Sizing and resharding Redis\")."
  type        = number
  default     = 2
  validation {
    condition     = var.redis_shards >= 1 && var.redis_shards <= 500 && floor(var.redis_shards) == var.redis_shards
    error_message = "redis_shards must be a whole number from 1 to 500."
  }
}

variable "redis_replicas_per_shard" {
  description = "Replicas of each shard's primary, in other AZs. At least 1: the gateways WAIT for a replica of the shard before acknowledging an ingest, and a replica is what automatic failover promotes."
  type        = number
  default     = 1
  validation {
    condition     = var.redis_replicas_per_shard >= 1 && var.redis_replicas_per_shard <= 5 && floor(var.redis_replicas_per_shard) == var.redis_replicas_per_shard
    error_message = "redis_replicas_per_shard must be a whole number from 1 to 5 (at least one: ingest waits for a replica before acknowledging)."
  }
  validation {
    condition     = var.redis_shards * (1 + var.redis_replicas_per_shard) <= 500
    error_message = "redis_shards x (1 + redis_replicas_per_shard) nodes must not exceed 500, ElastiCache's ceiling per cluster (the default quota is 90 nodes; raise it with AWS first beyond that)."
  }
}

variable "redis_snapshot_retention_days" {
  description = "Days of automatic Redis snapshots."
  type        = number
  default     = 7
  validation {
    condition     = var.redis_snapshot_retention_days >= 1 && var.redis_snapshot_retention_days <= 35
    error_message = "redis_snapshot_retention_days must be between 1 and 35."
  }
}

# --- model bucket --------------------------------------------------------------

variable "model_prefix" {
  description = "Key prefix of the model artefacts in the model bucket; tasks get read-only access to it and nothing else."
  type        = string
  default     = "models/"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*/?$", var.model_prefix))
    error_message = "model_prefix must be a relative key prefix such as models/ (lowercase, no leading slash)."
  }
}

variable "model_noncurrent_version_days" {
  description = "Days superseded model object versions are kept (rollback window for models)."
  type        = number
  default     = 90
  validation {
    condition     = var.model_noncurrent_version_days >= 1 && var.model_noncurrent_version_days <= 3650
    error_message = "model_noncurrent_version_days must be between 1 and 3650."
  }
}

# --- alarms --------------------------------------------------------------------

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (null: subscribe something else to the sns_alarm_topic_arn output)."
  type        = string
  default     = null
  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be an e-mail address or null."
  }
}

variable "alarm_alb_5xx_per_minute" {
  description = "Alarm when the ALB and its targets answer more 5xx than this per minute, three minutes in a row."
  type        = number
  default     = 10
  validation {
    condition     = var.alarm_alb_5xx_per_minute >= 1
    error_message = "alarm_alb_5xx_per_minute must be at least 1."
  }
}

variable "alarm_p99_response_time_s" {
  description = "Alarm when the targets' p99 response time (seconds) stays above this for five minutes."
  type        = number
  default     = 0.5
  validation {
    condition     = var.alarm_p99_response_time_s > 0 && var.alarm_p99_response_time_s <= 60
    error_message = "alarm_p99_response_time_s must be between 0 and 60 seconds."
  }
}

variable "alarm_cpu_percent" {
  description = "Alarm when a service's (or RDS's, or a Redis node's EngineCPUUtilization) average CPU stays above this percentage for 15 minutes."
  type        = number
  default     = 85
  validation {
    condition     = var.alarm_cpu_percent >= 10 && var.alarm_cpu_percent <= 100
    error_message = "alarm_cpu_percent must be between 10 and 100."
  }
}

variable "alarm_rds_free_storage_gb" {
  description = "Alarm when RDS free storage falls below this many GiB."
  type        = number
  default     = 10
  validation {
    condition     = var.alarm_rds_free_storage_gb >= 1
    error_message = "alarm_rds_free_storage_gb must be at least 1."
  }
}

variable "alarm_redis_memory_percent" {
  description = "Alarm when Redis memory use (DatabaseMemoryUsagePercentage) stays above this."
  type        = number
  default     = 80
  validation {
    condition     = var.alarm_redis_memory_percent >= 10 && var.alarm_redis_memory_percent <= 100
    error_message = "alarm_redis_memory_percent must be between 10 and 100."
  }
}

variable "alarm_redis_replication_lag_s" {
  description = "Alarm when a Redis replica stays more than this many seconds behind its primary (ReplicationLag) for 5 minutes; ingest waits up to redis.ack_timeout_ms for a replica, so a lagging one turns into 503s."
  type        = number
  default     = 1
  validation {
    condition     = var.alarm_redis_replication_lag_s > 0 && var.alarm_redis_replication_lag_s <= 3600
    error_message = "alarm_redis_replication_lag_s must be above 0 and at most 3600 seconds."
  }
}

variable "alarm_stream_backlog_events" {
  description = "Alarm when the events waiting in the partition streams (StreamBacklogEvents) stay above this for alarm_stream_backlog_minutes. The default sits above processor_max_tasks x processor_backlog_target_per_task with the defaults, i.e. auto-scaling is at its ceiling and still behind; keep it below the service's redis.max_backlog (default 1,000,000), where ingest starts answering 503."
  type        = number
  default     = 200000
  validation {
    condition     = var.alarm_stream_backlog_events >= 1
    error_message = "alarm_stream_backlog_events must be at least 1."
  }
}

variable "alarm_stream_backlog_minutes" {
  description = "Minutes the stream backlog must stay above alarm_stream_backlog_events before the alarm fires."
  type        = number
  default     = 10
  validation {
    condition     = var.alarm_stream_backlog_minutes >= 1 && var.alarm_stream_backlog_minutes <= 1440 && floor(var.alarm_stream_backlog_minutes) == var.alarm_stream_backlog_minutes
    error_message = "alarm_stream_backlog_minutes must be a whole number from 1 to 1440."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the image and the Fargate tasks (build the image for the same one)."
  type        = string
  default     = "X86_64"
  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "stream_token_secret_version" {
  description = "Generation of the stream token secret (CARTPULSE_STREAM__TOKEN_SECRET). Raise it by one in terraform.tfvars to rotate: the next apply writes a new random value (write-only, never in state) and the tasks roll onto it; stream tokens issued before stop working (README.md)."
  type        = number
  default     = 1
  validation {
    condition     = var.stream_token_secret_version >= 1 && floor(var.stream_token_secret_version) == var.stream_token_secret_version
    error_message = "stream_token_secret_version must be a whole number of at least 1."
  }
}

# --- releases: graceful stop, blue/green gateways, GitHub OIDC -----------------

variable "drain_seconds" {
  description = "Seconds a gateway keeps serving after SIGTERM while the load balancer stops sending it traffic: the service's shutdown.drain_s (CARTPULSE_SHUTDOWN__DRAIN_S, set from this), and the target groups' deregistration delay. The tasks' stop timeout is this plus shutdown_finish_seconds."
  type        = number
  default     = 15
  validation {
    condition     = var.drain_seconds >= 0 && var.drain_seconds <= 90
    error_message = "drain_seconds must be between 0 and 90 (with shutdown_finish_seconds it must fit Fargate's 120 s stop timeout)."
  }
}

variable "shutdown_finish_seconds" {
  description = "Seconds a task gets after the drain to close its streams, finish requests in flight and flush its state before ECS sends SIGKILL (the service waits up to 30 s for requests in flight)."
  type        = number
  default     = 30
  validation {
    condition     = var.shutdown_finish_seconds >= 5 && var.drain_seconds + var.shutdown_finish_seconds <= 120
    error_message = "shutdown_finish_seconds must be at least 5, and drain_seconds + shutdown_finish_seconds at most 120 (Fargate's maximum stop timeout)."
  }
}

variable "gateway_deployment_config" {
  description = "CodeDeploy deployment configuration of the gateways' blue/green deployments: CodeDeployDefault.ECSAllAtOnce, or a canary / linear one (e.g. CodeDeployDefault.ECSCanary10Percent5Minutes) to shift production traffic in steps while the rollback alarms watch."
  type        = string
  default     = "CodeDeployDefault.ECSCanary10Percent5Minutes"
}

variable "blue_termination_wait_minutes" {
  description = "Minutes the previous (blue) gateway tasks keep running after a successful deployment, so a rollback is only a traffic switch."
  type        = number
  default     = 15
  validation {
    condition     = var.blue_termination_wait_minutes >= 0 && var.blue_termination_wait_minutes <= 2880
    error_message = "blue_termination_wait_minutes must be between 0 and 2880 (CodeDeploy's limit)."
  }
}

variable "test_listener_port" {
  description = "ALB port of the test listener, which routes to the replacement (green) gateway tasks during a deployment. Only the deployment's smoke-check hook reaches it (from the NAT gateways' addresses)."
  type        = number
  default     = 8443
  validation {
    condition     = var.test_listener_port != 443 && var.test_listener_port != 80 && var.test_listener_port > 0 && var.test_listener_port < 65536
    error_message = "test_listener_port must be a port other than 80 and 443."
  }
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose release workflow deploys this stack. Its tag pushes (refs/tags/v*) may assume the deploy role through GitHub OIDC; nothing else may. null: no deploy role."
  type        = string
  default     = null
  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be owner/name."
  }
}

variable "github_oidc_provider_arn" {
  description = "ARN of an existing IAM OIDC provider for token.actions.githubusercontent.com (an account has at most one). null: this stack creates it."
  type        = string
  default     = null
}

variable "release_tag_pattern" {
  description = "Git tags whose workflow runs may assume the deploy role (matched against the OIDC token's sub claim, refs/tags/<pattern>)."
  type        = string
  default     = "v*"
}

variable "tracing_sampling_ratio" {
  description = "Share of new traces the tasks keep and send to X-Ray through the ADOT collector sidecar (telemetry.sampling_ratio); requests that arrive with a sampled traceparent are always traced. 0 keeps only those."
  type        = number
  default     = 0.05
  validation {
    condition     = var.tracing_sampling_ratio >= 0 && var.tracing_sampling_ratio <= 1
    error_message = "tracing_sampling_ratio must be between 0 and 1."
  }
}

variable "adot_collector_image" {
  description = "The AWS Distro for OpenTelemetry collector image run as a sidecar of every gateway and processor task (pin a version; mirror it into your own ECR if tasks have no route to public ECR)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "retrain_schedule" {
  description = "When `cartpulse retrain` runs (EventBridge Scheduler expression, UTC): judge the shadow candidate, then train, publish and shadow a new one. Daily by default."
  type        = string
  default     = "cron(30 3 * * ? *)"
}

variable "retrain_cpu" {
  description = "Fargate CPU units of the retraining task (training uses every core it gets)."
  type        = number
  default     = 2048
}

variable "retrain_memory" {
  description = "Memory (MiB) of the retraining task."
  type        = number
  default     = 4096
}

variable "retrain_margin" {
  description = "`cartpulse retrain --margin`: the shadow candidate is promoted when the 95 % interval of its AUC gain over the active version lies above this."
  type        = number
  default     = 0
  validation {
    condition     = var.retrain_margin >= 0 && var.retrain_margin < 1
    error_message = "retrain_margin must be in [0, 1)."
  }
}

variable "retrain_min_sessions" {
  description = "`cartpulse retrain --min-sessions`: settled sessions closed since the candidate was trained, needed to judge it."
  type        = number
  default     = 1000
}

variable "lake_archive_every_s" {
  description = "Seconds between the processors' archive runs of the event log into the data lake (docs/data-lake.md); 0 turns archiving off."
  type        = number
  default     = 900
  validation {
    condition     = var.lake_archive_every_s >= 0 && var.lake_archive_every_s <= 86400
    error_message = "lake_archive_every_s must be between 0 and 86400."
  }
}

variable "lake_noncurrent_version_days" {
  description = "Days a lake object version replaced by a re-run is kept."
  type        = number
  default     = 30
  validation {
    condition     = var.lake_noncurrent_version_days >= 1 && var.lake_noncurrent_version_days <= 3650
    error_message = "lake_noncurrent_version_days must be between 1 and 3650."
  }
}
