//! The processor side of ingest with Redis: consumes the partitions this
//! processor owns through the consumer group, commits each batch to the
//! event log with the group committer (which de-duplicates by `event_id`
//! and hands new events to the actors), and only then acknowledges (XACK)
//! the entries. A crash between commit and XACK makes Redis deliver the
//! entries again; the log recognises them as duplicates, so nothing is
//! counted twice, and nothing acknowledged to a client is lost, because an
//! entry leaves the pending list only after its commit.
//!
//! Two stages, so that reading and committing overlap: a reader task
//! (XREADGROUP, then decoding and validating the entries on a blocking
//! thread) hands batches in stream order through a one-slot channel to a
//! commit task, which commits them one after the other, in that order, and
//! acknowledges each after its commit. While batch N commits, batch N+1 is
//! read and parsed; at most one batch waits between them, so at most three
//! are in hand. Commits stay strictly sequential (a batch is submitted only
//! after the previous one committed, or was split up and dead-lettered), so
//! every customer's events reach the log in stream order as before.
//!
//! Order of work: first this consumer's own pending entries (read before a
//! crash, not acknowledged; read forwards from the last id seen, so none is
//! read twice while its batch is in flight), then new entries; every
//! `claim_idle / 2`, once the batches in hand are done, it takes over
//! entries any consumer left pending for longer than `claim_idle`
//! (XAUTOCLAIM). An entry delivered `max_attempts` times without a commit,
//! or one the edge parser refuses, goes to the dead-letter stream with the
//! reason. A batch the database refuses while the database answers is
//! retried event by event, so one poison event cannot hold its partition
//! back; while the database is unreachable the consumer just waits
//! (attempts are not counted against the events).
//!
//! Redis traffic: the blocking reads have a connection of their own; the
//! acknowledgements go over another dedicated connection (no pool checkout,
//! whose PING would be one more round trip per batch); rare commands
//! (claims, pending counts, trimming) use the pool.
//!
//! On a Redis Cluster each partition's stream is one slot, and one
//! XREADGROUP cannot span slots: the reader then asks every owned partition
//! at once (one command each, without BLOCK, concurrently over the routed
//! connection, so one round trip per node), and when none had anything it
//! waits a little before asking again (1 ms, doubling to
//! [`CLUSTER_IDLE_MAX`]), so an idle processor costs a few commands per
//! partition per second and a busy one never waits. Acknowledgements are
//! sent per partition, and a dead-letter move is an XADD followed by the
//! XACK (two slots; after a crash between them the entry is moved again,
//! never lost).

use super::committer::{CommitError, Committer, Prepared};
use super::parse::{parse_one, ParseLimits};
use super::streams::{self, DirectConnection, Entry, GROUP};
use crate::redis_link::{Dedicated, DedicatedOptions, RedisLink};
use crate::telemetry::{IngestEvent, Metrics};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply};
use redis::{AsyncCommands, Value};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

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
/// Longest wait for an acknowledgement or a dead-letter move.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two reads of idle partitions on a cluster.
const CLUSTER_IDLE_MAX: Duration = Duration::from_millis(16);

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
        let keys = settings.owns.clone().map(|p| streams::partition_key(&link, p)).collect();
        let acks = DirectConnection::new(link.clone(), ACK_TIMEOUT);
        let shared = Arc::new(Shared { name: settings.consumer_name(), link, metrics, settings, keys, acks });
        let (inflight, _) = watch::channel(0usize);
        let stage = CommitStage { shared: shared.clone(), committer, db, stopped: stopped.clone() };
        let reader = Reader { shared, stopped, inflight: Arc::new(inflight), idle: Duration::ZERO };
        Consumer { stop, task: tokio::spawn(reader.run(stage)) }
    }

    /// Stops reading; the batches in hand are committed and acknowledged first.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// What both stages use.
