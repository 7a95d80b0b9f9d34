# The service level objectives as CloudWatch alarms: the same objectives,
# windows and burn rates as deploy/prometheus/slo-rules.yml (docs/operations.md,
# "Service level objectives"). Every replica prints per objective, once a
# minute, how many events were valid and how many of them good (EMF lines:
# SloValidEvents / SloGoodEvents, dimensions Deployment and Objective; see
# src/telemetry/slo.rs). Per objective and window an alarm divides the sums
# over the window; a composite alarm per burn rate pages when both of its
# windows burn: fast = 1 h and 5 m above 14.4 × the error budget rate,
# slow = 6 h and 30 m above 6 ×.

locals {
  slo_objectives = {
    "ingest-availability" = { target = 0.999, what = "valid ingest requests answered without a 5xx" }
    "dashboard-latency"   = { target = 0.99, what = "events on dashboards within 1 s of their acknowledgement" }
    "stream-connect"      = { target = 0.999, what = "stream connections that did not fail with a 5xx" }
    "scoring-latency"     = { target = 0.99, what = "predictions answered within 10 ms" }
  }

  # Window → (length in seconds, the burn rate whose rule it belongs to).
  slo_windows = {
    "5m"  = { seconds = 300, burn = "fast" }
    "1h"  = { seconds = 3600, burn = "fast" }
    "30m" = { seconds = 1800, burn = "slow" }
    "6h"  = { seconds = 21600, burn = "slow" }
  }
  slo_burns = {
    fast = { factor = 14.4, long = "1h", short = "5m" }
    slow = { factor = 6, long = "6h", short = "30m" }
  }

  slo_window_alarms = {
    for pair in setproduct(keys(local.slo_objectives), keys(local.slo_windows)) :
    "${pair[0]}-${pair[1]}" => {
      objective = pair[0]
      window    = pair[1]
      seconds   = local.slo_windows[pair[1]].seconds
      threshold = local.slo_burns[local.slo_windows[pair[1]].burn].factor * (1 - local.slo_objectives[pair[0]].target)
    }
  }
  slo_burn_alarms = {
    for pair in setproduct(keys(local.slo_objectives), keys(local.slo_burns)) :
    "${pair[0]}-${pair[1]}" => { objective = pair[0], burn = pair[1] }
  }
}

# One window of one objective: the error ratio over the window above the
# burn threshold. No actions of its own: the composite alarms below notify.
resource "aws_cloudwatch_metric_alarm" "slo_window" {
  for_each = local.slo_window_alarms

  alarm_name          = "${local.name}-slo-${each.key}"
  alarm_description   = "${each.value.objective}: error ratio over ${each.value.window} above ${each.value.threshold} (part of a burn-rate alarm)"
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"

  metric_query {
    id          = "ratio"
    expression  = "IF(valid > 0, (valid - good) / valid, 0)"
    label       = "${each.value.objective} error ratio, ${each.value.window}"
    return_data = true
  }
  metric_query {
    id = "valid"
    metric {
      namespace   = var.metrics_namespace
      metric_name = "SloValidEvents"
      dimensions  = { Deployment = local.redis_prefix, Objective = each.value.objective }
      period      = each.value.seconds
      stat        = "Sum"
    }
  }
  metric_query {
    id = "good"
    metric {
      namespace   = var.metrics_namespace
      metric_name = "SloGoodEvents"
      dimensions  = { Deployment = local.redis_prefix, Objective = each.value.objective }
      period      = each.value.seconds
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_composite_alarm" "slo_burn" {
  for_each = local.slo_burn_alarms

  alarm_name        = "${local.name}-slo-${each.key}-burn"
  alarm_description = "${each.value.objective} (${local.slo_objectives[each.value.objective].target * 100} % of ${local.slo_objectives[each.value.objective].what}) is burning its 30-day error budget at ${local.slo_burns[each.value.burn].factor} × or faster over ${local.slo_burns[each.value.burn].long} and ${local.slo_burns[each.value.burn].short}: runbook in docs/operations.md, \"Runbook: ${each.value.objective}\""
  alarm_rule = join(" AND ", [
    "ALARM(\"${aws_cloudwatch_metric_alarm.slo_window["${each.value.objective}-${local.slo_burns[each.value.burn].long}"].alarm_name}\")",
    "ALARM(\"${aws_cloudwatch_metric_alarm.slo_window["${each.value.objective}-${local.slo_burns[each.value.burn].short}"].alarm_name}\")",
  ])
  alarm_actions = local.alarm_actions
  ok_actions    = local.alarm_actions
}

# Model drift (docs/model.md, "Drift"), next to the SLO alarms: each minute
# every replica that serves clients prints the largest PSI it measured
# (EMF ModelFeaturePsiMax / ModelScorePsiMax, dimension Deployment; see
# src/telemetry/slo.rs). Above 0.2 for 30 minutes notifies, as the
# Prometheus rules CartpulseFeatureDrift / CartpulseScoreDrift do.
resource "aws_cloudwatch_metric_alarm" "model_drift" {
  for_each = {
    feature = { metric = "ModelFeaturePsiMax", what = "a session feature of the live traffic against a served model's training rows" }
    score   = { metric = "ModelScorePsiMax", what = "a served model's final scores against its out-of-fold scores" }
  }

  alarm_name          = "${local.name}-model-${each.key}-drift"
  alarm_description   = "PSI of ${each.value.what} above 0.2 for 30 minutes: GET /v1/models/{version}/drift names it; runbook in docs/operations.md, \"Runbook: model drift\""
  namespace           = var.metrics_namespace
  metric_name         = each.value.metric
  dimensions          = { Deployment = local.redis_prefix }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 6
  datapoints_to_alarm = 6
  threshold           = 0.2
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
