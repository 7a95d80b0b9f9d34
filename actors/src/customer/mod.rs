//! The `CustomerSession` actor: one per active customer. It folds the
//! customer's committed events into [`CustomerState`], answers reads,
//! snapshots itself to the persister, closes sessions that went quiet and
//! passivates when idle. Through its [`Hooks`] it asks for purchase-intent
//! scores (the open session debounced, every closed session once, finally),
//! keeps its customer in the nearest segment of the active segmentation, and
//! tells the update bus what changed.

pub mod config;

use crate::data::state::{
    AgeRecorded, AgeScore, Changes, CloseReason, ClosedSession, CustomerState, ReachedAge, SessionView,
};
use crate::data::Snapshot;
use crate::data::{Score, SegmentAssignment};
use crate::event::{EventKind, SessionId};
use crate::features::ShoppersFeatures;
use crate::hooks::{Hooks, ScoreError, Stage, Update};
use crate::messages::delivery::Apply;
use crate::messages::lifecycle::{FlushState, IdleReport, PassivateNow};
use crate::messages::query::{Answer, Inspect, Query};
use crate::persister::Persister;
use crate::telemetry::{ActorEvent, ActorMetrics};
use crate::trace::{FinishedSpan, TraceParent};
use actix::prelude::*;
use config::ShardConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an actor looks at its timers.
const TICK: Duration = Duration::from_millis(500);

pub struct CustomerSession {
    state: CustomerState,
    cfg: Arc<ShardConfig>,
    /// Its shard, which decides whether it may stop (only the one message
    /// an actor sends to its shard, so it does not depend on the shard).
    shard: Recipient<IdleReport>,
    persister: Addr<Persister>,
    metrics: ActorMetrics,
    /// Messages received from the shard (compared on passivation).
    processed: u64,
    last_message: Instant,
    /// When the last event arrived: the session gap is measured from it, so
    /// reads (a dashboard polling the customer) do not keep a session open.
    last_event: Instant,
    /// Changes not yet in a snapshot.
    unsaved_events: u32,
    unsaved_since: Option<Instant>,
    unsaved_closed: Vec<ClosedSession>,
    open_changed: bool,
    reporting_idle: bool,
    /// The open session changed since its last score request.
    open_dirty: bool,
    /// A score request for the open session is on its way.
    open_scoring: bool,
    last_open_score_request: Option<Instant>,
    /// Final-score requests on their way (passivation waits for them).
    final_scoring: u32,
    /// Age-score requests on their way (passivation waits for them too).
    age_scoring: u32,
    /// The `actor.fold` span of the newest traced event: the next score
    /// request and snapshot join its trace.
    last_trace: Option<TraceParent>,
    unsaved_trace: Option<TraceParent>,
}