struct Shared {
    link: RedisLink,
    metrics: Metrics,
    settings: ConsumerSettings,
    name: String,
    /// The owned partitions' stream keys, partition `owns.start() + i` at `i`.
    keys: Vec<String>,
    /// XACK and dead-letter moves.
    acks: DirectConnection,
}

/// An entry of a partition, with how often Redis has delivered it (when known).
struct Item {
    partition: usize,
    entry: Entry,
    delivered: u64,
}

/// Entries ready to commit, in stream order per partition.
struct Batch {
    items: Vec<Item>,
    prepared: Vec<Prepared>,
}

impl Shared {
    fn partition_of(&self, key: &[u8]) -> Option<usize> {
        self.keys.iter().position(|k| k.as_bytes() == key).map(|i| self.settings.owns.start() + i)
    }

    fn key_of(&self, partition: usize) -> &str {
        &self.keys[partition - self.settings.owns.start()]
    }

    /// Acknowledges committed entries; a failure only means they come again
    /// (and are recognised as duplicates).
    async fn ack(&self, items: &[Item]) {
        let mut by_partition: HashMap<usize, Vec<&str>> = HashMap::new();
        for it in items {
            by_partition.entry(it.partition).or_default().push(it.entry.id.as_str());
        }
        let result = if self.link.is_cluster() {
            // One slot per partition: one pipeline each, concurrently.
            let acks = by_partition.iter().map(|(p, ids)| {
                let mut pipe = redis::pipe();
                pipe.xack(self.key_of(*p), GROUP, ids).ignore();
                async move { self.acks.query::<()>(&pipe).await }
            });
            futures::future::join_all(acks).await.into_iter().collect::<Result<Vec<()>, _>>().map(|_| ())
        } else {
            let mut pipe = redis::pipe();
            for (p, ids) in &by_partition {
                pipe.xack(self.key_of(*p), GROUP, ids).ignore();
            }
            self.acks.query::<()>(&pipe).await
        };
        if let Err(e) = result {
            self.metrics.record(IngestEvent::ConsumerRetry { step: "ack", error: e.to_string() });
        }
    }

    /// Moves an entry to the dead-letter stream and acknowledges it,
    /// atomically on a single node; on a cluster (two slots) the XACK follows
    /// the XADD.
    async fn dead_letter(&self, it: &Item, reason: &str) {
        let cluster = self.link.is_cluster();
        let mut pipe = redis::pipe();
        if !cluster {
            pipe.atomic();
        }
        pipe.xadd_maxlen(
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
        .ignore();
        let mut ack = redis::pipe();
        ack.xack(self.key_of(it.partition), GROUP, &[&it.entry.id]).ignore();
        let moved = if cluster {
            match self.acks.query::<()>(&pipe).await {
                Ok(()) => self.acks.query::<()>(&ack).await,
                Err(e) => Err(e),
            }
        } else {
            pipe.xack(self.key_of(it.partition), GROUP, &[&it.entry.id]).ignore();
            self.acks.query::<()>(&pipe).await
        };
        match moved {
            Ok(()) => self.metrics.record(IngestEvent::DeadLettered {
                partition: it.partition,
                entry: it.entry.id.clone(),
                reason: reason.to_owned(),
            }),
            Err(e) => self.metrics.record(IngestEvent::ConsumerRetry { step: "dead-letter", error: e.to_string() }),
        }
    }
}

/// The reading stage (the consumer's own task).
struct Reader {
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
    /// Batches handed to the commit stage and not finished yet.
    inflight: Arc<watch::Sender<usize>>,
    /// The current pause between reads of idle partitions (cluster only).
    idle: Duration,
}

impl Reader {
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Waits `d`, or less if asked to stop.
    async fn pause(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.stopped.changed()).await;
    }

