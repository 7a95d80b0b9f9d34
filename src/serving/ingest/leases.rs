//! Elastic processors: which processor consumes which partition, decided by
//! leases in Redis instead of fixed `--owns` ranges (used when `redis.owns`
//! is unset).
//!
//! - Each processor announces itself in the sorted set `{prefix}:processors`
//!   (score: when its announcement expires) every third of `redis.lease_ms`
//!   (at most every second), and aims at `ceil(partitions / live
//!   processors)` partitions. Between rounds it sleeps until the soonest
//!   of: the next round, another processor's announcement expiring, or a
//!   lease it wants expiring; so a dead processor's partitions move just
//!   after its leases expire, not up to a round later.
//! - A partition is claimed with `SET {prefix}:lease:{<tag>} <instance> NX
//!   PX lease_ms` (in a script that otherwise answers the holder's time
//!   left; the partition's hash tag puts the key in its stream's slot) and
//!   renewed with a compare-and-`PEXPIRE` script; one not renewed for
//!   `lease_ms` (its owner died or hangs) is free for anyone.
//! - Taking partitions over (all those claimed in a round together): raise
//!   each one's fencing token in the database ([`super::fences`]), drop
//!   whatever this process still holds in memory for their customers, replay
//!   the log after each one's checkpoint (one read of the log for all), and
//!   only then let the consumer read them, starting with every entry pending
//!   in the group (the previous owner's unacknowledged ones). Commits of the
//!   partition carry the token; the database refuses them once another
//!   owner raised it, so an owner that lost its lease cannot commit.
//! - A processor holding more than its share (one joined) hands the excess
//!   over: stops reading it, waits for its batches in hand, checkpoints,
//!   forgets its customers and deletes the lease, so the next owner takes it
//!   at once. A graceful stop hands everything over the same way.
//! - A renewal that finds the lease gone or someone else's, a commit the
//!   database refuses for the token, or no successful renewal for a whole
//!   `lease_ms`: the partition is lost and dropped without a checkpoint.

use super::consumer::ConsumerControl;
use super::fences::{self, Fence};
use crate::redis_link::RedisLink;
use crate::telemetry::{IngestEvent, Metrics};
use actors::runtime::{PartitionSet, Runtime};
use sea_orm::DatabaseConnection;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What the lease manager needs to know.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub partitions: usize,
    pub lease: Duration,
    /// This process, unique among the processors (also its consumer name).
    pub instance: String,
}

/// Why a partition is lost when the database refused a commit.
pub const FENCED: &str = "the database refused a commit for a stale token";

/// Renews `KEYS[1]` for `ARGV[2]` ms if `ARGV[1]` holds it.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Claims `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms if nobody holds it:
/// `{1, 0}` when claimed, else `{0, ms until the holder's lease expires}`.
const CLAIM: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, 0} \
                     else return {0, redis.call('PTTL', KEYS[1])} end";
/// Deletes `KEYS[1]` if `ARGV[1]` holds it.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// The partitions held now with their fencing tokens (what checkpoints are
/// written for). Cheap to clone.
///
/// A checkpoint may be written only for a partition held without a break
/// from before the runtime's barrier until the write: losing a partition
/// evicts its actors without a snapshot, so a checkpoint computed before the
/// eviction and written after it would claim events whose effects were
/// thrown away, and the next owner would never replay them. Hence losing
/// (removing) a partition and writing checkpoints take turns
/// ([`Held::write_checkpoints`]), and the write keeps only the partitions
/// still held with the token they had when the checkpoint began (a partition
/// lost and taken again has a new token).
#[derive(Clone, Default)]
pub struct Held {
    map: Arc<Mutex<BTreeMap<usize, i64>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Held {
    pub fn fences(&self) -> Vec<Fence> {
        self.map.lock().map(|m| m.iter().map(|(p, t)| (*p, *t)).collect()).unwrap_or_default()
    }

    fn insert(&self, p: usize, token: i64) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(p, token);
        }
    }

    /// Stops holding `p`; waits for a checkpoint write in progress first.
    async fn remove(&self, p: usize) {
        let _turn = self.turn.lock().await;
        if let Ok(mut m) = self.map.lock() {
            m.remove(&p);
        }
    }

    /// Writes checkpoint `upto` for those of `fences` (taken before the
    /// runtime's checkpoint began) that are still held with the same token;
    /// returns how many were written.
    pub async fn write_checkpoints(
        &self,
        db: &DatabaseConnection,
        gate: &actors::WriteGate,
        fences: &[Fence],
        upto: i64,
    ) -> Result<usize, sea_orm::DbErr> {
        let _turn = self.turn.lock().await;
        let now = self.fences();
        let still: Vec<Fence> = fences.iter().filter(|f| now.contains(f)).copied().collect();
        fences::write_checkpoints(db, gate, &still, upto).await?;
        Ok(still.len())
    }

    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn partitions(&self) -> Vec<usize> {
        self.map.lock().map(|m| m.keys().copied().collect()).unwrap_or_default()
    }
}

