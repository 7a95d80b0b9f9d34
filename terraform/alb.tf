# Public Application Load Balancer: HTTPS (TLS 1.2+) to the gateway tasks,
# HTTP answered only with a redirect, idle timeout long enough for WebSockets,
# health checks on /readyz, WAF in front, access logs to the log bucket.
# /metrics and /readyz are answered 404 at the edge: they are for the target
# group's health checks (which go to the tasks directly, not through the
# listener) and for scrapers inside the VPC, not for the internet.

resource "aws_lb" "main" {
  name                       = "${local.name}-alb"
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = aws_subnet.public[*].id
  idle_timeout               = var.alb_idle_timeout_s
  drop_invalid_header_fields = true
  # The client's address is appended to X-Forwarded-For (whatever the client
  # sent stays to its left); the tasks trust the header only from the public
  # subnets (CARTPULSE_HTTP__TRUSTED_PROXIES in ecs.tf). Spelled out although
  # it is the default, because the service's per-address limits rely on it.
  xff_header_processing_mode = "append"
  enable_deletion_protection = var.alb_deletion_protection

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "alb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

# Two target groups for the gateways' blue/green deployments (codedeploy.tf):
# `gateway` starts as production (blue); each deployment registers the new
# tasks in the other one and moves the listeners over. Identical on purpose.
# The deregistration delay is the service's drain time (var.drain_seconds):
# a deregistered task keeps serving that long, which is what it does on
# SIGTERM too (shutdown.drain_s, set from the same variable in ecs.tf).
locals {
  gateway_health_check = {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_target_group" "gateway" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; ALB-to-task traffic stays inside the VPC's private subnets, where the gateway listens on plain HTTP.
  name                 = "${local.name}-gw"
  port                 = local.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = var.drain_seconds

  health_check {
    path                = local.gateway_health_check.path
    matcher             = local.gateway_health_check.matcher
    interval            = local.gateway_health_check.interval
    timeout             = local.gateway_health_check.timeout
    healthy_threshold   = local.gateway_health_check.healthy_threshold
    unhealthy_threshold = local.gateway_health_check.unhealthy_threshold
  }
}

resource "aws_lb_target_group" "gateway_green" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; ALB-to-task traffic stays inside the VPC's private subnets, where the gateway listens on plain HTTP.
  name                 = "${local.name}-gw-green"
  port                 = local.container_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = var.drain_seconds

  health_check {
    path                = local.gateway_health_check.path
    matcher             = local.gateway_health_check.matcher
    interval            = local.gateway_health_check.interval
    timeout             = local.gateway_health_check.timeout
    healthy_threshold   = local.gateway_health_check.healthy_threshold
    unhealthy_threshold = local.gateway_health_check.unhealthy_threshold
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }

  # CodeDeploy switches the target group at each deployment.
  lifecycle {
    ignore_changes = [default_action]
  }
}

# The test listener of blue/green deployments: during a deployment it routes
# to the replacement tasks, and the AfterAllowTestTraffic hook (codedeploy.tf)
# checks them through it before any production traffic moves. Reachable only
# from the NAT gateways' addresses (security_groups.tf), i.e. from inside the
# VPC, where the hook runs.
resource "aws_lb_listener" "test" {
  load_balancer_arn = aws_lb.main.arn
  port              = var.test_listener_port
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }

  lifecycle {
    ignore_changes = [default_action]
  }
}

# Internal endpoints never leave the VPC through the load balancer. A rule
# holds at most three path values. Percent-encoded variants (/%6Detrics) do
# not match here but would reach the same route in the service, so the WAF
# rule "internal-endpoints" below also blocks the decoded forms.
resource "aws_lb_listener_rule" "internal_endpoints" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 1

  action {
    type = "fixed-response"
    fixed_response {
      content_type = "text/plain"
      message_body = "not found"
      status_code  = "404"
    }
  }

  condition {
    path_pattern {
      values = ["/metrics", "/metrics/*", "/readyz"]
    }
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }
}

# --- WAF ---------------------------------------------------------------------

resource "aws_wafv2_web_acl" "main" {
  name  = "${local.name}-alb"
  scope = "REGIONAL"

  default_action {
    allow {}
  }

  # /metrics and /readyz (alb.tf listener rule) in any spelling the service
  # would route there: percent-decoded, with duplicate slashes and ./ segments
  # removed. Answered 404 like the listener rule, before any other rule.
  rule {
    name     = "internal-endpoints"
    priority = 5
    action {
      block {
        custom_response {
          response_code = 404
        }
      }
    }
    statement {
      or_statement {
        statement {
          byte_match_statement {
            search_string         = "/metrics"
            positional_constraint = "STARTS_WITH"
            field_to_match {
              uri_path {}
            }
            text_transformation {
              priority = 0
              type     = "URL_DECODE"
            }
            text_transformation {
              priority = 1
              type     = "NORMALIZE_PATH"
            }
          }
        }
        statement {
          byte_match_statement {
            search_string         = "/readyz"
            positional_constraint = "STARTS_WITH"
            field_to_match {
              uri_path {}
            }
            text_transformation {
              priority = 0
              type     = "URL_DECODE"
            }
            text_transformation {
              priority = 1
              type     = "NORMALIZE_PATH"
            }
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-internal-endpoints"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common"
    priority = 10
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # Event batches are legitimately far above the rule's 8 KB body limit
        # (the service accepts up to ingest.max_body_bytes); count, don't block.
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-aws-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 20
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-aws-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  # Tor exit nodes and anonymising VPNs are blocked; hosting-provider
  # addresses only counted, because shops post their events from servers.
  rule {
    name     = "aws-anonymous-ip"
    priority = 25
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"
        rule_action_override {
          name = "HostingProviderIPList"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-aws-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 30
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit_per_5min
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.name}-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${local.name}-alb"
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "alb" {
  resource_arn = aws_lb.main.arn
  web_acl_arn  = aws_wafv2_web_acl.main.arn
}

# WAF log group names must start with aws-waf-logs-.
resource "aws_cloudwatch_log_group" "waf" {
  name              = "aws-waf-logs-${local.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_wafv2_web_acl_logging_configuration" "main" {
  resource_arn            = aws_wafv2_web_acl.main.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]

  # API keys travel in Authorization; stream tokens may travel in the query
  # string (docs/stream.md). Neither may reach the logs.
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
  redacted_fields {
    query_string {}
  }
}
