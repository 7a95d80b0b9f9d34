//! The runtime as the rest of the service sees it: starts the persister and
//! the shards (each on its own arbiter thread), routes committed events and
//! reads to the right shard, and drains everything on shutdown.

use crate::customer::config::ShardConfig;
use crate::data::partition;
use crate::data::state::StateRules;
use crate::event::{CustomerId, LoggedEvent, SessionId};
use crate::messages::delivery::Deliver;
use crate::messages::lifecycle::{Barrier, EvictPartition, FlushNow};
use crate::messages::query::{Answer, Ask, Query};
use crate::persister::Persister;
use crate::shard::Shard;
use crate::store;
use crate::telemetry::ActorMetrics;
use crate::{RuntimeError, WriteGate};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the runtime needs to know.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub shards: usize,
    pub rules: StateRules,
    pub passivate_after: Duration,
    pub snapshot_every_events: u32,
    pub snapshot_max_delay: Duration,
    pub persist_max_batch: usize,
    pub write_gate: WriteGate,
    pub max_active_per_shard: usize,
    pub hooks: crate::hooks::Hooks,
    /// The customers this runtime owns: all of them, or those whose
    /// partition is in a range (a processor of a multi-replica deployment).
    pub owns: Ownership,
}

/// Which customers a runtime owns. With a fixed set its checkpoint row is
/// named after it, so processors owning different partitions keep separate
/// checkpoints, and its recovery replays only its customers' events.
#[derive(Clone, Debug)]
pub enum Ownership {
    All,
    Partitions {
        of: usize,
        range: std::ops::RangeInclusive<usize>,
    },
    /// Partitions that come and go (leases): the caller replays each one it
    /// takes ([`Runtime::replay_partitions`]), forgets each one it gives up
    /// ([`Runtime::evict_partition`]) and keeps the checkpoints per
    /// partition ([`Runtime::checkpoint`] only computes the position).
    Leased(PartitionSet),
}

/// The partitions (of `of`) a runtime owns now; shared with whoever takes
/// and gives them up. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PartitionSet {
    of: usize,
    held: Arc<std::sync::RwLock<std::collections::BTreeSet<usize>>>,
}

impl PartitionSet {
    pub fn new(of: usize) -> PartitionSet {
        PartitionSet { of: of.max(1), held: Arc::default() }
    }

    pub fn of(&self) -> usize {
        self.of
    }

    pub fn contains(&self, p: usize) -> bool {
        self.held.read().map(|h| h.contains(&p)).unwrap_or(false)
    }

    pub fn insert(&self, p: usize) {
        if let Ok(mut h) = self.held.write() {
            h.insert(p);
        }
    }

    pub fn remove(&self, p: usize) {
        if let Ok(mut h) = self.held.write() {
            h.remove(&p);
        }
    }

    pub fn list(&self) -> Vec<usize> {
        self.held.read().map(|h| h.iter().copied().collect()).unwrap_or_default()
    }
}

impl Ownership {
    /// The runtime's own checkpoint row (none with leases: per partition).
    pub fn checkpoint_name(&self) -> Option<String> {
        match self {
            Ownership::All => Some(store::RUNTIME_CHECKPOINT.to_owned()),
            Ownership::Partitions { of, range } => {
                Some(format!("{}:{}-{}/{}", store::RUNTIME_CHECKPOINT, range.start(), range.end(), of))
            }
            Ownership::Leased(_) => None,
        }
    }

    pub fn owns(&self, customer: &str) -> bool {
        match self {
            Ownership::All => true,
            Ownership::Partitions { of, range } => range.contains(&partition(customer, *of)),
            Ownership::Leased(set) => set.contains(partition(customer, set.of)),
        }
    }
}

/// Handle to the running core; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    shards: Arc<Vec<Addr<Shard>>>,
    persister: Addr<Persister>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    cfg: Arc<ShardConfig>,
    db: DatabaseConnection,
    /// Highest log position handed to the shards.
    delivered_max: Arc<AtomicI64>,
    write_gate: WriteGate,
    sessions: Arc<SessionIndex>,
    owns: Arc<Ownership>,
}

/// Which customer a recently seen session belongs to, so a session can be read
/// before its row reaches the database. Two generations bound the memory:
/// when the current one is full it becomes the previous one.
#[derive(Default)]
struct SessionIndex {
    inner: std::sync::Mutex<(HashMap<SessionId, CustomerId>, HashMap<SessionId, CustomerId>)>,
}

/// Sessions remembered per generation.
const SESSION_INDEX_GENERATION: usize = 500_000;

impl SessionIndex {
    fn note(&self, events: &[LoggedEvent]) {
        let Ok(mut g) = self.inner.lock() else { return };
        for e in events {
            if let Some(s) = &e.event.session_id {
                if !g.0.contains_key(s) {
                    if g.0.len() >= SESSION_INDEX_GENERATION {
                        g.1 = std::mem::take(&mut g.0);
                    }
                    g.0.insert(s.clone(), e.event.customer_id.clone());
                }
            }
        }
    }

