//! The Redis connection of the multi-replica roles, for a single Redis node
//! (with or without replicas) or a Redis Cluster, told apart at connect time
//! (`INFO cluster`), so the one `redis_url` setting takes either.
//!
//! - Short commands go through [`RedisLink::conn`]: a bb8 pool of
//!   multiplexed connections on a single node; on a cluster, the shared
//!   cluster connection of the redis crate, which routes each command to the
//!   node owning its key's slot and follows MOVED/ASK after a failover or a
//!   resharding (we never route slots ourselves).
//! - Connections that block, wait or subscribe are opened apart with
//!   [`RedisLink::dedicated`], so they never hold up the shared ones.
//!
//! On a cluster a pipeline is sent to one node, so every pipeline must stay
//! within one slot: callers split theirs by key ([`RedisLink::is_cluster`]),
//! and keys that must live together (a topic's seq, history and channel)
//! share a hash tag. Every key and channel is named through
//! [`RedisLink::key`], under the configured prefix, so deployments and tests
//! can share one Redis.

use crate::config::RedisSettings;
use anyhow::Context;
use bb8_redis::RedisConnectionManager;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, ProtocolVersion, PushInfo, RedisFuture, Value};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

pub type Pool = bb8::Pool<RedisConnectionManager>;
pub type PooledConnection<'a> = bb8::PooledConnection<'a, RedisConnectionManager>;

/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default response timeout of the shared cluster connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    backend: Backend,
    prefix: Arc<str>,
    /// `host:port` of the server, for messages (never the URL: it may hold a password).
    pub server: Arc<str>,
}

#[derive(Clone)]
enum Backend {
    Single { client: redis::Client, pool: Pool },
    Cluster { seed: redis::ConnectionInfo, shared: ClusterConnection },
}

/// Why a Redis command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no Redis connection: {0}")]
    Unavailable(String),
    #[error("Redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    /// No answer within the caller's deadline (named by the caller).
    #[error("{0} timed out")]
    TimedOut(&'static str),
}

/// A command connection from [`RedisLink::conn`].
pub enum Conn<'a> {
    Pooled(PooledConnection<'a>),
    Cluster(ClusterConnection),
}

/// A connection of its own from [`RedisLink::dedicated`] (or another handle
/// on a command connection, [`Conn::clone_handle`]); clones share it.
#[derive(Clone)]
pub enum Dedicated {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What a dedicated connection needs.
#[derive(Default)]
pub struct DedicatedOptions {
    /// Commands time out after this (it must outlast any BLOCK or WAIT sent on it).
    pub response_timeout: Option<Duration>,
    /// RESP3 pushes (pub/sub messages, disconnections) go here.
    pub pushes: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
    /// On a cluster, fail a command at the first connection error instead
    /// of resending it. For commands that must not run twice unseen: a
    /// resent `XREADGROUP … >` whose first run delivered entries but lost its
    /// reply returns the entries after them, and the first ones stay
    /// pending with nobody reading them.
    pub no_retries: bool,
}

impl RedisLink {
    /// Opens the link and checks that the server answers. The error names the
    /// server by host and port only.
    pub async fn connect(url: &SecretString, settings: &RedisSettings) -> anyhow::Result<RedisLink> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| anyhow::anyhow!("invalid redis_url: {}", kind_label(&e)))?;
        let server: Arc<str> = Arc::from(server_label(url.expose_secret()));
        let prefix: Arc<str> = Arc::from(settings.prefix.as_str());
        let cluster = is_cluster_node(&client).await.with_context(|| format!("cannot reach Redis at {server}"))?;
        let backend = if cluster {
            let seed = client.get_connection_info().clone();
            let shared = cluster_client(&seed, &DedicatedOptions::default())
                .map_err(|e| anyhow::anyhow!("invalid redis_url for a cluster: {}", kind_label(&e)))?
                .get_async_connection()
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to the Redis Cluster at {server}: {}", kind_label(&e)))?;
            tracing::info!(server = %server, "Redis is a cluster; commands are routed by slot");
            Backend::Cluster { seed, shared }
        } else {
            let manager = RedisConnectionManager::new(client.get_connection_info().clone())
                .map_err(|e| anyhow::anyhow!("invalid redis_url: {}", kind_label(&e)))?;
            let pool = bb8::Pool::builder()
                .max_size(settings.pool_size.max(1))
                .connection_timeout(CONNECT_TIMEOUT)
                // A multiplexed connection never says it broke; a checkout PING
                // (one loopback round trip) replaces one that did.
                .test_on_check_out(true)
                .build_unchecked(manager);
            Backend::Single { client, pool }
        };
        let link = RedisLink { backend, prefix, server };
        link.ping().await.with_context(|| format!("cannot reach Redis at {}", link.server))?;
        Ok(link)
    }

    /// `{prefix}:{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{}", self.prefix, name)
    }

    /// True on a Redis Cluster: pipelines must then stay within one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// A command connection (pooled on a single node, the shared routed one on a cluster).
    pub async fn conn(&self) -> Result<Conn<'_>, LinkError> {
        match &self.backend {
            Backend::Single { pool, .. } => {
                pool.get().await.map(Conn::Pooled).map_err(|e| LinkError::Unavailable(e.to_string()))
            }
            Backend::Cluster { shared, .. } => Ok(Conn::Cluster(shared.clone())),
        }
    }

    /// A new connection of its own, for blocking reads, WAITs and subscriptions.
    pub async fn dedicated(&self, opts: DedicatedOptions) -> Result<Dedicated, redis::RedisError> {
        match &self.backend {
            Backend::Single { client, .. } => {
                let mut config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT));
                if let Some(t) = opts.response_timeout {
                    config = config.set_response_timeout(Some(t));
                }
                let client = match opts.pushes {
                    Some(tx) => {
                        config = config.set_push_sender(tx);
                        resp3(client.get_connection_info())?
                    }
                    None => client.clone(),
                };
                Ok(Dedicated::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Backend::Cluster { seed, .. } => {
                Ok(Dedicated::Cluster(cluster_client(seed, &opts)?.get_async_connection().await?))
            }
        }
    }

    /// True when the server answers a PING within the pool's timeout.
    pub async fn ping(&self) -> Result<(), LinkError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }
}

