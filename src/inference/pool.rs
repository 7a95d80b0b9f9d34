//! The `InferencePool` actor: the supervisor of the workers. It collects
//! requests into one pending batch per served model and sends a batch to the
//! workers when it is full or when its oldest request has waited `max_wait`,
//! so single-row requests from many session actors share one candle call.
//! It refuses work beyond `max_queued_rows` instead of queueing without
//! bound, and swaps models between batches without failing any request.

use super::messages::{Job, Predict, RunBatch, SetModels};
use super::serving::ServingSet;
use super::telemetry::{InferenceEvent, InferenceMetrics};
use super::worker::Worker;
use super::{InferenceError, PoolSettings};
use actix::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub struct InferencePool {
    settings: PoolSettings,
    workers: Addr<Worker>,
    set: ServingSet,
    /// One pending batch per model of `set` (same index).
    pending: Vec<Pending>,
    flush_scheduled: bool,
    queued: Arc<AtomicUsize>,
    metrics: InferenceMetrics,
    /// Shared with the handle: true while a model is served.
    ready: Arc<AtomicBool>,
    /// Shared with the handle: the served versions and shares.
    serving: Arc<RwLock<Vec<(String, f64)>>>,
}

#[derive(Default)]
struct Pending {
    jobs: Vec<Job>,
    rows: usize,
}

impl InferencePool {
    pub fn new(
        settings: PoolSettings,
        workers: Addr<Worker>,
        queued: Arc<AtomicUsize>,
        metrics: InferenceMetrics,
        ready: Arc<AtomicBool>,
        serving: Arc<RwLock<Vec<(String, f64)>>>,
    ) -> Self {
        InferencePool {
            settings,
            workers,
            set: ServingSet::default(),
            pending: Vec::new(),
            flush_scheduled: false,
            queued,
            metrics,
            ready,
            serving,
        }
    }

    fn dispatch(&mut self, i: usize) {
        let Some(p) = self.pending.get_mut(i) else { return };
        if p.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut p.jobs);
        let rows = std::mem::take(&mut p.rows);
        let model = self.set.models()[i].clone();
        // The workers share one queue; an idle one takes the batch.
        self.workers.do_send(RunBatch { model, jobs, rows });
    }

    fn flush_all(&mut self) {
        for i in 0..self.pending.len() {
            self.dispatch(i);
        }
    }
}

impl Actor for InferencePool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1 << 20);
    }
}

impl Handler<Predict> for InferencePool {
    type Result = ();

    fn handle(&mut self, msg: Predict, ctx: &mut Self::Context) {
        let Some(i) = self.set.pick(msg.key.as_deref()) else {
            self.metrics.record(InferenceEvent::Refused { reason: "no_model" });
            let _ = msg.reply.send(Err(InferenceError::NoModel));
            return;
        };
        let n = msg.rows.len();
        let queued = self.queued.load(Ordering::Relaxed);
        if queued + n > self.settings.max_queued_rows && queued > 0 {
            self.metrics.record(InferenceEvent::Refused { reason: "overloaded" });
            let _ = msg.reply.send(Err(InferenceError::Overloaded(queued)));
            return;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        let p = &mut self.pending[i];
        p.jobs.push(Job { rows: msg.rows, reply: msg.reply, enqueued: msg.enqueued });
        p.rows += n;
        if p.rows >= self.settings.max_batch {
            self.dispatch(i);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.settings.max_wait, |act, _| {
                act.flush_scheduled = false;
                act.flush_all();
            });
        }
    }
}

impl Handler<SetModels> for InferencePool {
    type Result = ();

    fn handle(&mut self, msg: SetModels, _ctx: &mut Self::Context) {
        // What is pending was picked for the old set; it is scored with it.
        self.flush_all();
        self.set = msg.0;
        self.pending = (0..self.set.models().len()).map(|_| Pending::default()).collect();
        let described = self.set.describe();
        self.ready.store(!self.set.is_empty(), Ordering::Relaxed);
        self.metrics.record(InferenceEvent::ModelsChanged { versions: &described });
        if let Ok(mut s) = self.serving.write() {
            *s = described;
        }
    }
}
