//! Customer snapshots: the session actor's state as of `last_seq`, and the
//! profile features derived from it for readers that do not go through actors.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: String,
    /// Log position of the last event folded into `state`.
    pub last_seq: i64,
    /// The actor state as JSON (`actors::customer::CustomerState`).
    pub state: String,
    /// Profile features as JSON, as of `updated_at`.
    pub profile: String,
    pub updated_at: ChronoDateTimeUtc,
    /// Segmentation version of `segment`; null until the actor assigned one.
    pub segment_version: Option<i32>,
    /// Segment index the actor assigned in `segment_version` (nearest centroid).
    pub segment: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
