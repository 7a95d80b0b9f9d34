//! Shadow scoring: the registry's `shadow` version scores the same rows as
//! every batch the pool serves, on a thread of its own, after the batch's
//! replies were sent, and only its comparison with the served scores is kept
//! (metrics). A worker hands a scored batch over without blocking (a
//! channel send); beyond `limit` rows waiting, batches are dropped and
//! counted instead of queued, so the shadow can never delay, fail or change a
//! served request. A panic while shadow scoring is caught and counted; the
//! thread goes on with the next batch.

use super::serving::ServingModel;
use super::telemetry::{InferenceEvent, InferenceMetrics};
use actors::features::ShoppersFeatures;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// Rows served in one batch, with their served scores, for the shadow.
pub struct ShadowBatch {
    pub shadow: ServingModel,
    /// The rows of each request of the batch, in order.
    pub rows: Vec<Vec<ShoppersFeatures>>,
    /// The served probabilities, one per row.
    pub served: Vec<f32>,
    /// The served model's decision threshold.
    pub served_threshold: f32,
}

impl ShadowBatch {
    fn len(&self) -> usize {
        self.served.len()
    }
}

/// The shadow thread and its bounded hand-over (started on first use).
pub struct ShadowScorer {
    sender: Mutex<Option<Sender<ShadowBatch>>>,
    started: AtomicBool,
    stopped: AtomicBool,
    /// Rows handed over and not yet scored.
    waiting: Arc<AtomicUsize>,
    limit: usize,
    metrics: InferenceMetrics,
    /// Makes the next shadow batch panic (drills and tests).
    fault: Arc<AtomicBool>,
}

impl ShadowScorer {
    pub fn new(limit: usize, metrics: InferenceMetrics) -> Self {
        ShadowScorer {
            sender: Mutex::new(None),
            started: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            waiting: Arc::new(AtomicUsize::new(0)),
            limit: limit.max(1),
            metrics,
            fault: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Hands a served batch to the shadow thread; never blocks on scoring.
    pub fn offer(&self, batch: ShadowBatch) {
        let n = batch.len();
        if n == 0 || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let waiting = self.waiting.load(Ordering::Relaxed);
        if waiting > 0 && waiting + n > self.limit {
            self.metrics.record(InferenceEvent::ShadowDropped { version: &batch.shadow.version, rows: n });
            return;
        }
        let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() && !self.started.swap(true, Ordering::AcqRel) {
            *guard = self.start();
        }
        let Some(tx) = guard.as_ref() else { return };
        self.waiting.fetch_add(n, Ordering::Relaxed);
        if let Err(back) = tx.send(batch) {
            self.waiting.fetch_sub(n, Ordering::Relaxed);
            drop(guard);
            self.metrics.record(InferenceEvent::ShadowDropped { version: &back.0.shadow.version, rows: n });
        }
    }

    /// Starts the shadow thread (once, under the sender's lock).
    fn start(&self) -> Option<Sender<ShadowBatch>> {
        let (tx, rx) = channel();
        let (waiting, metrics, fault) = (self.waiting.clone(), self.metrics.clone(), self.fault.clone());
        let spawned = std::thread::Builder::new()
            .name("cartpulse-shadow".into())
            .spawn(move || shadow_loop(rx, waiting, metrics, fault));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the shadow scoring thread; shadow scores are skipped");
                None
            }
        }
    }

    /// Makes the next shadow batch panic inside the shadow thread.
    pub fn inject_fault(&self) {
        self.fault.store(true, Ordering::Relaxed);
    }

    /// Stops taking batches; the thread ends once those handed over are scored.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn shadow_loop(
    rx: Receiver<ShadowBatch>,
    waiting: Arc<AtomicUsize>,
    metrics: InferenceMetrics,
    fault: Arc<AtomicBool>,
) {
    let mut x: Vec<f32> = Vec::new();
    while let Ok(batch) = rx.recv() {
        let n = batch.len();
        let fault = fault.swap(false, Ordering::Relaxed);
        let model = &batch.shadow;
        let scored = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if fault {
                panic!("injected shadow scoring fault");
            }
            let enc = model.model.encoder();
            x.clear();
            x.reserve(n * enc.dim());
            for rows in &batch.rows {
                for r in rows {
                    enc.encode_into(r, &mut x);
                }
            }
            model.model.score_encoded(&x)
        }));
        waiting.fetch_sub(n, Ordering::Relaxed);
        let error = match scored {
            Ok(Ok(p)) if p.len() == n => {
                metrics.record(InferenceEvent::ShadowScored {
                    version: &model.version,
                    served: &batch.served,
                    served_threshold: batch.served_threshold,
                    shadow: &p,
                    shadow_threshold: model.model.manifest.threshold,
                });
                continue;
            }
            Ok(Ok(p)) => format!("shadow model returned {} scores for {n} rows", p.len()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into()),
        };
        metrics.record(InferenceEvent::ShadowFailed { version: &model.version, rows: n, error: &error });
    }
}
