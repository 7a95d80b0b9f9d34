//! [`InferenceHandle`]: how the HTTP layer, the session actors (as their
//! [`Scorer`]) and the benchmark talk to the pool.

use super::messages::Prediction;
use super::pool::InferencePool;
use super::serving::{ServingModel, ServingSet};
use super::telemetry::InferenceMetrics;
use super::worker::{Run, Worker};
use super::{InferenceError, PoolSettings};
use ::actors::data::Score;
use ::actors::event::CustomerId;
use ::actors::features::ShoppersFeatures;
use ::actors::hooks::{ScoreError, Scorer, Stage};
use ::actors::trace::TraceParent;
use actix::prelude::*;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(Clone)]
pub struct InferenceHandle {
    pool: Arc<InferencePool>,
    fault: Arc<AtomicBool>,
    _owner: Arc<Owner>,
}

/// Keeps the workers' `SyncArbiter` running (it ends when no address to it
/// is left, and a failed worker's replacement is started through it) and
/// stops the pool when the last handle is dropped, so the worker threads
/// leave their loops and end with the system.
struct Owner {
    pool: Arc<InferencePool>,
    _workers: Addr<Worker>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.pool.stop();
    }
}

impl InferenceHandle {
    /// Starts the workers (a `SyncArbiter`) and the pool that feeds them.
    /// Serves nothing until [`set_models`](Self::set_models). Must run
    /// inside an actix system.
    pub fn start(settings: PoolSettings, metrics: InferenceMetrics) -> InferenceHandle {
        let fault = Arc::new(AtomicBool::new(false));
        let workers = settings.workers.max(1);
        let pool = Arc::new(InferencePool::new(settings, metrics));
        let addr = {
            let (p, f) = (pool.clone(), fault.clone());
            SyncArbiter::start(workers, move || Worker::new(p.clone(), f.clone()))
        };
        // Each worker thread takes one `Run` and stays in its loop.
        for _ in 0..workers {
            addr.do_send(Run);
        }
        InferenceHandle { _owner: Arc::new(Owner { pool: pool.clone(), _workers: addr }), pool, fault }
    }

    /// Scores `rows`; `key` (a customer id) picks the arm of an A/B split.
    pub async fn predict(&self, key: Option<&str>, rows: Vec<ShoppersFeatures>) -> Result<Prediction, InferenceError> {
        let rx = self.submit(key, rows)?;
        rx.await.unwrap_or_else(|_| Err(InferenceError::Worker("the worker was lost before answering".into())))
    }

    /// [`predict`](Self::predict) for traced work: the request's queue
    /// wait, its batch and the batch's forward pass become spans under
    /// `trace` (from the stage times the pool reports).
    pub async fn predict_traced(
        &self,
        key: Option<&str>,
        rows: Vec<ShoppersFeatures>,
        trace: Option<TraceParent>,
    ) -> Result<Prediction, InferenceError> {
        let p = self.predict(key, rows).await?;
        if let Some(parent) = trace {
            super::telemetry::trace_stages(&parent, &p);
        }
        Ok(p)
    }

    /// Hands `rows` to the pool without waiting (callable from any thread);
    /// the answer, or the reason it was refused, arrives on the returned
    /// channel.
    pub fn submit(
        &self,
        key: Option<&str>,
        rows: Vec<ShoppersFeatures>,
    ) -> Result<oneshot::Receiver<Result<Prediction, InferenceError>>, InferenceError> {
        if rows.is_empty() {
            return Err(InferenceError::Worker("no rows to score".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.pool.submit(key, rows, tx, Instant::now());
        Ok(rx)
    }

    /// Serves `set` from the next batch on (hot swap).
    pub fn set_models(&self, set: ServingSet) {
        self.pool.set_models(set);
    }

    /// Scores every batch with `shadow` too, after answering it (its scores
    /// only feed the `cartpulse_shadow_*` metrics); `None` ends it.
    pub fn set_shadow(&self, shadow: Option<ServingModel>) {
        self.pool.set_shadow(shadow);
    }

    /// The shadow version scored alongside, if any.
    pub fn shadow(&self) -> Option<String> {
        self.pool.shadow()
    }

    /// Makes the next shadow batch panic inside the shadow thread (drills,
    /// tests): counted in `cartpulse_shadow_failures_total`, nothing served
    /// is affected.
    pub fn inject_shadow_fault(&self) {
        self.pool.shadow.inject_fault();
    }

    /// The pool's metrics (tests and tools read the shadow counters).
    pub fn metrics(&self) -> &InferenceMetrics {
        &self.pool.metrics
    }

    /// True while at least one model is served.
    pub fn ready(&self) -> bool {
        self.pool.ready()
    }

    /// Served versions and their traffic shares.
    pub fn serving(&self) -> Vec<(String, f64)> {
        self.pool.serving()
    }

    /// The decision threshold of `version`, if it is served now.
    pub fn threshold_of(&self, version: &str) -> Option<f32> {
        self.pool.threshold_of(version)
    }

    /// The model of `version`, if it is served now.
    pub fn model_of(&self, version: &str) -> Option<std::sync::Arc<crate::models::artifact::PurchaseModel>> {
        self.pool.model_of(version)
    }

    /// Makes the next batch panic inside its worker: a drill of the recovery
    /// path (its requests fail explicitly; the worker is replaced).
    pub fn inject_worker_fault(&self) {
        self.fault.store(true, Ordering::Relaxed);
    }

    /// Refuses new requests (queued ones are still answered); the workers
    /// end with the system.
    pub fn stop(&self) {
        self.pool.stop();
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
        stage: Stage,
        trace: Option<TraceParent>,
    ) -> BoxFuture<'static, Result<Score, ScoreError>> {
        let this = self.clone();
        let key = customer.as_str().to_owned();
        let rows = vec![features.clone()];
        Box::pin(async move {
            let p = this.predict_traced(Some(&key), rows, trace).await?;
            let mut probability =
                p.probabilities.first().copied().ok_or_else(|| ScoreError::Failed("no score".into()))?;
            if let Stage::Open { pages } = stage {
                probability = p.model.open_score(probability, pages);
            }
            Ok(Score { probability: f64::from(probability), model_version: p.model_version.to_string() })
        })
    }
}
