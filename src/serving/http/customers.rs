//! Reading customers and sessions. Where the customer's actor lives (one
//! process, or the processor holding its partition), reads go through it,
//! in order with its events, so they see every acknowledged event; elsewhere
//! they come from the stored snapshot.

use super::AppState;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use crate::serving::web::path_id::PathId;
use actix_web::{web, HttpResponse};
use actors::event::{CustomerId, SessionId};
use actors::messages::query::{Answer, Query};
use entities::session;
use sea_orm::EntityTrait;
use serde::Serialize;

/// A session older than what its customer's actor keeps in memory, as the
/// sessions table stores it (no `cart_adds`; times may be unknown for rows
/// written by older versions).
#[derive(Serialize, utoipa::ToSchema)]
pub struct StoredSession {
    pub session_id: SessionId,
    pub customer_id: CustomerId,
    /// `open` or `closed`.
    pub status: String,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_event_at: Option<chrono::DateTime<chrono::Utc>>,
    pub n_events: i32,
    pub purchased: bool,
    /// `session_end`, `inactivity` or `new_session` once closed.
    pub close_reason: Option<String>,
    /// The 17 UCI Online Shoppers features under the file's column names, when known.
    pub features: Option<serde_json::Map<String, serde_json::Value>>,
    pub score: Option<f64>,
    pub model_version: Option<String>,
}

/// `GET /v1/sessions/{id}` answers one of these: the live view where the
/// customer's actor still holds the session, the stored row otherwise.
#[derive(Serialize)]
#[serde(untagged)]
pub enum SessionReply {
    Live(actors::data::state::SessionView),
    Stored(StoredSession),
}

// By hand rather than derived: the derive makes an untagged enum `oneOf`,
// but a live view also satisfies the stored row's schema (it has every field
// of it, and more), so exactly-one would refuse every live answer.
impl utoipa::PartialSchema for SessionReply {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name("SessionView"))
            .item(Ref::from_schema_name("StoredSession"))
            .description(Some(
                "The live view where the customer's actor still holds the session (`SessionView`), the stored \
                 row otherwise (`StoredSession`).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SessionReply {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push(("SessionView".into(), actors::data::state::SessionView::schema()));
        <actors::data::state::SessionView as utoipa::ToSchema>::schemas(schemas);
        schemas.push(("StoredSession".into(), StoredSession::schema()));
        <StoredSession as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `GET /v1/customers/{id}`: profile features, open session, recent sessions.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    tag = "customers",
    operation_id = "get_customer",
    summary = "A customer: profile features, open and recent sessions, segment",
    params(("id" = CustomerId, Path, description = "The customer's id.")),
    responses(
        (status = 200, description = "The customer: profile features, open session, recent sessions, segment.", body = actors::data::state::CustomerView),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "No such customer.", body = ErrorBody),
        (status = 503, description = "Customer state or the database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
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
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "customers",
    operation_id = "get_session",
    summary = "A session: its 17 features, status, counts and score",
    params(("id" = SessionId, Path, description = "The session's id.")),
    responses(
        (status = 200, description = "The session: live from its actor, or the stored row when older.", body = SessionReply),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "No such session.", body = ErrorBody),
        (status = 503, description = "Customer state or the database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
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
            return Ok(HttpResponse::Ok().json(SessionReply::Live(*view)));
        }
    }
    let row = match row {
        Some(r) => r,
        None => stored().await?.ok_or_else(|| ApiError::NotFound("no such session".into()))?,
    };
    // Older than what the actor keeps in memory: serve the stored row.
    let features = row.features.as_deref().and_then(|f| serde_json::from_str(f).ok());
    Ok(HttpResponse::Ok().json(SessionReply::Stored(StoredSession {
        session_id: SessionId::new_unchecked(row.session_id),
        customer_id: CustomerId::new_unchecked(row.customer_id),
        status: row.status,
        started_at: row.started_at,
        last_event_at: row.ended_at,
        n_events: row.n_events,
        purchased: row.purchased,
        close_reason: row.close_reason,
        features,
        score: row.score,
        model_version: row.model_version,
    })))
}
