//! The model registry: which purchase-intent model versions exist (rows of
//! `model_versions`), which are active with which traffic share, and the
//! promotion history that `rollback` walks back through (`model_promotions`).
//!
//! - [`ModelRegistry::publish`] checks a model directory, puts its objects in
//!   the [`ModelStore`], then inserts a `candidate` row.
//! - [`ModelRegistry::promote`] makes a version the only active one (share 1,
//!   the others retired), or with a traffic share P (0 < P < 1) active next to
//!   the one active version, which keeps 1 − P: the A/B split (at most two
//!   active). The version is fetched and verified first: a corrupt or missing
//!   object refuses the promotion and leaves the active set as it was.
//! - [`ModelRegistry::rollback`] restores the active set from before the newest
//!   promotion not yet undone.
//! - [`ModelRegistry::shadow`] puts a published (non-active) version in
//!   shadow: served processes score every batch with it too, after answering,
//!   without using its scores. At most one shadow: a new one sends the old
//!   back to `candidate` (or `retired`, if it had been active).
//!   [`ModelRegistry::unshadow`] ends it; promoting the shadow makes it active.
//! - [`ModelRegistry::load_serving`] loads every active version through the
//!   store (verified, cached while it stays active or shadow) for the inference
//!   pool, [`ModelRegistry::load_serving_and_shadow`] the shadow version too;
//!   [`ModelRegistry::changes`] is bumped after every change made through
//!   this process.
//!
//! Every change runs in one transaction that first takes the registry's write
//! lock (a table lock on Postgres, SQLite's write lock), so concurrent
//! promotions from several processes apply one after the other.

use super::store::{sha256_hex, validate_version, ModelStore, StoreError};
use crate::jobs::train::artifact::{Manifest, PurchaseModel, MANIFEST_FILE, WEIGHTS_FILE};
use chrono::{DateTime, Utc};
use entities::{model_promotion, model_version};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The report subdirectory `publish` looks in when none is named:
/// `cartpulse train --out X --report X/report` puts the images there.
pub const REPORT_DIR: &str = "report";
/// Most report images stored with one version.
pub const MAX_REPORT_IMAGES: usize = 16;
/// Largest report image accepted (the training figures are ~50 kB).
pub const MAX_REPORT_IMAGE_BYTES: usize = 8 * 1024 * 1024;
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Whether `name` may be a report image: `[a-z0-9][a-z0-9_-]{0,63}.png`.
/// Checked before a name becomes part of a store key or a URL.
pub fn valid_report_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".png") else { return false };
    !stem.is_empty()
        && stem.len() <= 64
        && stem.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && stem.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// The store object of report image `name` (a flat name next to the manifest).
pub fn report_object(name: &str) -> String {
    format!("report-{name}")
}

/// One report image stored with a version (as kept in `model_versions.report`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportImage {
    /// `roc.png`, `calibration.png`, `confusion.png`, …
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// A report image as listed by `models list --json` / `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportImageInfo {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    /// Where the API serves it: `/v1/models/{version}/report/{name}` (read scope).
    pub url: String,
}

/// A version's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Published, never active (or not yet).
    Candidate,
    /// Scoring its traffic share of customers.
    Active,
    /// Scored alongside the active versions without its scores being used
    /// (`models shadow VERSION`; at most one).
    Shadow,
    /// Was active, is not any more.
    Retired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Candidate => "candidate",
            Status::Active => "active",
            Status::Shadow => "shadow",
            Status::Retired => "retired",
        }
    }
}

/// Everything the registry can fail with; the CLI prints it, the HTTP API
/// maps it to a status code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown model version {0:?} (see `cartpulse models list`)")]
    UnknownVersion(String),
    #[error("traffic share {0} is out of range: it must be strictly between 0 and 1 (without it the version becomes the only active one)")]
    TrafficOutOfRange(f64),
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    #[error("{0}")]
    Refused(String),
    /// The version is not in a state that allows the change (409 on HTTP).
    #[error("{0}")]
    WrongState(String),
    #[error("{dir} is not a valid model directory: {cause}")]
    InvalidModel { dir: String, cause: String },
    #[error(
        "model {version} is already published with different contents (registry manifest sha256 {registered}, \
         this directory's {offered}); published versions are immutable"
    )]
    AlreadyPublished { version: String, registered: String, offered: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "model {version} is already published with other report images (registered: {registered}; offered: \
         {offered}); published versions are immutable"
    )]
    ReportDiffers { version: String, registered: String, offered: String },
    #[error("model {version} has no report image {name:?} (it has: {available})")]
    UnknownReportImage { version: String, name: String, available: String },
    #[error("model {version}: its verified objects do not load: {cause}")]
    Load { version: String, cause: String },
    #[error("model registry database error: {0}")]
    Database(#[from] DbErr),
}

