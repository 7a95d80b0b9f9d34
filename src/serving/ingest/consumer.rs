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
//! Order of work, per partition: first this consumer's own pending entries
//! (read before a crash, not acknowledged, or delivered by a read whose
//! reply was lost; read forwards from the last id seen, so none is read
//! twice while its batch is in flight, except after a failed read of that
//! partition), then new entries. Each read asks every owned partition, the
//! ones re-reading their history and the others for new entries, and keeps
//! what the partitions that answered returned when some failed: a node
//! that is down for a while holds up its own partitions only, and the
//! re-reads it causes (each counts as a delivery) touch no other
//! partition's entries. With fixed
//! ranges, every `claim_idle / 2`, once the batches in hand are done, it takes over
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
//! Which partitions: a fixed range (`redis.owns`), or those the lease
//! manager ([`super::leases`]) hands in and takes back at run time through
//! [`ConsumerControl`]. A partition handed in is first cleared of every
//! entry pending in the group (XAUTOCLAIM with no minimum idle time: its
//! previous owner is gone), then read like this consumer's own pending
//! entries; its batches carry the partition's fencing token, and a commit
//! the database refuses for a stale token drops the batch unacknowledged
//! and reports the partition lost. Taking one back waits until no batch of
//! it is in hand.
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
use super::fences::Fence;
use super::parse::{parse_one, ParseLimits};
use super::streams::{self, DirectConnection, Entry, GROUP};
use crate::redis_link::{Dedicated, DedicatedOptions, RedisLink};
use crate::telemetry::{IngestEvent, Metrics};
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply};
use redis::{AsyncCommands, Value};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// What the consumer needs to know.
#[derive(Clone, Debug)]
pub struct ConsumerSettings {
    pub partitions: usize,
    /// A fixed range; `None`: the partitions come through [`ConsumerControl`].
    pub owns: Option<RangeInclusive<usize>>,
    /// The consumer's name in the group: stable per fixed range (a restarted
    /// processor finds its own pending entries), per process with leases.
    pub name: String,
    pub read_count: usize,
    pub claim_idle: Duration,
    pub max_attempts: u64,
    pub max_future_skew: std::time::Duration,
}

impl ConsumerSettings {
    /// The name of the consumer of a fixed range.
    pub fn range_name(owns: &RangeInclusive<usize>) -> String {
        format!("processor-{}-{}", owns.start(), owns.end())
    }
}

/// Hands partitions to a running consumer and takes them back.
#[derive(Clone)]
pub struct ConsumerControl(mpsc::UnboundedSender<Control>);

enum Control {
    Add { partition: usize, token: i64 },
    Remove { partition: usize, done: oneshot::Sender<()> },
}

impl ConsumerControl {
    /// Starts consuming `partition`, its commits fenced with `token`.
    pub fn add(&self, partition: usize, token: i64) {
        let _ = self.0.send(Control::Add { partition, token });
    }

    /// Stops consuming `partition` without waiting (a lost partition: its
    /// commits in hand will be refused by the fence).
    pub fn drop_partition(&self, partition: usize) {
        let (done, _) = oneshot::channel();
        let _ = self.0.send(Control::Remove { partition, done });
    }

    /// Stops consuming `partition`; returns once no batch of it is in hand.
    pub async fn remove(&self, partition: usize) {
        let (done, rx) = oneshot::channel();
        if self.0.send(Control::Remove { partition, done }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }
}

/// How long a read blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(500);
/// How often consumed entries are trimmed from the streams.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for an acknowledgement or a dead-letter move.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two reads of idle partitions on a cluster (or
/// with leases).
const CLUSTER_IDLE_MAX: Duration = Duration::from_millis(16);
/// The pause before a partition whose read failed is asked again, doubling
/// up to the longest while it keeps failing.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// With leases: reads new entries of the partitions whose lease this
/// consumer (`ARGV[1]`) holds, skipping the others. `KEYS` are pairs: a
/// partition's lease key, then its stream (the same slot; on a cluster one
/// pair per call, on a single node every owned partition in one call). The
/// reply has the shape of a multi-stream XREADGROUP. A plain read by a
/// processor that was paused past its lease would move entries into its own
/// pending list after the new owner had claimed the old ones and gone on
/// with newer ones, so the new owner would commit them late, out of order. A
/// blocking read has the same problem (Redis answers it while the process is
/// paused), so leased reads never block. A partition skipped here is
/// dropped by the lease manager when its renewal fails.
const GUARDED_READ: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', KEYS[i + 1], '>')
    if r then
      out[#out + 1] = r[1]
    end
  end
end
return out
"#;

static GUARDED_READ_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(GUARDED_READ));

/// The running consumer; stop it before the committer.
pub struct Consumer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    control: ConsumerControl,
}

