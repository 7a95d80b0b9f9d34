//! Retention on SQLite: batched deletes from the head of the log.
//!
//! The log's receive times follow its order (one group committer stamps
//! each group with its commit time), so the events that may go are a prefix
//! of the log: each batch reads the next `batch_rows` positions, keeps the
//! leading ones received before the cutoff, copies their ids into
//! `retired_event_ids` and deletes them, in one short transaction taken in
//! turn with the service's other writers (the write gate), on a connection
//! that does not wait for the disk at each commit; then it rests as long as
//! the batch took. The run stops at the first event that must stay.

use super::RetentionReport;
use actors::WriteGate;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

/// Deletes the prefix of the log received before `cutoff`, up to `through`.
pub async fn retain(
    db: &DatabaseConnection,
    gate: &WriteGate,
    cutoff: DateTime<Utc>,
    through: i64,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    loop {
        let started = std::time::Instant::now();
        let turn = gate.enter().await;
        let txn = db.begin().await?;
        let rows = txn
            .query_all(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT seq, received_at FROM events WHERE seq <= ? ORDER BY seq LIMIT ?",
                [through.into(), (batch_rows as i64).into()],
            ))
            .await?;
        let mut last = None;
        let mut reached_end = (rows.len() as u64) < batch_rows;
        for r in &rows {
            let received: DateTime<Utc> = r.try_get("", "received_at")?;
            if received >= cutoff {
                reached_end = true;
                break;
            }
            last = Some(r.try_get::<i64>("", "seq")?);
        }
        let Some(last) = last else {
            txn.rollback().await?;
            return Ok(());
        };
        txn.execute(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT OR IGNORE INTO retired_event_ids (event_id, event_time, received_at) \
             SELECT event_id, event_time, received_at FROM events WHERE seq <= ?",
            [last.into()],
        ))
        .await?;
        let deleted = txn
            .execute(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM events WHERE seq <= ?",
                [last.into()],
            ))
            .await?;
        txn.commit().await?;
        drop(turn);
        report.deleted_events += deleted.rows_affected();
        if reached_end {
            return Ok(());
        }
        // At most half of the writer's time: the group commit waits for
        // one batch at a time, never for a run of them.
        tokio::time::sleep(started.elapsed()).await;
    }
}

/// Forgets the ids of events received before `cutoff` (`dedup_days` ago).
/// Receive times are RFC 3339 text in UTC, written by one formatter, so
/// their text order is their time order and the index on them serves.
pub async fn expire_ids(
    db: &DatabaseConnection,
    gate: &WriteGate,
    cutoff: DateTime<Utc>,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    let cutoff = cutoff.to_rfc3339();
    loop {
        let turn = gate.enter().await;
        let done = db
            .execute(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM retired_event_ids WHERE rowid IN \
                 (SELECT rowid FROM retired_event_ids WHERE received_at < ? LIMIT ?)",
                [cutoff.as_str().into(), (batch_rows as i64).into()],
            ))
            .await?;
        drop(turn);
        report.expired_ids += done.rows_affected();
        if done.rows_affected() < batch_rows {
            return Ok(());
        }
    }
}
