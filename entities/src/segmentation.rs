//! Segmentation versions: the output of one `cartpulse segment` run. The JSON
//! columns are written by `cartpulse::segment` (see its module doc for the
//! transform the scaler describes); at most one row is `active`, set by
//! `cartpulse::segment::assign::activate`.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "segmentations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub version: i32,
    pub created_at: ChronoDateTimeUtc,
    pub k: i32,
    /// Sum of squared distances to the nearest centroid, in the scaled space.
    pub inertia: f64,
    /// Mean silhouette (on a sample when the data are large); `None` if not computed.
    pub silhouette: Option<f64>,
    pub n_customers: i32,
    /// JSON array of the profile feature names, in matrix column order.
    pub feature_names: String,
    /// JSON object: which features are log1p'd, and per-feature median and IQR.
    pub scaler: String,
    /// JSON array of k arrays (centroids in the scaled space).
    pub centroids: String,
    /// JSON array of k customer counts.
    pub sizes: String,
    /// JSON array of k plain-words segment names.
    pub names: String,
    pub active: bool,
    /// When this version was last activated; null if never.
    pub activated_at: Option<ChronoDateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
