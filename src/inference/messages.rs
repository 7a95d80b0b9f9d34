//! Messages of the inference pool: requests in, batches to the workers,
//! model swaps.

use super::serving::{ServingModel, ServingSet};
use super::InferenceError;
use actix::Message;
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
}

pub type PredictReply = oneshot::Sender<Result<Prediction, InferenceError>>;

/// A caller → pool: score these rows. `key` (a customer id) picks the model
/// when traffic is split.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Predict {
    pub key: Option<String>,
    pub rows: Vec<ShoppersFeatures>,
    pub reply: PredictReply,
    pub enqueued: Instant,
}

/// One request inside a batch.
pub struct Job {
    pub rows: Vec<ShoppersFeatures>,
    pub reply: PredictReply,
    pub enqueued: Instant,
}

/// Pool → worker: score these jobs with this model.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunBatch {
    pub model: ServingModel,
    pub jobs: Vec<Job>,
    pub rows: usize,
}

/// Replaces the served models; batches already sent finish on the old ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetModels(pub ServingSet);
