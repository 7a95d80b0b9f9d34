//! Telemetry of the inference pool as typed events: [`InferenceMetrics::record`]
//! is the one place that logs them and bumps the metrics, per model version
//! where it matters (A/B comparisons read these).

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
    /// The shadow version changed (`None`: no shadow any more).
    ShadowChanged { version: Option<&'a str> },
    /// The shadow model scored the rows of a served batch.
    ShadowScored {
        version: &'a str,
        served: &'a [f32],
        served_threshold: f32,
        shadow: &'a [f32],
        shadow_threshold: f32,
    },
    /// Shadow scoring of a batch failed (panic or model error); nothing served was affected.
    ShadowFailed { version: &'a str, rows: usize, error: &'a str },
    /// A served batch was not shadow-scored: the shadow thread was too far behind.
    ShadowDropped { version: &'a str, rows: usize },
    /// The live evaluation of a served version was recomputed
    /// (`models::evaluation`).
    Evaluated {
        version: &'a str,
        figures: &'a crate::models::evaluation::Figures,
        by_age: &'a [crate::models::evaluation::Age],
    },
    /// A version is no longer served: its live evaluation leaves `/metrics`.
    EvaluationDropped { version: &'a str },
    /// Reading the sessions for an evaluation failed; the next round retries.
    EvaluationFailed { version: &'a str, error: &'a str },
    /// The drift of a served version was recomputed (`models::drift`); its
    /// PSI gauges are set when the window has enough sessions, and removed
    /// otherwise.
    Drifted { report: &'a crate::models::drift::DriftReport },
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
    shadow_rows: IntCounterVec,
    shadow_diff: HistogramVec,
    shadow_disagreements: IntCounterVec,
    shadow_failures: IntCounterVec,
    shadow_dropped: IntCounterVec,
    shadow_model: IntGaugeVec,
    live_sessions: IntGaugeVec,
    live_accuracy: GaugeVec,
    live_auc: GaugeVec,
    live_brier: GaugeVec,
    open_auc: GaugeVec,
    open_brier: GaugeVec,
    feature_psi: GaugeVec,
    score_psi: GaugeVec,
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
                // 10 ms: the model scoring objective.
                .buckets(crate::telemetry::with_bound(prometheus::exponential_buckets(0.000_05, 2.0, 16)?, 0.01)),
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
            shadow_rows: IntCounterVec::new(
                Opts::new(
                    "cartpulse_shadow_rows_total",
                    "Served rows also scored by the shadow model, by shadow version",
                ),
                &["version"],
            )?,
            shadow_diff: HistogramVec::new(
                HistogramOpts::new(
                    "cartpulse_shadow_score_abs_diff",
                    "|shadow probability - served probability| per row, by shadow version",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]),
                &["version"],
            )?,
            shadow_disagreements: IntCounterVec::new(
                Opts::new(
                    "cartpulse_shadow_disagreements_total",
                    "Rows whose decision (probability at or above the model's threshold) differs between the served \
                     and the shadow model, by shadow version and the served model's decision",
                ),
                &["version", "served"],
            )?,
            shadow_failures: IntCounterVec::new(
                Opts::new(
                    "cartpulse_shadow_failures_total",
                    "Batches whose shadow scoring failed (caught), by shadow version",
                ),
                &["version"],
            )?,
            shadow_dropped: IntCounterVec::new(
                Opts::new(
                    "cartpulse_shadow_rows_dropped_total",
                    "Served rows not shadow-scored because the shadow thread was behind, by shadow version",
                ),
                &["version"],
            )?,
            shadow_model: IntGaugeVec::new(
                Opts::new("cartpulse_models_shadow", "1 for the shadow version this process scores alongside"),
                &["version"],
            )?,
            live_sessions: IntGaugeVec::new(
                Opts::new(
                    "cartpulse_model_live_sessions",
                    "Closed sessions scored at close by a served version (its live evaluation's count)",
                ),
                &["version"],
            )?,
            live_accuracy: GaugeVec::new(
                Opts::new("cartpulse_model_live_accuracy", "Live accuracy at the version's threshold, by version"),
                &["version"],
            )?,
            live_auc: GaugeVec::new(
                Opts::new(
                    "cartpulse_model_live_auc",
                    "Live ROC AUC of the final scores against the outcomes, by version (absent until both occurred)",
                ),
                &["version"],
            )?,
            live_brier: GaugeVec::new(
                Opts::new("cartpulse_model_live_brier", "Live Brier score of the final scores, by version"),
                &["version"],
            )?,
            open_auc: GaugeVec::new(
                Opts::new(
                    "cartpulse_model_open_auc",
                    "Live ROC AUC of the scores sessions got while open, at 1, 3, 5 and 10 page views, by version \
                     (absent until both outcomes occurred at that age)",
                ),
                &["version", "pages"],
            )?,
            open_brier: GaugeVec::new(
                Opts::new(
                    "cartpulse_model_open_brier",
                    "Live Brier score of the scores sessions got while open, at 1, 3, 5 and 10 page views, by version",
                ),
                &["version", "pages"],
            )?,
            feature_psi: GaugeVec::new(
                Opts::new(
                    "cartpulse_model_feature_psi",
                    "PSI of a session feature over the drift window against a served version's training rows \
                     (present when the window has enough sessions)",
                ),
                &["version", "feature"],
            )?,
            score_psi: GaugeVec::new(
                Opts::new(
                    "cartpulse_model_score_psi",
                    "PSI of a served version's final scores over the drift window against its out-of-fold scores \
                     (present when enough sessions were scored)",
                ),
                &["version"],
            )?,
        };
        registry.register(Box::new(m.feature_psi.clone()))?;
        registry.register(Box::new(m.score_psi.clone()))?;
        registry.register(Box::new(m.live_sessions.clone()))?;
        registry.register(Box::new(m.live_accuracy.clone()))?;
        registry.register(Box::new(m.live_auc.clone()))?;
        registry.register(Box::new(m.live_brier.clone()))?;
        registry.register(Box::new(m.open_auc.clone()))?;
        registry.register(Box::new(m.open_brier.clone()))?;
        registry.register(Box::new(m.predictions.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.batch_rows.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.worker_failures.clone()))?;
        registry.register(Box::new(m.serving.clone()))?;
        registry.register(Box::new(m.shadow_rows.clone()))?;
        registry.register(Box::new(m.shadow_diff.clone()))?;
        registry.register(Box::new(m.shadow_disagreements.clone()))?;
        registry.register(Box::new(m.shadow_failures.clone()))?;
        registry.register(Box::new(m.shadow_dropped.clone()))?;
        registry.register(Box::new(m.shadow_model.clone()))?;
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
            InferenceEvent::Evaluated { version, figures, by_age } => {
                for age in by_age {
                    let labels = [version, &age.pages.to_string()];
                    if age.figures.sessions > 0 {
                        self.open_brier.with_label_values(&labels).set(age.figures.brier);
                    } else {
                        let _ = self.open_brier.remove_label_values(&labels);
                    }
                    match age.figures.auc {
                        Some(a) => self.open_auc.with_label_values(&labels).set(a),
                        None => {
                            let _ = self.open_auc.remove_label_values(&labels);
                        }
                    }
                }
                tracing::debug!(version, sessions = figures.sessions, auc = ?figures.auc, "live evaluation");
                self.live_sessions.with_label_values(&[version]).set(figures.sessions as i64);
                self.live_accuracy.with_label_values(&[version]).set(figures.accuracy);
                self.live_brier.with_label_values(&[version]).set(figures.brier);
                match figures.auc {
                    Some(a) => self.live_auc.with_label_values(&[version]).set(a),
                    None => {
                        let _ = self.live_auc.remove_label_values(&[version]);
                    }
                }
            }
            InferenceEvent::EvaluationDropped { version } => {
                for g in [&self.live_accuracy, &self.live_auc, &self.live_brier, &self.score_psi] {
                    let _ = g.remove_label_values(&[version]);
                }
                let _ = self.live_sessions.remove_label_values(&[version]);
                for pages in actors::data::state::SCORED_AGES {
                    let labels = [version, &pages.to_string()];
                    let _ = self.open_auc.remove_label_values(&labels);
                    let _ = self.open_brier.remove_label_values(&labels);
                }
                for f in actors::features::ShoppersFeatures::UCI_COLUMNS {
                    let _ = self.feature_psi.remove_label_values(&[version, f]);
                }
            }
            InferenceEvent::Drifted { report } => {
                use crate::models::drift::MIN_SESSIONS;
                let version = report.version.as_str();
                if !report.flagged.is_empty() {
                    tracing::warn!(version, flagged = ?report.flagged, sessions = report.sessions, "model drift");
                }
                for f in &report.features {
                    match f.psi.filter(|_| report.sessions >= MIN_SESSIONS) {
                        Some(psi) => self.feature_psi.with_label_values(&[version, &f.name]).set(psi),
                        None => {
                            let _ = self.feature_psi.remove_label_values(&[version, &f.name]);
                        }
                    }
                }
                match report.score.psi.filter(|_| report.scored_sessions >= MIN_SESSIONS) {
                    Some(psi) => self.score_psi.with_label_values(&[version]).set(psi),
                    None => {
                        let _ = self.score_psi.remove_label_values(&[version]);
                    }
                }
            }
            InferenceEvent::EvaluationFailed { version, error } => {
                tracing::warn!(version, error, "live evaluation failed; next round retries");
            }
            InferenceEvent::ModelsChanged { versions } => {
                tracing::info!(?versions, "serving model versions");
                self.serving.set(versions.len() as i64);
            }
            InferenceEvent::ShadowChanged { version } => {
                tracing::info!(?version, "shadow model version");
                self.shadow_model.reset();
                if let Some(v) = version {
                    self.shadow_model.with_label_values(&[v]).set(1);
                }
            }
            InferenceEvent::ShadowScored { version, served, served_threshold, shadow, shadow_threshold } => {
                let diff = self.shadow_diff.with_label_values(&[version]);
                let (mut served_buys, mut shadow_buys) = (0u64, 0u64);
                for (&a, &b) in served.iter().zip(shadow) {
                    diff.observe(f64::from((b - a).abs()));
                    match (a >= served_threshold, b >= shadow_threshold) {
                        (true, false) => served_buys += 1,
                        (false, true) => shadow_buys += 1,
                        _ => {}
                    }
                }
                if served_buys > 0 {
                    self.shadow_disagreements.with_label_values(&[version, "buys"]).inc_by(served_buys);
                }
                if shadow_buys > 0 {
                    self.shadow_disagreements.with_label_values(&[version, "not"]).inc_by(shadow_buys);
                }
                // Last: a scrape that sees the rows counted sees their
                // differences and disagreements too.
                self.shadow_rows.with_label_values(&[version]).inc_by(served.len() as u64);
            }
            InferenceEvent::ShadowFailed { version, rows, error } => {
                tracing::warn!(version, rows, error, "shadow scoring failed; served requests were not affected");
                self.shadow_failures.with_label_values(&[version]).inc();
            }
            InferenceEvent::ShadowDropped { version, rows } => {
                tracing::debug!(version, rows, "shadow scoring behind; batch skipped");
                self.shadow_dropped.with_label_values(&[version]).inc_by(rows as u64);
            }
        }
    }

    /// Rows the shadow `version` scored (tests, tools).
    pub fn shadow_rows(&self, version: &str) -> u64 {
        self.shadow_rows.with_label_values(&[version]).get()
    }

    /// Shadow batches of `version` whose scoring failed.
    pub fn shadow_failures(&self, version: &str) -> u64 {
        self.shadow_failures.with_label_values(&[version]).get()
    }
}

/// Records a traced request's way through the pool under `parent`:
/// `inference.queue_wait` (handed in → its worker started),
/// `inference.batch` (worker started → replied) and below it
/// `inference.forward` (the batch's forward pass).
pub fn trace_stages(parent: &actors::trace::TraceParent, p: &super::messages::Prediction) {
    use crate::telemetry::traces::record;
    use actors::trace::FinishedSpan;
    let (now, wall_now) = (std::time::Instant::now(), std::time::SystemTime::now());
    let wall = |t: std::time::Instant| wall_now - now.saturating_duration_since(t);
    let s = &p.stages;
    let rows = vec![("cartpulse.batch_rows", s.batch_rows as i64)];
    record(FinishedSpan {
        name: "inference.queue_wait",
        parent,
        start: wall(s.enqueued),
        end: wall(s.started),
        attributes: vec![],
    });
    let batch = record(FinishedSpan {
        name: "inference.batch",
        parent,
        start: wall(s.started),
        end: wall(s.replied),
        attributes: rows.clone(),
    });
    record(FinishedSpan {
        name: "inference.forward",
        parent: &batch,
        start: wall(s.started),
        end: wall(s.scored),
        attributes: rows,
    });
}
