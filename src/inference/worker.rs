//! A worker: scores whole batches on a `SyncArbiter` thread. The candle work
//! runs inside `catch_unwind`, so a panic fails exactly the requests of that
//! batch (each gets an explicit error) and the worker stops, which makes the
//! `SyncArbiter` build a fresh one in its place.

use super::messages::{Prediction, RunBatch};
use super::telemetry::{InferenceEvent, InferenceMetrics};
use super::InferenceError;
use actix::prelude::*;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Worker {
    pub metrics: InferenceMetrics,
    /// Rows queued or in flight in the pool (this worker subtracts what it finished).
    pub queued: Arc<AtomicUsize>,
    /// Makes the next batch panic (fault drills and tests of the recovery path).
    pub fault: Arc<AtomicBool>,
    /// Encoded inputs, reused between batches.
    x: Vec<f32>,
}

impl Worker {
    pub fn new(metrics: InferenceMetrics, queued: Arc<AtomicUsize>, fault: Arc<AtomicBool>) -> Self {
        Worker { metrics, queued, fault, x: Vec::new() }
    }
}

impl Actor for Worker {
    type Context = SyncContext<Self>;
}

impl Handler<RunBatch> for Worker {
    type Result = ();

    fn handle(&mut self, msg: RunBatch, ctx: &mut Self::Context) {
        let started = Instant::now();
        let RunBatch { model, jobs, rows } = msg;
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
        self.queued.fetch_sub(rows, Ordering::Relaxed);
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
        let probabilities = match outcome {
            Ok(p) => p,
            Err(error) => {
                self.metrics.record(InferenceEvent::WorkerFailed { requests: jobs.len(), error: &error });
                for job in jobs {
                    let _ = job.reply.send(Err(InferenceError::Worker(error.clone())));
                }
                // Restarted by the SyncArbiter with fresh state.
                ctx.stop();
                return;
            }
        };
        self.metrics.record(InferenceEvent::Batch { rows, seconds: started.elapsed().as_secs_f64() });
        let threshold = model.model.manifest.threshold;
        let mut offset = 0;
        for job in jobs {
            let n = job.rows.len();
            let p = probabilities[offset..offset + n].to_vec();
            offset += n;
            self.metrics.record(InferenceEvent::Answered {
                version: &model.version,
                rows: n,
                seconds: job.enqueued.elapsed().as_secs_f64(),
            });
            let _ =
                job.reply.send(Ok(Prediction { probabilities: p, model_version: model.version.clone(), threshold }));
        }
    }
}
