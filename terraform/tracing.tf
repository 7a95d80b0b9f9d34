# Distributed tracing: every gateway and processor task runs the AWS Distro
# for OpenTelemetry (ADOT) collector as a sidecar. cartpulse exports its spans
# over OTLP/HTTP to it on the task's loopback (telemetry.otlp_endpoint); the
# collector batches them and sends them to AWS X-Ray, which accepts the W3C
# trace ids cartpulse generates. The app's JSON logs carry the same trace_id
# (the request span's field), so a log line leads to its trace.
#
# The sidecar is not essential: if it stops, spans are dropped (the exporter
# gives up after its timeout) and the service goes on serving.

locals {
  otlp_http_port = 4318

  tracing_environment = [
    { name = "CARTPULSE_TELEMETRY__OTLP_ENDPOINT", value = "http://127.0.0.1:${local.otlp_http_port}" },
    { name = "CARTPULSE_TELEMETRY__SAMPLING_RATIO", value = tostring(var.tracing_sampling_ratio) },
    { name = "CARTPULSE_TELEMETRY__SERVICE_NAME", value = local.name },
  ]

  # The collector's whole pipeline: OTLP/HTTP in on loopback only, batched,
  # out to X-Ray. Nothing else is received or exported.
  adot_config = yamlencode({
    receivers = {
      otlp = { protocols = { http = { endpoint = "127.0.0.1:${local.otlp_http_port}" } } }
    }
    processors = {
      batch = { timeout = "5s", send_batch_size = 512 }
    }
    exporters = {
      awsxray = { region = local.region, indexed_attributes = ["cartpulse.role"] }
    }
    service = {
      pipelines = {
        traces = { receivers = ["otlp"], processors = ["batch"], exporters = ["awsxray"] }
      }
    }
  })

  # One per task definition (the log group differs).
  adot_sidecar = {
    for role in ["gateway", "processor"] : role => {
      name                   = "adot-collector"
      image                  = var.adot_collector_image
      essential              = false
      user                   = "10001:10001"
      readonlyRootFilesystem = true
      privileged             = false
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.adot_config }]
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.tasks[role].name
          awslogs-region        = local.region
          awslogs-stream-prefix = "adot"
        }
      }
    }
  }

  # cartpulse starts after its collector, so the first spans have somewhere to go.
  after_adot = [{ containerName = "adot-collector", condition = "START" }]
}

# X-Ray's write actions have no resource-level permissions: "*" is the only
# resource they accept. Nothing can be read back with these.
data "aws_iam_policy_document" "task_tracing" {
  statement {
    sid       = "SendTraces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "task_tracing" {
  name   = "send-traces"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task_tracing.json
}
