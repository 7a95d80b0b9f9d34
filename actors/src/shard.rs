//! A shard: one actor per arbiter thread that owns the customers hashed to it.
//! It starts `CustomerSession` actors on demand, loading many customers'
//! snapshots at once (from the persister when the newest one is still on its
//! way to the database, else from the database), and buffers their messages
//! while they load so every customer sees its messages in order.

use crate::customer::config::ShardConfig;
use crate::customer::CustomerSession;
use crate::data::state::CustomerState;
use crate::event::{CustomerId, LoggedEvent};
use crate::messages::delivery::{Apply, Deliver};
use crate::messages::lifecycle::{Barrier, EvictPartition, FlushState, IdleReport, Lookup, PassivateNow, StopNow};
use crate::messages::query::{Ask, Inspect};
use crate::persister::Persister;
use crate::store;
use crate::telemetry::{ActorEvent, ActorMetrics};
use crate::RuntimeError;

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Most customers loaded in one round trip.
const LOAD_BATCH: usize = 2_000;

enum Pending {
    Events(Vec<LoggedEvent>),
    Ask(Inspect),
}

enum Slot {
    Active { addr: Addr<CustomerSession>, forwarded: u64, touched: u64 },
    Loading { pending: Vec<Pending> },
}

pub struct Shard {
    db: DatabaseConnection,
    persister: Addr<Persister>,
    metrics: ActorMetrics,
    cfg: Arc<ShardConfig>,
    slots: HashMap<CustomerId, Slot>,
    queue: Vec<CustomerId>,
    loading: bool,
    /// Counts routed messages; a slot's `touched` is this clock at its last use.
    clock: u64,
}

impl Shard {
    pub fn new(
        db: DatabaseConnection,
        persister: Addr<Persister>,
        metrics: ActorMetrics,
        cfg: Arc<ShardConfig>,
    ) -> Self {
        Shard { db, persister, metrics, cfg, slots: HashMap::new(), queue: Vec::new(), loading: false, clock: 0 }
    }

    fn route(&mut self, customer: CustomerId, item: Pending) {
        self.clock += 1;
        match self.slots.get_mut(&customer) {
            Some(Slot::Active { addr, forwarded, touched }) => {
                *forwarded += 1;
                *touched = self.clock;
                send(addr, item);
            }
            Some(Slot::Loading { pending }) => pending.push(item),
            None => {
                self.slots.insert(customer.clone(), Slot::Loading { pending: vec![item] });
                self.queue.push(customer);
            }
        }
    }

    fn kick_load(&mut self, ctx: &mut Context<Self>) {
        if self.loading || self.queue.is_empty() {
            return;
        }
        self.loading = true;
        let n = self.queue.len().min(LOAD_BATCH);
        let ids: Vec<CustomerId> = self.queue.drain(..n).collect();
        let db = self.db.clone();
        // Sent now, so it is behind any final snapshot of an actor this shard
        // has already let go.
        let lookup = self.persister.send(Lookup { ids: ids.clone() });
        let fut = async move {
            let mut found: HashMap<CustomerId, CustomerState> = HashMap::new();
            if let Ok(pending) = lookup.await {
                for (id, json) in pending {
                    match serde_json::from_str(&json) {
                        Ok(state) => {
                            found.insert(id, state);
                        }
                        Err(e) => tracing::error!(error = %e, "unreadable queued snapshot"),
                    }
                }
            }
            let missing: Vec<CustomerId> = ids.iter().filter(|id| !found.contains_key(*id)).cloned().collect();
            let r = store::load_snapshots(&db, &missing).await.map(|from_db| {
                found.extend(from_db);
                found
            });
            (ids, r)
        };
        ctx.spawn(fut.into_actor(self).map(|(ids, r), act, ctx| {
            act.loading = false;
            match r {
                Ok(mut found) => {
                    for id in ids {
                        let snapshot = found.remove(&id);
                        act.activate(id, snapshot, ctx);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    act.metrics.record(ActorEvent::LoadFailed { error: &msg });
                    for id in &ids {
                        // Reads fail now; events wait (they are in the log).
                        if let Some(Slot::Loading { pending }) = act.slots.get_mut(id) {
                            let mut keep = Vec::with_capacity(pending.len());
                            for p in pending.drain(..) {
                                match p {
                                    Pending::Ask(a) => {
                                        let _ = a.reply.send(Err(RuntimeError::Database(msg.clone())));
                                    }
                                    events => keep.push(events),
                                }
                            }
                            *pending = keep;
                        }
                    }
                    act.queue.extend(ids);
                    ctx.run_later(Duration::from_secs(1), |act, ctx| act.kick_load(ctx));
                    return;
                }
            }
            act.kick_load(ctx);
        }));
    }

    fn activate(&mut self, id: CustomerId, snapshot: Option<CustomerState>, ctx: &mut Context<Self>) {
        let Some(Slot::Loading { pending }) = self.slots.remove(&id) else {
            return;
        };
        let has_events = pending.iter().any(|p| matches!(p, Pending::Events(e) if !e.is_empty()));
        if snapshot.is_none() && !has_events {
            // Never seen: answer reads with "not found" without an actor.
            for p in pending {
                if let Pending::Ask(a) = p {
                    let _ = a.reply.send(Ok(None));
                }
            }
            return;
        }
        let state = snapshot.unwrap_or_else(|| CustomerState::new(id.clone()));
        self.metrics.record(ActorEvent::Activated { customer: id.as_str() });
        let actor = CustomerSession::new(
            state,
            self.cfg.clone(),
            ctx.address().recipient(),
            self.persister.clone(),
            self.metrics.clone(),
        );
        let addr = actor.start();
        let mut forwarded = 0;
        for p in pending {
            forwarded += 1;
            send(&addr, p);
        }
        self.slots.insert(id, Slot::Active { addr, forwarded, touched: self.clock });
    }
}

fn send(addr: &Addr<CustomerSession>, item: Pending) {
    match item {
        Pending::Events(e) => addr.do_send(Apply(e)),
        Pending::Ask(a) => addr.do_send(a),
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
        ctx.run_interval(Duration::from_secs(1), |act, _ctx| act.shed_load());
    }
}

impl Shard {
    /// Over the cap: the least recently used tenth of the cap (and the excess)
    /// is asked to passivate. Actors busy with messages decline and stay.
    fn shed_load(&mut self) {
        let max = self.cfg.max_active.max(1);
        let mut active: Vec<(u64, CustomerId)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| match s {
                Slot::Active { touched, .. } => Some((*touched, id.clone())),
                Slot::Loading { .. } => None,
            })
            .collect();
        if active.len() <= max {
            return;
        }
        let n = (active.len() - max + max / 10).min(active.len());
        active.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        for (_, id) in active.into_iter().take(n) {
            if let Some(Slot::Active { addr, forwarded, .. }) = self.slots.get_mut(&id) {
                *forwarded += 1;
                addr.do_send(PassivateNow);
            }
        }
    }
}

