//! What a serving process loads: every active version (and the shadow),
//! fetched through the store, verified against the registry row, and cached
//! while it keeps serving.

use super::publish::check_loads;
use super::*;

/// What a serving process loads: the active versions and the shadow.
pub struct ServingModels {
    /// As [`ModelRegistry::load_serving`] returns them.
    pub active: Vec<ServingEntry>,
    /// The shadow version, loaded and verified (traffic share 0).
    pub shadow: Option<ServingEntry>,
    /// The shadow version that failed to load, and why (serving is unaffected).
    pub shadow_error: Option<(String, String)>,
}

/// One active model, loaded and verified, for the inference pool.
pub struct ServingEntry {
    pub version: String,
    pub traffic_share: f64,
    pub model: Arc<PurchaseModel>,
}

impl ModelRegistry {
    /// Every active version, loaded through the store and verified (manifest
    /// and weights sha256 against the registry row); largest share first.
    /// A model stays cached while its version is active, so calling this
    /// periodically costs one query when nothing changed. An error (database
    /// down, an object corrupt or missing) changes nothing: the caller keeps
    /// serving what it has.
    pub async fn load_serving(&self) -> anyhow::Result<Vec<ServingEntry>> {
        Ok(self.load(false).await?.active)
    }

    /// [`load_serving`](Self::load_serving) and the shadow version, loaded and
    /// verified the same way. A shadow that fails to load is reported in
    /// `shadow_error` (the active versions are returned all the same); an
    /// active version that fails to load fails the whole call, as before.
    pub async fn load_serving_and_shadow(&self) -> anyhow::Result<ServingModels> {
        self.load(true).await
    }

    async fn load(&self, with_shadow: bool) -> anyhow::Result<ServingModels> {
        let rows = model_version::Entity::find()
            .filter(model_version::Column::Status.is_in([Status::Active.as_str(), Status::Shadow.as_str()]))
            .order_by_desc(model_version::Column::TrafficShare)
            .order_by_asc(model_version::Column::Version)
            .all(&self.inner.db)
            .await
            .map_err(RegistryError::from)?;
        let mut out = ServingModels { active: Vec::with_capacity(rows.len()), shadow: None, shadow_error: None };
        for row in &rows {
            if row.status == Status::Active.as_str() {
                let model = self.loaded(row).await?;
                out.active.push(ServingEntry { version: row.version.clone(), traffic_share: row.traffic_share, model });
            } else if with_shadow {
                match self.loaded(row).await {
                    Ok(model) => {
                        out.shadow = Some(ServingEntry { version: row.version.clone(), traffic_share: 0.0, model })
                    }
                    Err(e) => out.shadow_error = Some((row.version.clone(), e.to_string())),
                }
            }
        }
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.retain(|v, _| rows.iter().any(|r| &r.version == v));
        }
        Ok(out)
    }

    /// The verified model of a registered version, from the cache or the store.
    pub async fn model(&self, version: &str) -> Result<Arc<PurchaseModel>, RegistryError> {
        let row = self.row(&self.inner.db, version).await?;
        self.loaded(&row).await
    }

    /// The verified model of `row`, from the cache or the store.
    pub(super) async fn loaded(&self, row: &model_version::Model) -> Result<Arc<PurchaseModel>, RegistryError> {
        if let Ok(cache) = self.inner.cache.lock() {
            if let Some((sha, model)) = cache.get(&row.version) {
                if *sha == row.sha256 {
                    return Ok(model.clone());
                }
            }
        }
        let store = &self.inner.store;
        let manifest = store.get_verified(&row.version, MANIFEST_FILE, &row.sha256).await?;
        let weights = store.get_verified(&row.version, WEIGHTS_FILE, &row.weights_sha256).await?;
        let model = Arc::new(check_loads(&row.version, manifest, weights).await?);
        if let Ok(mut cache) = self.inner.cache.lock() {
            cache.insert(row.version.clone(), (row.sha256.clone(), model.clone()));
        }
        Ok(model)
    }
}
