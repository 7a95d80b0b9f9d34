//! A worker: scores whole batches on a `SyncArbiter` thread, and after each
//! one takes the pool's next batch itself (no round trip through another
//! actor). The model work runs inside `catch_unwind`, so a panic fails
//! exactly the requests of that batch (each gets an explicit error) and the
//! worker stops, which makes the `SyncArbiter` build a fresh one in its place.

use super::messages::{Prediction, RunBatch, Stages};
use super::pool::InferencePool;
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
        let RunBatch { model, jobs, rows, dispatched } = msg;
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
                stages,
            }));
        }
        // Metrics once per batch, after every request is answered.
        metrics.record(InferenceEvent::Batch { rows, seconds: (scored_at - started).as_secs_f64() });
        metrics.record(InferenceEvent::Answered { version: &model.version, rows, seconds: &self.seconds });
        Ok(())
    }
}

impl Actor for Worker {
    type Context = SyncContext<Self>;
}

impl Handler<RunBatch> for Worker {
    type Result = ();

    /// Scores the batch, then keeps taking the pool's next batch until there
    /// is none (the worker is then idle until the pool sends it one).
    fn handle(&mut self, msg: RunBatch, ctx: &mut Self::Context) {
        let mut batch = msg;
        loop {
            let rows = batch.rows;
            if self.run(batch).is_err() {
                // Restarted by the SyncArbiter with fresh state.
                self.pool.failed(rows);
                ctx.stop();
                return;
            }
            match self.pool.finished(rows) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}
