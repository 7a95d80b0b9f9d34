//! Database access of the runtime core: loading customer snapshots, writing
//! snapshot batches, the runtime checkpoint and reading the log after it.

use crate::data::state::{CustomerState, SessionView};
use crate::data::Snapshot;
use crate::event::{CustomerId, Event, EventId, EventKind, LoggedEvent, SessionId};
use chrono::{DateTime, Utc};
use entities::{checkpoint, customer, event, session};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use std::collections::HashMap;

/// Most ids in one `IN (…)` list.
const LOAD_CHUNK: usize = 400;

/// Loads the snapshots of many customers with a few queries. A snapshot that
/// cannot be read is logged and left out (the customer then starts empty and
/// the log replay after the checkpoint rebuilds what it can).
pub async fn load_snapshots(
    db: &DatabaseConnection,
    ids: &[CustomerId],
) -> Result<HashMap<CustomerId, CustomerState>, DbErr> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LOAD_CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
        let rows: Vec<(String, String)> = customer::Entity::find()
            .select_only()
            .column(customer::Column::CustomerId)
            .column(customer::Column::State)
            .filter(customer::Column::CustomerId.is_in(keys))
            .into_tuple()
            .all(db)
            .await?;
        for (cid, state) in rows {
            match serde_json::from_str::<CustomerState>(&state) {
                Ok(s) => {
                    out.insert(CustomerId::new_unchecked(cid), s);
                }
                Err(e) => tracing::error!(customer = %cid, error = %e, "unreadable snapshot; ignored"),
            }
        }
    }
    Ok(out)
}

/// Name of the checkpoint row of a runtime that owns every customer.
pub const RUNTIME_CHECKPOINT: &str = "runtime";

/// The log position up to which every event (of the customers the runtime
/// named `name` owns) is in a durable snapshot.
pub async fn read_checkpoint(db: &DatabaseConnection, name: &str) -> Result<i64, DbErr> {
    Ok(checkpoint::Entity::find_by_id(name.to_owned()).one(db).await?.map(|c| c.seq).unwrap_or(0))
}

/// Raises the checkpoint (never lowers it).
pub async fn write_checkpoint(db: &DatabaseConnection, name: &str, seq: i64) -> Result<(), DbErr> {
    let mut q = Query::insert();
    q.into_table(checkpoint::Entity)
        .columns([checkpoint::Column::Name, checkpoint::Column::Seq, checkpoint::Column::UpdatedAt])
        .values([name.into(), seq.into(), Utc::now().into()])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::column(checkpoint::Column::Name)
                .update_columns([checkpoint::Column::Seq, checkpoint::Column::UpdatedAt])
                .action_and_where(Expr::cust("checkpoints.seq <= excluded.seq"))
                .to_owned(),
        );
    db.execute(db.get_database_backend().build(&q)).await?;
    Ok(())
}

/// Up to `limit` logged events after `after`, in log order (a primary-key
/// range scan).
pub async fn log_after(db: &DatabaseConnection, after: i64, limit: u64) -> Result<Vec<LoggedEvent>, DbErr> {
    type Row = (i64, String, String, Option<String>, DateTime<Utc>, String);
    let rows: Vec<Row> = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .column(event::Column::EventId)
        .column(event::Column::CustomerId)
        .column(event::Column::SessionId)
        .column(event::Column::EventTime)
        .column(event::Column::Body)
        .filter(event::Column::Seq.gt(after))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, event_id, customer_id, session_id, time, body) in rows {
        match serde_json::from_str::<EventKind>(&body) {
            Ok(kind) => out.push(LoggedEvent {
                seq,
                event: Event {
                    event_id: EventId::new_unchecked(event_id),
                    customer_id: CustomerId::new_unchecked(customer_id),
                    session_id: session_id.map(SessionId::new_unchecked),
                    time,
                    kind,
                },
                acked_at_ms: 0,
                trace: None,
            }),
            Err(e) => tracing::error!(seq, error = %e, "unreadable event in the log; skipped"),
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
            customer::Column::SegmentVersion,
            customer::Column::Segment,
        ]);
        for s in chunk {
            // The segment columns mirror `state.segment`, so readers (live
            // segment sizes, the offline check) need not parse the state.
            let seg = s.segment.as_ref();
            q.values([
                s.customer_id.as_str().into(),
                s.last_seq.into(),
                s.state_json.clone().into(),
                s.profile_json.clone().into(),
                now.into(),
                seg.map(|a| a.version).into(),
                seg.map(|a| i32::try_from(a.segment).unwrap_or(i32::MAX)).into(),
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
                    customer::Column::SegmentVersion,
                    customer::Column::Segment,
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
            session::Column::ScoreP1,
            session::Column::ScoreP3,
            session::Column::ScoreP5,
            session::Column::ScoreP10,
            session::Column::FirstWrittenAt,
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
                s.age_score(1).into(),
                s.age_score(3).into(),
                s.age_score(5).into(),
                s.age_score(10).into(),
                // Not among the columns an update sets: the first write's time stays.
                Some(now).into(),
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
                    session::Column::ScoreP1,
                    session::Column::ScoreP3,
                    session::Column::ScoreP5,
                    session::Column::ScoreP10,
                    session::Column::UpdatedAt,
                ])
                // Session ids come from shops and are global: a session row
                // belongs to the customer whose session under that id started
                // first (ties: the smaller customer id), whatever order the
                // actors' snapshots are written in; another customer's events
                // under the same id never take it over.
                .action_and_where(Expr::cust(
                    "(sessions.customer_id = excluded.customer_id AND sessions.n_events <= excluded.n_events) \
                     OR (sessions.customer_id <> excluded.customer_id AND (excluded.started_at < sessions.started_at \
                     OR (excluded.started_at = sessions.started_at AND excluded.customer_id < sessions.customer_id)))",
                ))
                .to_owned(),
        );
        txn.execute(db.get_database_backend().build(&q)).await?;
    }
    txn.commit().await
}
