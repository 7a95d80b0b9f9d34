//! Which replicas are up, for the System page and `GET /v1/system`: with
//! Redis every process writes a small record (role, address, partitions,
//! connected clients) into the hash `{prefix}:replicas` every few seconds
//! and removes it when it stops; a record not refreshed for
//! [`STALE_AFTER`] belongs to a replica that died. Without Redis the only
//! replica is this process.

use crate::redis_link::RedisLink;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How often a replica refreshes its record.
const BEAT: Duration = Duration::from_secs(3);
/// A record older than this is a dead replica's (and is removed).
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// One replica as others see it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicaInfo {
    pub id: String,
    pub role: String,
    /// `host:port` it listens on.
    pub listen: String,
    /// Partitions it consumes (processors), e.g. `0-7 of 16`.
    pub partitions: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub seen_at: chrono::DateTime<chrono::Utc>,
    /// WebSocket clients connected to it.
    pub clients: usize,
    pub version: String,
}

/// This process's record and where it is published; cheap to clone.
#[derive(Clone)]
pub struct Replicas {
    link: Option<RedisLink>,
    me: Arc<ReplicaInfo>,
    clients: Arc<dyn Fn() -> usize + Send + Sync>,
}

/// A name for this process, unique among the replicas: `<host>-<pid>-<random>`
/// (the host is the ECS task's in a container).
pub fn process_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned());
    format!("{host}-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 3]>()))
}

impl Replicas {
    pub fn new(
        link: Option<RedisLink>,
        role: &str,
        listen: String,
        partitions: Option<String>,
        clients: Arc<dyn Fn() -> usize + Send + Sync>,
    ) -> Replicas {
        let now = chrono::Utc::now();
        let me = ReplicaInfo {
            id: process_name(),
            role: role.to_owned(),
            listen,
            partitions,
            started_at: now,
            seen_at: now,
            clients: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        Replicas { link, me: Arc::new(me), clients }
    }

    /// This process now.
    pub fn me(&self) -> ReplicaInfo {
        ReplicaInfo { seen_at: chrono::Utc::now(), clients: (self.clients)(), ..(*self.me).clone() }
    }

    fn key(link: &RedisLink) -> String {
        link.key("replicas")
    }

    /// Publishes this replica's record until the task is aborted.
    pub fn spawn_heartbeat(&self) -> Option<tokio::task::JoinHandle<()>> {
        let link = self.link.clone()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(BEAT);
            loop {
                tick.tick().await;
                let Ok(json) = serde_json::to_string(&this.me()) else { continue };
                if let Ok(mut c) = link.conn().await {
                    let _: Result<(), _> =
                        redis::cmd("HSET").arg(Self::key(&link)).arg(&this.me.id).arg(json).query_async(&mut c).await;
                }
            }
        }))
    }

    /// Removes this replica's record (graceful stop).
    pub async fn leave(&self) {
        if let Some(link) = &self.link {
            if let Ok(mut c) = link.conn().await {
                let _: Result<(), _> =
                    redis::cmd("HDEL").arg(Self::key(link)).arg(&self.me.id).query_async(&mut c).await;
            }
        }
    }

    /// Every live replica, this one included, sorted by role then address;
    /// records of dead replicas are removed on the way.
    pub async fn list(&self) -> Result<Vec<ReplicaInfo>, crate::redis_link::LinkError> {
        let Some(link) = &self.link else { return Ok(vec![self.me()]) };
        let mut c = link.conn().await?;
        let all: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(Self::key(link)).query_async(&mut c).await?;
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (id, json) in all {
            match serde_json::from_str::<ReplicaInfo>(&json) {
                Ok(r) if r.seen_at >= cutoff && id != self.me.id => out.push(r),
                Ok(_) if id == self.me.id => {}
                _ => dead.push(id),
            }
        }
        out.push(self.me());
        if !dead.is_empty() {
            let _: Result<(), _> = redis::cmd("HDEL").arg(Self::key(link)).arg(&dead).query_async(&mut c).await;
        }
        out.sort_by(|a, b| (&a.role, &a.listen).cmp(&(&b.role, &b.listen)));
        Ok(out)
    }
}
