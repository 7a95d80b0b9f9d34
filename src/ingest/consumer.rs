//! The processor side of ingest with Redis: one task that consumes the
//! partitions this processor owns through the consumer group, commits each
//! batch to the event log with the group committer (which de-duplicates by
//! `event_id` and hands new events to the actors), and only then
//! acknowledges (XACK) the entries. A crash between commit and XACK makes
//! Redis deliver the entries again; the log recognises them as duplicates,
//! so nothing is counted twice, and nothing acknowledged to a client is
//! lost, because an entry leaves the pending list only after its commit.
//!
//! Order of work: first this consumer's own pending entries (read before a
//! crash, not acknowledged), then new entries; every `claim_idle / 2` it
//! takes over entries another consumer left pending for longer than
//! `claim_idle` (XAUTOCLAIM). An entry delivered `max_attempts` times
//! without a commit, or one the edge parser refuses, goes to the
//! dead-letter stream with the reason. A batch the database refuses while
//! the database answers is retried event by event, so one poison event
//! cannot hold its partition back; while the database is unreachable the
//! consumer just waits (attempts are not counted against the events).

use super::committer::{CommitError, Committer, Prepared};
use super::parse::{parse_body, BodyFormat, ParseLimits};
use super::streams::{self, Entry, GROUP};
use crate::redis_link::RedisLink;
use crate::telemetry::{IngestEvent, Metrics};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the consumer needs to know.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub partitions: usize,
    pub owns: RangeInclusive<usize>,
    pub read_count: usize,
    pub claim_idle: Duration,
    pub max_attempts: u64,
    pub max_future_skew_s: i64,
}

impl ConsumerSettings {
    /// Stable per owned range, so a restarted processor finds its own pending entries.
    pub fn consumer_name(&self) -> String {
        format!("processor-{}-{}", self.owns.start(), self.owns.end())
    }
}

/// How long a read blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(500);
/// How often consumed entries are trimmed from the streams.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The running consumer; stop it before the committer.
pub struct Consumer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    pub fn start(
        link: RedisLink,
        committer: Committer,
        db: DatabaseConnection,
        metrics: Metrics,
        settings: ConsumerSettings,
    ) -> Consumer {
        let (stop, stopped) = watch::channel(false);
        let worker = Worker { link, committer, db, metrics, name: settings.consumer_name(), settings, stopped };
        Consumer { stop, task: tokio::spawn(worker.run()) }
    }

    /// Stops reading; the batch in hand is committed and acknowledged first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

struct Worker {
    link: RedisLink,
    committer: Committer,
    db: DatabaseConnection,
    metrics: Metrics,
    settings: ConsumerSettings,
    name: String,
    stopped: watch::Receiver<bool>,
}

/// An entry of a partition, with how often Redis has delivered it (when known).
struct Item {
    partition: usize,
    entry: Entry,
    delivered: u64,
}