impl Consumer {
    /// `lost` hears of partitions whose commits were refused for a stale
    /// fencing token (leases only).
    pub fn start(
        link: RedisLink,
        committer: Committer,
        db: DatabaseConnection,
        metrics: Metrics,
        settings: ConsumerSettings,
        lost: Option<mpsc::UnboundedSender<usize>>,
    ) -> Consumer {
        let (stop, stopped) = watch::channel(false);
        let keys = (0..settings.partitions).map(|p| streams::partition_key(&link, p, settings.partitions)).collect();
        let acks = DirectConnection::new(link.clone(), ACK_TIMEOUT);
        let mut owned = BTreeSet::new();
        let mut history = BTreeMap::new();
        for p in settings.owns.clone().into_iter().flatten() {
            owned.insert(p);
            history.insert(p, "0".to_owned());
        }
        let shared = Arc::new(Shared {
            name: settings.name.clone(),
            link,
            metrics,
            settings,
            keys,
            acks,
            tokens: Mutex::default(),
            lost,
        });
        let (inflight, _) = watch::channel(0usize);
        let (control, control_rx) = mpsc::unbounded_channel();
        let stage = CommitStage { shared: shared.clone(), committer, db, stopped: stopped.clone() };
        let reader = Reader {
            shared,
            stopped,
            inflight: Arc::new(inflight),
            idle: Duration::ZERO,
            owned,
            history,
            retry: BTreeMap::new(),
            control: control_rx,
        };
        Consumer { stop, task: tokio::spawn(reader.run(stage)), control: ConsumerControl(control) }
    }

    /// Hands partitions in and takes them back (leases).
    pub fn control(&self) -> ConsumerControl {
        self.control.clone()
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
    /// Every partition's stream key, partition `p` at `p`.
    keys: Vec<String>,
    /// XACK and dead-letter moves.
    acks: DirectConnection,
    /// The fencing token of each leased partition held.
    tokens: Mutex<BTreeMap<usize, i64>>,
    lost: Option<mpsc::UnboundedSender<usize>>,
}

/// An entry of a partition, with how often Redis has delivered it (when known).
struct Item {
    partition: usize,
    entry: Entry,
    delivered: u64,
}

/// What one read brought: the entries of the partitions that answered, and
/// the partitions that did not, with the error.
#[derive(Default)]
struct Read {
    items: Vec<Item>,
    failed: Option<(Vec<usize>, redis::RedisError)>,
}

impl Read {
    fn failed(partitions: Vec<usize>, error: redis::RedisError) -> Read {
        Read { items: Vec::new(), failed: Some((partitions, error)) }
    }
}

/// Entries ready to commit, in stream order per partition.
struct Batch {
    items: Vec<Item>,
    prepared: Vec<Prepared>,
    /// The leased partitions among the items, with their tokens.
    fences: Vec<Fence>,
}

impl Shared {
    fn partition_of(&self, key: &[u8]) -> Option<usize> {
        self.keys.iter().position(|k| k.as_bytes() == key)
    }

    fn key_of(&self, partition: usize) -> &str {
        &self.keys[partition]
    }

    /// Tells the lease manager these partitions were taken over.
    fn report_lost(&self, partitions: &[usize]) {
        if let Some(tx) = &self.lost {
            for p in partitions {
                let _ = tx.send(*p);
            }
        }
    }

