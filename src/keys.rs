//! API keys: `cp_<id>_<secret>`. Only the SHA-256 of the secret is stored (the
//! secret is 128 random bits, so a fast hash is enough, unlike passwords).
//! Verified keys are cached briefly so ingest does not query per request.

use anyhow::Context;
use chrono::Utc;
use entities::api_key;
use rand::Rng;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// What a key may do. `admin` may do everything, `read` reads, `ingest` writes
/// events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Ingest,
    Read,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may act where `needed` is required.
    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}; expected ingest, read or admin")),
        }
    }
}

/// A newly created key: the only time the secret exists in clear.
pub struct NewKey {
    pub id: String,
    pub key: SecretString,
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates and stores a key.
pub async fn create(db: &DatabaseConnection, name: &str, scope: Scope) -> anyhow::Result<NewKey> {
    anyhow::ensure!(!name.trim().is_empty() && name.len() <= 100, "key name must be 1..=100 characters");
    let mut rng = rand::rng();
    let id = hex::encode(rng.random::<[u8; 6]>());
    let secret = hex::encode(rng.random::<[u8; 16]>());
    api_key::ActiveModel {
        id: Set(id.clone()),
        name: Set(name.to_owned()),
        scope: Set(scope.as_str().to_owned()),
        secret_hash: Set(hash(&secret)),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(db)
    .await
    .context("storing the API key")?;
    Ok(NewKey { key: SecretString::from(format!("cp_{id}_{secret}")), id })
}

/// Lists keys (never secrets).
pub async fn list(db: &DatabaseConnection) -> anyhow::Result<Vec<api_key::Model>> {
    Ok(api_key::Entity::find().all(db).await?)
}

/// Revokes a key by id.
pub async fn revoke(db: &DatabaseConnection, id: &str) -> anyhow::Result<bool> {
    let Some(k) = api_key::Entity::find_by_id(id.to_owned()).one(db).await? else {
        return Ok(false);
    };
    let mut am: api_key::ActiveModel = k.into();
    am.revoked_at = Set(Some(Utc::now()));
    am.update(db).await?;
    Ok(true)
}

/// Why a presented key was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key (send `Authorization: Bearer <key>`)")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key lacks the `{0}` scope")]
    Forbidden(&'static str),
    #[error("cannot check the API key right now")]
    Unavailable(#[source] sea_orm::DbErr),
}

/// How long a verified (or unknown) key is trusted from cache; a revocation
/// takes effect within this time.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Checks presented keys against the database, with a small cache.
pub struct KeyVerifier {
    db: DatabaseConnection,
    cache: RwLock<HashMap<String, (Option<Scope>, Instant)>>,
}

impl KeyVerifier {
    pub fn new(db: DatabaseConnection) -> Self {
        KeyVerifier { db, cache: RwLock::new(HashMap::new()) }
    }

    /// Returns the key's scope if `presented` is a valid, unrevoked key with
    /// at least `needed`.
    pub async fn verify(&self, presented: &SecretString, needed: Scope) -> Result<Scope, AuthError> {
        let key = presented.expose_secret();
        let digest = hash(key);
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(&digest).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(s, _)| *s));
        let scope = match cached {
            Some(s) => s,
            None => {
                let s = self.lookup(key).await?;
                if let Ok(mut c) = self.cache.write() {
                    if c.len() > 10_000 {
                        c.clear();
                    }
                    c.insert(digest, (s, Instant::now()));
                }
                s
            }
        };
        let scope = scope.ok_or(AuthError::Invalid)?;
        if scope.allows(needed) {
            Ok(scope)
        } else {
            Err(AuthError::Forbidden(needed.as_str()))
        }
    }

    async fn lookup(&self, key: &str) -> Result<Option<Scope>, AuthError> {
        let Some(rest) = key.strip_prefix("cp_") else { return Ok(None) };
        let Some((id, secret)) = rest.split_once('_') else { return Ok(None) };
        if id.len() > 32 || secret.len() > 128 {
            return Ok(None);
        }
        let row = api_key::Entity::find_by_id(id.to_owned()).one(&self.db).await.map_err(AuthError::Unavailable)?;
        let Some(row) = row else { return Ok(None) };
        if row.revoked_at.is_some() || !constant_time_eq(row.secret_hash.as_bytes(), hash(secret).as_bytes()) {
            return Ok(None);
        }
        Ok(row.scope.parse().ok())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
