//! Sessions: one row per session id, written by the actors' snapshots.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    pub customer_id: String,
    /// `open` or `closed`.
    pub status: String,
    pub started_at: Option<ChronoDateTimeUtc>,
    pub ended_at: Option<ChronoDateTimeUtc>,
    pub n_events: i32,
    pub purchased: bool,
    /// The 17 UCI features as JSON (file column names), when known.
    pub features: Option<String>,
    /// Why the session closed: `session_end`, `inactivity`, `new_session`.
    pub close_reason: Option<String>,
    pub score: Option<f64>,
    pub model_version: Option<String>,
    /// The scores the session got while open, from `model_version`, when it
    /// reached 1, 3, 5 and 10 page views (the live evaluation by age).
    pub score_p1: Option<f64>,
    pub score_p3: Option<f64>,
    pub score_p5: Option<f64>,
    pub score_p10: Option<f64>,
    /// When the row was first written (never updated); NULL for rows older
    /// than this column.
    pub first_written_at: Option<ChronoDateTimeUtc>,
    pub updated_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