impl CustomerSession {
    pub fn new(
        state: CustomerState,
        cfg: Arc<ShardConfig>,
        shard: Recipient<IdleReport>,
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
            last_event: Instant::now(),
            unsaved_events: 0,
            unsaved_since: None,
            unsaved_closed: Vec::new(),
            open_changed: false,
            reporting_idle: false,
            open_dirty: false,
            open_scoring: false,
            last_open_score_request: None,
            final_scoring: 0,
            age_scoring: 0,
            last_trace: None,
            unsaved_trace: None,
        }
    }

    fn hooks(&self) -> &Hooks {
        &self.cfg.hooks
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
            if self.hooks().updates.active() {
                let session = SessionView::of_closed(&self.state.customer_id, &c);
                self.hooks().updates.send(Update::SessionClosed { customer: self.state.customer_id.clone(), session });
            }
            self.unsaved_closed.push(c);
        }
    }

    /// Asks for the final score of every held closed session that has none
    /// (just closed, or closed while no model was active or before a crash).
    fn request_final_scores(&mut self, ctx: &mut Context<Self>) {
        let Some(scorer) = self.hooks().scorer.clone() else { return };
        if !scorer.ready() {
            return;
        }
        let unscored: Vec<(SessionId, ShoppersFeatures)> = self
            .state
            .recent
            .iter()
            .filter(|c| c.summary.score.is_none())
            .map(|c| (c.summary.session_id.clone(), c.features.clone()))
            .collect();
        for (session, features) in unscored {
            self.final_scoring += 1;
            scorer
                .score(&self.state.customer_id, &features, Stage::Final, self.last_trace)
                .into_actor(self)
                .map(move |res, act, _ctx| {
                    act.final_scoring -= 1;
                    act.on_final_score(session, res);
                })
                .spawn(ctx);
        }
    }

    fn on_final_score(&mut self, session: SessionId, res: Result<Score, ScoreError>) {
        let score = match res {
            Ok(s) => s,
            Err(e) => {
                self.metrics.record(ActorEvent::ScoreFailed { error: &e });
                return;
            }
        };
        let Some(closed) = self.state.score_closed(&session, &score) else { return };
        self.metrics.record(ActorEvent::Scored { final_score: true });
        let crossed = score.probability >= self.hooks().scoring.alert_threshold;
        self.hooks().updates.send(Update::Scored {
            customer: self.state.customer_id.clone(),
            session,
            score,
            crossed,
            final_score: true,
        });
        self.unsaved_since.get_or_insert_with(Instant::now);
        self.unsaved_closed.push(closed);
        self.publish_view(None);
    }

    /// Scores the open session if it changed and the debounce allows.
    fn maybe_score_open(&mut self, ctx: &mut Context<Self>) {
        if !self.open_dirty || self.open_scoring || self.state.open.is_none() {
            return;
        }
        let Some(scorer) = self.hooks().scorer.clone() else { return };
        if !scorer.ready() {
            return;
        }
        if let Some(t) = self.last_open_score_request {
            if t.elapsed() < self.hooks().scoring.debounce {
                return;
            }
        }
        let Some(open) = &self.state.open else { return };
        let session = open.session_id().clone();
        let features = open.features();
        let stage = Stage::Open { pages: open.page_views() };
        self.open_dirty = false;
        self.open_scoring = true;
        self.last_open_score_request = Some(Instant::now());
        scorer
            .score(&self.state.customer_id, &features, stage, self.last_trace.take())
            .into_actor(self)
            .map(move |res, act, _ctx| {
                act.open_scoring = false;
                act.on_open_score(session, res);
            })
            .spawn(ctx);
    }

    fn on_open_score(&mut self, session: SessionId, res: Result<Score, ScoreError>) {
        let score = match res {
            Ok(s) => s,
            Err(e) => {
                self.metrics.record(ActorEvent::ScoreFailed { error: &e });
                return;
            }
        };
        // The session may have closed meanwhile; its final score is asked separately.
        if self.state.open.as_ref().map(|o| o.session_id() != &session).unwrap_or(true) {
            return;
        }
        self.metrics.record(ActorEvent::Scored { final_score: false });
        let threshold = self.hooks().scoring.alert_threshold;
        let before = self.state.open_score.as_ref().map(|s| s.probability).unwrap_or(f64::NEG_INFINITY);
        let crossed = before < threshold && score.probability >= threshold;
        self.state.open_score = Some(score.clone());
        self.hooks().updates.send(Update::Scored {
            customer: self.state.customer_id.clone(),
            session,
            score,
            crossed,
            final_score: false,
        });
        self.open_changed = true;
        self.unsaved_since.get_or_insert_with(Instant::now);
        self.publish_view(None);
    }

    /// Scores the open session as it stood at each age of
    /// [`crate::data::state::SCORED_AGES`] it just reached (not debounced:
    /// at most four per session), for the live evaluation by age.
    fn score_ages(&mut self, reached: Vec<ReachedAge>, ctx: &mut Context<Self>) {
        let Some(scorer) = self.hooks().scorer.clone() else { return };
        if !scorer.ready() {
            return;
        }
        for r in reached {
            self.age_scoring += 1;
            let (session, pages) = (r.session, r.pages);
            scorer
                .score(&self.state.customer_id, &r.features, Stage::Open { pages }, None)
                .into_actor(self)
                .map(move |res, act, _ctx| {
                    act.age_scoring -= 1;
                    act.on_age_score(session, pages, res);
                })
                .spawn(ctx);
        }
    }

    fn on_age_score(&mut self, session: SessionId, pages: u32, res: Result<Score, ScoreError>) {
        let score = match res {
            Ok(s) => s,
            Err(e) => {
                self.metrics.record(ActorEvent::ScoreFailed { error: &e });
                return;
            }
        };
        let age = AgeScore { pages, probability: score.probability, model_version: score.model_version };
        match self.state.record_age_score(&session, age) {
            AgeRecorded::Open => self.open_changed = true,
            AgeRecorded::Closed(c) => self.unsaved_closed.push(*c),
            AgeRecorded::Ignored => return,
        }
        self.unsaved_since.get_or_insert_with(Instant::now);
    }

    /// Puts the customer in the nearest segment of the active segmentation:
    /// always when `changed` (the profile moved), else only when the active
    /// version is not the one the customer was assigned in.
    fn assign_segment(&mut self, changed: bool) {
        let Some(assigner) = self.hooks().segments.current() else { return };
        let version = assigner.version();
        let current = self.state.segment.as_ref();
        if !changed && current.map(|s| s.version) == Some(version) {
            return;
        }
        let profile = self.state.profile.features(self.cfg.as_of());
        let (segment, name) = assigner.assign(&profile);
        let from = current.filter(|s| s.version == version).map(|s| s.segment);
        if current.map(|s| (s.version, s.segment)) == Some((version, segment)) {
            return;
        }
        self.state.segment = Some(SegmentAssignment { version, segment, name: name.clone() });
        self.unsaved_since.get_or_insert_with(Instant::now);
        self.metrics.record(ActorEvent::SegmentChanged);
        self.hooks().updates.send(Update::SegmentChanged {
            customer: self.state.customer_id.clone(),
            version,
            from,
            to: segment,
            name,
        });
    }

    /// Sends the whole view when someone watches this customer.
    fn publish_view(&mut self, trace: Option<TraceParent>) {
        let bus = &self.cfg.hooks.updates;
        if bus.is_watched(&self.state.customer_id) {
            bus.send(Update::Customer { view: std::sync::Arc::new(self.state.view(self.cfg.as_of())), trace });
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
                sessions.push(SessionView::of_open(
                    &self.state.customer_id,
                    o,
                    self.state.open_score.as_ref(),
                    &self.state.open_ages,
                ));
            }
        }
        self.persister.do_send(Snapshot {
            customer_id: self.state.customer_id.clone(),
            last_seq: self.state.last_seq,
            state_json,
            profile_json,
            sessions,
            segment: self.state.segment.clone(),
            trace: self.unsaved_trace.take().map(|t| (t, std::time::SystemTime::now())),
        });
        self.unsaved_events = 0;
        self.unsaved_since = None;
        self.open_changed = false;
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let quiet = self.last_event.elapsed();
        if self.state.open.is_some() && quiet.as_secs() as i64 >= self.cfg.rules.session_gap.num_seconds() {
            let mut changes = Changes::default();
            self.state.close_open(CloseReason::Inactivity, self.cfg.rules, &mut changes);
            self.note_changes(changes);
            self.request_final_scores(ctx);
        }
        self.maybe_score_open(ctx);
        self.assign_segment(false);
        if let Some(since) = self.unsaved_since {
            if since.elapsed() >= self.cfg.snapshot_max_delay {
                self.snapshot();
            }
        }
        if self.last_message.elapsed() >= self.cfg.passivate_after {
            self.offer_passivation(ctx);
        }
    }

    /// Snapshots and asks the shard to let go of this actor; stops if it agrees.
    fn offer_passivation(&mut self, ctx: &mut Context<Self>) {
        // A score on its way would be lost with the actor.
        if self.reporting_idle || self.final_scoring > 0 || self.age_scoring > 0 || self.open_scoring {
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
        self.request_final_scores(ctx);
        self.assign_segment(false);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Also reached when the system shuts down: never drop unsaved state
        // silently (the log would rebuild it, but slower).
        self.snapshot();
        self.metrics.record(ActorEvent::Passivated { customer: self.state.customer_id.as_str() });
    }
}

