//! Telemetry of the inference pool as typed events: [`InferenceMetrics::record`]
//! is the one place that logs them and bumps the metrics, per model version
//! where it matters (A/B comparisons read these).

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug)]
pub enum InferenceEvent<'a> {
    /// The requests of a batch were answered with scores: `rows` in all,
    /// each request's latency in `seconds`.
    Answered { version: &'a str, rows: usize, seconds: &'a [f64] },
    /// A worker scored a batch.
    Batch { rows: usize, seconds: f64 },
    /// A request was refused before scoring.
    Refused { reason: &'static str },
    /// A batch failed in a worker (the worker is replaced); its requests got errors.
    WorkerFailed { requests: usize, error: &'a str },
    /// The served versions changed.
    ModelsChanged { versions: &'a [(String, f64)] },
}

#[derive(Clone)]
pub struct InferenceMetrics {
    predictions: IntCounterVec,
    latency: HistogramVec,
    batch_rows: Histogram,
    batch_seconds: Histogram,
    refused: IntCounterVec,
    worker_failures: IntCounterVec,
    serving: IntGauge,
}

impl InferenceMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = InferenceMetrics {
            predictions: IntCounterVec::new(
                Opts::new("cartpulse_predictions_total", "Rows scored, by model version"),
                &["version"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "cartpulse_prediction_latency_seconds",
                    "Time from a score request reaching the pool to its answer, by model version",
                )
                .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16)?),
                &["version"],
            )?,
            batch_rows: Histogram::with_opts(
                HistogramOpts::new("cartpulse_inference_batch_rows", "Rows per batch scored by a worker")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("cartpulse_inference_batch_seconds", "Time a worker spends on one batch")
                    .buckets(prometheus::exponential_buckets(0.000_02, 2.0, 16)?),
            )?,
            refused: IntCounterVec::new(
                Opts::new("cartpulse_predictions_refused_total", "Score requests refused, by reason"),
                &["reason"],
            )?,
            worker_failures: IntCounterVec::new(
                Opts::new("cartpulse_inference_worker_failures_total", "Batches lost to a failing worker"),
                &["kind"],
            )?,
            serving: IntGauge::new("cartpulse_models_serving", "Model versions currently served")?,
        };
        registry.register(Box::new(m.predictions.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.batch_rows.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.worker_failures.clone()))?;
        registry.register(Box::new(m.serving.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (benchmarks, tools).
    pub fn detached() -> Self {
        Self::register(&Registry::new()).expect("fresh registry")
    }

    pub fn record(&self, event: InferenceEvent<'_>) {
        match event {
            InferenceEvent::Answered { version, rows, seconds } => {
                self.predictions.with_label_values(&[version]).inc_by(rows as u64);
                let latency = self.latency.with_label_values(&[version]);
                for &s in seconds {
                    latency.observe(s);
                }
            }
            InferenceEvent::Batch { rows, seconds } => {
                self.batch_rows.observe(rows as f64);
                self.batch_seconds.observe(seconds);
            }
            InferenceEvent::Refused { reason } => {
                tracing::debug!(reason, "score request refused");
                self.refused.with_label_values(&[reason]).inc();
            }
            InferenceEvent::WorkerFailed { requests, error } => {
                tracing::error!(
                    requests,
                    error,
                    "inference worker failed; its requests were failed and it is replaced"
                );
                self.worker_failures.with_label_values(&["panic"]).inc();
            }
            InferenceEvent::ModelsChanged { versions } => {
                tracing::info!(?versions, "serving model versions");
                self.serving.set(versions.len() as i64);
            }
        }
    }
}
