//! Keeps the live evaluation and the drift of every served version on
//! `/metrics` (`cartpulse_model_live_*`, `cartpulse_model_*_psi`): every
//! `inference.evaluate_every_s` it recomputes each from the stored sessions
//! (`models::evaluation` and `models::drift`, the figures
//! `GET /v1/models/{version}/evaluation` and `…/drift` answer) and drops the
//! versions no longer served, so the labels stay per served version.

use super::telemetry::InferenceEvent;
use super::InferenceHandle;
use sea_orm::DatabaseConnection;
use std::collections::BTreeSet;
use std::time::Duration;

pub fn spawn(
    db: DatabaseConnection,
    inference: InferenceHandle,
    every: Duration,
    drift_window: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: BTreeSet<String> = BTreeSet::new();
        loop {
            tick.tick().await;
            let metrics = inference.metrics();
            let served: BTreeSet<String> = inference.serving().into_iter().map(|(v, _)| v).collect();
            for gone in reported.difference(&served) {
                metrics.record(InferenceEvent::EvaluationDropped { version: gone });
            }
            reported.clear();
            for version in &served {
                let Some(threshold) = inference.threshold_of(version) else { continue };
                match crate::models::evaluation::evaluate(&db, version, f64::from(threshold)).await {
                    Ok(e) => {
                        metrics.record(InferenceEvent::Evaluated { version, figures: &e.overall });
                        reported.insert(version.clone());
                    }
                    Err(e) => metrics.record(InferenceEvent::EvaluationFailed { version, error: &e.to_string() }),
                }
                let Some(reference) = inference.model_of(version).and_then(|m| m.manifest.reference.clone()) else {
                    continue;
                };
                match crate::models::drift::drift(&db, version, &reference, drift_window).await {
                    Ok(report) => metrics.record(InferenceEvent::Drifted { report: &report }),
                    Err(e) => metrics.record(InferenceEvent::EvaluationFailed { version, error: &e.to_string() }),
                }
            }
        }
    })
}
