//! Authentication extractors: a handler that takes `Auth<ReadScope>` (etc.)
//! only runs for a request carrying a key with that scope, or (with no
//! `Authorization` header) an admin console session cookie whose role allows
//! it: a viewer counts as `read`, an admin as `admin`. A cookie request that
//! changes state must also carry the session's `X-CSRF-Token`, because
//! browsers attach cookies on their own, unlike keys.

use super::error::ApiError;
use super::AppState;
use crate::keys::{AuthError, Scope};
use crate::serving::stream::token::Principal;
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use secrecy::SecretString;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

pub trait NeededScope {
    const SCOPE: Scope;
}
pub struct IngestScope;
pub struct ReadScope;
pub struct AdminScope;
impl NeededScope for IngestScope {
    const SCOPE: Scope = Scope::Ingest;
}
impl NeededScope for ReadScope {
    const SCOPE: Scope = Scope::Read;
}
impl NeededScope for AdminScope {
    const SCOPE: Scope = Scope::Admin;
}

/// Proof that the request carried a key allowing `S`.
pub struct Auth<S: NeededScope> {
    pub scope: Scope,
    /// The key or console session behind the request.
    pub principal: Principal,
    _s: PhantomData<S>,
}

fn presented(req: &HttpRequest) -> Result<SecretString, AuthError> {
    let h = req.headers().get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let s = h.to_str().map_err(|_| AuthError::Invalid)?;
    let key = s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")).ok_or(AuthError::Invalid)?;
    Ok(SecretString::from(key.trim().to_owned()))
}

impl<S: NeededScope + 'static> FromRequest for Auth<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let key = presented(req);
        // A key always wins: API clients behave exactly as before, cookie or not.
        let cookie = state.as_ref().and_then(|s| crate::serving::console::session::cookie_value(req, &s.console));
        let console = match (&key, cookie) {
            (Err(AuthError::Missing), Some(cookie)) => {
                let csrf = crate::serving::console::session::changes_state(req)
                    .then(|| crate::serving::console::session::csrf_header(req));
                Some((cookie, csrf))
            }
            _ => None,
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            if let Some((cookie, csrf)) = console {
                let csrf = csrf.as_ref().map(|c| c.as_deref());
                let (scope, session) =
                    crate::serving::console::session::authorize(&state.db, &cookie, S::SCOPE, csrf).await?;
                return Ok(Auth { scope, principal: Principal::Console(session), _s: PhantomData });
            }
            let key = key?;
            let key = state.keys.verify(&key, S::SCOPE).await?;
            Ok(Auth { scope: key.scope, principal: Principal::Key(key.id), _s: PhantomData })
        })
    }
}
