//! The day partitions of `events` on Postgres (by UTC day of
//! `received_at`; migration m20261205_000001): names, bounds, and making
//! the coming days' partitions ahead of the events that land in them.
//!
//! Every process on Postgres runs [`ensure_days`] at start and every
//! `retention.maintenance_every_s`; concurrent runs take turns on an
//! advisory lock. A day without a partition is not an error: its events
//! land in the default partition, and the day's partition, when it is made
//! later, takes them over (moved in the same transaction that attaches it).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use std::time::Duration;

/// Partitions made ahead of today (and one behind, for a process whose
/// clock is a little behind the others' at midnight).
pub const DAYS_AHEAD: i64 = 2;

/// Key of the advisory lock the maintenance and retention take turns on.
pub const LOCK_KEY: i64 = 0x6361_7274_7061_7274; // "cartpart"

/// How long DDL waits for the locks it needs before giving up (and trying
/// again a little later): inserts queue behind a waiting `ACCESS EXCLUSIVE`
/// request, so the wait must stay short.
pub const LOCK_TIMEOUT: &str = "500ms";

/// `events_p20261205` for 2026-12-05.
pub fn name(table: &str, day: NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

/// The day of a partition named by [`name`].
pub fn day_of(table: &str, partition: &str) -> Option<NaiveDate> {
    let rest = partition.strip_prefix(table)?.strip_prefix("_p")?;
    NaiveDate::parse_from_str(rest, "%Y%m%d").ok()
}

/// The bounds clause of `day`'s partition, in UTC.
pub fn bounds(day: NaiveDate) -> String {
    let next = day + TimeDelta::days(1);
    format!("FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')")
}

/// The day partitions of `table`, oldest first.
pub async fn list(db: &impl ConnectionTrait, table: &str) -> Result<Vec<(NaiveDate, String)>, DbErr> {
    let rows = db
        .query_all(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::regclass",
            [table.into()],
        ))
        .await?;
    let mut out: Vec<(NaiveDate, String)> = rows
        .iter()
        .filter_map(|r| r.try_get::<String>("", "name").ok())
        .filter_map(|n| day_of(table, &n).map(|d| (d, n)))
        .collect();
    out.sort();
    Ok(out)
}

/// Makes `events`' partitions from yesterday to [`DAYS_AHEAD`] days ahead
/// of `now`; returns the ones it made.
pub async fn ensure_days(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<Vec<String>, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(Vec::new());
    }
    let have: Vec<NaiveDate> = list(db, "events").await?.into_iter().map(|(d, _)| d).collect();
    let today = now.date_naive();
    let mut made = Vec::new();
    for k in -1..=DAYS_AHEAD {
        let day = today + TimeDelta::days(k);
        if !have.contains(&day) && make(db, "events", day).await? {
            made.push(name("events", day));
        }
    }
    Ok(made)
}

/// Makes `table`'s partition of `day`, moving the day's rows out of its
/// default partition. False when another process made it first.
pub async fn make(db: &DatabaseConnection, table: &str, day: NaiveDate) -> Result<bool, DbErr> {
    let part = name(table, day);
    let default = format!("{table}_default");
    let next = day + TimeDelta::days(1);
    let range = format!("received_at >= '{day} 00:00:00+00' AND received_at < '{next} 00:00:00+00'");
    let txn = db.begin().await?;
    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOCK_KEY})")).await?;
    if list(&txn, table).await?.iter().any(|(d, _)| *d == day) {
        txn.rollback().await?;
        return Ok(false);
    }
    // The default partition is locked first, so no row of the day can land
    // in it between the move and the attach (whose check would then fail).
    txn.execute_unprepared(&format!("LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE")).await?;
    txn.execute_unprepared(&format!("CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS)")).await?;
    // The check lets the attach skip its scan of the new table.
    txn.execute_unprepared(&format!("ALTER TABLE {part} ADD CONSTRAINT {part}_day CHECK ({range})")).await?;
    txn.execute_unprepared(&format!(
        "WITH moved AS (DELETE FROM {default} WHERE {range} RETURNING *) INSERT INTO {part} SELECT * FROM moved"
    ))
    .await?;
    txn.execute_unprepared(&format!("ALTER TABLE {table} ATTACH PARTITION {part} {}", bounds(day))).await?;
    txn.execute_unprepared(&format!("ALTER TABLE {part} DROP CONSTRAINT {part}_day")).await?;
    txn.commit().await?;
    Ok(true)
}

/// The service's maintenance: [`ensure_days`] now, then every `every`. A
/// failed run (a lock not granted in time, the database away) is logged and
/// tried again at the next.
pub async fn start_maintenance(db: DatabaseConnection, every: Duration) -> tokio::task::JoinHandle<()> {
    maintain(&db).await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            maintain(&db).await;
        }
    })
}

async fn maintain(db: &DatabaseConnection) {
    match ensure_days(db, Utc::now()).await {
        Ok(made) if !made.is_empty() => tracing::info!(partitions = ?made, "made the event log's day partitions"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the event log's partition maintenance failed; retrying later"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        assert_eq!(name("events", d), "events_p20261205");
        assert_eq!(day_of("events", "events_p20261205"), Some(d));
        assert_eq!(day_of("events", "events_default"), None);
        assert_eq!(day_of("events", "event_ids"), None);
        assert_eq!(bounds(d), "FOR VALUES FROM ('2026-12-05 00:00:00+00') TO ('2026-12-06 00:00:00+00')");
    }
}
