//! Who may hold a stream connection. A credential (a stream token or a
//! read-scope API key) is checked once when the client connects; the key or
//! console session behind it is then re-checked while the connection lives,
//! so revoking the key or logging out closes the stream (code 4001).

use super::token::{Principal, TokenError, TokenSigner};
use crate::keys::{AuthError, KeyVerifier, Scope};
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use std::sync::Arc;

/// Why a credential was refused; the message is safe to show the client.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Key(#[from] AuthError),
}

/// A client let in: whom it speaks for, and when its token expires (a key
/// has no expiry of its own).
#[derive(Clone, Debug)]
pub struct Admitted {
    pub principal: Principal,
    pub token_expires_at: Option<i64>,
}

/// Checks stream credentials; shared by every connection of the process.
pub struct Credentials {
    db: DatabaseConnection,
    keys: Arc<KeyVerifier>,
    tokens: Arc<TokenSigner>,
}

impl Credentials {
    pub fn new(db: DatabaseConnection, keys: Arc<KeyVerifier>, tokens: Arc<TokenSigner>) -> Credentials {
        Credentials { db, keys, tokens }
    }

    /// A stream token or a read-scope API key.
    pub async fn admit(&self, credential: &str) -> Result<Admitted, CredentialError> {
        if TokenSigner::looks_like_token(credential) {
            let v = self.tokens.verify(credential, chrono::Utc::now().timestamp())?;
            // A token outlives neither its key nor its console session.
            if !self.still_valid(&v.principal).await {
                return Err(AuthError::Invalid.into());
            }
            return Ok(Admitted { principal: v.principal, token_expires_at: Some(v.expires_at) });
        }
        let key = self.keys.verify(&SecretString::from(credential.to_owned()), Scope::Read).await?;
        Ok(Admitted { principal: Principal::Key(key.id), token_expires_at: None })
    }

    /// False once the key is revoked or the console session has ended. A
    /// database that does not answer keeps connections open: an outage of
    /// the database must not drop every dashboard.
    pub async fn still_valid(&self, who: &Principal) -> bool {
        let answer: anyhow::Result<bool> = match who {
            Principal::Key(id) => self.keys.is_active(id).await.map_err(Into::into),
            Principal::Console(session) => {
                crate::serving::console::session::is_active(&self.db, session).await.map_err(Into::into)
            }
        };
        answer.unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "stream credential re-check failed; keeping the connection");
            true
        })
    }
}
