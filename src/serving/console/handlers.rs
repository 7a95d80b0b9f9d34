//! `/console/*`: login, logout, who am I, and the read-only views the
//! console needs beyond the `/v1` API. Answers are `Cache-Control: no-store`
//! since they carry the CSRF token or per-user data.

use super::session::{self, ConsoleUser};
use super::telemetry::ConsoleEvent;
use super::users;
use super::ConsoleState;
use crate::keys::AuthError;
use crate::serving::web::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
}

fn me_json(u: &ConsoleUser) -> serde_json::Value {
    serde_json::json!({ "name": u.name, "role": u.role, "csrf_token": u.csrf_token })
}

fn db_down(e: sea_orm::DbErr) -> ApiError {
    AuthError::Unavailable(e).into()
}

/// The logged-in user, or 401.
async fn current(req: &HttpRequest, state: &ConsoleState) -> Result<(secrecy::SecretString, ConsoleUser), ApiError> {
    let cookie =
        session::cookie_value(req, &state.console).ok_or_else(|| ApiError::Unauthorized("not logged in".into()))?;
    let user = session::lookup(&state.db, &cookie)
        .await
        .map_err(db_down)?
        .ok_or_else(|| ApiError::Unauthorized("the console session is unknown or expired; log in again".into()))?;
    Ok((cookie, user))
}

fn retry_later(status: actix_web::http::StatusCode, retry_after_s: u64, error: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::RETRY_AFTER, retry_after_s.to_string()))
        .json(serde_json::json!({ "error": error }))
}

/// `POST /console/login` `{"name", "password"}` → sets the session cookie
/// (and a device cookie, see [`super::device`]) and answers `{"name",
/// "role", "csrf_token"}`; 401 for a wrong name or password (the same
/// answer for both), 429 when rate-limited, 503 when too many logins wait
/// for a password check; 413 for a body over 4 KiB.
pub async fn login(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Only JSON: an HTML form on another site can post text/plain that parses
    // as JSON, which would log the victim into the attacker's account; a JSON
    // content type from another origin needs a CORS preflight we never grant.
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType("send the login as Content-Type: application/json".into()));
    }
    let body = crate::serving::web::body::read_limited(&req, payload, crate::serving::web::client::SMALL_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("the login body is at most 4 KiB".into()))?;
    let b: LoginBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("body must be JSON {\"name\": ..., \"password\": ...}".into()))?;
    let ip = crate::serving::web::client::client_ip(&req, &state.http.trusted_proxies);
    let console = &state.console;
    let device = session::device_id(&req, console, &b.name);
    // The attempt counts as a failure from here on, so parallel guesses
    // cannot pass the limit between the check and the count.
    let attempt = match console.limiter.begin(&b.name, ip, device.as_deref()).await {
        Ok(a) => a,
        Err(retry_after_s) => {
            console.metrics.record(ConsoleEvent::RateLimited { user: &b.name, retry_after_s });
            return Ok(retry_later(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                retry_after_s,
                "too many failed logins; wait and try again",
            ));
        }
    };
    let found = match users::find(&state.db, &b.name).await {
        Ok(f) => f,
        Err(e) => {
            console.limiter.cancel(attempt).await;
            return Err(db_down(e));
        }
    };
    let hash = found.as_ref().map(|u| u.password_hash.clone());
    let ok = match console.password_checks.verify(secrecy::SecretString::from(b.password), hash).await {
        Ok(ok) => ok,
        Err(super::CheckRefused::Busy) => {
            console.limiter.cancel(attempt).await;
            console.metrics.record(ConsoleEvent::Busy);
            return Ok(retry_later(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                1,
                "too many logins at once; try again in a moment",
            ));
        }
        Err(super::CheckRefused::Stopped) => {
            console.limiter.cancel(attempt).await;
            return Err(ApiError::Internal(anyhow::anyhow!("the password-check threads stopped")));
        }
    };
    console.metrics.record(ConsoleEvent::PasswordChecked);
    let user = match found {
        Some(u) if ok => u,
        _ => {
            // The attempt stays recorded: that is the failure.
            drop(attempt);
            console.metrics.record(ConsoleEvent::Refused { user: &b.name });
            return Err(ApiError::Unauthorized("wrong name or password".into()));
        }
    };
    console.limiter.succeeded(attempt).await;
    let (cookie, csrf) = session::start(console, &state.db, &user).await.map_err(db_down)?;
    console.metrics.record(ConsoleEvent::LoggedIn { user: &user.name, role: user.role.as_str() });
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .cookie(session::device_cookie(console, &user.name))
        .json(serde_json::json!({ "name": user.name, "role": user.role, "csrf_token": csrf })))
}

/// `POST /console/logout` (with `X-CSRF-Token`): ends the session, clears the cookie.
pub async fn logout(req: HttpRequest, state: web::Data<ConsoleState>) -> Result<HttpResponse, ApiError> {
    let (cookie, user) = current(&req, &state).await?;
    session::check_csrf(&user, session::csrf_header(&req).as_deref())?;
    session::end(&state.db, &cookie).await.map_err(db_down)?;
    Ok(HttpResponse::NoContent().cookie(session::removal(&state.console)).finish())
}

/// `GET /console/me`: `{"name", "role", "csrf_token"}` of the logged-in user.
pub async fn me(req: HttpRequest, state: web::Data<ConsoleState>) -> Result<HttpResponse, ApiError> {
    let (_, user) = current(&req, &state).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(me_json(&user)))
}

/// `GET /console/api/models`: the registry for any logged-in user. `GET
/// /v1/models` needs an admin key (its rows name store locations), but
/// viewers of the console are meant to see the registry too; changes still
/// go through the admin-only `/v1/models` endpoints.
pub async fn models(req: HttpRequest, state: web::Data<ConsoleState>) -> Result<HttpResponse, ApiError> {
    current(&req, &state).await?;
    let models = state.models.list().await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "models": models })))
}