    /// The fences of the leased partitions among `items`.
    fn fences_of(&self, items: &[Item]) -> Vec<Fence> {
        let Ok(tokens) = self.tokens.lock() else { return Vec::new() };
        if tokens.is_empty() {
            return Vec::new();
        }
        let partitions: BTreeSet<usize> = items.iter().map(|it| it.partition).collect();
        partitions.into_iter().filter_map(|p| tokens.get(&p).map(|t| (p, *t))).collect()
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

    /// The entries of an XREADGROUP (or guarded read) reply, by partition.
    fn items_of(&self, reply: Value) -> Vec<Item> {
        let mut items = Vec::new();
        for (key, entries) in read_reply(reply) {
            let Some(p) = self.partition_of(&key) else { continue };
            items.extend(entries.into_iter().map(|entry| Item { partition: p, entry, delivered: 1 }));
        }
        items
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
    /// The partitions read now.
    owned: BTreeSet<usize>,
    /// Partitions whose pending entries are being re-read, and the last id
    /// seen in each; a partition leaves once its read comes back empty.
    history: BTreeMap<usize, String>,
    /// Partitions whose last read failed: when to ask again, and the pause
    /// that led there (doubling while they keep failing).
    retry: BTreeMap<usize, (Instant, Duration)>,
    control: mpsc::UnboundedReceiver<Control>,
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
        let mut last_claim = Instant::now();
        let mut last_trim = Instant::now();
        while !self.stopping() {
            self.take_controls(&mut conn).await;
            if self.owned.is_empty() {
                // Nothing to read until a partition is handed in.
                tokio::select! {
                    c = self.control.recv() => match c {
                        Some(c) => self.apply(c, &mut conn).await,
                        None => self.pause(Duration::from_millis(100)).await,
                    },
                    _ = self.stopped.changed() => {}
                }
                continue;
            }
            let targets = self.targets(Instant::now());
            if targets.is_empty() {
                // Every partition waits out a failed read.
                let next = self.retry.values().map(|(at, _)| *at).min();
                self.pause(next.map(|at| at.saturating_duration_since(Instant::now())).unwrap_or(RETRY_FIRST)).await;
                continue;
            }
            let read_started = crate::telemetry::traces::Step::start();
            let read = if self.history.is_empty()
                && self.retry.is_empty()
                && s.settings.owns.is_some()
                && last_claim.elapsed() >= s.settings.claim_idle / 2
            {
                // (With leases, a new owner claims everything pending when it
                // takes a partition; a periodic claim by a paused former owner
                // could take the new owner's entries.)
                last_claim = Instant::now();
                // Only entries nobody is working on: wait until the batches in hand are done.
                self.drained().await;
                match self.claim().await {
                    Ok(items) => Read { items, failed: None },
                    Err(e) => Read::failed(self.owned.iter().copied().collect(), e),
                }
            } else {
                self.read(&mut conn, &targets).await
            };
            if !read.items.is_empty() {
                if let Some(batch) = self.prepare(read.items, read_started).await {
                    self.inflight.send_modify(|n| *n += 1);
                    if tx.send(batch).await.is_err() {
                        // The commit stage stopped (shutting down).
                        break;
                    }
                }
            }
            let failed = read.failed.as_ref().map(|(ps, _)| ps.clone()).unwrap_or_default();
            for (p, _) in &targets {
                if !failed.contains(p) {
                    self.retry.remove(p);
                }
            }
            if let Some((partitions, e)) = read.failed {
                s.metrics.record(IngestEvent::ConsumerRetry { step: "read", error: e.to_string() });
                // A read can fail after Redis ran it: the reply lost with
                // the connection or the node. What it delivered is pending
                // for this consumer, and no read of new entries returns it
                // again: re-read this consumer's pending entries of the
                // partitions that failed once Redis answers (a batch still
                // in hand comes twice; `event_id` makes the second a
                // duplicate). Only those, and each after a pause of its own:
                // every re-read counts as a delivery, so a node down for a few
                // seconds must neither push other partitions' entries in hand
                // past `max_attempts` nor hold their reads up.
                let now = Instant::now();
                for &p in &partitions {
                    if self.owned.contains(&p) {
                        self.history.entry(p).or_insert_with(|| "0".to_owned());
                        let pause = self.retry.get(&p).map(|(_, d)| (*d * 2).min(RETRY_MAX)).unwrap_or(RETRY_FIRST);
                        self.retry.insert(p, (now + pause, pause));
                    }
                }
                // Nothing answered: the connection may be the casualty.
                if partitions.len() >= targets.len() {
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

    /// Waits until no batch is in hand.
    async fn drained(&self) {
        let mut done = self.inflight.subscribe();
        let _ = done.wait_for(|n| *n == 0).await;
    }

    async fn take_controls(&mut self, conn: &mut Dedicated) {
        while let Ok(c) = self.control.try_recv() {
            self.apply(c, conn).await;
        }
    }

    async fn apply(&mut self, control: Control, conn: &mut Dedicated) {
        match control {
            Control::Add { partition, token } => {
                if let Ok(mut t) = self.shared.tokens.lock() {
                    t.insert(partition, token);
                }
                // Until the group exists and the previous owner's entries are
                // ours, reading cannot start; retried while Redis fails.
                let mut backoff = Duration::from_millis(50);
                loop {
                    match self.adopt(partition, conn).await {
                        Ok(claimed) => {
                            if claimed > 0 {
                                self.shared.metrics.record(IngestEvent::Reclaimed { partition, entries: claimed });
                            }
                            break;
                        }
                        Err(e) => {
                            self.shared
                                .metrics
                                .record(IngestEvent::ConsumerRetry { step: "adopt", error: e.to_string() });
                            if self.stopping() {
                                return;
                            }
                            self.pause(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            // The connection may be the casualty (Redis restarted).
                            if let Ok(c) = self.connect_and_prepare().await {
                                *conn = c;
                            }
                        }
                    }
                }
                self.owned.insert(partition);
                self.history.insert(partition, "0".to_owned());
                self.retry.remove(&partition);
            }
            Control::Remove { partition, done } => {
                self.owned.remove(&partition);
                self.history.remove(&partition);
                self.retry.remove(&partition);
                self.drained().await;
                if let Ok(mut t) = self.shared.tokens.lock() {
                    t.remove(&partition);
                }
                let _ = done.send(());
            }
        }
    }

    /// Creates the group on `p`'s stream if needed and makes every entry
    /// pending there this consumer's; returns how many it took.
    async fn adopt(&self, p: usize, conn: &mut Dedicated) -> Result<usize, redis::RedisError> {
        let s = &self.shared;
        let key = s.key_of(p);
        create_group(conn, key).await?;
        let mut cursor = "0-0".to_owned();
        let mut claimed = 0;
        loop {
            // JUSTID: the read that follows counts the delivery.
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(key)
                .arg(GROUP)
                .arg(&s.name)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(conn)
                .await?;
            let (next, n) = autoclaim_reply(reply);
            claimed += n;
            match next {
                Some(next) if next != "0-0" => cursor = next,
                _ => break,
            }
        }
        self.forget_other_consumers(key, conn).await;
        Ok(claimed)
    }

    /// Deletes the group's other consumers of `key` that have nothing
    /// pending: every process reads under a name of its own, so each restart
    /// would leave one behind for good. Safe right after [`Self::adopt`]:
    /// everything pending was just claimed, and without the lease no other
    /// consumer can read this stream, so a deleted consumer loses nothing (a
    /// live one is created again by its next read). Best effort.
    async fn forget_other_consumers(&self, key: &str, conn: &mut Dedicated) {
        let s = &self.shared;
        let reply: Result<redis::streams::StreamInfoConsumersReply, _> =
            redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(GROUP).query_async(conn).await;
        let consumers = match reply {
            Ok(r) => r.consumers,
            Err(e) => {
                tracing::debug!(error = %e, key, "listing the group's consumers failed; they stay");
                return;
            }
        };
        for c in consumers.into_iter().filter(|c| c.pending == 0 && c.name != s.name) {
            let deleted: Result<i64, _> =
                redis::cmd("XGROUP").arg("DELCONSUMER").arg(key).arg(GROUP).arg(&c.name).query_async(conn).await;
            if let Err(e) = deleted {
                tracing::debug!(error = %e, key, consumer = %c.name, "deleting an idle consumer failed");
            }
        }
    }

    async fn connect_and_prepare(&self) -> Result<Dedicated, redis::RedisError> {
        // A read fails rather than being resent: the loop then re-reads this
        // consumer's pending entries, which a silently resent read would skip.
        let opts =
            DedicatedOptions { response_timeout: Some(BLOCK + Duration::from_secs(5)), pushes: None, no_retries: true };
        let mut conn = self.shared.link.dedicated(opts).await?;
        for p in &self.owned {
            create_group(&mut conn, self.shared.key_of(*p)).await?;
        }
        Ok(conn)
    }

    /// What to read: each owned partition not waiting out a failure, with
    /// `>` (new entries) or, while it re-reads its pending entries, after
    /// its cursor there.
    fn targets(&self, now: Instant) -> Vec<(usize, String)> {
        self.owned
            .iter()
            .filter(|p| self.retry.get(p).is_none_or(|(at, _)| *at <= now))
            .map(|p| (*p, self.history.get(p).cloned().unwrap_or_else(|| ">".to_owned())))
            .collect()
    }

    /// New entries (blocking when no partition re-reads its history), and
    /// this consumer's pending entries of the partitions re-reading them,
    /// after their cursors (advanced past what is returned). The partitions
    /// that answered are returned even when others failed, so a node that
    /// is down holds up only its own partitions.
    async fn read(&mut self, conn: &mut Dedicated, targets: &[(usize, String)]) -> Read {
        let history: BTreeSet<usize> = targets.iter().filter(|(_, id)| id != ">").map(|(p, _)| *p).collect();
        // With leases every read of new entries checks the lease in Redis
        // (and so cannot block): see [`GUARDED_READ`].
        let leased = self.shared.settings.owns.is_none();
        let mut read = if self.shared.link.is_cluster() || leased {
            self.read_each(conn, targets).await
        } else {
            let s = &self.shared;
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(GROUP).arg(&s.name).arg("COUNT").arg(s.settings.read_count);
            if history.is_empty() {
                // Not past the moment a partition that failed is to be asked again.
                let now = Instant::now();
                let retry = self.retry.values().map(|(at, _)| at.saturating_duration_since(now)).min();
                let block = retry.map_or(BLOCK, |d| d.min(BLOCK)).max(Duration::from_millis(1));
                cmd.arg("BLOCK").arg(block.as_millis() as u64);
            }
            cmd.arg("STREAMS");
            for (p, _) in targets {
                cmd.arg(s.key_of(*p));
            }
            for (_, id) in targets {
                cmd.arg(id);
            }
            match cmd.query_async::<Value>(conn).await {
                Ok(reply) => Read { items: s.items_of(reply), failed: None },
                Err(e) => Read::failed(targets.iter().map(|(p, _)| *p).collect(), e),
            }
        };
        if history.is_empty() {
            return read;
        }
        // Entries of a history read were delivered before: how often decides the dead letters.
        let (mut old, new): (Vec<Item>, Vec<Item>) =
            std::mem::take(&mut read.items).into_iter().partition(|it| history.contains(&it.partition));
        if !old.is_empty() {
            if let Err(e) = self.delivery_counts(&mut old).await {
                // Those partitions are read again, cursors unmoved, with the counts.
                let mut failed: BTreeSet<usize> = old.iter().map(|it| it.partition).collect();
                failed.extend(read.failed.map(|(ps, _)| ps).unwrap_or_default());
                return Read { items: new, failed: Some((failed.into_iter().collect(), e)) };
            }
        }
        let failed: BTreeSet<usize> = read.failed.iter().flat_map(|(ps, _)| ps.iter().copied()).collect();
        let mut seen = BTreeSet::new();
        for it in &old {
            seen.insert(it.partition);
            if let Some(c) = self.history.get_mut(&it.partition) {
                *c = it.entry.id.clone();
            }
        }
        // A partition whose pending entries are all read goes on with new ones.
        for p in &history {
            if !seen.contains(p) && !failed.contains(p) {
                self.history.remove(p);
            }
        }
        read.items = old;
        read.items.extend(new);
        read
    }

    /// [`Reader::read`] without BLOCK: on a cluster one XREADGROUP (or
    /// guarded read) per partition (each is one slot), all at once; with
    /// leases on a single node one guarded read of every partition reading
    /// new entries, and one XREADGROUP per partition re-reading its history.
    /// A pause that grows while nothing comes stands in for BLOCK.
    async fn read_each(&mut self, conn: &mut Dedicated, targets: &[(usize, String)]) -> Read {
        let s = self.shared.clone();
        let leased = s.settings.owns.is_none();
        // One command per slot: (partitions, the id to read after, guarded).
        // Guarded reads of new entries on a single node go together.
        let mut groups: Vec<(Vec<usize>, &str, bool)> = Vec::new();
        for (p, id) in targets {
            let guard = leased && id == ">";
            match groups.iter_mut().find(|(_, _, g)| guard && *g && !s.link.is_cluster()) {
                Some((ps, _, _)) => ps.push(*p),
                None => groups.push((vec![*p], id, guard)),
            }
        }
        let reads = groups.iter().map(|(ps, id, guard)| {
            let mut conn = conn.clone();
            let s = s.clone();
            async move {
                if *guard {
                    let mut inv = GUARDED_READ_SCRIPT.prepare_invoke();
                    for q in ps {
                        inv.key(super::leases::lease_key(&s.link, *q, s.settings.partitions)).key(s.key_of(*q));
                    }
                    inv.arg(&s.name).arg(GROUP).arg(s.settings.read_count);
                    inv.invoke_async::<Value>(&mut conn).await
                } else {
                    let mut cmd = redis::cmd("XREADGROUP");
                    cmd.arg("GROUP").arg(GROUP).arg(&s.name).arg("COUNT").arg(s.settings.read_count);
                    cmd.arg("STREAMS").arg(s.key_of(ps[0])).arg(*id);
                    cmd.query_async::<Value>(&mut conn).await
                }
            }
        });
        let replies = futures::future::join_all(reads).await;
        let mut read = Read::default();
        for (reply, (ps, _, _)) in replies.into_iter().zip(&groups) {
            match reply {
                Ok(reply) => read.items.extend(s.items_of(reply)),
                Err(e) => match &mut read.failed {
                    Some((failed, _)) => failed.extend(ps),
                    None => read.failed = Some((ps.clone(), e)),
                },
            }
        }
        let waiting = targets.iter().all(|(_, id)| id == ">") && read.items.is_empty() && read.failed.is_none();
        if waiting {
            self.idle = (self.idle * 2).clamp(Duration::from_millis(1), CLUSTER_IDLE_MAX);
            let idle = self.idle;
            self.pause(idle).await;
        } else {
            self.idle = Duration::ZERO;
        }
        read
    }

    /// Takes over entries consumers left pending too long.
    async fn claim(&self) -> Result<Vec<Item>, redis::RedisError> {
        let s = &self.shared;
        let mut c = s.link.conn().await.map_err(link_err)?;
        let mut items = Vec::new();
        for &p in &self.owned {
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
    async fn prepare(&self, items: Vec<Item>, read_started: crate::telemetry::traces::Step) -> Option<Batch> {
        let s = &self.shared;
        let limits = ParseLimits {
            max_events: 1,
            latest_time: chrono::Utc::now() + crate::config::chrono_span(s.settings.max_future_skew),
        };
        let max_attempts = s.settings.max_attempts;
        let checked = tokio::task::spawn_blocking(move || {
            let mut batch = Batch {
                items: Vec::with_capacity(items.len()),
                prepared: Vec::with_capacity(items.len()),
                fences: Vec::new(),
            };
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
                    Err(reason) => refused.push((it, reason.to_string())),
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
        let mut batch = batch;
        batch.fences = s.fences_of(&batch.items);
        trace_read(&mut batch, read_started);
        (!batch.items.is_empty()).then_some(batch)
    }

    /// Drops entries every consumer is done with: below the oldest pending
    /// entry and at most up to the last one delivered to the group. One
    /// script per stream ([`TRIM`]), so the bound and the trim are taken on
    /// the same node at the same moment.
    async fn trim(&self) -> Result<(), redis::RedisError> {
        let s = &self.shared;
        let mut c = s.link.conn().await.map_err(link_err)?;
        for key in self.owned.iter().map(|p| s.key_of(*p)) {
            let _: i64 = TRIM_SCRIPT.key(key).arg(GROUP).invoke_async(&mut c).await?;
        }
        Ok(())
    }
}

/// Trims `KEYS[1]` below what group `ARGV[1]` is done with: the lower of its
/// last-delivered id and its oldest pending entry. Atomic: run as separate
/// commands, an entry delivered between the two reads could be trimmed
/// while pending, and on a cluster the reads and the trim could be answered
/// by different nodes while the slot moves (a failover).
const TRIM: &str = r#"
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local last = nil
for _, g in ipairs(groups) do
  local name, id = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then id = g[i + 1] end
  end
  if name == ARGV[1] then last = id end
end
if not last or last == '0-0' then return 0 end
local function parts(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 then
  local pm, ps = parts(pending[2])
  local lm, ls = parts(last)
  if pm < lm or (pm == lm and ps < ls) then last = pending[2] end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', last)
"#;

static TRIM_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(TRIM));

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
    /// These partitions' fences no longer hold.
    Fenced(Vec<usize>),
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
        let Batch { mut items, prepared, mut fences } = batch;
        let mut prepared = prepared;
        loop {
            match self.commit(prepared, fences.clone()).await {
                (Commit::Done, _) => {
                    self.shared.ack(&items).await;
                    return true;
                }
                (Commit::Stopped, _) => return false,
                (Commit::Fenced(lost), back) => {
                    // Another processor owns these now: their entries stay
                    // pending for it; the rest of the batch goes on.
                    let refused = items.iter().filter(|it| lost.contains(&it.partition)).count();
                    self.shared.metrics.record(IngestEvent::CommitFenced { partitions: lost.clone(), events: refused });
                    self.shared.report_lost(&lost);
                    let (keep_items, keep_prepared): (Vec<Item>, Vec<Prepared>) =
                        items.into_iter().zip(back).filter(|(it, _)| !lost.contains(&it.partition)).unzip();
                    if keep_items.is_empty() {
                        return true;
                    }
                    fences.retain(|(p, _)| !lost.contains(p));
                    items = keep_items;
                    prepared = keep_prepared;
                }
                (Commit::Refused(error), prepared) => {
                    // The database answers but refuses the batch: find the culprit(s) one by one.
                    tracing::warn!(%error, events = items.len(), "batch refused; committing its events one by one");
                    for (it, p) in items.into_iter().zip(prepared) {
                        let fence: Vec<Fence> = fences.iter().filter(|(q, _)| *q == it.partition).copied().collect();
                        match self.commit(vec![p], fence).await {
                            (Commit::Done, _) => self.shared.ack(std::slice::from_ref(&it)).await,
                            (Commit::Stopped, _) => return false,
                            (Commit::Fenced(lost), _) => {
                                self.shared
                                    .metrics
                                    .record(IngestEvent::CommitFenced { partitions: lost.clone(), events: 1 });
                                self.shared.report_lost(&lost);
                            }
                            (Commit::Refused(error), _) => {
                                self.shared.dead_letter(&it, &format!("the database refused it: {error}")).await;
                            }
                        }
                    }
                    return true;
                }
            }
        }
    }

    /// Commits, waiting out overload and database outages; gives up with
    /// `Refused` after `max_attempts` failures while the database answers.
    /// Events not committed are handed back.
    async fn commit(&mut self, mut events: Vec<Prepared>, fences: Vec<Fence>) -> (Commit, Vec<Prepared>) {
        let mut failures = 0u64;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.committer.submit_fenced(events, fences.clone()).await {
                Ok(_) => return (Commit::Done, Vec::new()),
                Err((CommitError::Stopped, back)) => return (Commit::Stopped, back),
                Err((CommitError::Fenced(lost), back)) => return (Commit::Fenced(lost), back),
                Err((CommitError::Overloaded, back)) => {
                    events = back;
                    // The actors are behind; the entries stay in Redis meanwhile.
                    self.pause(Duration::from_millis(20)).await;
                }
                Err((e, back)) => {
                    events = back;
                    let detail = match &e {
                        CommitError::Database(d) => d.clone(),
                        CommitError::Queue(d) => d.to_string(),
                        _ => e.to_string(),
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
    let (mut body, mut acked_at_ms, mut trace) = (None, 0, None);
    for (k, v) in pairs {
        let Some(k) = bytes_of(k) else { continue };
        if k == streams::FIELD_EVENT.as_bytes() {
            body = bytes_of(v).and_then(|b| String::from_utf8(b).ok());
        } else if k == streams::FIELD_ACKED.as_bytes() {
            acked_at_ms = bytes_of(v).and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok()).unwrap_or(0);
        } else if k == streams::FIELD_TRACE.as_bytes() {
            trace = bytes_of(v).and_then(|b| actors::trace::TraceParent::parse(std::str::from_utf8(&b).ok()?));
        }
    }
    Some(Entry { id, body, acked_at_ms, trace })
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Creates the consumer group on `key` (and the stream), unless it exists.
async fn create_group(conn: &mut Dedicated, key: &str) -> Result<(), redis::RedisError> {
    let created: Result<(), redis::RedisError> = conn.xgroup_create_mkstream(key, GROUP, "0").await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// The next cursor of an `XAUTOCLAIM … JUSTID` reply and how many ids it claimed.
fn autoclaim_reply(v: Value) -> (Option<String>, usize) {
    let Value::Array(parts) = v else { return (None, 0) };
    let mut parts = parts.into_iter();
    let next = parts.next().and_then(bytes_of).and_then(|b| String::from_utf8(b).ok());
    let n = match parts.next() {
        Some(Value::Array(ids)) => ids.len(),
        _ => 0,
    };
    (next, n)
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

/// Why a stream entry cannot be committed; it goes to the dead letters.
#[derive(Debug, thiserror::Error)]
enum BadEntry {
    #[error("the entry has no event (field e)")]
    NoBody,
    #[error(transparent)]
    Invalid(#[from] super::parse::EntryError),
    #[error("the event could not be encoded: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// An entry back into a validated event, with the edge parser.
fn prepare(entry: &Entry, limits: ParseLimits) -> Result<Prepared, BadEntry> {
    let body = entry.body.as_deref().ok_or(BadEntry::NoBody)?;
    let event = parse_one(body, limits)?;
    Ok(Prepared::new(event, (entry.acked_at_ms > 0).then_some(entry.acked_at_ms))?)
}

/// Records `processor.read` (the read and validation of a batch) once per
/// request trace among its entries, as a child of the gateway request's
/// span; the events then carry the read span, so their commit follows it.
fn trace_read(batch: &mut Batch, read_started: crate::telemetry::traces::Step) {
    let parents = actors::trace::distinct(batch.items.iter().filter_map(|it| it.entry.trace.as_ref()));
    for parent in parents {
        let of_trace = || batch.items.iter().filter(|it| it.entry.trace == Some(parent));
        let events = of_trace().count();
        // A blocking read can start before the entry was written: the span
        // starts no earlier than the gateway's acknowledgement of it.
        let acked = of_trace().map(|it| it.entry.acked_at_ms).min().unwrap_or(0).max(0) as u64;
        let start = read_started.not_before(std::time::UNIX_EPOCH + std::time::Duration::from_millis(acked));
        let Some(read) = start.finish(
            "processor.read",
            Some(&parent),
            vec![("cartpulse.events", events as i64), ("cartpulse.batch_events", batch.items.len() as i64)],
        ) else {
            continue;
        };
        for (it, p) in batch.items.iter().zip(batch.prepared.iter_mut()) {
            if it.entry.trace == Some(parent) {
                p.trace = Some(read);
            }
        }
    }
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