/// Everything a takeover or hand-over touches.
struct Parts {
    link: RedisLink,
    db: DatabaseConnection,
    /// SQLite's one-writer turn (open on Postgres).
    gate: actors::WriteGate,
    runtime: Runtime,
    owned: PartitionSet,
    consumer: ConsumerControl,
    metrics: Metrics,
    settings: LeaseSettings,
    held: Held,
    /// When each held lease was last renewed.
    renewed: BTreeMap<usize, Instant>,
}

/// The running lease manager.
pub struct LeaseManager {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    held: Held,
}

impl LeaseManager {
    /// Starts claiming partitions. `lost` carries partitions whose commits
    /// the database refused for a stale token (from the consumer); `held`
    /// is kept up to date with the partitions held and their tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        link: RedisLink,
        db: DatabaseConnection,
        gate: actors::WriteGate,
        runtime: Runtime,
        owned: PartitionSet,
        consumer: ConsumerControl,
        lost: mpsc::UnboundedReceiver<usize>,
        metrics: Metrics,
        settings: LeaseSettings,
        held: Held,
    ) -> LeaseManager {
        let (stop, stopped) = watch::channel(false);
        let parts = Parts {
            link,
            db,
            gate,
            runtime,
            owned,
            consumer,
            metrics,
            settings,
            held: held.clone(),
            renewed: BTreeMap::new(),
        };
        LeaseManager { stop, task: tokio::spawn(parts.run(lost, stopped)), held }
    }

    /// The partitions held now, with their tokens.
    pub fn held(&self) -> Held {
        self.held.clone()
    }

    /// Stops claiming and renewing. The caller then stops the consumer,
    /// checkpoints and calls [`release_all`].
    pub async fn stop(self) -> Held {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.held
    }
}

/// After a graceful stop (consumer stopped, last checkpoint written): deletes
/// every lease still held and leaves the processor set, so the other
/// processors take the partitions over at once.
pub async fn release_all(link: &RedisLink, held: &Held, instance: &str, partitions: usize) {
    let Ok(mut c) = link.conn().await else { return };
    for p in held.partitions() {
        let _: Result<i64, _> = redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(lease_key(link, p, partitions))
            .arg(instance)
            .query_async(&mut c)
            .await;
    }
    let _: Result<i64, _> = redis::cmd("ZREM").arg(members_key(link)).arg(instance).query_async(&mut c).await;
}

/// In the slot of the partition's stream (same hash tag).
pub fn lease_key(link: &RedisLink, p: usize, partitions: usize) -> String {
    link.key(&format!("lease:{{{}}}", super::streams::partition_tag(p, partitions)))
}

fn members_key(link: &RedisLink) -> String {
    link.key("processors")
}

/// How many partitions each of `live` processors should hold.
fn share(partitions: usize, live: usize) -> usize {
    partitions.div_ceil(live.max(1))
}

/// What an announcement learns about the processor set.
#[derive(Clone, Copy, Debug)]
struct Live {
    count: usize,
    /// How soon the first other processor's announcement expires.
    next_expiry: Option<Duration>,
}

/// How long after a peer's or lease's expiry to look (clocks and the
/// renewal's own round trips differ by a few milliseconds).
const EXPIRY_MARGIN: Duration = Duration::from_millis(15);

