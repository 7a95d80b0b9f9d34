//! A worker: scores whole batches on a `SyncArbiter` thread, taking them
//! straight from the pool (it waits on the pool's condition variable, so a
//! request reaches an idle worker without passing through any actor
//! mailbox). The model work runs inside `catch_unwind`, so a panic fails
//! exactly the requests of that batch (each gets an explicit error) and the
//! worker stops, which makes the `SyncArbiter` build a fresh one in its place.

use super::messages::{Prediction, RunBatch, Stages};
use super::pool::InferencePool;
use super::shadow::ShadowBatch;
use super::telemetry::InferenceEvent;
use super::InferenceError;
use actix::prelude::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Worker {
    pool: Arc<InferencePool>,
    /// Makes the next batch panic (fault drills and tests of the recovery path).
    pub fault: Arc<AtomicBool>,
    /// Encoded inputs, reused between batches.
    x: Vec<f32>,
    /// Request latencies of a batch, reused.
    seconds: Vec<f64>,
}

impl Worker {
    pub fn new(pool: Arc<InferencePool>, fault: Arc<AtomicBool>) -> Self {
        Worker { pool, fault, x: Vec::new(), seconds: Vec::new() }
    }

    /// Scores one batch and answers its requests; `Err` when the batch
    /// failed (its requests were answered with the error).
    fn run(&mut self, msg: RunBatch) -> Result<(), ()> {
        let started = Instant::now();
        let RunBatch { model, jobs, rows, dispatched, shadow } = msg;
        let fault = self.fault.swap(false, Ordering::Relaxed);
        let x = &mut self.x;
        let scored = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if fault {
                panic!("injected inference fault");
            }
            let enc = model.model.encoder();
            x.clear();
            x.reserve(rows * enc.dim());
            for job in &jobs {
                for r in &job.rows {
                    enc.encode_into(r, x);
                }
            }
            model.model.score_encoded(x)
        }));
        let scored_at = Instant::now();
        let outcome = match scored {
            Ok(Ok(p)) if p.len() == rows => Ok(p),
            Ok(Ok(p)) => Err(format!("model returned {} scores for {rows} rows", p.len())),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into())),
        };
        let metrics = &self.pool.metrics;
        let probabilities = match outcome {
            Ok(p) => p,
            Err(error) => {
                metrics.record(InferenceEvent::WorkerFailed { requests: jobs.len(), error: &error });
                for job in jobs {
                    let _ = job.reply.send(Err(InferenceError::Worker(error.clone())));
                }
                return Err(());
            }
        };
        let threshold = model.model.manifest.threshold;
        self.seconds.clear();
        let mut offset = 0;
        // The rows stay for the shadow model (moved, not copied).
        let mut kept = Vec::with_capacity(if shadow.is_some() { jobs.len() } else { 0 });
        for job in jobs {
            let n = job.rows.len();
            let p = probabilities[offset..offset + n].to_vec();
            offset += n;
            let replied = Instant::now();
            self.seconds.push(replied.duration_since(job.enqueued).as_secs_f64());
            let stages = Stages {
                enqueued: job.enqueued,
                pooled: job.pooled,
                dispatched,
                started,
                scored: scored_at,
                replied,
                batch_rows: rows,
            };
            let _ = job.reply.send(Ok(Prediction {
                probabilities: p,
                model_version: model.version.clone(),
                threshold,
                model: model.model.clone(),
                stages,
            }));
            if shadow.is_some() {
                kept.push(job.rows);
            }
        }
        // Metrics once per batch, after every request is answered.
        metrics.record(InferenceEvent::Batch { rows, seconds: (scored_at - started).as_secs_f64() });
        metrics.record(InferenceEvent::Answered { version: &model.version, rows, seconds: &self.seconds });
        // Every reply is sent: the shadow scores the same rows on its own
        // thread (a hand-over, never a wait; dropped and counted when behind).
        if let Some(shadow) = shadow {
            self.pool.shadow.offer(ShadowBatch {
                shadow,
                rows: kept,
                served: probabilities,
                served_threshold: threshold,
            });
        }
        Ok(())
    }
}

impl Actor for Worker {
    type Context = SyncContext<Self>;
}

/// Starts a worker's loop: it takes the pool's batches until the pool stops.
/// One per worker thread at start, and one for the fresh worker that
/// replaces a failed one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Run;

impl Handler<Run> for Worker {
    type Result = ();

    fn handle(&mut self, _: Run, ctx: &mut Self::Context) {
        while let Some(batch) = self.pool.next_batch() {
            let rows = batch.rows;
            let ok = self.run(batch).is_ok();
            self.pool.finished(rows);
            if !ok {
                // The SyncArbiter replaces this actor with a fresh one (new
                // state) on this thread once this handler returns; `Run`
                // starts its loop.
                ctx.stop();
                ctx.address().do_send(Run);
                return;
            }
        }
    }
}
