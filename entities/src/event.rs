//! The durable event log: every acknowledged event, once, in commit order.
//! Session actors rebuild their state from a snapshot plus this log's tail.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Position in the log, assigned at commit.
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    pub customer_id: String,
    pub session_id: Option<String>,
    pub event_type: String,
    pub event_time: ChronoDateTimeUtc,
    pub received_at: ChronoDateTimeUtc,
    /// The event's payload as JSON (`actors::event::EventKind`, tagged by
    /// `type`); ids and time are in the columns above.
    pub body: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
