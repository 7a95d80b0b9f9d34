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
            // Every version's drift is measured on the same live sessions.
            let live = match crate::models::drift::LiveSample::read(&db, drift_window).await {
                Ok(live) => Some(live),
                Err(e) => {
                    metrics
                        .record(InferenceEvent::EvaluationFailed { version: "(drift window)", error: &e.to_string() });
                    None
                }
            };
            for version in &served {
                let Some(threshold) = inference.threshold_of(version) else { continue };
                match crate::models::evaluation::evaluate(&db, version, f64::from(threshold)).await {
                    Ok(e) => {
                        metrics.record(InferenceEvent::Evaluated { version, figures: &e.overall, by_age: &e.by_age });
                        reported.insert(version.clone());
                    }
                    Err(e) => metrics.record(InferenceEvent::EvaluationFailed { version, error: &e.to_string() }),
                }
                let model = inference.model_of(version);
                if let (Some(live), Some(reference)) =
                    (&live, model.as_ref().and_then(|m| m.manifest.reference.as_ref()))
                {
                    metrics.record(InferenceEvent::Drifted { report: &live.report(version, reference) });
                }
            }
        }
    })
}
