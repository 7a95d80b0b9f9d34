//! The history of the model registry's promotions: one row per `promote` or
//! `rollback`, with the active versions and shares before and after it (JSON
//! arrays of `{"version", "traffic_share"}`). `models rollback` restores the
//! `before` of the newest promotion not yet undone and marks it undone, so
//! successive rollbacks walk back through the promotions.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "model_promotions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// `promote` or `rollback`.
    pub kind: String,
    /// The version promoted, or (for a rollback) the one rolled back.
    pub version: String,
    pub before: String,
    pub after: String,
    pub created_at: ChronoDateTimeUtc,
    /// Set on a `promote` row when a rollback restored its `before`.
    pub undone_at: Option<ChronoDateTimeUtc>,
    /// Why (JSON), for changes `cartpulse retrain` decided: the decision
    /// and the figures that led to it.
    pub reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
