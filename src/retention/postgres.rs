//! Retention on Postgres: whole day partitions dropped, the default
//! partition and the expired ids deleted in batches.
//!
//! `events` is partitioned by day of receipt, so a day's partition holds
//! only events received that day: once the day ended before the cutoff and
//! its highest position is archived and checkpointed, the whole partition
//! goes with a `DROP`. The ids stay in `event_ids` (the group commit's
//! de-duplication) until `dedup_days` after their receipt, then leave in
//! batches.

use super::partitions::{self, LOCK_KEY, LOCK_TIMEOUT};
use super::RetentionReport;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

/// How many times a drop waits [`LOCK_TIMEOUT`] for its lock in one run.
const LOCK_ATTEMPTS: u32 = 5;

/// Drops the day partitions that may go and trims the default partition.
pub async fn retain(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    through: i64,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    for (day, part) in partitions::list(db, "events").await? {
        // Every row of the day was received before the day's end.
        if day + TimeDelta::days(1) > cutoff.date_naive() {
            continue;
        }
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) AS n, max(seq) AS s FROM {part}"),
            ))
            .await?
            .ok_or_else(|| DbErr::Custom(format!("no answer counting {part}")))?;
        let n: i64 = row.try_get("", "n")?;
        let max_seq: Option<i64> = row.try_get("", "s")?;
        if max_seq.is_some_and(|s| s > through) {
            report.kept.push(format!("{part}: not archived and checkpointed yet (up to seq {through})"));
            continue;
        }
        if drop_day(db, &part).await? {
            report.deleted_events += n as u64;
            report.dropped_partitions.push(part);
        } else {
            report.kept.push(format!("{part}: its lock was not granted in time; next run"));
        }
    }
    trim_default(db, cutoff, through, batch_rows, report).await
}

/// Drops a day's partition. Dropping a partition locks `events` for a
/// moment: the drop waits for the commits in flight and commits arriving
/// meanwhile wait behind it, so it waits at most [`LOCK_TIMEOUT`] at a time.
/// False when the lock was never granted.
async fn drop_day(db: &DatabaseConnection, part: &str) -> Result<bool, DbErr> {
    for attempt in 1..=LOCK_ATTEMPTS {
        let txn = db.begin().await?;
        txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})")).await?;
        match txn.execute_unprepared(&format!("DROP TABLE {part}")).await {
            Ok(_) => {
                txn.commit().await?;
                return Ok(true);
            }
            Err(e) if e.to_string().contains("lock timeout") => {
                txn.rollback().await?;
                tracing::debug!(partition = part, attempt, "retention could not lock the event log in time");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(partition = part, "retention could not lock the event log in time; retrying next run");
    Ok(false)
}

/// Deletes, in batches, the default partition's rows received before the
/// cutoff and at or below `through`.
async fn trim_default(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    through: i64,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    loop {
        let done = db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM events_default WHERE ctid IN \
                 (SELECT ctid FROM events_default WHERE received_at < $1 AND seq <= $2 LIMIT $3)",
                [cutoff.into(), through.into(), (batch_rows as i64).into()],
            ))
            .await?;
        report.deleted_events += done.rows_affected();
        if done.rows_affected() < batch_rows {
            return Ok(());
        }
    }
}

/// Forgets, in batches, the ids received before `cutoff` (`dedup_days` ago)
/// and before every event still in the log: an event kept back (not yet
/// archived) keeps its id, so a resend of it stays a duplicate.
pub async fn expire_ids(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    let mut cutoff = cutoff;
    if let Some((day, _)) = partitions::list(db, "events").await?.first() {
        if let Some(start) = day.and_hms_opt(0, 0, 0) {
            cutoff = cutoff.min(start.and_utc());
        }
    }
    let oldest_default = db
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT min(received_at) AS r FROM events_default".to_owned(),
        ))
        .await?
        .map(|r| r.try_get::<Option<DateTime<Utc>>>("", "r"))
        .transpose()?
        .flatten();
    if let Some(t) = oldest_default {
        cutoff = cutoff.min(t);
    }
    loop {
        let done = db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM event_ids WHERE ctid IN \
                 (SELECT ctid FROM event_ids WHERE received_at < $1 LIMIT $2)",
                [cutoff.into(), (batch_rows as i64).into()],
            ))
            .await?;
        report.expired_ids += done.rows_affected();
        if done.rows_affected() < batch_rows {
            return Ok(());
        }
    }
}
