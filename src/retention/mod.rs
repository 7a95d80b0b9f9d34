//! Retention of the event log (`retention.*`; docs/data-lake.md,
//! "Retention"): the database keeps the last `events_days` of what it
//! received, the lake keeps the rest.
//!
//! An event leaves the database only when all three hold: it was received
//! more than `events_days` ago, it is in the lake (at or below the
//! manifest's `archived_through`), and it is checkpointed (at or below the
//! archive horizon, [`crate::lake::horizon`]). Its id stays known for
//! `dedup_days` after its receipt, so a resend of a deleted event is still
//! a duplicate:
//!
//! - SQLite deletes in log order, in short transactions of `batch_rows`,
//!   moving the ids into `retired_event_ids` in the same transaction; the
//!   group commit checks that table for events old enough to have been
//!   retired ([`retired_check_span`]) ([`sqlite`]).
//! - Postgres keeps `events` in day partitions by receipt and drops a day's
//!   partition whole; the ids live in `event_ids`, which the group commit
//!   de-duplicates every event against, and leave it in batches
//!   ([`postgres`]; the partitions' maintenance is [`partitions`]).

pub mod partitions;
pub mod postgres;
pub mod sqlite;

use crate::config::Settings;
use actors::WriteGate;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use std::time::Instant;

/// What one retention run did; printed by `cartpulse archive` and logged by
/// the service's scheduled archive.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RetentionReport {
    /// `retention.events_days`; 0 means retention is off and nothing else
    /// below was done.
    pub events_days: u32,
    /// Events received before this may go.
    pub cutoff: Option<DateTime<Utc>>,
    /// And only those at or below this log position (the lower of the lake's
    /// `archived_through` and the checkpoint horizon).
    pub through_seq: i64,
    /// Events deleted, by batches and by dropping day partitions.
    pub deleted_events: u64,
    /// Day partitions of `events` dropped (Postgres).
    pub dropped_partitions: Vec<String>,
    /// Ids of deleted events forgotten after `dedup_days`.
    pub expired_ids: u64,
    /// Old day partitions kept back, and why (not archived or checkpointed
    /// yet, or their lock not granted in time).
    pub kept: Vec<String>,
    pub seconds: f64,
}

/// Deletes what may go; `archived_through` is the lake's (after the archive
/// run that precedes this). `gate` lets SQLite batches take turns with the
/// service's other writers.
pub async fn retain(
    db: &DatabaseConnection,
    gate: &WriteGate,
    settings: &Settings,
    archived_through: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<RetentionReport> {
    let r = &settings.retention;
    let mut report = RetentionReport { events_days: r.events_days, ..Default::default() };
    if r.events_days == 0 {
        return Ok(report);
    }
    let started = Instant::now();
    let horizon = crate::lake::horizon(db, settings.redis.partitions).await?;
    let through = archived_through.min(horizon.seq);
    let cutoff = now - TimeDelta::days(i64::from(r.events_days));
    let ids_cutoff = now - TimeDelta::days(i64::from(r.dedup_days));
    report.cutoff = Some(cutoff);
    report.through_seq = through;
    match db.get_database_backend() {
        DbBackend::Postgres => {
            postgres::retain(db, cutoff, through, r.batch_rows, &mut report).await?;
            postgres::expire_ids(db, ids_cutoff, r.batch_rows, &mut report).await?;
        }
        _ => {
            // Deletes on a connection of their own that does not wait for
            // the disk at each commit (`synchronous = NORMAL` in WAL mode):
            // each batch then holds the single writer a fraction as long,
            // and a batch lost to a power cut is only deleted again.
            let mut own = settings.clone();
            own.database.sqlite_synchronous = crate::config::SqliteSync::Normal;
            own.database.max_connections = 1;
            let own = crate::db::connect(&own).await?;
            sqlite::retain(&own, gate, cutoff, through, r.batch_rows, &mut report).await?;
            sqlite::expire_ids(&own, gate, ids_cutoff, r.batch_rows, &mut report).await?;
            own.close().await?;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// SQLite: events stamped more than this before their commit may have been
/// retired and are checked against `retired_event_ids`; later ones cannot
/// have been: a retired event was received more than `events_days` ago,
/// and no event is accepted more than `max_future_skew_s` ahead of its
/// receipt. `None` when retention is off.
pub fn retired_check_span(settings: &Settings) -> Option<TimeDelta> {
    let days = settings.retention.events_days;
    (days > 0).then(|| {
        let skew = TimeDelta::from_std(settings.ingest.max_future_skew_s).unwrap_or(TimeDelta::MAX);
        TimeDelta::days(i64::from(days)) - skew
    })
}
