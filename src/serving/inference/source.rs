//! Where the served models come from: a model directory named in the
//! settings (development, checks), or the registry's active versions, which
//! are reloaded when this process promotes something and polled for what
//! other replicas promote. A failed reload changes nothing: the pool keeps
//! serving what it has. The registry's shadow version is followed the same
//! way; one that fails to load is logged and skipped (no shadow), and never
//! affects what is served.

use super::serving::{ServingModel, ServingSet};
use super::InferenceHandle;
use crate::models::artifact::PurchaseModel;
use crate::models::ModelRegistry;
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

/// The shadow version the pool has (a version's objects are immutable, so
/// the version names the model), and the last shadow load failure logged
/// (logged once, not at every poll).
#[derive(Default)]
struct ShadowState {
    version: Option<String>,
    failed: Option<(String, String)>,
}

impl ShadowState {
    fn apply(&mut self, pool: &InferenceHandle, models: &mut crate::models::ServingModels) {
        if let Some((version, error)) = models.shadow_error.take() {
            if self.failed.as_ref() != Some(&(version.clone(), error.clone())) {
                tracing::warn!(%version, %error, "the shadow model does not load; skipping it (serving is unaffected)");
                self.failed = Some((version, error));
            }
        } else {
            self.failed = None;
        }
        let shadow = models.shadow.take();
        let version = shadow.as_ref().map(|e| e.version.clone());
        if version != self.version {
            self.version = version;
            pool.set_shadow(shadow.map(|e| ServingModel {
                version: e.version.as_str().into(),
                traffic_share: 0.0,
                model: e.model,
            }));
        }
    }
}

/// Loads the registry's active versions (and shadow) once, then keeps the
/// pool in step with the registry until the returned task is aborted.
pub async fn follow_registry(
    registry: ModelRegistry,
    pool: InferenceHandle,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut current = Vec::new();
    let mut shadow = ShadowState::default();
    match registry.load_serving_and_shadow().await {
        Ok(mut models) => {
            shadow.apply(&pool, &mut models);
            let set = to_set(models.active);
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
            match registry.load_serving_and_shadow().await {
                Ok(mut models) => {
                    shadow.apply(&pool, &mut models);
                    let set = to_set(models.active);
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