impl Conn<'_> {
    /// Another handle on the same connection, to send commands concurrently
    /// (both kinds are multiplexed).
    pub fn clone_handle(&self) -> Dedicated {
        match self {
            Conn::Pooled(c) => Dedicated::Single(MultiplexedConnection::clone(c)),
            Conn::Cluster(c) => Dedicated::Cluster(c.clone()),
        }
    }
}

impl Dedicated {
    /// Subscribes a sharded channel (pushes carry its messages).
    pub async fn ssubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Dedicated::Single(c) => redis::cmd("SSUBSCRIBE").arg(channel).query_async(c).await,
            // The cluster connection sends it to the slot's node and subscribes
            // again by itself when the slot moves.
            Dedicated::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub async fn sunsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Dedicated::Single(c) => redis::cmd("SUNSUBSCRIBE").arg(channel).query_async(c).await,
            Dedicated::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

/// A client for `seed`'s cluster. The seed's credentials and TLS settings
/// apply to every node.
fn cluster_client(seed: &redis::ConnectionInfo, opts: &DedicatedOptions) -> redis::RedisResult<ClusterClient> {
    let mut b = ClusterClientBuilder::new(vec![seed.clone()])
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(opts.response_timeout.unwrap_or(RESPONSE_TIMEOUT))
        // A failover takes the cluster a few seconds (node timeout + election):
        // commands retry across it instead of failing at once.
        .retries(if opts.no_retries { 0 } else { 8 })
        .min_retry_wait(100)
        .max_retry_wait(2_000);
    if let Some(tx) = &opts.pushes {
        b = b.use_protocol(ProtocolVersion::RESP3).push_sender(tx.clone());
    }
    b.build()
}

/// The client of `info` speaking RESP3 (pushes need it).
fn resp3(info: &redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.clone().set_redis_settings(settings))
}

/// `cluster_enabled:1` in `INFO cluster`.
async fn is_cluster_node(client: &redis::Client) -> Result<bool, redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut c = client.get_multiplexed_async_connection_with_config(&config).await?;
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut c).await?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

macro_rules! delegate_connection_like {
    ($ty:ty, $($variant:path),+) => {
        impl ConnectionLike for $ty {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self { $($variant(c) => c.req_packed_command(cmd),)+ }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self { $($variant(c) => c.req_packed_commands(pipeline, offset, count),)+ }
            }

            fn get_db(&self) -> i64 {
                match self { $($variant(c) => c.get_db(),)+ }
            }
        }
    };
}

delegate_connection_like!(Conn<'_>, Conn::Pooled, Conn::Cluster);
delegate_connection_like!(Dedicated, Dedicated::Single, Dedicated::Cluster);

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
