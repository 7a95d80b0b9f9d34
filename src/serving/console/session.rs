//! Console login sessions. The cookie holds 256 random bits; the database
//! holds only their SHA-256, the user and a CSRF token. A request carrying
//! the cookie is authenticated as that user; one that changes state must also
//! send the session's CSRF token as `X-CSRF-Token` (SameSite=Strict already
//! keeps the cookie off cross-site requests; the token is the second lock).

use super::{role_scope, Console, Role};
use crate::keys::{AuthError, Scope};
use crate::serving::web::auth::{Principal, SessionCheck};
use crate::serving::web::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::HttpRequest;
use chrono::Utc;
use entities::{console_session, user};
use futures::future::LocalBoxFuture;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The session cookie on a loopback listener (plain HTTP in development).
pub const COOKIE_NAME: &str = "cartpulse_console";
/// The session cookie everywhere else: Secure, host-only, path `/`.
pub const SECURE_COOKIE_NAME: &str = "__Host-cartpulse_console";
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// A logged-in console user.
#[derive(Clone, Debug)]
pub struct ConsoleUser {
    pub name: String,
    pub role: Role,
    pub csrf_token: String,
}

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The session cookie's value, if the request has one.
pub fn cookie_value(req: &HttpRequest, console: &Console) -> Option<SecretString> {
    cookie_named(req, console.cookie_name())
}

fn cookie_named(req: &HttpRequest, name: &str) -> Option<SecretString> {
    req.cookie(name).map(|c| SecretString::from(c.value().to_owned())).filter(|s| !s.expose_secret().is_empty())
}

/// Whether the method changes state (everything but GET, HEAD, OPTIONS).
fn changes_state(req: &HttpRequest) -> bool {
    !matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD | actix_web::http::Method::OPTIONS
    )
}

/// The `X-CSRF-Token` header, if present.
pub fn csrf_header(req: &HttpRequest) -> Option<String> {
    req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Starts a session for `user`; returns the cookie and the CSRF token.
pub async fn start(
    console: &Console,
    db: &DatabaseConnection,
    user: &user::Model,
) -> Result<(Cookie<'static>, String), sea_orm::DbErr> {
    let id = hex::encode(rand::random::<[u8; 32]>());
    let csrf = hex::encode(rand::random::<[u8; 32]>());
    let now = Utc::now();
    let ttl = console.settings.session_ttl_s.max(std::time::Duration::from_secs(60)).as_secs() as i64;
    // Expired sessions of anyone are dropped here, so the table stays small
    // without a sweeper task.
    console_session::Entity::delete_many().filter(console_session::Column::ExpiresAt.lt(now)).exec(db).await?;
    console_session::ActiveModel {
        id_hash: Set(digest(&id)),
        user_id: Set(user.id),
        csrf_token: Set(csrf.clone()),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::seconds(ttl)),
    }
    .insert(db)
    .await?;
    let cookie = Cookie::build(console.cookie_name(), id)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.secure())
        .max_age(CookieDuration::seconds(ttl))
        .finish();
    Ok((cookie, csrf))
}

/// The device cookie a successful login of `name` sets (see [`super::device`]).
pub fn device_cookie(console: &Console, name: &str) -> Cookie<'static> {
    let value = console.devices.issue(name, Utc::now().timestamp());
    Cookie::build(console.device_cookie_name(), value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.secure())
        .max_age(CookieDuration::seconds(console.devices.ttl_s()))
        .finish()
}

/// The device id of this request's device cookie, if it is valid for `name`.
pub fn device_id(req: &HttpRequest, console: &Console, name: &str) -> Option<String> {
    let c = req.cookie(console.device_cookie_name())?;
    console.devices.verify(c.value(), name, Utc::now().timestamp())
}

/// A cookie that deletes the session cookie in the browser.
pub fn removal(console: &Console) -> Cookie<'static> {
    let mut c = Cookie::build(console.cookie_name(), "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(console.secure())
        .finish();
    c.make_removal();
    c
}

