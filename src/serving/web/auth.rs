//! Authentication extractors: a handler that takes `Auth<ReadScope>` (etc.)
//! only runs for a request carrying a key with that scope, or (with no
//! `Authorization` header) a console session whose role allows it. Keys are
//! checked here; sessions by whatever [`SessionCheck`] the app registered in
//! its [`Gate`] (the console's cookie sessions), so this base knows nothing
//! of the console.

use super::error::ApiError;
use crate::keys::{AuthError, KeyVerifier, Scope};
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use secrecy::SecretString;
use std::marker::PhantomData;
use std::sync::Arc;

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

/// Who a request (or a stream connection) speaks for; a stream re-checks it
/// while the connection lives, so revoking the key or ending the console
/// session closes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An API key, by id (the middle of `cp_<id>_<secret>`).
    Key(String),
    /// A console login session, by the SHA-256 (hex) of its cookie.
    Console(String),
}

/// Proof that the request carried a key (or session) allowing `S`.
pub struct Auth<S: NeededScope> {
    pub scope: Scope,
    /// The key or console session behind the request.
    pub principal: Principal,
    _s: PhantomData<S>,
}

/// Authenticates requests that carry a session instead of a key.
pub trait SessionCheck: Send + Sync + 'static {
    /// `None` when the request carries no session; otherwise the session's
    /// scope and principal once checked against `needed` (and, for a state
    /// change, its CSRF token), or why not.
    fn check(
        &self,
        req: &HttpRequest,
        needed: Scope,
    ) -> Option<LocalBoxFuture<'static, Result<(Scope, Principal), ApiError>>>;
}

/// What the extractors check credentials with; registered as app data.
pub struct Gate {
    keys: Arc<KeyVerifier>,
    sessions: Arc<dyn SessionCheck>,
}

impl Gate {
    pub fn new(keys: Arc<KeyVerifier>, sessions: Arc<dyn SessionCheck>) -> Gate {
        Gate { keys, sessions }
    }
}

fn presented(req: &HttpRequest) -> Result<SecretString, AuthError> {
    let h = req.headers().get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let s = h.to_str().map_err(|_| AuthError::Invalid)?;
    let key = s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")).ok_or(AuthError::Invalid)?;
    Ok(SecretString::from(key.trim().to_owned()))
}

impl<S: NeededScope + 'static> FromRequest for Auth<S> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let gate = req.app_data::<web::Data<Gate>>().cloned();
        let key = presented(req);
        // A key always wins: API clients behave the same, cookie or not.
        let session = match (&key, &gate) {
            (Err(AuthError::Missing), Some(gate)) => gate.sessions.check(req, S::SCOPE),
            _ => None,
        };
        Box::pin(async move {
            if let Some(session) = session {
                let (scope, principal) = session.await?;
                return Ok(Auth { scope, principal, _s: PhantomData });
            }
            let gate = gate.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the auth gate is not registered")))?;
            let key = gate.keys.verify(&key?, S::SCOPE).await?;
            Ok(Auth { scope: key.scope, principal: Principal::Key(key.id), _s: PhantomData })
        })
    }
}
