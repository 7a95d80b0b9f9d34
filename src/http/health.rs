//! Liveness, readiness and the Prometheus endpoint.

use super::error::ApiError;
use super::AppState;
use actix_web::{web, HttpResponse};
use prometheus::Encoder;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The service can do its job: the database answers.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db.ping().await {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "database": "ok",
            "actors_backlog_events": state.runtime.inflight(),
        }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            Err(ApiError::unavailable("database unreachable"))
        }
    }
}

/// Prometheus text format. Unauthenticated, like most exporters: it carries
/// counts only, no customer data; restrict it at the network if needed.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&state.metrics.registry.gather(), &mut buf)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(buf))
}