impl Parts {
    async fn run(mut self, mut lost: mpsc::UnboundedReceiver<usize>, mut stopped: watch::Receiver<bool>) {
        // Renewals come three times per lease; looking for work at least
        // every second keeps rebalancing quick under long leases.
        let tick = (self.settings.lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        // The first round only announces: processors starting together then
        // see each other before anyone claims everything.
        let mut first = true;
        loop {
            let live = match self.announce().await {
                Ok(n) => Some(n),
                Err(e) => {
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "lease", error: e.to_string() });
                    None
                }
            };
            self.renew().await;
            while let Ok(p) = lost.try_recv() {
                self.lose(p, FENCED).await;
            }
            // The earliest moment something may change hands: a peer's
            // announcement or a wanted lease expiring. Waking just after it
            // (not up to a tick later) is what makes a dead processor's
            // partitions move within moments of its lease.
            let mut next = live.and_then(|l| l.next_expiry);
            if let (Some(live), false) = (live, first) {
                let target = share(self.settings.partitions, live.count);
                if self.held.len() > target {
                    let excess = self.held.len() - target;
                    let give: Vec<usize> = self.held.partitions().into_iter().rev().take(excess).collect();
                    self.hand_over(&give).await;
                } else if self.held.len() < target {
                    let round = Instant::now();
                    let blocked = self.claim(target).await;
                    next = [next, blocked].into_iter().flatten().min();
                    // A long takeover must not let what is held expire.
                    if round.elapsed() > tick / 2 {
                        self.renew().await;
                    }
                }
            }
            // After the first announcement a short wait is enough for
            // processors that start together to see each other.
            let wait = if first {
                tick.min(Duration::from_millis(300))
            } else {
                next.map_or(tick, |d| (d + EXPIRY_MARGIN).clamp(EXPIRY_MARGIN, tick))
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                Some(p) = lost.recv() => self.lose(p, FENCED).await,
                _ = stopped.changed() => return,
            }
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// Refreshes this processor's announcement; returns how many are live
    /// and how soon the first other one's announcement expires.
    async fn announce(&self) -> Result<Live, crate::redis_link::LinkError> {
        let key = members_key(&self.link);
        let now = chrono::Utc::now().timestamp_millis();
        let mut c = self.link.conn().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + self.settings.lease.as_millis() as i64)
            .arg(&self.settings.instance)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(now).ignore();
        pipe.cmd("ZCARD").arg(&key);
        // The two soonest to expire: one of them is not this processor.
        pipe.cmd("ZRANGEBYSCORE").arg(&key).arg(now).arg("+inf").arg("WITHSCORES").arg("LIMIT").arg(0).arg(2);
        let (count, soonest): (usize, Vec<(String, f64)>) = pipe.query_async(&mut c).await?;
        let next_expiry = soonest
            .iter()
            .find(|(name, _)| *name != self.settings.instance)
            .map(|(_, at)| Duration::from_millis((*at as i64 - now).max(0) as u64));
        Ok(Live { count, next_expiry })
    }

