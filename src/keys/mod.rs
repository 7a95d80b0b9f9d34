//! API keys: `cp_<id>_<secret>`. Only the SHA-256 of the secret is stored (the
//! secret is 128 random bits, so a fast hash is enough, unlike passwords).
//! Verified keys are cached briefly so ingest does not query per request;
//! the caches are bounded LRUs, and made-up keys cannot evict real ones.

pub mod cli;

use anyhow::Context;
use chrono::Utc;
use entities::api_key;
use lru::LruCache;
use rand::Rng;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseConnection, EntityTrait};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::Mutex;
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

/// A scope name that is none of `ingest`, `read` or `admin`.
#[derive(Debug, thiserror::Error)]
#[error("unknown scope {0:?}; expected ingest, read or admin")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(UnknownScope(other.to_owned())),
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
/// Entries per cache. Known and unknown keys are cached apart, so a spray of
/// made-up keys can evict only other made-up keys, never a working one.
const CACHE_ENTRIES: usize = 10_000;
/// Database lookups for uncached keys at once; a spray of made-up keys waits
/// here instead of taking every pooled connection.
const LOOKUPS_AT_ONCE: usize = 4;

/// A key that passed: its id (for re-checks) and scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedKey {
    pub id: String,
    pub scope: Scope,
}

struct Caches {
    known: LruCache<String, (VerifiedKey, Instant)>,
    unknown: LruCache<String, Instant>,
}

/// Checks presented keys against the database, with bounded caches.
pub struct KeyVerifier {
    db: DatabaseConnection,
    caches: Mutex<Caches>,
    lookups: tokio::sync::Semaphore,
}

impl KeyVerifier {
    pub fn new(db: DatabaseConnection) -> Self {
        let n = NonZeroUsize::new(CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN);
        KeyVerifier {
            db,
            caches: Mutex::new(Caches { known: LruCache::new(n), unknown: LruCache::new(n) }),
            lookups: tokio::sync::Semaphore::new(LOOKUPS_AT_ONCE),
        }
    }

    /// Returns the key's id and scope if `presented` is a valid, unrevoked
    /// key with at least `needed`.
    pub async fn verify(&self, presented: &SecretString, needed: Scope) -> Result<VerifiedKey, AuthError> {
        let key = presented.expose_secret();
        // Not even the shape of a key: no cache entry, no query.
        let Some((id, secret)) = split_key(key) else { return Err(AuthError::Invalid) };
        let digest = hash(key);
        let found = match self.cached(&digest) {
            Some(found) => found,
            None => {
                let _permit = self.lookups.acquire().await.map_err(|_| AuthError::Invalid)?;
                // Someone else may have looked it up while we waited.
                match self.cached(&digest) {
                    Some(found) => found,
                    None => {
                        let found = self.lookup(id, secret).await?;
                        if let Ok(mut c) = self.caches.lock() {
                            match &found {
                                Some(k) => {
                                    c.known.put(digest, (k.clone(), Instant::now()));
                                }
                                None => {
                                    c.unknown.put(digest, Instant::now());
                                }
                            }
                        }
                        found
                    }
                }
            }
        };
        let key = found.ok_or(AuthError::Invalid)?;
        if key.scope.allows(needed) {
            Ok(key)
        } else {
            Err(AuthError::Forbidden(needed.as_str()))
        }
    }

    /// `Some(Some(key))` known, `Some(None)` known to be invalid, `None` not cached.
    fn cached(&self, digest: &str) -> Option<Option<VerifiedKey>> {
        let mut c = self.caches.lock().ok()?;
        if let Some((k, at)) = c.known.get(digest) {
            if at.elapsed() < CACHE_TTL {
                return Some(Some(k.clone()));
            }
        }
        if let Some(at) = c.unknown.get(digest) {
            if at.elapsed() < CACHE_TTL {
                return Some(None);
            }
        }
        None
    }

    /// True while the key with this id exists and is not revoked (stream
    /// connections re-check the key they were opened with).
    pub async fn is_active(&self, id: &str) -> Result<bool, AuthError> {
        let row = api_key::Entity::find_by_id(id.to_owned()).one(&self.db).await.map_err(AuthError::Unavailable)?;
        Ok(row.is_some_and(|r| r.revoked_at.is_none()))
    }

    async fn lookup(&self, id: &str, secret: &str) -> Result<Option<VerifiedKey>, AuthError> {
        let row = api_key::Entity::find_by_id(id.to_owned()).one(&self.db).await.map_err(AuthError::Unavailable)?;
        let Some(row) = row else { return Ok(None) };
        if row.revoked_at.is_some() || !constant_time_eq(row.secret_hash.as_bytes(), hash(secret).as_bytes()) {
            return Ok(None);
        }
        Ok(row.scope.parse().ok().map(|scope| VerifiedKey { id: row.id, scope }))
    }
}

/// `cp_<id>_<secret>` into its parts, if it has that shape.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix("cp_")?.split_once('_')?;
    let hexish = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (hexish(id, 32) && hexish(secret, 128)).then_some((id, secret))
}

/// Compares secrets (key hashes, CSRF tokens) in time independent of where
/// they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn verifier() -> (KeyVerifier, NewKey, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let db = sea_orm::Database::connect(url).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let key = create(&db, "t", Scope::Read).await.unwrap();
        (KeyVerifier::new(db), key, dir)
    }

    #[tokio::test]
    async fn a_spray_of_unknown_keys_neither_grows_the_caches_nor_evicts_a_real_key() {
        let (v, key, _dir) = verifier().await;
        assert_eq!(v.verify(&key.key, Scope::Read).await.unwrap().id, key.id);
        for i in 0..(CACHE_ENTRIES + 500) {
            let fake = SecretString::from(format!("cp_{i:012x}_{}", "0".repeat(32)));
            assert!(matches!(v.verify(&fake, Scope::Read).await, Err(AuthError::Invalid)));
        }
        // Not even the shape of a key: refused without a cache entry.
        assert!(matches!(v.verify(&SecretString::from("nope".to_owned()), Scope::Read).await, Err(AuthError::Invalid)));
        let c = v.caches.lock().unwrap();
        assert_eq!(c.unknown.len(), CACHE_ENTRIES, "bounded");
        assert!(c.known.peek(&hash(key.key.expose_secret())).is_some(), "the real key is still cached");
    }

    #[tokio::test]
    async fn wrong_scope_and_revoked_keys_are_refused() {
        let (v, key, _dir) = verifier().await;
        assert!(matches!(v.verify(&key.key, Scope::Admin).await, Err(AuthError::Forbidden("admin"))));
        assert!(v.is_active(&key.id).await.unwrap());
        revoke(&v.db, &key.id).await.unwrap();
        assert!(!v.is_active(&key.id).await.unwrap());
    }
}
