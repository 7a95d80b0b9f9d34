//! W3C trace context on HTTP: a request's `traceparent` header makes its
//! server span a child of the caller's span, and every traced response
//! carries its own `traceparent` back, so a client can find the trace of
//! what it sent. Handlers reach the request's sampled context through
//! [`of_request`] and hand it to the work they start.

use super::{carried, span_context};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest};
use actors::trace::TraceParent;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header, lower case as HTTP/2 wants it.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The sampled trace of the request being served, in its extensions.
#[derive(Clone, Copy, Debug)]
struct RequestTrace(TraceParent);

/// The request's sampled trace context, if it is traced.
pub fn of_request(req: &HttpRequest) -> Option<TraceParent> {
    req.extensions().get::<RequestTrace>().map(|t| t.0)
}

/// A request's server span and the `traceparent` to answer with.
pub struct ServerSpan {
    pub span: tracing::Span,
    reply: Option<HeaderValue>,
}

/// Opens the server span of a request (child of its `traceparent`, if it
/// has a valid one) and, when sampled, makes its context reachable to the
/// handler.
pub fn begin(req: &ServiceRequest, method: &'static str, route: &str) -> ServerSpan {
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let incoming = req.headers().get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    if let Some(parent) = incoming {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(span_context(&parent)));
    }
    let cx = span.context().span().span_context().clone();
    let mut reply = None;
    if let Some(own) = carried(&cx) {
        span.record("trace_id", tracing::field::display(cx.trace_id()));
        reply = HeaderValue::from_str(&own.to_string()).ok();
        if own.sampled() {
            req.extensions_mut().insert(RequestTrace(own));
        }
    }
    ServerSpan { span, reply }
}

impl ServerSpan {
    /// Notes the status on the span and returns the `traceparent`.
    pub fn finish<B>(&self, res: Option<&mut ServiceResponse<B>>, status: u16) {
        self.span.record("http.response.status_code", status);
        if status >= 500 {
            self.span.record("otel.status_code", "ERROR");
        }
        if let (Some(res), Some(v)) = (res, &self.reply) {
            res.headers_mut().insert(TRACEPARENT, v.clone());
        }
    }
}