impl Handler<Deliver> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        for (customer, events) in msg.batch {
            self.route(customer, Pending::Events(events));
        }
        self.kick_load(ctx);
    }
}

impl Handler<Ask> for Shard {
    type Result = ();

    fn handle(&mut self, msg: Ask, ctx: &mut Self::Context) {
        let inspect = Inspect { query: msg.query, as_of: msg.as_of, reply: msg.reply };
        self.route(msg.customer, Pending::Ask(inspect));
        self.kick_load(ctx);
    }
}

impl Handler<IdleReport> for Shard {
    type Result = bool;

    fn handle(&mut self, msg: IdleReport, _ctx: &mut Self::Context) -> bool {
        match self.slots.get(&msg.customer) {
            Some(Slot::Active { addr, forwarded, .. }) if *addr == msg.addr && *forwarded == msg.processed => {
                self.slots.remove(&msg.customer);
                true
            }
            _ => false,
        }
    }
}

impl Handler<Barrier> for Shard {
    type Result = ResponseFuture<i64>;

    fn handle(&mut self, _msg: Barrier, _ctx: &mut Self::Context) -> Self::Result {
        let mut waits = Vec::new();
        let mut lowest_pending = i64::MAX;
        for slot in self.slots.values_mut() {
            match slot {
                Slot::Active { addr, forwarded, .. } => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    *forwarded += 1;
                    addr.do_send(FlushState { done: tx });
                    waits.push(rx);
                }
                Slot::Loading { pending } => {
                    for p in pending.iter() {
                        if let Pending::Events(e) = p {
                            if let Some(first) = e.first() {
                                lowest_pending = lowest_pending.min(first.seq);
                            }
                        }
                    }
                }
            }
        }
        Box::pin(async move {
            for w in waits {
                let _ = w.await;
            }
            lowest_pending
        })
    }
}

impl Handler<EvictPartition> for Shard {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: EvictPartition, _ctx: &mut Self::Context) -> Self::Result {
        let of = msg.of;
        let mine = |id: &CustomerId| crate::data::partition(id.as_str(), of) == msg.partition;
        let active: Vec<CustomerId> = self
            .slots
            .iter()
            .filter(|(id, s)| matches!(s, Slot::Active { .. }) && mine(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in active {
            if let Some(Slot::Active { addr, .. }) = self.slots.remove(&id) {
                addr.do_send(StopNow);
            }
        }
        // Actors still loading become active when their snapshot arrives;
        // evict those then.
        let loading = self.slots.iter().any(|(id, s)| matches!(s, Slot::Loading { .. }) && mine(id));
        if !loading {
            return Box::pin(actix::fut::ready(()));
        }
        Box::pin(
            tokio::time::sleep(Duration::from_millis(20))
                .into_actor(self)
                .then(move |_, _act, ctx| ctx.address().send(msg).into_actor(_act).map(|_, _, _| ())),
        )
    }
}
