//! Distributed tracing over OpenTelemetry: one trace per sampled request,
//! from the HTTP edge through the group commit (or a gateway's XADD and a
//! processor's read and commit), the session actor's fold and snapshot, the
//! KPI rollup and the frames it broadcasts, and the inference pool.
//!
//! Spans go out over OTLP/HTTP (protobuf) to `telemetry.otlp_endpoint`. With
//! no endpoint (the default) nothing is installed: [`enabled`] is false, the
//! HTTP layer creates no span and every carried `Option<TraceParent>` stays
//! `None`, so the cost is one relaxed atomic load per request.
//!
//! The HTTP request span is a `tracing` span (through `tracing-opentelemetry`,
//! so log lines inside it carry its `trace_id`). Steps that run elsewhere
//! (the committer, actors, workers) are recorded once finished, with their
//! start and end, as children of the context the work carried ([`record`]):
//! that context travels with an event as a W3C `traceparent`, in memory and
//! in a Redis Streams entry's fields.

pub mod export;
pub mod http;

use actors::trace::{FinishedSpan, SpanRecorder, TraceParent};
use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Tracing settings (`telemetry.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TracingSettings {
    /// Base URL of an OTLP/HTTP receiver (protobuf), e.g.
    /// `http://127.0.0.1:4318` (an OpenTelemetry Collector, or the ADOT
    /// sidecar on ECS); spans are sent to `<url>/v1/traces`. Unset: tracing
    /// is off.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces that are kept, 0 to 1. A request that comes with
    /// a `traceparent` follows its caller's decision instead.
    pub sampling_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// How long finished spans wait before they are exported in a batch.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub export_delay_ms: Duration,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: None,
            sampling_ratio: 0.1,
            service_name: "cartpulse".into(),
            export_delay_ms: Duration::from_millis(1000),
        }
    }
}

impl TracingSettings {
    /// The traces URL, or why the settings cannot work.
    pub fn validate(&self) -> anyhow::Result<Option<String>> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sampling_ratio),
            "telemetry.sampling_ratio must be between 0 and 1, got {}",
            self.sampling_ratio
        );
        anyhow::ensure!(!self.service_name.trim().is_empty(), "telemetry.service_name must not be empty");
        let Some(endpoint) = self.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
            return Ok(None);
        };
        let url = url::Url::parse(endpoint).with_context(|| {
            format!("telemetry.otlp_endpoint {endpoint:?} is not a URL (e.g. http://127.0.0.1:4318)")
        })?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "telemetry.otlp_endpoint must be an http:// or https:// URL of an OTLP/HTTP receiver, got {endpoint:?}"
        );
        Ok(Some(format!("{}/v1/traces", endpoint.trim_end_matches('/'))))
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// True once [`start`] installed an exporter.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The running exporter; [`Tracing::shutdown`] flushes what is buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// Starts the exporter when an endpoint is set; returns the tracer for the
/// `tracing` layer. `role` and `instance` become resource attributes, so a
/// trace shows which replica ran each span.
pub fn start(settings: &TracingSettings, role: &str, instance: &str) -> anyhow::Result<Option<(Tracing, SdkTracer)>> {
    let Some(url) = settings.validate()? else { return Ok(None) };
    let client = export::ExportClient::new(Duration::from_secs(10)).context("starting the OTLP export client")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .build()
        .context("building the OTLP span exporter")?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(settings.export_delay_ms)
                .with_max_queue_size(8192)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attributes([
            KeyValue::new("service.instance.id", instance.to_owned()),
            KeyValue::new("cartpulse.role", role.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_ratio))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("cartpulse");
    // A second start in the same process (tests) keeps the first tracer.
    let _ = TRACER.set(tracer.clone());
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((Tracing { provider }, tracer)))
}

/// The OpenTelemetry span context of a carried trace parent.
pub fn span_context(parent: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    )
}

/// The carried form of a span context; `None` unless valid and sampled
/// (only sampled work is worth carrying further).
pub fn trace_parent(cx: &SpanContext) -> Option<TraceParent> {
    carried(cx).filter(TraceParent::sampled)
}

/// The W3C form of a valid span context, sampled or not (what a response's
/// `traceparent` names).
pub fn carried(cx: &SpanContext) -> Option<TraceParent> {
    cx.is_valid().then(|| TraceParent {
        trace_id: cx.trace_id().to_bytes(),
        span_id: cx.span_id().to_bytes(),
        flags: cx.trace_flags().to_u8(),
    })
}

/// Records a finished step as a child of `span.parent`; returns the new
/// span's context (its own children hang below it). Without a tracer (never
/// started) the parent comes back unchanged.
pub fn record(span: FinishedSpan<'_>) -> TraceParent {
    let Some(tracer) = TRACER.get() else { return *span.parent };
    let parent = opentelemetry::Context::new().with_remote_span_context(span_context(span.parent));
    let attributes: Vec<KeyValue> = span.attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
    let started = tracer
        .span_builder(span.name)
        .with_kind(SpanKind::Internal)
        .with_start_time(span.start)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = opentelemetry::trace::Span::span_context(&started).clone();
    let mut started = started;
    opentelemetry::trace::Span::end_with_timestamp(&mut started, span.end);
    trace_parent(&cx).unwrap_or(*span.parent)
}

/// [`record`] as the actors' hook.
pub struct Recorder;

impl SpanRecorder for Recorder {
    fn record(&self, span: FinishedSpan<'_>) -> TraceParent {
        record(span)
    }
}

/// The actors' recorder, when tracing is on.
pub fn recorder() -> Option<std::sync::Arc<dyn SpanRecorder>> {
    enabled().then(|| std::sync::Arc::new(Recorder) as std::sync::Arc<dyn SpanRecorder>)
}

/// Measures a step: `Step::start()` before, `.finish(name, parent, attrs)`
/// after. A no-op pair when the work is not traced.
#[derive(Clone, Copy)]
pub struct Step(std::time::SystemTime);

impl Step {
    pub fn start() -> Step {
        Step(std::time::SystemTime::now())
    }

    /// When the step started.
    pub fn time(&self) -> std::time::SystemTime {
        self.0
    }

    /// The step as if it started no earlier than `t`.
    pub fn not_before(self, t: std::time::SystemTime) -> Step {
        Step(self.0.max(t))
    }

    /// Records the step (now ends it) under `parent`, if traced.
    pub fn finish(
        self,
        name: &'static str,
        parent: Option<&TraceParent>,
        attributes: Vec<(&'static str, i64)>,
    ) -> Option<TraceParent> {
        let parent = parent?;
        Some(record(FinishedSpan { name, parent, start: self.0, end: std::time::SystemTime::now(), attributes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_is_wrong() {
        let mut s = TracingSettings::default();
        assert_eq!(s.validate().unwrap(), None);
        s.otlp_endpoint = Some("http://127.0.0.1:4318/".into());
        assert_eq!(s.validate().unwrap().as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        s.otlp_endpoint = Some("127.0.0.1:4318".into());
        assert!(s.validate().unwrap_err().to_string().contains("otlp_endpoint"));
        s.otlp_endpoint = Some("grpc://x:4317".into());
        assert!(s.validate().unwrap_err().to_string().contains("http://"));
        s.otlp_endpoint = None;
        s.sampling_ratio = 1.5;
        assert!(s.validate().unwrap_err().to_string().contains("sampling_ratio"));
    }

    #[test]
    fn span_contexts_round_trip_through_trace_parents() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace_parent(&span_context(&p)), Some(p));
        let unsampled = TraceParent { flags: 0, ..p };
        assert_eq!(trace_parent(&span_context(&unsampled)), None);
    }
}
