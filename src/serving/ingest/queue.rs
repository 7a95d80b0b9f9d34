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
//!
//! On a Redis Cluster a pipeline reaches one node, so a request's appends
//! are split by partition (each partition's stream is one slot) and sent
//! concurrently; with replicas to wait for, each partition's pipeline ends
//! with its own `WAIT` on the node that took it (over a connection kept for
//! waiting appends), and the request is acknowledged only when every one of
//! them was replicated.

use super::committer::{CommitError, Outcome};
use super::streams;
use crate::redis_link::{LinkError, RedisLink};
use crate::telemetry::traces::Step;
use crate::telemetry::{IngestEvent, Metrics};
use actors::event::Event;
use actors::trace::TraceParent;
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
    /// `{prefix}:events:{<tag>}` for every partition.
    keys: Arc<Vec<String>>,
    conn: Arc<streams::DirectConnection>,
    /// Appends that wait for replicas on a cluster (WAIT blocks its connection).
    waits: Arc<streams::DirectConnection>,
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
        let keys = Arc::new((0..partitions).map(|p| streams::partition_key(&link, p, partitions)).collect());
        let conn = Arc::new(streams::DirectConnection::new(link.clone(), APPEND_TIMEOUT));
        let waits = Arc::new(streams::DirectConnection::new(link.clone(), APPEND_TIMEOUT + ack.timeout));
        let q = EventQueue {
            link,
            partitions,
            keys,
            conn,
            waits,
            max_backlog,
            backlog: Arc::default(),
            detail: Arc::default(),
            metrics,
            ack,
            connected_replicas: Arc::default(),
        };
        // Known before the first request, so the first acknowledgement already
        // waits: a gateway that acknowledged unreplicated entries until its
        // first successful reading could lose them to a failover.
        for attempt in 0..20 {
            if q.read_replicas().await {
                break;
            }
            if attempt == 19 {
                tracing::warn!(
                    "could not read the Redis replicas at start; acknowledging without them until a reading succeeds"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let watcher = q.clone();
        tokio::spawn(async move { watcher.watch_backlog().await });
        q
    }

    /// Appends the events; answers once Redis holds them all. A traced
    /// request's context goes into every entry, and its XADD is a span.
    pub async fn submit(&self, events: Vec<Event>, trace: Option<TraceParent>) -> Result<Outcome, CommitError> {
        if self.backlog.load(Ordering::Relaxed) > self.max_backlog {
            return Err(CommitError::Overloaded);
        }
        let step = Step::start();
        let result = self.append(&events, trace).await;
        step.finish("redis.xadd", trace.as_ref(), vec![("cartpulse.events", events.len() as i64)]);
        result
    }

    async fn append(&self, events: &[Event], trace: Option<TraceParent>) -> Result<Outcome, CommitError> {
        let acked_at_ms = chrono::Utc::now().timestamp_millis().to_string();
        let trace = trace.map(|t| t.to_string());
        let stamp = Stamp { acked_at_ms: &acked_at_ms, trace: trace.as_deref() };
        let wanted = self.ack.wanted(self.connected_replicas.load(Ordering::Relaxed));
        let result = if self.link.is_cluster() {
            self.append_by_partition(events, stamp, wanted).await?
        } else {
            let mut pipe = redis::pipe();
            for event in events {
                let part = actors::data::partition(event.customer_id.as_str(), self.partitions);
                self.append_to(&mut pipe, part, event, stamp)?;
            }
            if wanted > 0 {
                // On the same connection, after the appends: counts the replicas
                // that have everything this connection wrote so far.
                pipe.cmd("WAIT").arg(wanted).arg(self.ack.timeout.as_millis().max(1) as u64);
                async {
                    let mut c = self.link.conn().await?;
                    Ok(pipe.query_async::<Vec<i64>>(&mut c).await?)
                }
                .await
            } else {
                self.conn.query::<Vec<i64>>(&pipe).await.map_err(LinkError::from)
            }
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
                self.metrics.record(IngestEvent::QueueFailed { error: error.to_string() });
                Err(CommitError::Queue(error))
            }
        }
    }

    /// Adds `event`'s XADD to `pipe`.
    fn append_to(
        &self,
        pipe: &mut redis::Pipeline,
        part: usize,
        event: &Event,
        stamp: Stamp,
    ) -> Result<(), CommitError> {
        let body = serde_json::to_string(event).map_err(CommitError::Encoding)?;
        let cmd = pipe
            .cmd("XADD")
            .arg(&self.keys[part])
            .arg("*")
            .arg(streams::FIELD_EVENT)
            .arg(body)
            .arg(streams::FIELD_ACKED)
            .arg(stamp.acked_at_ms);
        if let Some(t) = stamp.trace {
            cmd.arg(streams::FIELD_TRACE).arg(t);
        }
        cmd.ignore();
        Ok(())
    }

    /// The cluster path: one pipeline per partition (one slot each), sent
    /// concurrently; each ends with its `WAIT` when replicas are wanted. The
    /// result is the fewest replicas any of them reached.
    async fn append_by_partition(
        &self,
        events: &[Event],
        stamp: Stamp<'_>,
        wanted: u32,
    ) -> Result<Result<Vec<i64>, LinkError>, CommitError> {
        let mut pipes: std::collections::BTreeMap<usize, redis::Pipeline> = Default::default();
        for event in events {
            let part = actors::data::partition(event.customer_id.as_str(), self.partitions);
            self.append_to(pipes.entry(part).or_insert_with(redis::pipe), part, event, stamp)?;
        }
        let conn = if wanted > 0 { &self.waits } else { &self.conn };
        let sends = pipes.into_values().map(|mut pipe| async move {
            if wanted > 0 {
                pipe.cmd("WAIT").arg(wanted).arg(self.ack.timeout.as_millis().max(1) as u64);
            }
            conn.query::<Vec<i64>>(&pipe).await.map_err(LinkError::from)
        });
        let mut fewest: Option<i64> = None;
        for r in futures::future::join_all(sends).await {
            match r {
                Ok(r) => {
                    let n = r.first().copied().unwrap_or(0);
                    fewest = Some(fewest.map_or(n, |f| f.min(n)));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(fewest.map(|n| vec![n]).unwrap_or_default()))
    }

    /// Events appended and not yet committed, at the last reading.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Backlog per partition and dead-letter entries, at the last reading.
    pub fn detail(&self) -> (Vec<u64>, u64) {
        self.detail.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Reads how many replicas the primary has (`INFO replication`); on a
    /// cluster, the fewest replicas of any shard (`CLUSTER NODES`). Whether
    /// a reading was made.
    async fn read_replicas(&self) -> bool {
        let Ok(mut c) = self.link.conn().await else { return false };
        if self.link.is_cluster() {
            let nodes: Result<String, _> = redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await;
            let Ok(nodes) = nodes else { return false };
            self.connected_replicas.fetch_max(fewest_replicas_per_shard(&nodes), Ordering::Relaxed);
            return true;
        }
        let info: Result<String, _> = redis::cmd("INFO").arg("replication").query_async(&mut c).await;
        let Ok(info) = info else { return false };
        let n = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        self.connected_replicas.fetch_max(n, Ordering::Relaxed);
        true
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
                    redis::cmd("XLEN").arg(streams::dead_letter_key(&self.link)).query_async(&mut c).await.unwrap_or(0)
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

/// The fewest replicas any shard with slots has, from a `CLUSTER NODES`
/// reply (`<id> <addr> <flags> <primary-id> <ping> <pong> <epoch>
/// <link-state> <slots…>`). Only a node the cluster agreed has failed
/// (flag `fail`) is left out: a suspicion (`fail?`) or a link being
/// re-established, which a busy machine shows for a moment, would otherwise
/// let acknowledgements skip the replica they need.
fn fewest_replicas_per_shard(nodes: &str) -> u32 {
    let rows: Vec<Vec<&str>> =
        nodes.lines().map(|l| l.split_whitespace().collect()).filter(|f: &Vec<&str>| f.len() >= 8).collect();
    let healthy = |f: &[&str]| !f[2].split(',').any(|flag| flag == "fail");
    let primaries = rows.iter().filter(|f| f[2].contains("master") && f.len() > 8 && healthy(f));
    primaries
        .map(|p| rows.iter().filter(|f| f[2].contains("slave") && f[3] == p[0] && healthy(f)).count() as u32)
        .min()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::fewest_replicas_per_shard;

    #[test]
    fn the_weakest_shard_counts() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c1 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
a2 127.0.0.1:7003@17003 slave a1 0 0 1 connected
b2 127.0.0.1:7004@17004 slave b1 0 0 2 connected
c2 127.0.0.1:7005@17005 slave,fail c1 0 0 3 disconnected
";
        assert_eq!(fewest_replicas_per_shard(nodes), 0);
        let healed = nodes.replace("slave,fail c1 0 0 3 disconnected", "slave c1 0 0 3 connected");
        assert_eq!(fewest_replicas_per_shard(&healed), 1);
        // Suspected by one node, or its link re-established: still there.
        let suspected = nodes.replace("slave,fail c1 0 0 3 disconnected", "slave,fail? c1 0 0 3 disconnected");
        assert_eq!(fewest_replicas_per_shard(&suspected), 1);
        assert_eq!(fewest_replicas_per_shard(""), 0);
    }
}

/// What every entry of one request carries besides its event.
#[derive(Clone, Copy)]
struct Stamp<'a> {
    acked_at_ms: &'a str,
    trace: Option<&'a str>,
}