/// One row of `models list` / `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub version: String,
    pub status: String,
    pub traffic_share: f64,
    /// The manifest's CV figures (accuracy, accuracy_std, auc, f1, precision, recall, folds, threshold).
    pub metrics: serde_json::Value,
    pub store_key: String,
    /// sha256 of `manifest.json`.
    pub sha256: String,
    /// sha256 of `model.safetensors`.
    pub weights_sha256: String,
    /// The report images stored with the version (empty when published without).
    pub report: Vec<ReportImageInfo>,
    pub created_at: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
    pub promoted_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<model_version::Model> for ModelInfo {
    fn from(m: model_version::Model) -> Self {
        let report = report_images(&m)
            .into_iter()
            .map(|r| ReportImageInfo {
                url: format!("/v1/models/{}/report/{}", m.version, r.name),
                name: r.name,
                sha256: r.sha256,
                bytes: r.bytes,
            })
            .collect();
        ModelInfo {
            report,
            metrics: serde_json::from_str(&m.metrics).unwrap_or(serde_json::Value::Null),
            version: m.version,
            status: m.status,
            traffic_share: m.traffic_share,
            store_key: m.store_key,
            sha256: m.sha256,
            weights_sha256: m.weights_sha256,
            created_at: m.created_at,
            published_at: m.published_at,
            promoted_at: m.promoted_at,
            retired_at: m.retired_at,
        }
    }
}

/// An active version and its share of customers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub version: String,
    pub traffic_share: f64,
}

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

/// The outcome of `promote` or `rollback`: the active set before and after.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The version promoted, or the one whose promotion was rolled back.
    pub version: String,
    pub before: Vec<Share>,
    pub active: Vec<Share>,
    /// Versions that stopped being active.
    pub retired: Vec<String>,
    /// False when the promotion changed nothing (the version was already the only active one).
    pub changed: bool,
}

/// The outcome of `shadow` or `unshadow`.
#[derive(Clone, Debug, Serialize)]
pub struct ShadowChange {
    /// The shadow version after the change (`None` once cleared).
    pub shadow: Option<String>,
    /// The shadow version before it.
    pub before: Option<String>,
    /// The version that stopped being the shadow, and the status it went back to.
    pub released: Option<Released>,
    /// False when nothing changed (the version was already the shadow, or nothing was in shadow).
    pub changed: bool,
}

/// A version sent back from shadow.
#[derive(Clone, Debug, Serialize)]
pub struct Released {
    pub version: String,
    pub status: String,
}

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

/// A handle to the registry (cheap to clone; clones share the cache and the revision).
#[derive(Clone)]
pub struct ModelRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    store: ModelStore,
    revision: tokio::sync::watch::Sender<u64>,
    /// Loaded active versions: version → (manifest sha256, model).
    cache: Mutex<HashMap<String, (String, Arc<PurchaseModel>)>>,
}

const KIND_PROMOTE: &str = "promote";
const KIND_ROLLBACK: &str = "rollback";
const KIND_SHADOW: &str = "shadow";
const KIND_UNSHADOW: &str = "unshadow";

impl ModelRegistry {
    pub fn new(db: DatabaseConnection, store: ModelStore) -> ModelRegistry {
        let (revision, _) = tokio::sync::watch::channel(0);
        ModelRegistry { inner: Arc::new(Inner { db, store, revision, cache: Mutex::new(HashMap::new()) }) }
    }

