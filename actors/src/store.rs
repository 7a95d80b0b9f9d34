//! Database access of the runtime core: loading customer snapshots with the
//! log tail after them, and writing snapshot batches.

use crate::customer::state::{CustomerState, SessionView};
use crate::event::{CustomerId, Event, LoggedEvent};
use crate::messages::lifecycle::Snapshot;
use chrono::Utc;
use entities::{customer, event, session};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use std::collections::HashMap;

/// What the database holds for one customer: the last snapshot (if any) and
/// the logged events after it, in log order.
#[derive(Debug, Default)]
pub struct Stored {
    pub snapshot: Option<CustomerState>,
    pub tail: Vec<LoggedEvent>,
}

/// Most ids in one `IN (…)` list.
const LOAD_CHUNK: usize = 400;

/// Loads snapshots and tails for many customers with a few queries.
pub async fn load(db: &DatabaseConnection, ids: &[CustomerId]) -> Result<HashMap<CustomerId, Stored>, DbErr> {
    let mut out: HashMap<CustomerId, Stored> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOAD_CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
        let snaps = customer::Entity::find()
            .filter(customer::Column::CustomerId.is_in(keys.clone()))
            .all(db)
            .await?;
        let mut min_seq = i64::MAX;
        let mut after: HashMap<String, i64> = HashMap::new();
        for row in snaps {
            match serde_json::from_str::<CustomerState>(&row.state) {
                Ok(state) => {
                    after.insert(row.customer_id.clone(), state.last_seq);
                    out.entry(CustomerId::new_unchecked(row.customer_id)).or_default().snapshot = Some(state);
                }
                Err(e) => {
                    // A snapshot we cannot read is rebuilt from the log.
                    tracing::error!(customer = %row.customer_id, error = %e, "unreadable snapshot; rebuilding from the event log");
                }
            }
        }
        for k in &keys {
            min_seq = min_seq.min(after.get(*k).copied().unwrap_or(0));
        }
        let rows: Vec<(i64, String, String)> = event::Entity::find()
            .select_only()
            .column(event::Column::Seq)
            .column(event::Column::CustomerId)
            .column(event::Column::Body)
            .filter(event::Column::CustomerId.is_in(keys.clone()))
            .filter(event::Column::Seq.gt(min_seq))
            .order_by_asc(event::Column::Seq)
            .into_tuple()
            .all(db)
            .await?;
        for (seq, cid, body) in rows {
            if seq <= after.get(&cid).copied().unwrap_or(0) {
                continue;
            }
            match serde_json::from_str::<Event>(&body) {
                Ok(event) => out.entry(CustomerId::new_unchecked(cid)).or_default().tail.push(LoggedEvent { seq, event }),
                Err(e) => tracing::error!(seq, error = %e, "unreadable event in the log; skipped"),
            }
        }
    }
    Ok(out)
}

/// Rows per statement; keeps well under SQLite's and Postgres' bind limits.
const WRITE_CHUNK: usize = 500;

/// Writes snapshots in one transaction. Rows never move backwards: a customer
/// row is replaced only by a snapshot at the same or a later log position, a
/// session row only by one with at least as many events.
pub async fn write_snapshots(
    db: &DatabaseConnection,
    customers: &[Snapshot],
    sessions: &[SessionView],
) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    let now = Utc::now();
    for chunk in customers.chunks(WRITE_CHUNK) {
        let mut q = Query::insert();
        q.into_table(customer::Entity).columns([
            customer::Column::CustomerId,
            customer::Column::LastSeq,
            customer::Column::State,
            customer::Column::Profile,
            customer::Column::UpdatedAt,
        ]);
        for s in chunk {
            q.values([
                s.customer_id.as_str().into(),
                s.last_seq.into(),
                s.state_json.clone().into(),
                s.profile_json.clone().into(),
                now.into(),
            ])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        }
        q.on_conflict(
            OnConflict::column(customer::Column::CustomerId)
                .update_columns([
                    customer::Column::LastSeq,
                    customer::Column::State,
                    customer::Column::Profile,
                    customer::Column::UpdatedAt,
                ])
                .action_and_where(Expr::cust("customers.last_seq <= excluded.last_seq"))
                .to_owned(),
        );
        txn.execute(db.get_database_backend().build(&q)).await?;
    }
    for chunk in sessions.chunks(WRITE_CHUNK) {
        let mut q = Query::insert();
        q.into_table(session::Entity).columns([
            session::Column::SessionId,
            session::Column::CustomerId,
            session::Column::Status,
            session::Column::StartedAt,
            session::Column::EndedAt,
            session::Column::NEvents,
            session::Column::Purchased,
            session::Column::Features,
            session::Column::CloseReason,
            session::Column::Score,
            session::Column::ModelVersion,
            session::Column::UpdatedAt,
        ]);
        for s in chunk {
            let features = serde_json::to_string(&s.features).map_err(|e| DbErr::Custom(e.to_string()))?;
            q.values([
                s.session_id.as_str().into(),
                s.customer_id.as_str().into(),
                s.status.clone().into(),
                Some(s.started_at).into(),
                if s.status == "closed" { Some(s.last_event_at) } else { None }.into(),
                (s.n_events as i32).into(),
                s.purchased.into(),
                Some(features).into(),
                s.close_reason.map(|r| r.label().to_owned()).into(),
                s.score.into(),
                s.model_version.clone().into(),
                now.into(),
            ])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        }
        q.on_conflict(
            OnConflict::column(session::Column::SessionId)
                .update_columns([
                    session::Column::Status,
                    session::Column::StartedAt,
                    session::Column::EndedAt,
                    session::Column::NEvents,
                    session::Column::Purchased,
                    session::Column::Features,
                    session::Column::CloseReason,
                    session::Column::Score,
                    session::Column::ModelVersion,
                    session::Column::UpdatedAt,
                ])
                .action_and_where(Expr::cust("sessions.n_events <= excluded.n_events"))
                .to_owned(),
        );
        txn.execute(db.get_database_backend().build(&q)).await?;
    }
    txn.commit().await
}
