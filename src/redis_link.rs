//! The Redis connection of the multi-replica roles: a bb8 pool of command
//! connections (short commands: XADD, XACK, SPUBLISH through a script,
//! XRANGE) plus the client for the dedicated connections that block or
//! subscribe (XREADGROUP … BLOCK, SSUBSCRIBE), which must not hold a pooled
//! connection.
//!
//! Every key and channel is named through [`RedisLink::key`], under the
//! configured prefix, so deployments and tests can share one Redis.

use crate::config::RedisSettings;
use anyhow::Context;
use bb8_redis::RedisConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

pub type Pool = bb8::Pool<RedisConnectionManager>;
pub type PooledConnection<'a> = bb8::PooledConnection<'a, RedisConnectionManager>;

/// Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    pool: Pool,
    prefix: Arc<str>,
    /// `host:port` of the server, for messages (never the URL: it may hold a password).
    pub server: Arc<str>,
}

/// Why a Redis command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no Redis connection: {0}")]
    Unavailable(String),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
}

impl RedisLink {
    /// Opens the pool and checks that the server answers. The error names the
    /// server by host and port only.
    pub async fn connect(url: &SecretString, settings: &RedisSettings) -> anyhow::Result<RedisLink> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("invalid redis_url: {}", kind_label(&e)))?;
        let server: Arc<str> = Arc::from(server_label(url.expose_secret()));
        let manager = RedisConnectionManager::new(client.get_connection_info().clone())
            .map_err(|e| anyhow::anyhow!("invalid redis_url: {}", kind_label(&e)))?;
        let pool = bb8::Pool::builder()
            .max_size(settings.pool_size.max(1))
            .connection_timeout(Duration::from_secs(2))
            // A multiplexed connection never says it broke; a checkout PING
            // (one loopback round trip) replaces one that did.
            .test_on_check_out(true)
            .build_unchecked(manager);
        let link = RedisLink { client, pool, prefix: Arc::from(settings.prefix.as_str()), server };
        link.ping().await.with_context(|| format!("cannot reach Redis at {}", link.server))?;
        Ok(link)
    }

    /// `{prefix}:{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// A pooled command connection.
    pub async fn conn(&self) -> Result<PooledConnection<'_>, LinkError> {
        self.pool.get().await.map_err(|e| LinkError::Unavailable(e.to_string()))
    }

    /// The client, for dedicated (blocking or subscribed) connections.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// True when the server answers a PING within the pool's timeout.
    pub async fn ping(&self) -> Result<(), LinkError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut *c).await?;
        Ok(())
    }
}

/// Short description of an error for messages that must not echo the URL.
fn kind_label(e: &redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

/// `host:port` of a Redis URL, without user or password.
fn server_label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{}:{}", u.host_str().unwrap_or("?"), u.port().unwrap_or(6379)),
        Err(_) => "(unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::server_label;

    #[test]
    fn the_label_never_holds_the_password() {
        let l = server_label("redis://user:s3cret@cache.example:6380/0");
        assert_eq!(l, "cache.example:6380");
        assert!(!l.contains("s3cret"));
    }
}
