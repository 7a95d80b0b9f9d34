//! The persister: one actor that turns the stream of actor snapshots into a
//! few batched transactions. Snapshots of the same customer (or session)
//! coalesce while they wait, so a busy customer costs one row per batch.

use crate::data::state::SessionView;
use crate::data::Snapshot;
use crate::event::{CustomerId, SessionId};
use crate::messages::lifecycle::{FlushNow, Lookup};
use crate::store;
use crate::telemetry::{ActorEvent, ActorMetrics};
use crate::trace::{FinishedSpan, SpanRecorder};
use crate::{RuntimeError, WriteGate};
use actix::prelude::*;
use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often queued snapshots are written when the batch is not full.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// A batch being written and where each customer sits in it.
type InFlight = (Arc<Vec<Snapshot>>, HashMap<CustomerId, usize>);

pub struct Persister {
    db: DatabaseConnection,
    metrics: ActorMetrics,
    max_batch: usize,
    customers: HashMap<CustomerId, Snapshot>,
    sessions: HashMap<SessionId, SessionView>,
    writing: bool,
    /// The batch being written, readable by `Lookup` until it is durable.
    in_flight: Option<InFlight>,
    waiters: Vec<oneshot::Sender<Result<(), RuntimeError>>>,
    gate: WriteGate,
    /// Records `actor.snapshot` spans of traced snapshots.
    spans: Option<Arc<dyn SpanRecorder>>,
}

impl Persister {
    pub fn new(
        db: DatabaseConnection,
        metrics: ActorMetrics,
        max_batch: usize,
        gate: WriteGate,
        spans: Option<Arc<dyn SpanRecorder>>,
    ) -> Self {
        Persister {
            db,
            metrics,
            max_batch: max_batch.max(1),
            customers: HashMap::new(),
            sessions: HashMap::new(),
            writing: false,
            in_flight: None,
            waiters: Vec::new(),
            gate,
            spans,
        }
    }

    fn write(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        if self.customers.is_empty() && self.sessions.is_empty() {
            for w in self.waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return;
        }
        self.writing = true;
        // At most one batch per transaction: on SQLite the writer is shared
        // with ingest, and a checkpoint's worth of snapshots in one
        // transaction would hold acknowledgements back for a second.
        let customers: Arc<Vec<Snapshot>> = Arc::new(take_some(&mut self.customers, self.max_batch));
        let sessions: Vec<SessionView> = take_some(&mut self.sessions, self.max_batch);
        let index = customers.iter().enumerate().map(|(i, s)| (s.customer_id.clone(), i)).collect();
        self.in_flight = Some((customers.clone(), index));
        let db = self.db.clone();
        let started = Instant::now();
        let gate = self.gate.clone();
        let fut = async move {
            let turn = gate.enter().await;
            let r = store::write_snapshots(&db, &customers, &sessions).await;
            drop(turn);
            (r, customers, sessions)
        };
        ctx.spawn(fut.into_actor(self).map(move |(r, customers, sessions), act, ctx| {
            act.writing = false;
            act.in_flight = None;
            let customers = Arc::try_unwrap(customers).unwrap_or_else(|shared| (*shared).clone());
            match r {
                Ok(()) => {
                    act.metrics.record(ActorEvent::Persisted {
                        customers: customers.len(),
                        sessions: sessions.len(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    if let Some(recorder) = &act.spans {
                        let end = std::time::SystemTime::now();
                        for (parent, start) in customers.iter().filter_map(|c| c.trace.as_ref()) {
                            recorder.record(FinishedSpan {
                                name: "actor.snapshot",
                                parent,
                                start: *start,
                                end,
                                attributes: vec![("cartpulse.batch_customers", customers.len() as i64)],
                            });
                        }
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    act.metrics.record(ActorEvent::PersistFailed { error: &msg });
                    // Put the rows back unless a newer version arrived meanwhile.
                    for s in customers {
                        act.customers.entry(s.customer_id.clone()).or_insert(s);
                    }
                    for s in sessions {
                        act.sessions.entry(s.session_id.clone()).or_insert(s);
                    }
                    for w in act.waiters.drain(..) {
                        let _ = w.send(Err(RuntimeError::Database(msg.clone())));
                    }
                    return;
                }
            }
            let full = act.customers.len().max(act.sessions.len()) >= act.max_batch;
            if full || !act.waiters.is_empty() {
                act.write(ctx);
            }
        }));
    }
}

impl Actor for Persister {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Snapshots are fire-and-forget for the actors; never refuse them.
        ctx.set_mailbox_capacity(1 << 20);
        ctx.run_interval(FLUSH_EVERY, |act, ctx| act.write(ctx));
    }
}

/// Whether a pending session row gives way to a newer view under the same
/// id: the customer's later state replaces its earlier one; another
/// customer's session takes the id only if it started first (ties: the
/// smaller customer id), the rule the database upsert applies too.
fn replaces(old: &SessionView, new: &SessionView) -> bool {
    if old.customer_id == new.customer_id {
        return new.n_events >= old.n_events;
    }
    (new.started_at, new.customer_id.as_str()) < (old.started_at, old.customer_id.as_str())
}

impl Handler<Snapshot> for Persister {
    type Result = ();

    fn handle(&mut self, mut msg: Snapshot, ctx: &mut Self::Context) {
        for s in msg.sessions.drain(..) {
            match self.sessions.get(&s.session_id) {
                Some(old) if !replaces(old, &s) => {}
                _ => {
                    self.sessions.insert(s.session_id.clone(), s);
                }
            }
        }
        match self.customers.get_mut(&msg.customer_id) {
            Some(old) if old.last_seq > msg.last_seq => {}
            old => {
                // A traced snapshot that coalesces with an untraced one
                // keeps its trace: the write still serves that event.
                if msg.trace.is_none() {
                    msg.trace = old.and_then(|o| o.trace.take());
                }
                self.customers.insert(msg.customer_id.clone(), msg);
            }
        }
        if self.customers.len() + self.sessions.len() >= self.max_batch {
            self.write(ctx);
        }
    }
}

impl Handler<FlushNow> for Persister {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    fn handle(&mut self, _msg: FlushNow, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        self.write(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(RuntimeError::Stopped)) })
    }
}

impl Handler<Lookup> for Persister {
    type Result = MessageResult<Lookup>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Self::Context) -> Self::Result {
        let mut out = HashMap::new();
        for id in msg.ids {
            if let Some(s) = self.customers.get(&id) {
                out.insert(id, s.state_json.clone());
            } else if let Some((batch, index)) = &self.in_flight {
                if let Some(i) = index.get(&id) {
                    out.insert(id, batch[*i].state_json.clone());
                }
            }
        }
        MessageResult(out)
    }
}

/// Removes and returns up to `n` entries of the map.
fn take_some<K: std::hash::Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, n: usize) -> Vec<V> {
    if map.len() <= n {
        return std::mem::take(map).into_values().collect();
    }
    let keys: Vec<K> = map.keys().take(n).cloned().collect();
    keys.iter().filter_map(|k| map.remove(k)).collect()
}
