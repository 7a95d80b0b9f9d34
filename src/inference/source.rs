//! Where the served models come from: a model directory named in the
//! settings (development, checks), or the registry's active versions, which
//! are reloaded when this process promotes something and polled for what
//! other replicas promote. A failed reload changes nothing: the pool keeps
//! serving what it has.

use super::serving::{ServingModel, ServingSet};
use super::InferenceHandle;
use crate::models::ModelRegistry;
use crate::train::artifact::PurchaseModel;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// Loads a model directory off the async threads.
pub async fn load_dir(dir: PathBuf) -> anyhow::Result<PurchaseModel> {
    tokio::task::spawn_blocking(move || {
        PurchaseModel::load(&dir).with_context(|| format!("loading model {}", dir.display()))
    })
    .await
    .context("model loader stopped")?
}

fn to_set(entries: Vec<crate::models::registry::ServingEntry>) -> ServingSet {
    ServingSet::new(
        entries
            .into_iter()
            .map(|e| ServingModel {
                version: e.version.as_str().into(),
                traffic_share: e.traffic_share,
                model: e.model,
            })
            .collect(),
    )
}

/// Loads the registry's active versions once, then keeps the pool in step
/// with the registry until the returned task is aborted.
pub async fn follow_registry(
    registry: ModelRegistry,
    pool: InferenceHandle,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut current = Vec::new();
    match registry.load_serving().await {
        Ok(entries) => {
            let set = to_set(entries);
            current = set.describe();
            if set.is_empty() {
                tracing::info!("no model is active yet; sessions are not scored until one is promoted");
            }
            pool.set_models(set);
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot load the active models; serving none for now"),
    }
    let mut changes = registry.changes();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { tokio::time::sleep(every).await },
                _ = tokio::time::sleep(every) => {}
            }
            match registry.load_serving().await {
                Ok(entries) => {
                    let set = to_set(entries);
                    let described = set.describe();
                    if described != current {
                        current = described;
                        pool.set_models(set);
                    }
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "reloading the active models failed; keeping the current ones"
                ),
            }
        }
    })
}
