# Minimal ingress: the internet reaches only the ALB (443, and 80 which only
# redirects); gateways accept only the ALB; processors accept nothing; RDS and
# Redis accept only the tasks. Egress is limited to what each tier calls.

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "cartpulse load balancer: HTTPS (and HTTP redirect) in, gateway tasks out"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-alb" }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS and WebSocket (wss) from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  #checkov:skip=CKV_AWS_260:Port 80 only serves the listener's permanent redirect to HTTPS; no request reaches a target over HTTP.
  for_each          = toset(var.alb_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTP from clients, answered only with a redirect to HTTPS"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_egress_rule" "alb_to_gateway" {
  security_group_id            = aws_security_group.alb.id
  description                  = "Requests and health checks to the gateway tasks"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_security_group" "gateway" {
  name        = "${local.name}-gateway"
  description = "cartpulse gateway tasks: HTTP from the ALB only"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-gateway" }
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_alb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "HTTP and WebSocket from the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_security_group" "processor" {
  name        = "${local.name}-processor"
  description = "cartpulse processor tasks and one-off tasks (migrate): no ingress"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-processor" }
}

# Egress shared by both task tiers: Postgres, Redis, and HTTPS for AWS APIs
# (ECR, Secrets Manager, CloudWatch Logs, S3 through the gateway endpoint).
locals {
  task_security_groups = {
    gateway   = aws_security_group.gateway.id
    processor = aws_security_group.processor.id
  }
}

resource "aws_vpc_security_group_egress_rule" "task_to_rds" {
  for_each                     = local.task_security_groups
  security_group_id            = each.value
  description                  = "PostgreSQL to RDS"
  referenced_security_group_id = aws_security_group.rds.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_egress_rule" "task_to_redis" {
  for_each                     = local.task_security_groups
  security_group_id            = each.value
  description                  = "Redis (TLS) to ElastiCache"
  referenced_security_group_id = aws_security_group.redis.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_egress_rule" "task_to_aws_apis" {
  for_each          = local.task_security_groups
  security_group_id = each.value
  description       = "HTTPS to AWS APIs (ECR, Secrets Manager, CloudWatch Logs, S3) through NAT or endpoints"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_security_group" "rds" {
  name        = "${local.name}-rds"
  description = "cartpulse Postgres: 5432 from the tasks only, no egress"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-rds" }
}

resource "aws_vpc_security_group_ingress_rule" "rds_from_tasks" {
  for_each                     = local.task_security_groups
  security_group_id            = aws_security_group.rds.id
  description                  = "PostgreSQL from ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "cartpulse Redis: 6379 from the tasks only, no egress"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-redis" }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  for_each                     = local.task_security_groups
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis (TLS) from ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

# --- blue/green deployments ----------------------------------------------------

# The test listener (alb.tf) answers only the NAT gateways' addresses: the
# deployment hook runs in the private subnets and reaches the internet-facing
# ALB through them. Nothing outside the VPC sees the replacement tasks before
# production traffic moves to them.
resource "aws_vpc_security_group_ingress_rule" "alb_test_listener" {
  count             = local.nat_count
  security_group_id = aws_security_group.alb.id
  description       = "Blue/green test listener, from the deployment hook behind NAT gateway ${count.index}"
  cidr_ipv4         = "${aws_eip.nat[count.index].public_ip}/32"
  ip_protocol       = "tcp"
  from_port         = var.test_listener_port
  to_port           = var.test_listener_port
}

resource "aws_security_group" "deploy_hook" {
  name        = "${local.name}-deploy-hook"
  description = "cartpulse blue/green smoke-check hook: /readyz of the replacement gateway tasks, the test listener, AWS APIs"
  vpc_id      = aws_vpc.main.id
  tags        = { Name = "${local.name}-deploy-hook" }
}

resource "aws_vpc_security_group_egress_rule" "deploy_hook_to_gateway" {
  security_group_id            = aws_security_group.deploy_hook.id
  description                  = "GET /readyz on each replacement gateway task"
  referenced_security_group_id = aws_security_group.gateway.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}

resource "aws_vpc_security_group_egress_rule" "deploy_hook_https" {
  security_group_id = aws_security_group.deploy_hook.id
  description       = "HTTPS to the ALB test listener and AWS APIs (CodeDeploy, ELB, Secrets Manager) through the NAT gateways"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "deploy_hook_test_listener" {
  security_group_id = aws_security_group.deploy_hook.id
  description       = "The ALB test listener (public addresses, through the NAT gateways)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = var.test_listener_port
  to_port           = var.test_listener_port
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_deploy_hook" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "GET /readyz from the blue/green smoke-check hook"
  referenced_security_group_id = aws_security_group.deploy_hook.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
}
