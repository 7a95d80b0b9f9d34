//! `GET /v1/stream` (the WebSocket upgrade) and `POST /v1/stream/token`.
//! Credentials on the upgrade are checked here; the connection itself is
//! [`crate::serving::stream::connection`]. The query string carries a token and is
//! never logged.

use super::AppState;
use crate::keys::AuthError;
use crate::serving::stream::connection;
use crate::serving::stream::credentials::CredentialError;
use crate::serving::stream::telemetry::StreamEvent;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// A stream token from `POST /v1/stream/token`. Query strings end up in
    /// access logs: prefer the `auth` message.
    token: Option<String>,
}

/// `POST /v1/stream/token`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StreamToken {
    /// Present it as `?token=` or in the `auth` message; checked at connect time only.
    token: String,
    /// RFC 3339, UTC, whole seconds.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Upgrades to the live stream. A bad `Authorization` header is refused
/// with 401/403 before the upgrade; a bad `?token=` gets the upgrade and a
/// 4001 close, which browsers can see.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "stream",
    operation_id = "stream",
    summary = "The live stream (WebSocket upgrade)",
    description = "The live stream: a WebSocket. Credentials: `Authorization: Bearer <read key>` on the upgrade, \
                   `?token=`, or none and an `auth` message first within 5 s. The messages, frames and close codes \
                   are in `x-websocket` (and docs/stream.md).",
    params(StreamQuery),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol. A bad `?token=` or `auth` message is told by close code 4001."),
        (status = 400, description = "Not a WebSocket upgrade request.", body = ErrorBody),
        (status = 401, description = "A bad `Authorization` header: unknown key or bad token.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 503, description = "A processor (connect to a gateway), too many connections waiting to authenticate, or the key could not be checked.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security((), ("api_key" = ["read"])),
)]
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.role.serves_clients() {
        return Err(ApiError::unavailable("this replica is a processor; connect to a gateway for the stream"));
    }
    let stream = state.stream.clone();
    let auth = if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        let credential = h
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")))
            .map(|s| s.trim().to_owned())
            .ok_or(AuthError::Invalid)?;
        match state.credentials.admit(&credential).await {
            Ok(admitted) => connection::Auth::Done { how: "header", admitted, credentials: state.credentials.clone() },
            Err(e) => {
                stream.metrics.record(StreamEvent::AuthRefused { how: "header", reason: &e.to_string() });
                return Err(match e {
                    CredentialError::Key(k) => k.into(),
                    CredentialError::Token(t) => ApiError::Unauthorized(t.to_string()),
                });
            }
        }
    } else if let Some(token) = query.into_inner().token {
        // Still accepted for clients that cannot send a first message, but
        // query strings end up in access logs: prefer the `auth` message.
        match state.credentials.admit(&token).await {
            Ok(admitted) => connection::Auth::Done { how: "query", admitted, credentials: state.credentials.clone() },
            Err(e) => connection::Auth::Refused { how: "query", reason: e.to_string() },
        }
    } else {
        let slot = stream.admit_unauthenticated().ok_or_else(|| {
            ApiError::unavailable("too many connections waiting to authenticate; retry, or send credentials")
        })?;
        connection::Auth::Pending(state.credentials.clone(), slot)
    };
    let (response, session, msgs) = actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let msgs = msgs.max_frame_size(stream.settings.max_frame_bytes);
    actix_web::rt::spawn(connection::run(stream, session, msgs, auth));
    Ok(response)
}

/// Issues a short-lived stream token for a read-scope key or console
/// session; the token names it, so the stream closes when it goes.
#[utoipa::path(
    post,
    path = "/v1/stream/token",
    tag = "stream",
    operation_id = "stream_token",
    summary = "A short-lived stream token",
    responses(
        (status = 200, description = "A short-lived stream token (default 5 minutes).", body = StreamToken, headers(("Cache-Control" = String))),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 503, description = "The key could not be checked; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn token(auth: Auth<ReadScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (token, exp) = state.stream.tokens.issue(&auth.principal, chrono::Utc::now().timestamp());
    state.stream.metrics.record(StreamEvent::TokenIssued);
    let expires_at = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(StreamToken { token: token.expose_secret().to_owned(), expires_at }))
}