    /// Renews every held lease; drops those that are gone or not renewed for
    /// a whole lease.
    async fn renew(&mut self) {
        let ms = self.settings.lease.as_millis() as u64;
        for p in self.held.partitions() {
            let result: Result<i64, crate::redis_link::LinkError> = async {
                let mut c = self.link.conn().await?;
                Ok(redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(lease_key(&self.link, p, self.settings.partitions))
                    .arg(&self.settings.instance)
                    .arg(ms)
                    .query_async(&mut c)
                    .await?)
            }
            .await;
            match result {
                Ok(1) => {
                    self.renewed.insert(p, Instant::now());
                }
                Ok(_) => self.lose(p, "the lease expired or was taken").await,
                Err(e) => {
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "lease", error: e.to_string() });
                    let last = self.renewed.get(&p).copied().unwrap_or_else(Instant::now);
                    if last.elapsed() >= self.settings.lease {
                        self.lose(p, "no renewal for a whole lease").await;
                    }
                }
            }
        }
    }

    /// Claims free partitions until `target` are held: first their leases
    /// (so the other processors look elsewhere at once), then one takeover
    /// for all of them. Returns how soon the first lease it found held by
    /// someone else expires, if it is short of `target`.
    async fn claim(&mut self, target: usize) -> Option<Duration> {
        let n = self.settings.partitions;
        // Processors start looking at different places, so they rarely race.
        let start = actors::data::partition(&self.settings.instance, n);
        let held = self.held.partitions();
        let want = target.saturating_sub(held.len());
        let mut got = Vec::new();
        let mut blocked: Option<Duration> = None;
        for i in 0..n {
            if got.len() >= want {
                break;
            }
            let p = (start + i) % n;
            if held.contains(&p) {
                continue;
            }
            let answer: Result<(i64, i64), crate::redis_link::LinkError> = async {
                let mut c = self.link.conn().await?;
                Ok(redis::cmd("EVAL")
                    .arg(CLAIM)
                    .arg(1)
                    .arg(lease_key(&self.link, p, n))
                    .arg(&self.settings.instance)
                    .arg(self.settings.lease.as_millis() as u64)
                    .query_async(&mut c)
                    .await?)
            }
            .await;
            match answer {
                Ok((1, _)) => got.push(p),
                Ok((_, ms)) => {
                    // Negative: gone between the two commands, or no expiry.
                    let left = Duration::from_millis(ms.max(0) as u64);
                    blocked = Some(blocked.map_or(left, |b| b.min(left)));
                }
                Err(e) => {
                    self.metrics.record(IngestEvent::ConsumerRetry { step: "lease", error: e.to_string() });
                    break;
                }
            }
        }
        if !got.is_empty() {
            self.take_over(&got).await;
        }
        if self.held.len() < target {
            blocked
        } else {
            None
        }
    }

    /// The leases of `ps` are ours: fence each, replay the log once for all
    /// of them, then consume them. A partition that cannot be taken over is
    /// released for the next round.
    async fn take_over(&mut self, ps: &[usize]) {
        let started = Instant::now();
        let of = self.settings.partitions;
        let initial = match fences::initial_checkpoints(&self.db, ps, of).await {
            Ok(initial) => initial,
            Err(e) => return self.give_up(ps, &e.into()).await,
        };
        let mut fenced: Vec<(usize, i64, i64)> = Vec::with_capacity(ps.len());
        for (&p, initial) in ps.iter().zip(initial) {
            match fences::take_over(&self.db, &self.gate, p, &self.settings.instance, initial).await {
                Ok((token, checkpoint)) => fenced.push((p, token, checkpoint)),
                Err(e) => self.give_up(&[p], &e.into()).await,
            }
        }
        // Whatever this process kept from an earlier time it held them is stale.
        for &(p, _, _) in &fenced {
            self.runtime.evict_partition(p, of).await;
        }
        let from: Vec<(usize, i64)> = fenced.iter().map(|&(p, _, checkpoint)| (p, checkpoint)).collect();
        let replayed = match self.runtime.replay_partitions(&from, of).await {
            Ok(replayed) => replayed,
            Err(e) => {
                let ps: Vec<usize> = from.iter().map(|&(p, _)| p).collect();
                // Some of their events may have reached actors already.
                for &p in &ps {
                    self.runtime.evict_partition(p, of).await;
                }
                return self.give_up(&ps, &e.into()).await;
            }
        };
        for (&(p, token, _), replayed) in fenced.iter().zip(replayed) {
            self.owned.insert(p);
            self.held.insert(p, token);
            self.renewed.insert(p, Instant::now());
            self.consumer.add(p, token);
            self.metrics.record(IngestEvent::LeaseTaken {
                partition: p,
                token,
                replayed,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }

    /// Taking `ps` over failed: their leases go back for the next round.
    async fn give_up(&mut self, ps: &[usize], error: &anyhow::Error) {
        tracing::warn!(partitions = ?ps, error = format!("{error:#}"), "taking partitions over failed; releasing them");
        for &p in ps {
            self.delete_lease(p).await;
        }
    }

    /// Gives `partitions` up in order: nothing in hand, checkpointed,
    /// forgotten, free.
    async fn hand_over(&mut self, partitions: &[usize]) {
        futures::future::join_all(partitions.iter().map(|&p| self.consumer.remove(p))).await;
        let fences: Vec<Fence> = self.held.fences().into_iter().filter(|(q, _)| partitions.contains(q)).collect();
        let written: anyhow::Result<()> = async {
            let upto = self.runtime.checkpoint().await?;
            self.held.write_checkpoints(&self.db, &self.gate, &fences, upto).await?;
            Ok(())
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(
                ?partitions,
                error = format!("{error:#}"),
                "checkpoint before the hand-over failed; the next owner replays more"
            );
        }
        for &p in partitions {
            self.forget(p).await;
            self.delete_lease(p).await;
            self.metrics.record(IngestEvent::LeaseReleased { partition: p });
        }
    }

    /// `p` is no longer ours: stop at once, write nothing more for it.
    async fn lose(&mut self, p: usize, reason: &'static str) {
        if !self.held.partitions().contains(&p) {
            return;
        }
        // No waiting for the batches in hand: the fence refuses their
        // commits, and the consumer may be stuck on the same outage.
        self.consumer.drop_partition(p);
        self.forget(p).await;
        self.metrics.record(IngestEvent::LeaseLost { partition: p, reason });
    }

    async fn forget(&mut self, p: usize) {
        self.owned.remove(p);
        // Before the eviction: no checkpoint written from now on covers `p`.
        self.held.remove(p).await;
        self.renewed.remove(&p);
        self.runtime.evict_partition(p, self.settings.partitions).await;
    }

    async fn delete_lease(&self, p: usize) {
        if let Ok(mut c) = self.link.conn().await {
            let _: Result<i64, _> = redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(lease_key(&self.link, p, self.settings.partitions))
                .arg(&self.settings.instance)
                .query_async(&mut c)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_every_partition() {
        assert_eq!(share(16, 1), 16);
        assert_eq!(share(16, 3), 6);
        assert_eq!(share(16, 4), 4);
        assert_eq!(share(16, 0), 16);
        assert_eq!(share(4, 8), 1);
    }
}