    async fn run(mut self, stage: CommitStage) {
        let s = self.shared.clone();
        tracing::info!(consumer = %s.name, partitions = ?s.settings.owns, "processor consuming");
        let mut backoff = Duration::from_millis(100);
        // The dedicated connection blocks in XREADGROUP; its response timeout must outlast the block.
        let mut conn = loop {
            if self.stopping() {
                return;
            }
            match self.connect_and_prepare().await {
                Ok(c) => break c,
                Err(e) => {
                    s.metrics.record(IngestEvent::ConsumerRetry { step: "connect", error: e.to_string() });
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let (tx, rx) = mpsc::channel::<Batch>(1);
        let commits = tokio::spawn(stage.run(rx, self.inflight.clone()));
        // This consumer's entries pending from before a restart come first,
        // read forwards from the last id seen in each partition.
        let mut history: Option<Vec<String>> = Some(vec!["0".to_owned(); s.keys.len()]);
        let mut last_claim = Instant::now();
        let mut last_trim = Instant::now();
        while !self.stopping() {
            let batch = if let Some(cursors) = history.as_mut() {
                self.read(&mut conn, Some(cursors)).await
            } else if last_claim.elapsed() >= s.settings.claim_idle / 2 {
                last_claim = Instant::now();
                // Only entries nobody is working on: wait until the batches in hand are done.
                let mut done = self.inflight.subscribe();
                let _ = done.wait_for(|n| *n == 0).await;
                self.claim().await
            } else {
                self.read(&mut conn, None).await
            };
            match batch {
                Ok(items) => {
                    backoff = Duration::from_millis(100);
                    if history.is_some() && items.is_empty() {
                        history = None;
                        continue;
                    }
                    if !items.is_empty() {
                        if let Some(batch) = self.prepare(items).await {
                            self.inflight.send_modify(|n| *n += 1);
                            if tx.send(batch).await.is_err() {
                                // The commit stage stopped (shutting down).
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    s.metrics.record(IngestEvent::ConsumerRetry { step: "read", error: e.to_string() });
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
        // The batches in hand are committed and acknowledged before we return.
        drop(tx);
        let _ = commits.await;
        tracing::info!(consumer = %s.name, "processor stopped consuming");
    }

    async fn connect_and_prepare(&self) -> Result<Dedicated, redis::RedisError> {
        let opts = DedicatedOptions { response_timeout: Some(BLOCK + Duration::from_secs(5)), pushes: None };
        let mut conn = self.shared.link.dedicated(opts).await?;
        for key in &self.shared.keys {
            let created: Result<(), redis::RedisError> = conn.xgroup_create_mkstream(key, GROUP, "0").await;
            if let Err(e) = created {
                if e.code() != Some("BUSYGROUP") {
                    return Err(e);
                }
            }
        }
        Ok(conn)
    }

    /// With `history`: this consumer's pending entries after the given ids
    /// (advanced past what is returned); without: new entries (blocking).
    async fn read(
        &mut self,
        conn: &mut Dedicated,
        history: Option<&mut Vec<String>>,
    ) -> Result<Vec<Item>, redis::RedisError> {
        if self.shared.link.is_cluster() {
            return self.read_each(conn, history).await;
        }
        let s = &self.shared;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&s.name).arg("COUNT").arg(s.settings.read_count);
        if history.is_none() {
            cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&s.keys);
        match &history {
            Some(cursors) => cmd.arg(&cursors[..]),
            None => cmd.arg(vec![">"; s.keys.len()]),
        };
        let reply: Value = cmd.query_async(conn).await?;
        let mut items = Vec::new();
        for (key, entries) in read_reply(reply) {
            let Some(p) = s.partition_of(&key) else { continue };
            for entry in entries {
                items.push(Item { partition: p, entry, delivered: 1 });
            }
        }
        if let Some(cursors) = history {
            for it in &items {
                cursors[it.partition - s.settings.owns.start()] = it.entry.id.clone();
            }
            if !items.is_empty() {
                self.delivery_counts(&mut items).await?;
            }
        }
        Ok(items)
    }

    /// [`Reader::read`] on a cluster: one XREADGROUP per partition (each is
    /// one slot), all at once; a pause that grows while nothing comes stands
    /// in for BLOCK.
    async fn read_each(
        &mut self,
        conn: &mut Dedicated,
        history: Option<&mut Vec<String>>,
    ) -> Result<Vec<Item>, redis::RedisError> {
        let s = self.shared.clone();
        let reads = s.keys.iter().enumerate().map(|(i, key)| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(GROUP).arg(&s.name).arg("COUNT").arg(s.settings.read_count);
            cmd.arg("STREAMS").arg(key).arg(history.as_ref().map_or(">", |c| c[i].as_str()));
            let mut conn = conn.clone();
            async move { cmd.query_async::<Value>(&mut conn).await }
        });
        let replies = futures::future::join_all(reads).await;
        let mut items = Vec::new();
        for reply in replies {
            for (key, entries) in read_reply(reply?) {
                let Some(p) = s.partition_of(&key) else { continue };
                items.extend(entries.into_iter().map(|entry| Item { partition: p, entry, delivered: 1 }));
            }
        }
        if let Some(cursors) = history {
            for it in &items {
                cursors[it.partition - s.settings.owns.start()] = it.entry.id.clone();
            }
            if !items.is_empty() {
                self.delivery_counts(&mut items).await?;
            }
        } else if items.is_empty() {
            self.idle = (self.idle * 2).clamp(Duration::from_millis(1), CLUSTER_IDLE_MAX);
            let idle = self.idle;
            self.pause(idle).await;
        } else {
            self.idle = Duration::ZERO;
        }
        Ok(items)
    }

    /// Takes over entries consumers left pending too long.
    async fn claim(&self) -> Result<Vec<Item>, redis::RedisError> {
        let s = &self.shared;
        let mut c = s.link.conn().await.map_err(link_err)?;
        let mut items = Vec::new();
        for p in s.settings.owns.clone() {
            let reply: StreamAutoClaimReply = c
                .xautoclaim_options(
                    s.key_of(p),
                    GROUP,
                    &s.name,
                    s.settings.claim_idle.as_millis() as u64,
                    "0-0",
                    StreamAutoClaimOptions::default().count(s.settings.read_count),
                )
                .await?;
            if !reply.claimed.is_empty() {
                s.metrics.record(IngestEvent::Reclaimed { partition: p, entries: reply.claimed.len() });
            }
            for id in &reply.claimed {
                items.push(Item { partition: p, entry: Entry::from_stream_id(id), delivered: 1 });
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
        let s = &self.shared;
        let mut c = s.link.conn().await.map_err(link_err)?;
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
            let reply: redis::streams::StreamPendingCountReply =
                c.xpending_consumer_count(s.key_of(p), GROUP, &from, &to, n * 2, &s.name).await?;
            for id in reply.ids {
                counts.insert(id.id, id.times_delivered as u64);
            }
        }
        for it in items.iter_mut() {
            it.delivered = counts.get(&it.entry.id).copied().unwrap_or(1);
        }
        Ok(())
    }

    /// Validates the entries (on a blocking thread: a batch is thousands of
    /// events) and dead-letters the ones that cannot be committed.
    async fn prepare(&self, items: Vec<Item>) -> Option<Batch> {
        let s = &self.shared;
        let limits = ParseLimits {
            max_events: 1,
            latest_time: chrono::Utc::now() + chrono::Duration::seconds(s.settings.max_future_skew_s),
        };
        let max_attempts = s.settings.max_attempts;
        let checked = tokio::task::spawn_blocking(move || {
            let mut batch = Batch { items: Vec::with_capacity(items.len()), prepared: Vec::with_capacity(items.len()) };
            let mut refused = Vec::new();
            for it in items {
                if it.delivered > max_attempts {
                    let reason = format!("delivered {} times without a commit", it.delivered);
                    refused.push((it, reason));
                    continue;
                }
                match prepare(&it.entry, limits) {
                    Ok(p) => {
                        batch.items.push(it);
                        batch.prepared.push(p);
                    }
                    Err(reason) => refused.push((it, reason)),
                }
            }
            (batch, refused)
        })
        .await;
        let (batch, refused) = match checked {
            Ok(r) => r,
            Err(e) => {
                // A panic in the parser: nothing acknowledged, the entries come again after claim_idle.
                tracing::error!(error = %e, "validating a batch failed");
                return None;
            }
        };
        for (it, reason) in &refused {
            s.dead_letter(it, reason).await;
        }
        (!batch.items.is_empty()).then_some(batch)
    }

    /// Drops entries every consumer is done with: below the oldest pending
    /// entry and at most up to the last one delivered to the group.
    async fn trim(&self) -> Result<(), redis::RedisError> {
        let s = &self.shared;
        let mut c = s.link.conn().await.map_err(link_err)?;
        for key in &s.keys {
            let pending: redis::streams::StreamPendingReply = c.xpending(key, GROUP).await?;
            let last_delivered = last_delivered_id(&mut c, key).await?;
            let Some(mut min_id) = last_delivered else { continue };
            if let redis::streams::StreamPendingReply::Data(d) = pending {
                if id_lt(&d.start_id, &min_id) {
                    min_id = d.start_id;
                }
            }
            let _: u64 = redis::cmd("XTRIM").arg(key).arg("MINID").arg("~").arg(&min_id).query_async(&mut c).await?;
        }
        Ok(())
    }
}

/// The committing stage: one batch after the other, in the order read.
struct CommitStage {
    shared: Arc<Shared>,
    committer: Committer,
    db: DatabaseConnection,
    stopped: watch::Receiver<bool>,
}

enum Commit {
    Done,
    Stopped,
    Refused(String),
}

impl CommitStage {
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
    }

    async fn pause(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.stopped.changed()).await;
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Batch>, inflight: Arc<watch::Sender<usize>>) {
        while let Some(batch) = rx.recv().await {
            let go_on = self.process(batch).await;
            inflight.send_modify(|n| *n = n.saturating_sub(1));
            if !go_on {
                // Shutting down while the database is unavailable: what is
                // left stays pending in Redis and comes again after a restart.
                break;
            }
        }
    }

    /// Commits and acknowledges a batch; false when it had to stop.
    async fn process(&mut self, batch: Batch) -> bool {
        let Batch { items, prepared } = batch;
        match self.commit(prepared).await {
            (Commit::Done, _) => {
                self.shared.ack(&items).await;
                true
            }
            (Commit::Stopped, _) => false,
            (Commit::Refused(error), prepared) => {
                // The database answers but refuses the batch: find the culprit(s) one by one.
                tracing::warn!(%error, events = items.len(), "batch refused; committing its events one by one");
                for (it, p) in items.into_iter().zip(prepared) {
                    match self.commit(vec![p]).await {
                        (Commit::Done, _) => self.shared.ack(std::slice::from_ref(&it)).await,
                        (Commit::Stopped, _) => return false,
                        (Commit::Refused(error), _) => {
                            self.shared.dead_letter(&it, &format!("the database refused it: {error}")).await;
                        }
                    }
                }
                true
            }
        }
    }

    /// Commits, waiting out overload and database outages; gives up with
    /// `Refused` after `max_attempts` failures while the database answers.
    /// Events not committed are handed back.
    async fn commit(&mut self, mut events: Vec<Prepared>) -> (Commit, Vec<Prepared>) {
        let mut failures = 0u64;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.committer.submit_or_return(events).await {
                Ok(_) => return (Commit::Done, Vec::new()),
                Err((CommitError::Stopped, back)) => return (Commit::Stopped, back),
                Err((CommitError::Overloaded, back)) => {
                    events = back;
                    // The actors are behind; the entries stay in Redis meanwhile.
                    self.pause(Duration::from_millis(20)).await;
                }
                Err((e, back)) => {
                    events = back;
                    let error = e.to_string();
                    let detail = match &e {
                        CommitError::Database(d) | CommitError::Queue(d) => d.clone(),
                        _ => error.clone(),
                    };
                    self.shared.metrics.record(IngestEvent::ConsumerRetry { step: "commit", error: detail.clone() });
                    if self.db.execute_unprepared("SELECT 1").await.is_ok() {
                        failures += 1;
                        if failures >= self.shared.settings.max_attempts {
                            return (Commit::Refused(detail), events);
                        }
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if self.stopping() && failures > 0 {
                return (Commit::Stopped, events);
            }
        }
    }
}

/// The entries of an XREADGROUP reply per stream key, taken apart without
/// copying (RESP2 arrays or RESP3 maps). An entry whose fields are gone
/// (deleted while pending) has no body.
fn read_reply(reply: Value) -> Vec<(Vec<u8>, Vec<Entry>)> {
    let streams: Vec<(Value, Value)> = match reply {
        Value::Array(v) => v
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut it = kv.into_iter();
                    Some((it.next()?, it.next()?))
                }
                _ => None,
            })
            .collect(),
        Value::Map(m) => m,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(key, entries)| {
            let key = bytes_of(key)?;
            let Value::Array(entries) = entries else { return Some((key, Vec::new())) };
            Some((key, entries.into_iter().filter_map(entry_of).collect()))
        })
        .collect()
}

fn entry_of(v: Value) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let mut parts = parts.into_iter();
    let id = String::from_utf8(bytes_of(parts.next()?)?).ok()?;
    let pairs: Vec<(Value, Value)> = match parts.next() {
        Some(Value::Array(fields)) => {
            let mut out = Vec::with_capacity(fields.len() / 2);
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        Some(Value::Map(m)) => m,
        _ => Vec::new(),
    };
    let (mut body, mut acked_at_ms) = (None, 0);
    for (k, v) in pairs {
        let Some(k) = bytes_of(k) else { continue };
        if k == streams::FIELD_EVENT.as_bytes() {
            body = bytes_of(v).and_then(|b| String::from_utf8(b).ok());
        } else if k == streams::FIELD_ACKED.as_bytes() {
            acked_at_ms = bytes_of(v).and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()).unwrap_or(0);
        }
    }
    Some(Entry { id, body, acked_at_ms })
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// The group's `last-delivered-id` on a stream (None before any delivery).
async fn last_delivered_id(
    c: &mut crate::redis_link::Conn<'_>,
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
    let event = parse_one(body, limits)?;
    Prepared::new(event, (entry.acked_at_ms > 0).then_some(entry.acked_at_ms)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_lt("9-0", "10-0"));
        assert!(id_lt("10-2", "10-11"));
        assert!(!id_lt("10-11", "10-11"));
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: Value) -> Value {
        Value::Array(vec![bulk(id), fields])
    }

    #[test]
    fn a_read_reply_is_taken_apart_per_stream() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("cp:events:3"),
                Value::Array(vec![
                    entry("1-0", Value::Array(vec![bulk("e"), bulk("{\"x\":1}"), bulk("a"), bulk("1700")])),
                    // Deleted while pending: no fields.
                    entry("2-0", Value::Nil),
                ]),
            ]),
            Value::Array(vec![bulk("cp:events:4"), Value::Array(vec![])]),
        ]);
        let r = read_reply(reply);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, b"cp:events:3");
        assert_eq!(r[0].1.len(), 2);
        assert_eq!(r[0].1[0].id, "1-0");
        assert_eq!(r[0].1[0].body.as_deref(), Some("{\"x\":1}"));
        assert_eq!(r[0].1[0].acked_at_ms, 1700);
        assert_eq!(r[0].1[1].body, None);
        assert!(r[1].1.is_empty());
        // RESP3 shape, and no entries at all.
        let resp3 = Value::Map(vec![(
            bulk("cp:events:0"),
            Value::Array(vec![entry("5-1", Value::Map(vec![(bulk("e"), bulk("{}"))]))]),
        )]);
        assert_eq!(read_reply(resp3)[0].1[0].body.as_deref(), Some("{}"));
        assert!(read_reply(Value::Nil).is_empty());
    }
}
