//! The `CustomerSession` actor: one per active customer. It folds the
//! customer's committed events into [`state::CustomerState`], answers reads,
//! snapshots itself to the persister, closes sessions that went quiet and
//! passivates when idle.

pub mod state;

use crate::messages::delivery::Apply;
use crate::messages::lifecycle::{FlushState, IdleReport, PassivateNow, Snapshot};
use crate::messages::query::{Answer, Inspect, Query};
use crate::persister::Persister;
use crate::shard::{Shard, ShardConfig};
use crate::telemetry::{ActorEvent, ActorMetrics};
use actix::prelude::*;
use state::{Changes, CloseReason, ClosedSession, CustomerState, SessionView};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an actor looks at its timers.
const TICK: Duration = Duration::from_millis(500);

pub struct CustomerSession {
    state: CustomerState,
    cfg: Arc<ShardConfig>,
    shard: Addr<Shard>,
    persister: Addr<Persister>,
    metrics: ActorMetrics,
    /// Messages received from the shard (compared on passivation).
    processed: u64,
    last_message: Instant,
    /// Changes not yet in a snapshot.
    unsaved_events: u32,
    unsaved_since: Option<Instant>,
    unsaved_closed: Vec<ClosedSession>,
    open_changed: bool,
    reporting_idle: bool,
}

impl CustomerSession {
    pub fn new(
        state: CustomerState,
        cfg: Arc<ShardConfig>,
        shard: Addr<Shard>,
        persister: Addr<Persister>,
        metrics: ActorMetrics,
    ) -> Self {
        CustomerSession {
            state,
            cfg,
            shard,
            persister,
            metrics,
            processed: 0,
            last_message: Instant::now(),
            unsaved_events: 0,
            unsaved_since: None,
            unsaved_closed: Vec::new(),
            open_changed: false,
            reporting_idle: false,
        }
    }

    fn note_changes(&mut self, changes: Changes) {
        if changes.applied > 0 {
            self.metrics.record(ActorEvent::Applied { n: changes.applied });
            self.unsaved_events += changes.applied as u32;
            self.unsaved_since.get_or_insert_with(Instant::now);
            self.open_changed = true;
        }
        if changes.skipped > 0 {
            self.metrics.record(ActorEvent::Skipped { n: changes.skipped });
        }
        for c in changes.closed {
            self.metrics.record(ActorEvent::SessionClosed { reason: c.close_reason.label() });
            self.unsaved_since.get_or_insert_with(Instant::now);
            self.unsaved_closed.push(c);
        }
    }

    fn snapshot(&mut self) {
        if self.unsaved_since.is_none() && self.unsaved_closed.is_empty() {
            return;
        }
        let as_of = self.cfg.as_of();
        let state_json = match serde_json::to_string(&self.state) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(customer = %self.state.customer_id, error = %e, "cannot serialize state; not snapshotted");
                return;
            }
        };
        let profile_json = serde_json::to_string(&self.state.profile.features(as_of)).unwrap_or_else(|_| "{}".into());
        let mut sessions: Vec<SessionView> =
            self.unsaved_closed.drain(..).map(|c| SessionView::of_closed(&self.state.customer_id, &c)).collect();
        if self.open_changed {
            if let Some(o) = &self.state.open {
                sessions.push(SessionView::of_open(&self.state.customer_id, o));
            }
        }
        self.persister.do_send(Snapshot {
            customer_id: self.state.customer_id.clone(),
            last_seq: self.state.last_seq,
            state_json,
            profile_json,
            sessions,
        });
        self.unsaved_events = 0;
        self.unsaved_since = None;
        self.open_changed = false;
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let idle = self.last_message.elapsed();
        if self.state.open.is_some() && idle.as_secs() as i64 >= self.cfg.rules.session_gap.num_seconds() {
            let mut changes = Changes::default();
            self.state.close_open(CloseReason::Inactivity, self.cfg.rules, &mut changes);
            self.note_changes(changes);
        }
        if let Some(since) = self.unsaved_since {
            if since.elapsed() >= self.cfg.snapshot_max_delay {
                self.snapshot();
            }
        }
        if idle >= self.cfg.passivate_after {
            self.offer_passivation(ctx);
        }
    }

    /// Snapshots and asks the shard to let go of this actor; stops if it agrees.
    fn offer_passivation(&mut self, ctx: &mut Context<Self>) {
        if self.reporting_idle {
            return;
        }
        self.reporting_idle = true;
        // The final snapshot goes out before the shard can let go of this
        // actor, so a successor's lookup at the persister finds it.
        self.snapshot();
        let report =
            IdleReport { customer: self.state.customer_id.clone(), addr: ctx.address(), processed: self.processed };
        self.shard
            .send(report)
            .into_actor(self)
            .map(|agreed, act, ctx| {
                act.reporting_idle = false;
                if matches!(agreed, Ok(true)) {
                    ctx.stop();
                }
            })
            .wait(ctx);
    }
}

impl Actor for CustomerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Also reached when the system shuts down: never drop unsaved state
        // silently (the log would rebuild it, but slower).
        self.snapshot();
        self.metrics.record(ActorEvent::Passivated { customer: self.state.customer_id.as_str() });
    }
}

impl Handler<Apply> for CustomerSession {
    type Result = ();

    fn handle(&mut self, msg: Apply, _ctx: &mut Self::Context) {
        self.processed += 1;
        self.last_message = Instant::now();
        self.cfg.inflight.fetch_sub(msg.0.len() as i64, std::sync::atomic::Ordering::Relaxed);
        let mut changes = Changes::default();
        for e in &msg.0 {
            self.state.apply(e, self.cfg.rules, &mut changes);
        }
        self.note_changes(changes);
        if self.unsaved_events >= self.cfg.snapshot_every_events {
            self.snapshot();
        }
    }
}

impl Handler<Inspect> for CustomerSession {
    type Result = ();

    fn handle(&mut self, msg: Inspect, _ctx: &mut Self::Context) {
        self.processed += 1;
        self.last_message = Instant::now();
        let answer = match msg.query {
            Query::Customer => Answer::Customer(Box::new(self.state.view(msg.as_of))),
            Query::Session(id) => Answer::Session(self.state.session(&id).map(Box::new)),
        };
        let _ = msg.reply.send(Ok(Some(answer)));
    }
}

impl Handler<FlushState> for CustomerSession {
    type Result = ();

    fn handle(&mut self, msg: FlushState, _ctx: &mut Self::Context) {
        self.processed += 1;
        self.snapshot();
        let _ = msg.done.send(());
    }
}

impl Handler<PassivateNow> for CustomerSession {
    type Result = ();

    fn handle(&mut self, _msg: PassivateNow, ctx: &mut Self::Context) {
        self.processed += 1;
        self.offer_passivation(ctx);
    }
}
