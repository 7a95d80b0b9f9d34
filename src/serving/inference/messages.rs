//! Messages of the inference pool: batches to the workers, answers back.

use super::serving::ServingModel;
use super::InferenceError;
use actors::features::ShoppersFeatures;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Scores for the rows of one request.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Purchase probability per row, in request order.
    pub probabilities: Vec<f32>,
    pub model_version: Arc<str>,
    /// The model's decision threshold (predict "buys" at or above it).
    pub threshold: f32,
    /// The model that scored (for what else it says, e.g. its open-session
    /// calibration).
    pub model: Arc<crate::models::artifact::PurchaseModel>,
    /// Where the request's time went (benchmarks and profiling read these).
    pub stages: Stages,
}

/// When a request passed each stage of the pool, and the size of the batch
/// it was scored in.
#[derive(Clone, Copy, Debug)]
pub struct Stages {
    /// Handed to the pool by the caller.
    pub enqueued: Instant,
    /// Taken in by the pool (queued for a worker).
    pub pooled: Instant,
    /// A worker took its batch.
    pub dispatched: Instant,
    /// A worker started on its batch.
    pub started: Instant,
    /// The worker finished the forward pass of its batch.
    pub scored: Instant,
    /// Its reply was sent.
    pub replied: Instant,
    /// Rows in its batch.
    pub batch_rows: usize,
}

pub type PredictReply = oneshot::Sender<Result<Prediction, InferenceError>>;

/// One request inside a batch.
pub struct Job {
    pub rows: Vec<ShoppersFeatures>,
    pub reply: PredictReply,
    pub enqueued: Instant,
    pub pooled: Instant,
}

/// Worker ← pool: score these jobs with this model.
pub struct RunBatch {
    pub model: ServingModel,
    pub jobs: Vec<Job>,
    pub rows: usize,
    pub dispatched: Instant,
    /// The shadow version when the batch was taken: it scores the same rows
    /// after the replies are sent.
    pub shadow: Option<ServingModel>,
}