impl Handler<crate::messages::lifecycle::StopNow> for CustomerSession {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::lifecycle::StopNow, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Apply> for CustomerSession {
    type Result = ();

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) {
        let started = std::time::SystemTime::now();
        self.processed += 1;
        self.last_message = Instant::now();
        self.last_event = self.last_message;
        self.cfg.inflight.fetch_sub(msg.0.len() as i64, std::sync::atomic::Ordering::Relaxed);
        let last_seq = self.state.last_seq;
        let mut changes = Changes::default();
        for e in &msg.0 {
            self.state.apply(e, self.cfg.rules, &mut changes);
        }
        let applied = changes.applied;
        let closed_any = !changes.closed.is_empty();
        let reached = std::mem::take(&mut changes.reached);
        self.note_changes(changes);
        if !reached.is_empty() {
            self.score_ages(reached, ctx);
        }
        let trace = self.trace_fold(&msg, last_seq, started);
        if applied > 0 {
            self.open_dirty = self.state.open.is_some();
            if self.hooks().updates.active() {
                self.announce(&msg, last_seq, trace);
            }
            self.assign_segment(true);
        }
        if closed_any {
            self.request_final_scores(ctx);
        }
        self.maybe_score_open(ctx);
        if applied > 0 {
            self.publish_view(trace);
        }
        if self.unsaved_events >= self.cfg.snapshot_every_events {
            self.snapshot();
        }
    }
}

