//! Liveness, readiness and the Prometheus endpoint.

use super::AppState;
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::Encoder;
use serde::Serialize;

/// `GET /healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    pub status: &'static str,
}

/// `GET /readyz` when ready.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(pattern = "^ready$")]
    pub status: &'static str,
    /// `all`, `gateway` or `processor`.
    pub role: &'static str,
    /// Always `ok` (otherwise the answer is 503).
    pub database: &'static str,
    /// `ok`, or `not used` without Redis.
    pub redis: &'static str,
    /// Events acknowledged but not yet applied by this process's actors (processes with actors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actors_backlog_events: Option<u64>,
    /// Events in the Redis Streams not yet consumed (processes that ingest through them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_backlog_events: Option<u64>,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process is up.", body = Health)),
    security(()),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The service can do its job: it is not stopping, the database answers,
/// and Redis too when the process uses it.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to serve.", body = Ready),
        (status = 503, description = "Draining, or the database / Redis is unreachable.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(()),
)]
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
    let body = Ready {
        status: "ready",
        role: state.role.name(),
        database: "ok",
        redis: if state.redis.is_some() { "ok" } else { "not used" },
        actors_backlog_events: state.runtime.as_ref().map(|rt| rt.inflight() as u64),
        stream_backlog_events: match &state.pipeline {
            crate::serving::ingest::Ingest::Queued(q) => Some(q.backlog()),
            crate::serving::ingest::Ingest::Direct(_) => None,
        },
    };
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus text format. A scraper on this machine (a loopback peer that
/// no proxy forwarded) needs no credentials; anyone else needs a read-scope
/// key or console session, so the counts are not public through a load
/// balancer even if it forwards the path.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "Prometheus text format. No credentials needed from this machine (a loopback peer no proxy \
                   forwarded); a read-scope key or console session from anywhere else.",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "Not local, and no key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "The key could not be checked; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security((), ("api_key" = ["read"]), ("console_session" = ["read"])),
)]
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