    /// The registry over `db` with the store the settings name.
    pub async fn from_settings(
        db: DatabaseConnection,
        settings: &crate::config::Settings,
    ) -> Result<ModelRegistry, RegistryError> {
        Ok(ModelRegistry::new(db, ModelStore::from_settings(settings).await?))
    }

    pub fn store(&self) -> &ModelStore {
        &self.inner.store
    }

    /// Bumped after every publish, promote and rollback done through this
    /// process (other replicas' changes show up only through `load_serving`).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    fn bump(&self) {
        self.inner.revision.send_modify(|r| *r += 1);
    }

    /// Every version, newest published first.
    pub async fn list(&self) -> Result<Vec<ModelInfo>, RegistryError> {
        let rows = model_version::Entity::find()
            .order_by_desc(model_version::Column::PublishedAt)
            .order_by_desc(model_version::Column::Version)
            .all(&self.inner.db)
            .await?;
        Ok(rows.into_iter().map(ModelInfo::from).collect())
    }

    /// One version.
    pub async fn get(&self, version: &str) -> Result<ModelInfo, RegistryError> {
        Ok(self.row(&self.inner.db, version).await?.into())
    }

    async fn row(&self, db: &impl ConnectionTrait, version: &str) -> Result<model_version::Model, RegistryError> {
        model_version::Entity::find_by_id(version.to_owned())
            .one(db)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion(version.to_owned()))
    }

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
        let images = read_report(dir, report).await.map_err(invalid)?;
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

    /// The bytes of report image `name` of `version`, read from the store and
    /// checked against the sha256 registered at publication.
    pub async fn report_image(&self, version: &str, name: &str) -> Result<Vec<u8>, RegistryError> {
        let row = self.row(&self.inner.db, version).await?;
        let images = report_images(&row);
        let unknown = || RegistryError::UnknownReportImage {
            version: version.to_owned(),
            name: name.to_owned(),
            available: if images.is_empty() {
                "no report images".into()
            } else {
                images.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            },
        };
        if !valid_report_name(name) {
            return Err(unknown());
        }
        let image = images.iter().find(|r| r.name == name).ok_or_else(unknown)?;
        Ok(self.inner.store.get_verified(version, &report_object(name), &image.sha256).await?)
    }

    /// Makes `version` active. Without `traffic` it becomes the only active
    /// version (share 1) and the others are retired; with `traffic` P
    /// (0 < P < 1) it serves P of the customers next to the one other active
    /// version, which keeps 1 − P. The version's objects are fetched and
    /// verified first; a corrupt or missing one refuses the promotion.
    pub async fn promote(&self, version: &str, traffic: Option<f64>) -> Result<Change, RegistryError> {
        if let Some(p) = traffic {
            if !(p.is_finite() && p > 0.0 && p < 1.0) {
                return Err(RegistryError::TrafficOutOfRange(p));
            }
        }
        let row = self.row(&self.inner.db, version).await?;
        self.loaded(&row).await?;

        let txn = self.begin_locked().await?;
        let row = self.row(&txn, version).await?;
        let before = active_shares(&txn).await?;
        let after = match traffic {
            None => vec![Share { version: row.version.clone(), traffic_share: 1.0 }],
            Some(p) => {
                let others: Vec<&Share> = before.iter().filter(|s| s.version != row.version).collect();
                match others.as_slice() {
                    [] => {
                        return Err(RegistryError::Refused(format!(
                        "no other version is active to share traffic with; promote {version} without --traffic first"
                    )))
                    }
                    [other] => vec![
                        Share { version: other.version.clone(), traffic_share: 1.0 - p },
                        Share { version: row.version.clone(), traffic_share: p },
                    ],
                    [a, b, ..] => {
                        return Err(RegistryError::Refused(format!(
                            "two versions are already active ({} and {}); promote one of them without --traffic, \
                             or roll back, before starting another A/B split",
                            a.version, b.version
                        )))
                    }
                }
            }
        };
        if same_set(&before, &after) {
            txn.commit().await?;
            return Ok(Change { version: version.to_owned(), active: after, before, retired: vec![], changed: false });
        }
        let now = Utc::now();
        let retired = apply(&txn, &before, &after, now).await?;
        record(&txn, KIND_PROMOTE, version, &before, &after, now).await?;
        txn.commit().await?;
        tracing::info!(%version, ?traffic, "model promoted");
        self.bump();
        Ok(Change { version: version.to_owned(), before, active: after, retired, changed: true })
    }

    /// Puts `version` in shadow: every serving process scores each batch with
    /// it as well, after the replies are sent, and only counts how it
    /// compares. Any published version that is not active may be shadowed
    /// (its objects are fetched and verified first, like a promotion); the
    /// previous shadow, if any, goes back to `candidate` (`retired` if it had
    /// been active). Recorded in `model_promotions` (kind `shadow`); rollback
    /// ignores it.
    pub async fn shadow(&self, version: &str) -> Result<ShadowChange, RegistryError> {
        let row = self.row(&self.inner.db, version).await?;
        if row.status == Status::Active.as_str() {
            return Err(not_shadowable(version));
        }
        self.loaded(&row).await?;

        let txn = self.begin_locked().await?;
        let row = self.row(&txn, version).await?;
        if row.status == Status::Active.as_str() {
            return Err(not_shadowable(version));
        }
        let current = shadow_row(&txn).await?;
        let before = current.as_ref().map(|r| r.version.clone());
        if before.as_deref() == Some(version) {
            txn.commit().await?;
            return Ok(ShadowChange { shadow: before.clone(), before, released: None, changed: false });
        }
        let released = match current {
            Some(old) => Some(release(&txn, old).await?),
            None => None,
        };
        let mut m: model_version::ActiveModel = row.into();
        m.status = Set(Status::Shadow.as_str().to_owned());
        m.traffic_share = Set(0.0);
        m.update(&txn).await?;
        let now = Utc::now();
        let shares = |v: Option<&str>| v.map(|v| vec![Share { version: v.to_owned(), traffic_share: 0.0 }]);
        let (b, a) = (shares(before.as_deref()).unwrap_or_default(), shares(Some(version)).unwrap_or_default());
        record(&txn, KIND_SHADOW, version, &b, &a, now).await?;
        txn.commit().await?;
        tracing::info!(%version, previous = ?before, "model version in shadow");
        self.bump();
        Ok(ShadowChange { shadow: Some(version.to_owned()), before, released, changed: true })
    }

    /// Ends the shadow deployment: the shadow version goes back to
    /// `candidate` (`retired` if it had been active). Nothing in shadow is
    /// not an error (`changed: false`). Recorded in `model_promotions` (kind
    /// `unshadow`).
    pub async fn unshadow(&self) -> Result<ShadowChange, RegistryError> {
        let txn = self.begin_locked().await?;
        let Some(current) = shadow_row(&txn).await? else {
            txn.commit().await?;
            return Ok(ShadowChange { shadow: None, before: None, released: None, changed: false });
        };
        let version = current.version.clone();
        let released = release(&txn, current).await?;
        let b = vec![Share { version: version.clone(), traffic_share: 0.0 }];
        record(&txn, KIND_UNSHADOW, &version, &b, &[], Utc::now()).await?;
        txn.commit().await?;
        tracing::info!(%version, "model shadow cleared");
        self.bump();
        Ok(ShadowChange { shadow: None, before: Some(version), released: Some(released), changed: true })
    }

    /// Restores the active versions (and shares) from before the newest
    /// promotion that has not been rolled back, and retires the others. The
    /// restored versions are fetched and verified first.
    pub async fn rollback(&self) -> Result<Change, RegistryError> {
        let last = self.last_promotion(&self.inner.db).await?.ok_or_else(|| {
            RegistryError::NothingToRollBack("no promotion has been made (or all were rolled back)".into())
        })?;
        let target: Vec<Share> = serde_json::from_str(&last.before)
            .map_err(|e| RegistryError::Refused(format!("promotion #{} has an unreadable history: {e}", last.id)))?;
        if target.is_empty() {
            return Err(RegistryError::NothingToRollBack(format!(
                "no version was active before {} was promoted",
                last.version
            )));
        }
        for s in &target {
            let row = self.row(&self.inner.db, &s.version).await?;
            self.loaded(&row).await?;
        }

        let txn = self.begin_locked().await?;
        match self.last_promotion(&txn).await? {
            Some(l) if l.id == last.id => {}
            _ => return Err(RegistryError::Refused("the registry changed while rolling back; try again".into())),
        }
        let before = active_shares(&txn).await?;
        let now = Utc::now();
        let retired = apply(&txn, &before, &target, now).await?;
        let mut undone: model_promotion::ActiveModel = last.clone().into();
        undone.undone_at = Set(Some(now));
        undone.update(&txn).await?;
        record(&txn, KIND_ROLLBACK, &last.version, &before, &target, now).await?;
        txn.commit().await?;
        tracing::info!(version = %last.version, "model promotion rolled back");
        self.bump();
        Ok(Change { version: last.version, before, active: target, retired, changed: true })
    }

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

    /// The verified model of `row`, from the cache or the store.
    async fn loaded(&self, row: &model_version::Model) -> Result<Arc<PurchaseModel>, RegistryError> {
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

    async fn last_promotion(&self, db: &impl ConnectionTrait) -> Result<Option<model_promotion::Model>, DbErr> {
        model_promotion::Entity::find()
            .filter(model_promotion::Column::Kind.eq(KIND_PROMOTE))
            .filter(model_promotion::Column::UndoneAt.is_null())
            .order_by_desc(model_promotion::Column::Id)
            .one(db)
            .await
    }

    /// A transaction holding the registry's write lock.
    async fn begin_locked(&self) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.inner.db.begin().await?;
        match txn.get_database_backend() {
            DatabaseBackend::Postgres => {
                txn.execute_unprepared("LOCK TABLE model_versions IN EXCLUSIVE MODE").await?;
            }
            // A write statement takes SQLite's write lock for the rest of the
            // transaction (deferred transactions otherwise read first and may
            // fail to upgrade).
            _ => {
                txn.execute_unprepared("UPDATE model_versions SET status = status WHERE 1 = 0").await?;
            }
        }
        Ok(txn)
    }
}