/// The user behind a session cookie, or `None` for an unknown or expired one.
pub async fn lookup(db: &DatabaseConnection, cookie: &SecretString) -> Result<Option<ConsoleUser>, sea_orm::DbErr> {
    let Some(s) = console_session::Entity::find_by_id(digest(cookie.expose_secret())).one(db).await? else {
        return Ok(None);
    };
    if s.expires_at <= Utc::now() {
        return Ok(None);
    }
    let Some(u) = user::Entity::find_by_id(s.user_id).one(db).await? else { return Ok(None) };
    let Ok(role) = u.role.parse() else { return Ok(None) };
    Ok(Some(ConsoleUser { name: u.name, role, csrf_token: s.csrf_token }))
}

/// True while the session with this id (the hash of its cookie) exists and
/// has not expired; stream connections opened by the console re-check it.
pub async fn is_active(db: &DatabaseConnection, id_hash: &str) -> Result<bool, sea_orm::DbErr> {
    let s = console_session::Entity::find_by_id(id_hash.to_owned()).one(db).await?;
    Ok(s.is_some_and(|s| s.expires_at > Utc::now()))
}

/// Ends the session behind this cookie (no error if it is already gone).
pub async fn end(db: &DatabaseConnection, cookie: &SecretString) -> Result<(), sea_orm::DbErr> {
    console_session::Entity::delete_by_id(digest(cookie.expose_secret())).exec(db).await?;
    Ok(())
}

/// Refuses a state change whose `X-CSRF-Token` is not the session's.
pub fn check_csrf(user: &ConsoleUser, presented: Option<&str>) -> Result<(), ApiError> {
    match presented {
        Some(t) if crate::keys::constant_time_eq(t.as_bytes(), user.csrf_token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Forbidden("the X-CSRF-Token header does not match this console session".into())),
        None => Err(ApiError::Forbidden("a state change needs the X-CSRF-Token header of the console session".into())),
    }
}

/// The console's cookie sessions as the `/v1` extractors see them (see
/// [`crate::serving::web::auth::Gate`]).
pub struct CookieSessions {
    db: DatabaseConnection,
    cookie_name: &'static str,
}

impl CookieSessions {
    pub fn new(db: DatabaseConnection, console: &Console) -> CookieSessions {
        CookieSessions { db, cookie_name: console.cookie_name() }
    }
}

impl SessionCheck for CookieSessions {
    fn check(
        &self,
        req: &HttpRequest,
        needed: Scope,
    ) -> Option<LocalBoxFuture<'static, Result<(Scope, Principal), ApiError>>> {
        let cookie = cookie_named(req, self.cookie_name)?;
        let csrf = changes_state(req).then(|| csrf_header(req));
        let db = self.db.clone();
        Some(Box::pin(async move {
            let (scope, session) = authorize(&db, &cookie, needed, csrf.as_ref().map(|c| c.as_deref())).await?;
            Ok((scope, Principal::Console(session)))
        }))
    }
}

/// Authenticates a cookie request for the `/v1` extractors: the session's
/// role must allow `needed`, and a state change must carry the CSRF token.
/// Returns the scope and the session's id (the hash of its cookie).
async fn authorize(
    db: &DatabaseConnection,
    cookie: &SecretString,
    needed: Scope,
    csrf: Option<Option<&str>>,
) -> Result<(Scope, String), ApiError> {
    let user = lookup(db, cookie)
        .await
        .map_err(AuthError::Unavailable)?
        .ok_or_else(|| ApiError::Unauthorized("the console session is unknown or expired; log in again".into()))?;
    if let Some(presented) = csrf {
        check_csrf(&user, presented)?;
    }
    let scope = role_scope(user.role);
    if scope.allows(needed) {
        Ok((scope, digest(cookie.expose_secret())))
    } else {
        Err(ApiError::Forbidden(format!(
            "a console {} may not do this (needs {})",
            user.role.as_str(),
            needed.as_str()
        )))
    }
}
