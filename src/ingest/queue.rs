//! The gateway side of ingest with Redis: a request's events are appended to
//! their partitions' streams in one pipelined round trip, and the request is
//! acknowledged once Redis has them all. The processors commit them to the
//! log later (de-duplicated by `event_id` there), so a gateway cannot tell
//! duplicates: it reports every valid event as accepted (queued).
//!
//! With replicas behind the Redis primary, the request is acknowledged only
//! once `redis.ack_replicas` of them hold its entries too (`WAIT`, at most
//! `redis.ack_timeout_ms`), so an automatic failover to a replica cannot lose
//! an acknowledged event; otherwise 503, and the resend is de-duplicated.
//!
//! When Redis fails, the request gets 503 and nothing is acknowledged (some
//! of its events may have been appended; the client's retry is de-duplicated
//! by the processor). When the processors fall behind by more than
//! `redis.max_backlog` events, gateways answer 503 too, so Redis memory
//! stays bounded.
//!
//! Without a replica to wait for, the appends go over one multiplexed
//! connection of the gateway's own ([`streams::DirectConnection`]; the
//! requests of the moment share its pipeline) instead of the pool, whose
//! checkout adds a PING round trip to every request. `WAIT` blocks the
//! connection it is sent on, so a request that waits for replicas takes a
//! pooled connection of its own as before.

use super::committer::{CommitError, Outcome};
use super::streams;
use crate::redis_link::RedisLink;
use crate::telemetry::{IngestEvent, Metrics};
use actors::event::Event;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the backlog is read from Redis.
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for Redis to take a request's events (then 503).
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle used by the ingest handler; cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    link: RedisLink,
    partitions: usize,
    /// `{prefix}:events:{p}` for every partition.
    keys: Arc<Vec<String>>,
    conn: Arc<streams::DirectConnection>,
    max_backlog: u64,
    backlog: Arc<AtomicU64>,
    /// The last reading per partition, and the dead-letter stream's length.
    detail: Arc<std::sync::Mutex<(Vec<u64>, u64)>>,
    metrics: Metrics,
    ack: AckPolicy,
    /// Replicas connected to the primary, at the last reading.
    connected_replicas: Arc<AtomicU32>,
}

/// How many replicas must hold a request's entries before it is acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct AckPolicy {
    /// `None`: 1 when the primary has a replica, else 0.
    pub replicas: Option<u32>,
    pub timeout: Duration,
}

impl AckPolicy {
    fn wanted(&self, connected: u32) -> u32 {
        self.replicas.unwrap_or(connected.min(1))
    }
}

impl EventQueue {
    /// Starts the backlog reader (it also publishes the per-partition lag and
    /// the dead-letter length to `/metrics`).
    pub async fn start(
        link: RedisLink,
        partitions: usize,
        max_backlog: u64,
        ack: AckPolicy,
        metrics: Metrics,
    ) -> EventQueue {
        let keys = Arc::new((0..partitions).map(|p| streams::partition_key(&link, p)).collect());
        let conn = Arc::new(streams::DirectConnection::new(link.client().clone(), APPEND_TIMEOUT));
        let q = EventQueue {
            link,
            partitions,
            keys,
            conn,
            max_backlog,
            backlog: Arc::default(),
            detail: Arc::default(),
            metrics,
            ack,
            connected_replicas: Arc::default(),
        };
        // Known before the first request, so the first acknowledgement already waits.
        q.read_replicas().await;
        let watcher = q.clone();
        tokio::spawn(async move { watcher.watch_backlog().await });
        q
    }

    /// Appends the events; answers once Redis holds them all.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Outcome, CommitError> {
        if self.backlog.load(Ordering::Relaxed) > self.max_backlog {
            return Err(CommitError::Overloaded);
        }
        let acked_at_ms = chrono::Utc::now().timestamp_millis().to_string();
        let mut pipe = redis::pipe();
        for event in &events {
            let part = actors::runtime::partition(event.customer_id.as_str(), self.partitions);
            let body = serde_json::to_string(event).map_err(|e| CommitError::Database(format!("encoding: {e}")))?;
            pipe.cmd("XADD")
                .arg(&self.keys[part])
                .arg("*")
                .arg(streams::FIELD_EVENT)
                .arg(body)
                .arg(streams::FIELD_ACKED)
                .arg(&acked_at_ms)
                .ignore();
        }
        let wanted = self.ack.wanted(self.connected_replicas.load(Ordering::Relaxed));
        let result: Result<Vec<i64>, String> = if wanted > 0 {
            // On the same connection, after the appends: counts the replicas
            // that have everything this connection wrote so far.
            pipe.cmd("WAIT").arg(wanted).arg(self.ack.timeout.as_millis().max(1) as u64);
            async {
                let mut c = self.link.conn().await.map_err(|e| e.to_string())?;
                pipe.query_async::<Vec<i64>>(&mut *c).await.map_err(|e| e.to_string())
            }
            .await
        } else {
            self.conn.query::<Vec<i64>>(&pipe).await.map_err(|e| e.to_string())
        };
        let replicated = |r: &Vec<i64>| r.first().map_or(0, |n| (*n).max(0) as u32);
        match result {
            Ok(r) if wanted > 0 && replicated(&r) < wanted => {
                let got = replicated(&r);
                self.metrics.record(IngestEvent::NotReplicated { events: events.len(), wanted, got });
                Err(CommitError::NotReplicated { wanted, got })
            }
            Ok(_) => {
                self.metrics.record(IngestEvent::Queued { events: events.len() });
                Ok(Outcome { accepted: events.len(), duplicates: 0 })
            }
            Err(error) => {
                self.metrics.record(IngestEvent::QueueFailed { error: error.clone() });
                Err(CommitError::Queue(error))
            }
        }
    }

    /// Events appended and not yet committed, at the last reading.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Backlog per partition and dead-letter entries, at the last reading.
    pub fn detail(&self) -> (Vec<u64>, u64) {
        self.detail.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Reads how many replicas the primary has (`INFO replication`).
    async fn read_replicas(&self) {
        let Ok(mut c) = self.link.conn().await else { return };
        let info: Result<String, _> = redis::cmd("INFO").arg("replication").query_async(&mut *c).await;
        if let Ok(info) = info {
            let n = info
                .lines()
                .find_map(|l| l.strip_prefix("connected_slaves:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            self.connected_replicas.fetch_max(n, Ordering::Relaxed);
        }
    }

    async fn watch_backlog(self) {
        let mut tick = tokio::time::interval(BACKLOG_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // A replica that joins later raises the automatic requirement; one
            // that leaves does not lower it below what the setting demands.
            self.read_replicas().await;
            let Ok(per_partition) = streams::backlog(&self.link, self.partitions).await else { continue };
            self.backlog.store(per_partition.iter().sum(), Ordering::Relaxed);
            let dead_letters = match self.link.conn().await {
                Ok(mut c) => {
                    redis::cmd("XLEN").arg(streams::dead_letter_key(&self.link)).query_async(&mut *c).await.unwrap_or(0)
                }
                Err(_) => 0,
            };
            if let Ok(mut d) = self.detail.lock() {
                *d = (per_partition.clone(), dead_letters);
            }
            self.metrics.record(IngestEvent::Backlog { per_partition, dead_letters });
        }
    }
}
