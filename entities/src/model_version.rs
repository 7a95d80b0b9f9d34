//! Published purchase-intent model versions (the model registry). A row is
//! written by `cartpulse models publish` after the version's objects are in
//! the model store; `status` moves between `candidate`, `active`, `shadow` and
//! `retired`, and the active rows' `traffic_share`s sum to 1 (two active rows
//! are an A/B split). See `cartpulse::models::registry`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_versions")]
pub struct Model {
    /// The manifest's `model_version`, e.g. `pi-20261127T101500Z-abcd1234`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: String,
    /// JSON object of the manifest's CV figures (accuracy, accuracy_std, auc,
    /// f1, precision, recall, folds, threshold).
    pub metrics: String,
    /// Where the version's objects are: `<dir>/<version>` or `s3://bucket/prefix/<version>`.
    pub store_key: String,
    /// sha256 (hex) of `manifest.json` as published.
    pub sha256: String,
    /// sha256 (hex) of `model.safetensors` as published.
    pub weights_sha256: String,
    /// JSON array of the report images stored with the version
    /// (`{"name": "roc.png", "sha256", "bytes"}`), `[]` when it has none.
    pub report: String,
    /// `candidate`, `active`, `shadow` or `retired`.
    pub status: String,
    /// Share of customers scored by this version while active (0 otherwise).
    pub traffic_share: f64,
    /// When the model was trained (the manifest's `created_at`).
    pub created_at: ChronoDateTimeUtc,
    pub published_at: ChronoDateTimeUtc,
    /// When it last became active.
    pub promoted_at: Option<ChronoDateTimeUtc>,
    /// When it last stopped being active.
    pub retired_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
