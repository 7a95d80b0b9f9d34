//! Serving the purchase-intent model: an [`pool::InferencePool`] that hands
//! score requests to an idle worker at once and batches them while every
//! worker is busy, workers on a `SyncArbiter` (the model's CPU work never
//! runs on the async arbiters), the
//! [`serving::ServingSet`] of active model versions it splits traffic over,
//! the shadow version scored alongside ([`shadow`]; its scores only feed
//! metrics), and the handle the rest of the service uses ([`InferenceHandle`], which is
//! also the actors' [`actors::hooks::Scorer`]).
//!
//! Nothing is lost silently: every request is answered with scores or with an
//! explicit error (no model, overloaded, worker failure), including the
//! requests of a batch whose worker panicked; the worker is then replaced.

pub mod evaluator;
pub mod handle;
pub mod messages;
pub mod pool;
pub mod request;
pub mod serving;
pub mod shadow;
pub mod source;
pub mod telemetry;
pub mod worker;

pub use handle::InferenceHandle;
pub use serving::{ServingModel, ServingSet};

/// How the pool batches and how many workers run.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Worker threads (each scores one batch at a time).
    pub workers: usize,
    /// Most rows in one batch.
    pub max_batch: usize,
    /// Rows queued or being scored beyond which requests are refused
    /// (overloaded) instead of queueing without bound.
    pub max_queued_rows: usize,
}

/// Why a prediction failed; every request gets either scores or one of these.
#[derive(Clone, Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("no model is active")]
    NoModel,
    #[error("the inference pool is overloaded ({0} rows queued)")]
    Overloaded(usize),
    #[error("the worker scoring this batch failed: {0}")]
    Worker(String),
    #[error("the inference pool has stopped")]
    Stopped,
}

impl From<InferenceError> for actors::hooks::ScoreError {
    fn from(e: InferenceError) -> Self {
        match e {
            InferenceError::NoModel => actors::hooks::ScoreError::NoModel,
            InferenceError::Overloaded(_) => actors::hooks::ScoreError::Overloaded,
            other => actors::hooks::ScoreError::Failed(other.to_string()),
        }
    }
}
