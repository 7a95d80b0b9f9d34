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
//!
//! The code is split by concern: [`publish`] (checking and storing a model
//! directory), [`promotion`] (promote, shadow, roll back and their history),
//! [`serving`] (loading the active versions for the inference pool) and
//! [`reports`] (the report images stored with a version).

mod promotion;
mod publish;
mod reports;
mod serving;

pub use promotion::{Change, Released, ShadowChange, Share, KIND_PROMOTE, KIND_SHADOW, KIND_UNSHADOW};
pub use publish::Published;
use reports::report_images;
pub use reports::{
    report_object, valid_report_name, ReportImage, ReportImageInfo, MAX_REPORT_IMAGES, MAX_REPORT_IMAGE_BYTES,
    REPORT_DIR,
};
pub use serving::{ServingEntry, ServingModels};

use super::store::{sha256_hex, validate_version, ModelStore, StoreError};
use crate::models::artifact::PurchaseModel;
use crate::models::manifest::{Manifest, MANIFEST_FILE, WEIGHTS_FILE};
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
    #[error("model directory {dir}: its report images cannot be published")]
    InvalidReport { dir: String, source: reports::ReportError },
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
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub version: String,
    /// `candidate`, `active`, `shadow` or `retired`.
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

    /// The database the registry (and the sessions it evaluates) live in.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
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