impl Worker {
    fn keys(&self) -> Vec<String> {
        self.settings.owns.clone().map(|p| streams::partition_key(&self.link, p)).collect()
    }

    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Waits `d`, or less if asked to stop.
    async fn pause(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.stopped.changed()).await;
    }

    async fn run(mut self) {
        tracing::info!(consumer = %self.name, partitions = ?self.settings.owns, "processor consuming");
        let mut backoff = Duration::from_millis(100);
        // The dedicated connection blocks in XREADGROUP; its response timeout must outlast the block.
        let mut conn = loop {
            if self.stopping() {
                return;
            }
            match self.connect_and_prepare().await {
                Ok(c) => break c,
                Err(e) => {
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "connect", error: e.to_string() });
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        // This consumer's entries pending from before a restart come first.
        let mut own_pending = true;
        let mut last_claim = Instant::now();
        let mut last_trim = Instant::now();
        while !self.stopping() {
            let batch = if own_pending {
                self.read(&mut conn, "0").await
            } else if last_claim.elapsed() >= self.settings.claim_idle / 2 {
                last_claim = Instant::now();
                self.claim().await
            } else {
                self.read(&mut conn, ">").await
            };
            match batch {
                Ok(items) => {
                    backoff = Duration::from_millis(100);
                    if own_pending && items.is_empty() {
                        own_pending = false;
                        continue;
                    }
                    if !items.is_empty() {
                        self.process(items).await;
                    }
                }
                Err(e) => {
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "read", error: e.to_string() });
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Ok(c) = self.connect_and_prepare().await {
                        conn = c;
                    }
                }
            }
            if last_trim.elapsed() >= TRIM_EVERY {
                last_trim = Instant::now();
                if let Err(e) = self.trim().await {
                    tracing::debug!(error = %e, "trimming the streams failed; next time");
                }
            }
        }
        tracing::info!(consumer = %self.name, "processor stopped consuming");
    }

    async fn connect_and_prepare(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut conn = self.link.client().get_multiplexed_async_connection_with_config(&cfg).await?;
        for key in self.keys() {
            let created: Result<(), redis::RedisError> = conn.xgroup_create_mkstream(&key, GROUP, "0").await;
            if let Err(e) = created {
                if e.code() != Some("BUSYGROUP") {
                    return Err(e);
                }
            }
        }
        Ok(conn)
    }

    /// `id` `0`: this consumer's pending entries; `>`: new ones (blocking).
    async fn read(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &str,
    ) -> Result<Vec<Item>, redis::RedisError> {
        let keys = self.keys();
        let ids: Vec<&str> = keys.iter().map(|_| id).collect();
        let mut opts = StreamReadOptions::default().group(GROUP, &self.name).count(self.settings.read_count);
        if id == ">" {
            opts = opts.block(BLOCK.as_millis() as usize);
        }
        let reply: Option<StreamReadReply> = conn.xread_options(&keys, &ids, &opts).await?;
        let mut items = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(p) = self.partition_of(&k.key) else { continue };
            for s in &k.ids {
                items.push(Item { partition: p, entry: Entry::from_stream_id(s), delivered: 1 });
            }
        }
        if id != ">" && !items.is_empty() {
            self.delivery_counts(&mut items).await?;
        }
        Ok(items)
    }

    /// Takes over entries other consumers left pending too long.
    async fn claim(&self) -> Result<Vec<Item>, redis::RedisError> {
        let mut c = self.link.conn().await.map_err(link_err)?;
        let mut items = Vec::new();
        for p in self.settings.owns.clone() {
            let reply: StreamAutoClaimReply = c
                .xautoclaim_options(
                    streams::partition_key(&self.link, p),
                    GROUP,
                    &self.name,
                    self.settings.claim_idle.as_millis() as u64,
                    "0-0",
                    StreamAutoClaimOptions::default().count(self.settings.read_count),
                )
                .await?;
            if !reply.claimed.is_empty() {
                self.metrics.record(IngestEvent::Reclaimed { partition: p, entries: reply.claimed.len() });
            }
            for s in &reply.claimed {
                items.push(Item { partition: p, entry: Entry::from_stream_id(s), delivered: 1 });
            }
        }
        drop(c);
        if !items.is_empty() {
            self.delivery_counts(&mut items).await?;
        }
        Ok(items)
    }

    /// Fills in how often each entry was delivered (XPENDING per partition).
    async fn delivery_counts(&self, items: &mut [Item]) -> Result<(), redis::RedisError> {
        let mut c = self.link.conn().await.map_err(link_err)?;
        let mut ranges: HashMap<usize, (String, String, usize)> = HashMap::new();
        for it in items.iter() {
            let r = ranges.entry(it.partition).or_insert_with(|| (it.entry.id.clone(), it.entry.id.clone(), 0));
            if id_lt(&it.entry.id, &r.0) {
                r.0 = it.entry.id.clone();
            }
            if id_lt(&r.1, &it.entry.id) {
                r.1 = it.entry.id.clone();
            }
            r.2 += 1;
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (p, (from, to, n)) in ranges {
            let reply: redis::streams::StreamPendingCountReply = c
                .xpending_consumer_count(streams::partition_key(&self.link, p), GROUP, &from, &to, n * 2, &self.name)
                .await?;
            for id in reply.ids {
                counts.insert(id.id, id.times_delivered as u64);
            }
        }
        for it in items.iter_mut() {
            it.delivered = counts.get(&it.entry.id).copied().unwrap_or(1);
        }
        Ok(())
    }

    fn partition_of(&self, key: &str) -> Option<usize> {
        let prefix = streams::partition_key(&self.link, 0);
        let stem = prefix.strip_suffix('0')?;
        key.strip_prefix(stem)?.parse().ok()
    }

    /// Parses, commits and acknowledges a batch (entries in stream order per partition).
    async fn process(&mut self, items: Vec<Item>) {
        let limits = ParseLimits {
            max_events: 1,
            latest_time: chrono::Utc::now() + chrono::Duration::seconds(self.settings.max_future_skew_s),
        };
        let mut good: Vec<(Item, Prepared)> = Vec::with_capacity(items.len());
        for it in items {
            if it.delivered > self.settings.max_attempts {
                let reason = format!("delivered {} times without a commit", it.delivered);
                self.dead_letter(&it, &reason).await;
                continue;
            }
            match prepare(&it.entry, limits) {
                Ok(p) => good.push((it, p)),
                Err(reason) => self.dead_letter(&it, &reason).await,
            }
        }
        if good.is_empty() {
            return;
        }
        let (items, prepared): (Vec<Item>, Vec<Prepared>) = good.into_iter().unzip();
        match self.commit(prepared.clone()).await {
            Commit::Done => self.ack(&items).await,
            Commit::Stopped => {}
            Commit::Refused(error) => {
                // The database answers but refuses the batch: find the culprit(s) one by one.
                tracing::warn!(%error, events = items.len(), "batch refused; committing its events one by one");
                for (it, p) in items.into_iter().zip(prepared) {
                    match self.commit(vec![p]).await {
                        Commit::Done => self.ack(std::slice::from_ref(&it)).await,
                        Commit::Stopped => return,
                        Commit::Refused(error) => {
                            self.dead_letter(&it, &format!("the database refused it: {error}")).await;
                        }
                    }
                }
            }
        }
    }

    /// Commits, waiting out overload and database outages; gives up with
    /// `Refused` after `max_attempts` failures while the database answers.
    async fn commit(&mut self, events: Vec<Prepared>) -> Commit {
        let mut failures = 0u64;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.committer.submit(events.clone()).await {
                Ok(_) => return Commit::Done,
                Err(CommitError::Stopped) => return Commit::Stopped,
                Err(CommitError::Overloaded) => {
                    // The actors are behind; the entries stay in Redis meanwhile.
                    self.pause(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let error = e.to_string();
                    let detail = match &e {
                        CommitError::Database(d) | CommitError::Queue(d) => d.clone(),
                        _ => error.clone(),
                    };
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "commit", error: detail.clone() });
                    if self.db.execute_unprepared("SELECT 1").await.is_ok() {
                        failures += 1;
                        if failures >= self.settings.max_attempts {
                            return Commit::Refused(detail);
                        }
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if self.stopping() && failures > 0 {
                return Commit::Stopped;
            }
        }
    }

    /// Acknowledges committed entries; a failure only means they come again
    /// (and are recognised as duplicates).
    async fn ack(&self, items: &[Item]) {
        let mut by_partition: HashMap<usize, Vec<&str>> = HashMap::new();
        for it in items {
            by_partition.entry(it.partition).or_default().push(it.entry.id.as_str());
        }
        let mut pipe = redis::pipe();
        for (p, ids) in &by_partition {
            pipe.xack(streams::partition_key(&self.link, *p), GROUP, ids).ignore();
        }
        let result = match self.link.conn().await {
            Ok(mut c) => pipe.query_async::<()>(&mut *c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            self.metrics.record(IngestEvent::ConsumerRetry { step: "ack", error });
        }
    }

    /// Moves an entry to the dead-letter stream and acknowledges it, atomically.
    async fn dead_letter(&self, it: &Item, reason: &str) {
        let key = streams::partition_key(&self.link, it.partition);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xadd_maxlen(
                streams::dead_letter_key(&self.link),
                redis::streams::StreamMaxlen::Approx(streams::DEAD_LETTER_MAX),
                "*",
                &[
                    ("partition", it.partition.to_string()),
                    ("entry", it.entry.id.clone()),
                    ("reason", reason.to_owned()),
                    ("e", it.entry.body.clone().unwrap_or_default()),
                ],
            )
            .ignore()
            .xack(&key, GROUP, &[&it.entry.id])
            .ignore();
        match self.link.conn().await {
            Ok(mut c) => match pipe.query_async::<()>(&mut *c).await {
                Ok(()) => self.metrics.record(IngestEvent::DeadLettered {
                    partition: it.partition,
                    entry: it.entry.id.clone(),
                    reason: reason.to_owned(),
                }),
                Err(e) => self.metrics.record(IngestEvent::ConsumerRetry { step: "dead-letter", error: e.to_string() }),
            },
            Err(e) => self.metrics.record(IngestEvent::ConsumerRetry { step: "dead-letter", error: e.to_string() }),
        }
    }

    /// Drops entries every consumer is done with: below the oldest pending
    /// entry and at most up to the last one delivered to the group.
    async fn trim(&self) -> Result<(), redis::RedisError> {
        let mut c = self.link.conn().await.map_err(link_err)?;
        for p in self.settings.owns.clone() {
            let key = streams::partition_key(&self.link, p);
            let pending: redis::streams::StreamPendingReply = c.xpending(&key, GROUP).await?;
            let last_delivered = last_delivered_id(&mut c, &key).await?;
            let Some(mut min_id) = last_delivered else { continue };
            if let redis::streams::StreamPendingReply::Data(d) = pending {
                if id_lt(&d.start_id, &min_id) {
                    min_id = d.start_id;
                }
            }
            let _: u64 = redis::cmd("XTRIM").arg(&key).arg("MINID").arg("~").arg(&min_id).query_async(&mut *c).await?;
        }
        Ok(())
    }
}

enum Commit {
    Done,
    Stopped,
    Refused(String),
}

/// The group's `last-delivered-id` on a stream (None before any delivery).
async fn last_delivered_id(
    c: &mut crate::redis_link::PooledConnection<'_>,
    key: &str,
) -> Result<Option<String>, redis::RedisError> {
    let groups: redis::streams::StreamInfoGroupsReply = c.xinfo_groups(key).await?;
    Ok(groups.groups.into_iter().find(|g| g.name == GROUP).map(|g| g.last_delivered_id).filter(|id| id != "0-0"))
}

/// Stream id order (`ms-seq`).
fn id_lt(a: &str, b: &str) -> bool {
    fn parts(s: &str) -> (u64, u64) {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a) < parts(b)
}

fn link_err(e: crate::redis_link::LinkError) -> redis::RedisError {
    match e {
        crate::redis_link::LinkError::Command(e) => e,
        other => redis::RedisError::from((redis::ErrorKind::Io, "no Redis connection", other.to_string())),
    }
}

/// An entry back into a validated event, with the edge parser.
fn prepare(entry: &Entry, limits: ParseLimits) -> Result<Prepared, String> {
    let body = entry.body.as_deref().ok_or("the entry has no event (field e)")?;
    let parsed = parse_body(body.as_bytes(), BodyFormat::Ndjson, limits).map_err(|e| e.to_string())?;
    if let Some(r) = parsed.rejected.first() {
        return Err(format!("{}: {}", if r.field.is_empty() { "event" } else { &r.field }, r.reason));
    }
    let (_, event) = parsed.events.into_iter().next().ok_or("the entry holds no event")?;
    Prepared::new(event, (entry.acked_at_ms > 0).then_some(entry.acked_at_ms)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::id_lt;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_lt("9-0", "10-0"));
        assert!(id_lt("10-2", "10-11"));
        assert!(!id_lt("10-11", "10-11"));
    }
}
