//! Liveness, readiness and the Prometheus endpoint.

use super::AppState;
use crate::serving::web::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::Encoder;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The service can do its job: it is not stopping, the database answers,
/// and Redis too when the process uses it.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable("draining: this replica is stopping"));
    }
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(ApiError::unavailable("database unreachable"));
    }
    if let Some(link) = &state.redis {
        if let Err(e) = link.ping().await {
            tracing::warn!(error = %e, "readiness: Redis unreachable");
            return Err(ApiError::unavailable("Redis unreachable"));
        }
    }
    let mut body = serde_json::json!({
        "status": "ready",
        "role": state.role.name(),
        "database": "ok",
        "redis": if state.redis.is_some() { "ok" } else { "not used" },
    });
    if let Some(rt) = &state.runtime {
        body["actors_backlog_events"] = rt.inflight().into();
    }
    if let crate::serving::ingest::Ingest::Queued(q) = &state.pipeline {
        body["stream_backlog_events"] = q.backlog().into();
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus text format. A scraper on this machine (a loopback peer that
/// no proxy forwarded) needs no credentials; anyone else needs a read-scope
/// key or console session, so the counts are not public through a load
/// balancer even if it forwards the path.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !crate::serving::web::client::is_local_direct(&req) {
        use actix_web::FromRequest;
        crate::serving::web::auth::Auth::<crate::serving::web::auth::ReadScope>::extract(&req).await?;
    }
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&state.metrics.registry.gather(), &mut buf)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(buf))
}