    fn owner(&self, s: &SessionId) -> Option<CustomerId> {
        let g = self.inner.lock().ok()?;
        g.0.get(s).or_else(|| g.1.get(s)).cloned()
    }
}

impl Runtime {
    /// Starts the persister and the shards. Must run inside an actix system.
    pub fn start(db: DatabaseConnection, settings: RuntimeSettings, metrics: ActorMetrics) -> Runtime {
        let cfg = Arc::new(ShardConfig {
            rules: settings.rules,
            passivate_after: settings.passivate_after,
            snapshot_every_events: settings.snapshot_every_events.max(1),
            snapshot_max_delay: settings.snapshot_max_delay,
            watermark_ms: Arc::new(AtomicI64::new(0)),
            inflight: Arc::new(AtomicI64::new(0)),
            max_active: settings.max_active_per_shard,
            hooks: settings.hooks.clone(),
        });
        let mut arbiters = Vec::new();
        let runtime_db = db.clone();
        let persister_arbiter = Arbiter::new();
        let (pdb, pm, pmax, pgate, pspans) = (
            db.clone(),
            metrics.clone(),
            settings.persist_max_batch,
            settings.write_gate.clone(),
            settings.hooks.spans.clone(),
        );
        let persister = Persister::start_in_arbiter(&persister_arbiter.handle(), move |_| {
            Persister::new(pdb, pm, pmax, pgate, pspans)
        });
        arbiters.push(persister_arbiter.handle());
        let mut shards = Vec::new();
        for _ in 0..settings.shards.max(1) {
            let arbiter = Arbiter::new();
            let (sdb, sp, sm, scfg) = (db.clone(), persister.clone(), metrics.clone(), cfg.clone());
            shards.push(Shard::start_in_arbiter(&arbiter.handle(), move |_| Shard::new(sdb, sp, sm, scfg)));
            arbiters.push(arbiter.handle());
        }
        Runtime {
            shards: Arc::new(shards),
            persister,
            arbiters: Arc::new(arbiters),
            cfg,
            db: runtime_db,
            write_gate: settings.write_gate.clone(),
            sessions: Arc::default(),
            delivered_max: Arc::new(AtomicI64::new(0)),
            owns: Arc::new(settings.owns.clone()),
        }
    }

    /// Hands committed events (in log order) to their customers' actors.
    /// With leases, events of partitions no longer held are dropped: their
    /// next owner replays them from the partition's checkpoint, and an actor
    /// made for them here could start from a snapshot older than its
    /// evicted predecessor's last one.
    pub fn deliver(&self, mut events: Vec<LoggedEvent>) {
        if let Ownership::Leased(set) = &*self.owns {
            let held = set.list();
            events.retain(|e| held.contains(&partition(e.event.customer_id.as_str(), set.of)));
        }
        let max_seq = events.iter().map(|e| e.seq).max().unwrap_or(0);
        self.route(events);
        // Only after the events are in the shards' mailboxes: a checkpoint
        // that reads this sends its barrier behind them.
        self.delivered_max.fetch_max(max_seq, Ordering::SeqCst);
    }

    /// Puts events (in log order) into their shards' mailboxes.
    fn route(&self, events: Vec<LoggedEvent>) {
        let n = self.shards.len();
        self.cfg.inflight.fetch_add(events.len() as i64, Ordering::Relaxed);
        self.sessions.note(&events);
        let mut max_ms = i64::MIN;
        let mut per_shard: Vec<HashMap<CustomerId, Vec<LoggedEvent>>> = (0..n).map(|_| HashMap::new()).collect();
        for e in events {
            max_ms = max_ms.max(e.event.time.timestamp_millis());
            let p = partition(e.event.customer_id.as_str(), n);
            per_shard[p].entry(e.event.customer_id.clone()).or_default().push(e);
        }
        if max_ms > i64::MIN {
            self.cfg.watermark_ms.fetch_max(max_ms, Ordering::Relaxed);
        }
        for (i, m) in per_shard.into_iter().enumerate() {
            if !m.is_empty() {
                self.shards[i].do_send(Deliver { batch: m.into_iter().collect() });
            }
        }
    }

    /// Recovery: hands the log after the checkpoint to the actors, in order.
    /// Must finish before new events are delivered. Returns the number of
    /// events replayed.
    pub async fn recover(&self) -> Result<u64, RuntimeError> {
        let db_err = |e: sea_orm::DbErr| RuntimeError::Database(e.to_string());
        // With leases nothing is owned yet: each partition is replayed when taken.
        let Some(name) = self.owns.checkpoint_name() else { return Ok(0) };
        let mut after = store::read_checkpoint(&self.db, &name).await.map_err(db_err)?;
        let mut n = 0u64;
        loop {
            let mut events = store::log_after(&self.db, after, 20_000).await.map_err(db_err)?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            events.retain(|e| self.owns.owns(e.event.customer_id.as_str()));
            n += events.len() as u64;
            self.deliver(events);
        }
        self.delivered_max.fetch_max(after, Ordering::SeqCst);
        Ok(n)
    }

