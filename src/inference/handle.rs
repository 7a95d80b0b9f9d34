//! [`InferenceHandle`]: how the HTTP layer, the session actors (as their
//! [`Scorer`]) and the benchmark talk to the pool.

use super::messages::{Predict, Prediction, SetModels};
use super::pool::InferencePool;
use super::serving::ServingSet;
use super::telemetry::InferenceMetrics;
use super::worker::Worker;
use super::{InferenceError, PoolSettings};
use ::actors::event::CustomerId;
use ::actors::features::ShoppersFeatures;
use ::actors::hooks::{Score, ScoreError, Scorer};
use actix::prelude::*;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(Clone)]
pub struct InferenceHandle {
    pool: Addr<InferencePool>,
    ready: Arc<AtomicBool>,
    serving: Arc<RwLock<Vec<(String, f64)>>>,
    fault: Arc<AtomicBool>,
    arbiter: ArbiterHandle,
}

impl InferenceHandle {
    /// Starts the workers and the pool (on its own arbiter, so its batching
    /// timers never wait behind HTTP work). Serves nothing until
    /// [`set_models`](Self::set_models). Must run inside an actix system.
    pub fn start(settings: PoolSettings, metrics: InferenceMetrics) -> InferenceHandle {
        let queued = Arc::new(AtomicUsize::new(0));
        let fault = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let serving = Arc::new(RwLock::new(Vec::new()));
        let workers = {
            let (m, q, f) = (metrics.clone(), queued.clone(), fault.clone());
            SyncArbiter::start(settings.workers.max(1), move || Worker::new(m.clone(), q.clone(), f.clone()))
        };
        let arbiter = Arbiter::new().handle();
        let pool = {
            let (r, s) = (ready.clone(), serving.clone());
            InferencePool::start_in_arbiter(&arbiter, move |_| {
                InferencePool::new(settings, workers, queued, metrics, r, s)
            })
        };
        InferenceHandle { pool, ready, serving, fault, arbiter }
    }

    /// Scores `rows`; `key` (a customer id) picks the arm of an A/B split.
    pub async fn predict(&self, key: Option<&str>, rows: Vec<ShoppersFeatures>) -> Result<Prediction, InferenceError> {
        if rows.is_empty() {
            return Err(InferenceError::Worker("no rows to score".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.pool
            .try_send(Predict { key: key.map(str::to_owned), rows, reply: tx, enqueued: Instant::now() })
            .map_err(|e| match e {
                SendError::Full(_) => InferenceError::Overloaded(0),
                SendError::Closed(_) => InferenceError::Stopped,
            })?;
        rx.await.unwrap_or_else(|_| Err(InferenceError::Worker("the worker was lost before answering".into())))
    }

    /// Serves `set` from the next batch on (hot swap).
    pub fn set_models(&self, set: ServingSet) {
        self.pool.do_send(SetModels(set));
    }

    /// True while at least one model is served.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Served versions and their traffic shares.
    pub fn serving(&self) -> Vec<(String, f64)> {
        self.serving.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Makes the next batch panic inside its worker: a drill of the recovery
    /// path (its requests fail explicitly; the worker is replaced).
    pub fn inject_worker_fault(&self) {
        self.fault.store(true, Ordering::Relaxed);
    }

    /// Stops the pool's arbiter (the workers stop with the system).
    pub fn stop(&self) {
        self.arbiter.stop();
    }
}

impl Scorer for InferenceHandle {
    fn ready(&self) -> bool {
        InferenceHandle::ready(self)
    }

    fn score(
        &self,
        customer: &CustomerId,
        features: &ShoppersFeatures,
    ) -> BoxFuture<'static, Result<Score, ScoreError>> {
        let this = self.clone();
        let key = customer.as_str().to_owned();
        let rows = vec![features.clone()];
        Box::pin(async move {
            let p = this.predict(Some(&key), rows).await?;
            let probability = p.probabilities.first().copied().ok_or_else(|| ScoreError::Failed("no score".into()))?;
            Ok(Score { probability: f64::from(probability), model_version: p.model_version.to_string() })
        })
    }
}
