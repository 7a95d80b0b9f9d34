//! The settings a shard and its actors share, owned here (next to the
//! actor that reads most of them) so the actor does not depend on the shard.

use crate::data::state::StateRules;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings shared by a shard and its actors.
#[derive(Debug)]
pub struct ShardConfig {
    pub rules: StateRules,
    pub passivate_after: Duration,
    pub snapshot_every_events: u32,
    pub snapshot_max_delay: Duration,
    /// Latest event time committed anywhere (ms since epoch): "now" for the
    /// profile's recency, which must work for live traffic and for replays of
    /// old data alike.
    pub watermark_ms: Arc<AtomicI64>,
    /// Events handed to shards and not yet processed by an actor: the
    /// committer's back-pressure signal.
    pub inflight: Arc<AtomicI64>,
    /// Most live actors per shard; beyond it the least recently used ones
    /// are passivated early, so memory stays bounded whatever the traffic.
    pub max_active: usize,
    /// Scorer, segmentation and update bus.
    pub hooks: crate::hooks::Hooks,
}

impl ShardConfig {
    pub fn as_of(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.watermark_ms.load(Ordering::Relaxed)).unwrap_or_else(Utc::now)
    }
}