    /// Replays the log to the customers of the partitions `from` (of `of`),
    /// each after its own checkpoint (`(partition, checkpoint)`), in order,
    /// reading the log once for all of them; the caller takes them only
    /// afterwards, and nothing of them may be committed meanwhile. Unlike
    /// [`Runtime::recover`] it leaves the delivered position alone: this
    /// process may have commits of its own in flight below the end of the
    /// log, and a checkpoint must not claim them before they are delivered.
    /// Returns the events replayed per partition, in the order of `from`.
    pub async fn replay_partitions(&self, from: &[(usize, i64)], of: usize) -> Result<Vec<u64>, RuntimeError> {
        let db_err = |e: sea_orm::DbErr| RuntimeError::Database(e.to_string());
        let after_of: HashMap<usize, (usize, i64)> =
            from.iter().enumerate().map(|(i, (p, checkpoint))| (*p, (i, *checkpoint))).collect();
        let mut counts = vec![0u64; from.len()];
        let Some(mut after) = from.iter().map(|(_, checkpoint)| *checkpoint).min() else { return Ok(counts) };
        loop {
            let mut events = store::log_after(&self.db, after, 20_000).await.map_err(db_err)?;
            let Some(last) = events.last() else { break };
            after = last.seq;
            events.retain(|e| match after_of.get(&partition(e.event.customer_id.as_str(), of)) {
                Some((i, checkpoint)) if e.seq > *checkpoint => {
                    counts[*i] += 1;
                    true
                }
                _ => false,
            });
            if !events.is_empty() {
                // Without moving the delivered position (see above).
                self.route(events);
            }
        }
        Ok(counts)
    }

    /// Stops the actors of partition `p`'s customers without a last
    /// snapshot (the partition is someone else's now, or about to be
    /// replayed afresh). Waits until every shard has let them go.
    pub async fn evict_partition(&self, p: usize, of: usize) {
        for s in self.shards.iter() {
            let _ = s.send(EvictPartition { partition: p, of }).await;
        }
    }

    /// Makes every delivered event durable in snapshots and records the log
    /// position up to which that holds; recovery starts there. Returns it.
    /// With leases the position is only returned; the caller writes it for
    /// the partitions it held when the call began.
    pub async fn checkpoint(&self) -> Result<i64, RuntimeError> {
        let delivered = self.delivered_max.load(Ordering::SeqCst);
        let mut lowest_pending = i64::MAX;
        for (i, s) in self.shards.iter().enumerate() {
            let p = s.send(Barrier).await.map_err(|e| RuntimeError::Unreachable(format!("shard {i}: {e}")))?;
            lowest_pending = lowest_pending.min(p);
        }
        self.persister.send(FlushNow).await.map_err(|e| RuntimeError::Unreachable(format!("persister: {e}")))??;
        let upto = delivered.min(lowest_pending.saturating_sub(1));
        let Some(name) = self.owns.checkpoint_name() else { return Ok(upto) };
        let _turn = self.write_gate.enter().await;
        store::write_checkpoint(&self.db, &name, upto).await.map_err(|e| RuntimeError::Database(e.to_string()))?;
        Ok(upto)
    }

    /// The customer of a session seen since start-up (older sessions are
    /// found in the database).
    pub fn session_owner(&self, session: &SessionId) -> Option<CustomerId> {
        self.sessions.owner(session)
    }

    /// Raises the "now" of profiles (e.g. from the log at start-up).
    pub fn raise_watermark(&self, t: DateTime<Utc>) {
        self.cfg.watermark_ms.fetch_max(t.timestamp_millis(), Ordering::Relaxed);
    }

    /// The time profiles are computed as of.
    pub fn as_of(&self) -> DateTime<Utc> {
        self.cfg.as_of()
    }

    /// True when this runtime's actors hold `customer` (reads of others come
    /// from the stored snapshots).
    pub fn owns(&self, customer: &str) -> bool {
        self.owns.owns(customer)
    }

    /// Reads live state; `None` if the customer has never been seen.
    pub async fn ask(&self, customer: CustomerId, query: Query) -> Result<Option<Answer>, RuntimeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = partition(customer.as_str(), self.shards.len());
        self.shards[p].do_send(Ask { customer, query, as_of: self.as_of(), reply: tx });
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    /// Events delivered but not yet processed by their actors.
    pub fn inflight(&self) -> usize {
        self.cfg.inflight.load(Ordering::Relaxed).max(0) as usize
    }

    /// Snapshots every actor, waits until the persister has written it all and
    /// moves the checkpoint (graceful shutdown).
    pub async fn drain(&self) -> Result<(), RuntimeError> {
        self.checkpoint().await.map(|_| ())
    }

    /// Stops the arbiter threads (after [`Runtime::drain`]).
    pub fn stop(&self) {
        for a in self.arbiters.iter() {
            a.stop();
        }
    }
}
