//! Publishing: a model directory checked (it loads, its files match what
//! the store already holds), put in the store, and registered as a candidate.

use super::reports::{read_report, ReportImage};
use super::*;

/// The outcome of `publish`.
#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub version: String,
    pub store_key: String,
    pub sha256: String,
    pub weights_sha256: String,
    /// The report images stored with it (names).
    pub report: Vec<String>,
    /// The same version with the same bytes was already published (nothing changed).
    pub already_published: bool,
}

impl ModelRegistry {
    /// [`ModelRegistry::publish_with_report`] with the report images found in
    /// `<dir>/report` (none when that directory does not exist).
    pub async fn publish(&self, dir: &Path) -> Result<Published, RegistryError> {
        self.publish_with_report(dir, None).await
    }

    /// Checks the model directory (format, weights sha256, shapes) and the
    /// report images (every `*.png` of `report`, default `<dir>/report` when it
    /// exists: valid names, PNG bytes, sizes), puts the objects in the store
    /// (weights, images, manifest last) and registers the version as a
    /// candidate. Publishing the same directory again changes nothing; a
    /// different model, or other report images, under a published version
    /// are refused.
    pub async fn publish_with_report(&self, dir: &Path, report: Option<&Path>) -> Result<Published, RegistryError> {
        let invalid = |cause: String| RegistryError::InvalidModel { dir: dir.display().to_string(), cause };
        let manifest_bytes = tokio::fs::read(dir.join(MANIFEST_FILE))
            .await
            .map_err(|e| invalid(format!("reading {MANIFEST_FILE}: {e}")))?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| invalid(format!("parsing {MANIFEST_FILE}: {e}")))?;
        if manifest.weights.file != WEIGHTS_FILE {
            return Err(invalid(format!("weights file is {:?}, expected {WEIGHTS_FILE:?}", manifest.weights.file)));
        }
        let weights_bytes = tokio::fs::read(dir.join(WEIGHTS_FILE))
            .await
            .map_err(|e| invalid(format!("reading {WEIGHTS_FILE}: {e}")))?;
        let version = manifest.model_version.clone();
        validate_version(&version)?;
        let sha256 = sha256_hex(&manifest_bytes);
        let weights_sha256 = sha256_hex(&weights_bytes);
        if weights_sha256 != manifest.weights.sha256 {
            return Err(invalid(format!(
                "{WEIGHTS_FILE} has sha256 {weights_sha256}, the manifest says {}",
                manifest.weights.sha256
            )));
        }
        // Everything a loader checks (format, encoding version, shapes), on the bytes read above.
        check_loads(&version, manifest_bytes.clone(), weights_bytes.clone()).await.map_err(|e| match e {
            RegistryError::Load { cause, .. } => invalid(cause),
            other => other,
        })?;
        let images = read_report(dir, report)
            .await
            .map_err(|source| RegistryError::InvalidReport { dir: dir.display().to_string(), source })?;
        let report: Vec<ReportImage> = images.iter().map(|(r, _)| r.clone()).collect();
        if let Some(row) = model_version::Entity::find_by_id(version.clone()).one(&self.inner.db).await? {
            check_same(&row, &version, &sha256, &report)?;
        }
        let store = &self.inner.store;
        store.put(&version, WEIGHTS_FILE, weights_bytes).await?;
        for (image, bytes) in images {
            store.put(&version, &report_object(&image.name), bytes).await?;
        }
        store.put(&version, MANIFEST_FILE, manifest_bytes).await?;
        let names: Vec<String> = report.iter().map(|r| r.name.clone()).collect();
        let store_key = store.version_location(&version);
        let now = Utc::now();
        let row = model_version::ActiveModel {
            version: Set(version.clone()),
            metrics: Set(metrics_json(&manifest).to_string()),
            store_key: Set(store_key.clone()),
            sha256: Set(sha256.clone()),
            weights_sha256: Set(weights_sha256.clone()),
            report: Set(serde_json::to_string(&report).unwrap_or_else(|_| "[]".into())),
            status: Set(Status::Candidate.as_str().to_owned()),
            traffic_share: Set(0.0),
            created_at: Set(manifest.created_at),
            published_at: Set(now),
            promoted_at: Set(None),
            retired_at: Set(None),
        };
        let inserted = model_version::Entity::insert(row)
            .on_conflict(sea_orm::sea_query::OnConflict::column(model_version::Column::Version).do_nothing().to_owned())
            .exec_without_returning(&self.inner.db)
            .await?;
        if inserted == 0 {
            // Published before (or by a concurrent publisher): fine if it is the same model.
            let row = self.row(&self.inner.db, &version).await?;
            check_same(&row, &version, &sha256, &report)?;
            return Ok(Published {
                version,
                store_key: row.store_key,
                sha256,
                weights_sha256,
                report: names,
                already_published: true,
            });
        }
        tracing::info!(%version, %store_key, report = names.len(), "model published");
        self.bump();
        Ok(Published { version, store_key, sha256, weights_sha256, report: names, already_published: false })
    }
}

/// Parses the bytes as a model directory would be and loads it (on the
/// blocking pool: it builds tensors).
pub(super) async fn check_loads(
    version: &str,
    manifest: Vec<u8>,
    weights: Vec<u8>,
) -> Result<PurchaseModel, RegistryError> {
    let v = version.to_owned();
    let fail = move |cause: String| RegistryError::Load { version: v.clone(), cause };
    let version = version.to_owned();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<PurchaseModel> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(MANIFEST_FILE), &manifest)?;
        std::fs::write(dir.path().join(WEIGHTS_FILE), &weights)?;
        let model = PurchaseModel::load(dir.path())?;
        anyhow::ensure!(
            model.manifest.model_version == version,
            "the manifest names version {:?}",
            model.manifest.model_version
        );
        Ok(model)
    })
    .await;
    match r {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(fail(format!("{e:#}"))),
        Err(e) => Err(fail(format!("loading task failed: {e}"))),
    }
}

/// A published row may be published again only with the same manifest and report images.
fn check_same(
    row: &model_version::Model,
    version: &str,
    sha256: &str,
    report: &[ReportImage],
) -> Result<(), RegistryError> {
    if row.sha256 != sha256 {
        return Err(RegistryError::AlreadyPublished {
            version: version.to_owned(),
            registered: row.sha256.clone(),
            offered: sha256.to_owned(),
        });
    }
    let registered = report_images(row);
    if registered != report {
        let names = |r: &[ReportImage]| {
            if r.is_empty() {
                "none".to_owned()
            } else {
                r.iter()
                    .map(|i| format!("{} ({}…)", i.name, &i.sha256[..12.min(i.sha256.len())]))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        return Err(RegistryError::ReportDiffers {
            version: version.to_owned(),
            registered: names(&registered),
            offered: names(report),
        });
    }
    Ok(())
}

fn metrics_json(m: &Manifest) -> serde_json::Value {
    let r = &m.cv.report;
    serde_json::json!({
        "accuracy": r.accuracy,
        "accuracy_std": r.accuracy_std,
        "auc": r.auc,
        "f1": r.f1,
        "precision": r.precision,
        "recall": r.recall,
        "folds": m.cv.folds,
        "threshold": m.threshold,
    })
}
