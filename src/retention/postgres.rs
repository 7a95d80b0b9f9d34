//! Retention on Postgres: whole day partitions dropped, the default
//! partition trimmed in batches.
//!
//! A day partition of `events` goes once its newest row was received
//! before the cutoff and its highest position is archived and checkpointed.
//! Its ids first become a day partition of `retired_event_ids` (built as a
//! table of its own, outside any lock the group commit waits on); then one
//! short transaction attaches that and drops the day's events. A commit
//! that resends one of the day's events therefore either runs before that
//! transaction (the day's partition is there and refuses it) or after it
//! (the retired ids are there and its check refuses it): the drop waits for
//! commits in flight, and commits that come after wait for the drop.

use super::partitions::{self, LOCK_KEY, LOCK_TIMEOUT};
use super::RetentionReport;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};

/// Drops the day partitions that may go and trims the default partition.
pub async fn retain(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    through: i64,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    for (day, part) in partitions::list(db, "events").await? {
        // Only days wholly before the cutoff can hold nothing received after it.
        if day + TimeDelta::days(1) > cutoff.date_naive() {
            continue;
        }
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) AS n, max(seq) AS s, max(received_at) AS r FROM {part}"),
            ))
            .await?
            .ok_or_else(|| DbErr::Custom(format!("no answer counting {part}")))?;
        let n: i64 = row.try_get("", "n")?;
        let max_seq: Option<i64> = row.try_get("", "s")?;
        let max_received: Option<DateTime<Utc>> = row.try_get("", "r")?;
        if max_received.is_some_and(|r| r >= cutoff) {
            report.kept.push(format!("{part}: rows received since the cutoff"));
            continue;
        }
        if max_seq.is_some_and(|s| s > through) {
            report.kept.push(format!("{part}: not archived and checkpointed yet (up to seq {through})"));
            continue;
        }
        if drop_day(db, day, &part).await? {
            report.deleted_events += n as u64;
            report.dropped_partitions.push(part);
        }
    }
    trim_default(db, cutoff, through, batch_rows, report).await
}

/// Moves `day`'s ids into `retired_event_ids` and drops its events. False
/// when the locks were not granted in time (tried again next run).
async fn drop_day(db: &DatabaseConnection, day: NaiveDate, part: &str) -> Result<bool, DbErr> {
    let retired = partitions::name("retired_event_ids", day);
    let next = day + TimeDelta::days(1);
    let range = format!("event_time >= '{day} 00:00:00+00' AND event_time < '{next} 00:00:00+00'");
    // Built outside the short transaction: a left-over one from a stopped
    // run is rebuilt.
    db.execute_unprepared(&format!("DROP TABLE IF EXISTS {retired}")).await?;
    db.execute_unprepared(&format!("CREATE TABLE {retired} AS SELECT event_id, event_time, received_at FROM {part}"))
        .await?;
    // An attached partition must have the parent's NOT NULLs (the key sets two).
    db.execute_unprepared(&format!("ALTER TABLE {retired} ADD PRIMARY KEY (event_id, event_time)")).await?;
    db.execute_unprepared(&format!("ALTER TABLE {retired} ALTER COLUMN received_at SET NOT NULL")).await?;
    db.execute_unprepared(&format!("ALTER TABLE {retired} ADD CONSTRAINT {retired}_day CHECK ({range})")).await?;
    for attempt in 1..=LOCK_ATTEMPTS {
        if swap(db, day, part, &retired, &range).await? {
            return Ok(true);
        }
        tracing::debug!(partition = part, attempt, "retention could not lock the event log in time");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    tracing::warn!(partition = part, "retention could not lock the event log in time; retrying next run");
    Ok(false)
}

/// How many times a drop waits [`LOCK_TIMEOUT`] for its locks in one run.
const LOCK_ATTEMPTS: u32 = 5;

/// The short transaction: the retired ids in, the day's events out. False
/// when a lock was not granted within [`LOCK_TIMEOUT`].
async fn swap(db: &DatabaseConnection, day: NaiveDate, part: &str, retired: &str, range: &str) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})")).await?;
    let done = async {
        // Rows retired into the default partition for this day (old history
        // deleted before the day had a partition) join the day's.
        txn.execute_unprepared(&format!(
            "WITH moved AS (DELETE FROM retired_event_ids_default WHERE {range} RETURNING *) \
             INSERT INTO {retired} SELECT * FROM moved ON CONFLICT DO NOTHING"
        ))
        .await?;
        txn.execute_unprepared(&format!(
            "ALTER TABLE retired_event_ids ATTACH PARTITION {retired} {}",
            partitions::bounds(day)
        ))
        .await?;
        txn.execute_unprepared(&format!("DROP TABLE {part}")).await?;
        Ok::<_, DbErr>(())
    }
    .await;
    match done {
        Ok(()) => {
            txn.commit().await?;
            Ok(true)
        }
        Err(e) if is_lock_timeout(&e) => {
            txn.rollback().await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn is_lock_timeout(e: &DbErr) -> bool {
    e.to_string().contains("lock timeout")
}

/// Deletes, in batches, the default partition's rows received before the
/// cutoff and at or below `through`, retiring their ids.
async fn trim_default(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    through: i64,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    loop {
        let txn = db.begin().await?;
        let row = txn
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH gone AS (DELETE FROM events_default WHERE ctid IN \
                   (SELECT ctid FROM events_default WHERE received_at < $1 AND seq <= $2 LIMIT $3) \
                   RETURNING event_id, event_time, received_at), \
                 kept AS (INSERT INTO retired_event_ids SELECT * FROM gone ON CONFLICT DO NOTHING) \
                 SELECT count(*) AS n FROM gone",
                [cutoff.into(), through.into(), (batch_rows as i64).into()],
            ))
            .await?;
        txn.commit().await?;
        let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
        report.deleted_events += n as u64;
        if (n as u64) < batch_rows {
            return Ok(());
        }
    }
}

/// Forgets retired ids received before `cutoff`: whole day partitions of
/// `retired_event_ids`, and its default partition in batches.
pub async fn expire_ids(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch_rows: u64,
    report: &mut RetentionReport,
) -> Result<(), DbErr> {
    for (day, part) in partitions::list(db, "retired_event_ids").await? {
        if day + TimeDelta::days(1) > cutoff.date_naive() {
            continue;
        }
        let row = db
            .query_one(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) AS n, max(received_at) AS r FROM {part}"),
            ))
            .await?
            .ok_or_else(|| DbErr::Custom(format!("no answer counting {part}")))?;
        let n: i64 = row.try_get("", "n")?;
        let newest: Option<DateTime<Utc>> = row.try_get("", "r")?;
        if newest.is_some_and(|r| r >= cutoff) {
            continue;
        }
        let txn = db.begin().await?;
        txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await?;
        match txn.execute_unprepared(&format!("DROP TABLE {part}")).await {
            Ok(_) => {
                txn.commit().await?;
                report.expired_ids += n as u64;
            }
            Err(e) if is_lock_timeout(&e) => txn.rollback().await?,
            Err(e) => return Err(e),
        }
    }
    loop {
        let done = db
            .execute(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM retired_event_ids_default WHERE ctid IN \
                 (SELECT ctid FROM retired_event_ids_default WHERE received_at < $1 LIMIT $2)",
                [cutoff.into(), (batch_rows as i64).into()],
            ))
            .await?;
        report.expired_ids += done.rows_affected();
        if done.rows_affected() < batch_rows {
            return Ok(());
        }
    }
}
