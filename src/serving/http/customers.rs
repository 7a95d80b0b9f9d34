//! Reading customers and sessions. Where the customer's actor lives (one
//! process, or the processor holding its partition), reads go through it,
//! in order with its events, so they see every acknowledged event; elsewhere
//! they come from the stored snapshot.

use super::AppState;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::ApiError;
use crate::serving::web::path_id::PathId;
use actix_web::{web, HttpResponse};
use actors::event::{CustomerId, SessionId};
use actors::messages::query::{Answer, Query};
use entities::session;
use sea_orm::EntityTrait;

/// `GET /v1/customers/{id}`: profile features, open session, recent sessions.
pub async fn get_customer(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    PathId(customer): PathId<CustomerId>,
) -> Result<HttpResponse, ApiError> {
    let Some(runtime) = state.runtime.as_ref().filter(|rt| rt.owns(customer.as_str())) else {
        // A gateway has no actors, and a processor holds only its
        // partitions' customers: the stored snapshot (at most
        // `actors.snapshot_max_delay_ms` behind), with features as of now.
        let mut stored =
            actors::store::load_snapshots(&state.db, std::slice::from_ref(&customer)).await.map_err(|e| {
                tracing::warn!(error = %e, "customer lookup failed");
                ApiError::unavailable("database unavailable")
            })?;
        return match stored.remove(&customer) {
            Some(s) => Ok(HttpResponse::Ok().json(s.view(chrono::Utc::now()))),
            None => Err(ApiError::NotFound("no such customer".into())),
        };
    };
    match runtime.ask(customer, Query::Customer).await? {
        Some(Answer::Customer(view)) => Ok(HttpResponse::Ok().json(view)),
        _ => Err(ApiError::NotFound("no such customer".into())),
    }
}

/// `GET /v1/sessions/{id}`: the session's 17 features under the UCI file's
/// column names, its status, counts and (later) score.
pub async fn get_session(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    PathId(sid): PathId<SessionId>,
) -> Result<HttpResponse, ApiError> {
    let id = sid.as_str().to_owned();
    let stored = || async {
        session::Entity::find_by_id(id.clone()).one(&state.db).await.map_err(|e| {
            tracing::warn!(error = %e, "session lookup failed");
            ApiError::unavailable("database unavailable")
        })
    };
    let mut row = None;
    let owner = state.runtime.as_ref().and_then(|rt| rt.session_owner(&sid));
    let customer = match owner {
        Some(c) => c,
        None => {
            let r = stored().await?.ok_or_else(|| ApiError::NotFound("no such session".into()))?;
            let c = CustomerId::new_unchecked(r.customer_id.clone());
            row = Some(r);
            c
        }
    };
    if let Some(runtime) = state.runtime.as_ref().filter(|rt| rt.owns(customer.as_str())) {
        if let Some(Answer::Session(Some(view))) = runtime.ask(customer, Query::Session(sid)).await? {
            return Ok(HttpResponse::Ok().json(view));
        }
    }
    let row = match row {
        Some(r) => r,
        None => stored().await?.ok_or_else(|| ApiError::NotFound("no such session".into()))?,
    };
    // Older than what the actor keeps in memory: serve the stored row.
    let features: serde_json::Value =
        row.features.as_deref().and_then(|f| serde_json::from_str(f).ok()).unwrap_or(serde_json::Value::Null);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "session_id": row.session_id,
        "customer_id": row.customer_id,
        "status": row.status,
        "started_at": row.started_at,
        "last_event_at": row.ended_at,
        "n_events": row.n_events,
        "purchased": row.purchased,
        "close_reason": row.close_reason,
        "features": features,
        "score": row.score,
        "model_version": row.model_version,
    })))
}