impl CustomerSession {
    /// Records the fold of the traced events of `msg` above `last_seq`
    /// (one span per trace); returns the newest fold span.
    fn trace_fold(&mut self, msg: &Apply, last_seq: i64, started: std::time::SystemTime) -> Option<TraceParent> {
        let recorder = self.cfg.hooks.spans.as_ref()?;
        let traced = crate::trace::distinct(msg.0.iter().filter(|e| e.seq > last_seq).filter_map(|e| e.trace.as_ref()));
        let end = std::time::SystemTime::now();
        let mut fold = None;
        for parent in &traced {
            let events = msg.0.iter().filter(|e| e.seq > last_seq && e.trace.as_ref() == Some(parent)).count();
            fold = Some(recorder.record(FinishedSpan {
                name: "actor.fold",
                parent,
                start: started,
                end,
                attributes: vec![("cartpulse.events", events as i64)],
            }));
        }
        if fold.is_some() {
            self.last_trace = fold;
            self.unsaved_trace = fold;
        }
        fold
    }

    /// Tells the update bus what the events of `msg` above `last_seq` did.
    fn announce(&self, msg: &Apply, last_seq: i64, trace: Option<TraceParent>) {
        let bus = &self.hooks().updates;
        let (mut events, mut orders, mut revenue, mut acked) = (0u32, 0u32, 0f64, None::<i64>);
        for e in msg.0.iter().filter(|e| e.seq > last_seq) {
            events += 1;
            if let EventKind::Purchase(p) = &e.event.kind {
                if p.cancellation {
                    revenue -= p.value();
                } else {
                    orders += 1;
                    revenue += p.value();
                }
            }
            if e.acked_at_ms > 0 {
                acked = Some(acked.map_or(e.acked_at_ms, |a: i64| a.min(e.acked_at_ms)));
            }
        }
        bus.send(Update::Applied {
            customer: self.state.customer_id.clone(),
            events,
            orders,
            revenue,
            acked_at_ms: acked,
            open_session: self.state.open.as_ref().map(|o| o.session_id().clone()),
            segment: self.state.segment.clone(),
            trace,
        });
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