fn not_shadowable(version: &str) -> RegistryError {
    RegistryError::WrongState(format!(
        "{version} is active; only a version that is not serving can be put in shadow (promote another version, \
         or roll back, first)"
    ))
}

/// The shadow version's row, if any (the newest, should there ever be more).
async fn shadow_row(db: &impl ConnectionTrait) -> Result<Option<model_version::Model>, DbErr> {
    model_version::Entity::find()
        .filter(model_version::Column::Status.eq(Status::Shadow.as_str()))
        .order_by_desc(model_version::Column::PublishedAt)
        .one(db)
        .await
}

/// Sends a shadow version back to `candidate`, or `retired` if it had been active.
async fn release(txn: &DatabaseTransaction, row: model_version::Model) -> Result<Released, DbErr> {
    let status = if row.promoted_at.is_some() { Status::Retired } else { Status::Candidate };
    let version = row.version.clone();
    let mut m: model_version::ActiveModel = row.into();
    m.status = Set(status.as_str().to_owned());
    m.traffic_share = Set(0.0);
    m.update(txn).await?;
    Ok(Released { version, status: status.as_str().to_owned() })
}

/// Parses the bytes as a model directory would be and loads it (on the
/// blocking pool: it builds tensors).
async fn check_loads(version: &str, manifest: Vec<u8>, weights: Vec<u8>) -> Result<PurchaseModel, RegistryError> {
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

/// The report images of a registry row (none when the column is unreadable).
fn report_images(row: &model_version::Model) -> Vec<ReportImage> {
    serde_json::from_str(&row.report).unwrap_or_default()
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

/// Reads the report images to publish: every `*.png` in `report`, or in
/// `<dir>/report` when no directory is named (nothing when it does not
/// exist). Other files (the figures' CSV data) are left out. Sorted by name.
async fn read_report(dir: &Path, report: Option<&Path>) -> Result<Vec<(ReportImage, Vec<u8>)>, String> {
    let (rdir, named): (PathBuf, bool) = match report {
        Some(r) => (r.to_owned(), true),
        None => (dir.join(REPORT_DIR), false),
    };
    let mut entries = match tokio::fs::read_dir(&rdir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(vec![]),
        Err(e) => return Err(format!("reading the report directory {}: {e}", rdir.display())),
    };
    let mut names = Vec::new();
    loop {
        match entries.next_entry().await {
            Ok(Some(entry)) => {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.to_ascii_lowercase().ends_with(".png") {
                    names.push(name);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("reading the report directory {}: {e}", rdir.display())),
        }
    }
    names.sort();
    if names.len() > MAX_REPORT_IMAGES {
        return Err(format!(
            "{} has {} PNG files; at most {MAX_REPORT_IMAGES} report images are stored with a version",
            rdir.display(),
            names.len()
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !valid_report_name(&name) {
            return Err(format!(
                "report image {name:?} in {}: names are 1-64 characters of a-z 0-9 _ - (starting with a letter or \
                 digit) and .png",
                rdir.display()
            ));
        }
        let path = rdir.join(&name);
        let bytes = tokio::fs::read(&path).await.map_err(|e| format!("reading {}: {e}", path.display()))?;
        if bytes.len() > MAX_REPORT_IMAGE_BYTES {
            return Err(format!(
                "{} is {} bytes; report images are at most {MAX_REPORT_IMAGE_BYTES}",
                path.display(),
                bytes.len()
            ));
        }
        if !bytes.starts_with(PNG_SIGNATURE) {
            return Err(format!("{} is not a PNG image", path.display()));
        }
        let image = ReportImage { name, sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 };
        out.push((image, bytes));
    }
    Ok(out)
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

async fn active_shares(db: &impl ConnectionTrait) -> Result<Vec<Share>, DbErr> {
    Ok(model_version::Entity::find()
        .filter(model_version::Column::Status.eq(Status::Active.as_str()))
        .order_by_desc(model_version::Column::TrafficShare)
        .order_by_asc(model_version::Column::Version)
        .all(db)
        .await?
        .into_iter()
        .map(|r| Share { version: r.version, traffic_share: r.traffic_share })
        .collect())
}

fn same_set(a: &[Share], b: &[Share]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| y.version == x.version && (y.traffic_share - x.traffic_share).abs() < 1e-12))
}

/// Moves the registry from `before` to `after`: versions only in `before` are
/// retired; those in `after` are active with their shares. Returns the retired.
async fn apply(
    txn: &DatabaseTransaction,
    before: &[Share],
    after: &[Share],
    now: DateTime<Utc>,
) -> Result<Vec<String>, RegistryError> {
    let mut retired = Vec::new();
    for s in before.iter().filter(|s| !after.iter().any(|a| a.version == s.version)) {
        model_version::Entity::update_many()
            .col_expr(model_version::Column::Status, sea_orm::sea_query::Expr::value(Status::Retired.as_str()))
            .col_expr(model_version::Column::TrafficShare, sea_orm::sea_query::Expr::value(0.0))
            .col_expr(model_version::Column::RetiredAt, sea_orm::sea_query::Expr::value(now))
            .filter(model_version::Column::Version.eq(s.version.as_str()))
            .exec(txn)
            .await?;
        retired.push(s.version.clone());
    }
    for s in after {
        let row = model_version::Entity::find_by_id(s.version.clone())
            .one(txn)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion(s.version.clone()))?;
        let was_active = row.status == Status::Active.as_str();
        let mut m: model_version::ActiveModel = row.into();
        m.status = Set(Status::Active.as_str().to_owned());
        m.traffic_share = Set(s.traffic_share);
        if !was_active {
            m.promoted_at = Set(Some(now));
            m.retired_at = Set(None);
        }
        m.update(txn).await?;
    }
    Ok(retired)
}

async fn record(
    txn: &DatabaseTransaction,
    kind: &str,
    version: &str,
    before: &[Share],
    after: &[Share],
    now: DateTime<Utc>,
) -> Result<(), RegistryError> {
    let to_json = |s: &[Share]| serde_json::to_string(s).unwrap_or_else(|_| "[]".into());
    model_promotion::ActiveModel {
        kind: Set(kind.to_owned()),
        version: Set(version.to_owned()),
        before: Set(to_json(before)),
        after: Set(to_json(after)),
        created_at: Set(now),
        undone_at: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}
