//! Retention of the event log (docs/data-lake.md, "Retention").
//!
//! Postgres: `events` becomes a table partitioned by UTC day of
//! `received_at`, so that retention drops a day's partition instead of
//! deleting its rows. Every insert lands in the day it is received, whose
//! partition the service's maintenance task makes ahead
//! (`cartpulse::retention::partitions`); anything else lands in
//! `events_default` (this migration's existing rows, or a day whose
//! partition was not made in time), whose rows the maintenance moves into a
//! day's partition when it makes one. The existing rows are copied once,
//! keeping their `seq`, and the log's sequence carries on.
//!
//! A unique index of a partitioned table must hold the partition key, so
//! de-duplication moves to `event_ids` (one row per event id, with its
//! receive time): the group commit inserts an event only if its id is new
//! there. Retention keeps the ids `retention.dedup_days`, longer than the
//! events, so a late resend of a deleted event is still a duplicate.
//!
//! SQLite keeps `events` as it is (unique by id) and gets
//! `retired_event_ids`: the ids retention deleted, kept for `dedup_days`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE events RENAME TO events_unpartitioned",
    "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS, \
       CONSTRAINT events_seq_received_pkey PRIMARY KEY (seq, received_at)) \
     PARTITION BY RANGE (received_at)",
    "CREATE TABLE events_default PARTITION OF events DEFAULT",
    // Retention trims the default partition by receive time.
    "CREATE INDEX events_default_received_at ON events_default (received_at)",
    "INSERT INTO events SELECT * FROM events_unpartitioned",
    "ALTER SEQUENCE events_seq_seq OWNED BY events.seq",
    "CREATE TABLE event_ids (event_id varchar NOT NULL PRIMARY KEY, received_at timestamptz NOT NULL)",
    "INSERT INTO event_ids SELECT event_id, received_at FROM events_unpartitioned",
    // Ids expire by receive time; receive times arrive in order, so the
    // index costs an append.
    "CREATE INDEX event_ids_received_at ON event_ids (received_at)",
    "DROP TABLE events_unpartitioned",
];

const POSTGRES_DOWN: &[&str] = &[
    "ALTER TABLE events RENAME TO events_partitioned",
    "CREATE TABLE events (LIKE events_partitioned INCLUDING DEFAULTS, \
       CONSTRAINT events_pkey PRIMARY KEY (seq), CONSTRAINT events_event_id_key UNIQUE (event_id))",
    "INSERT INTO events SELECT * FROM events_partitioned ORDER BY seq ON CONFLICT (event_id) DO NOTHING",
    "ALTER SEQUENCE events_seq_seq OWNED BY events.seq",
    "DROP TABLE events_partitioned",
    "DROP TABLE event_ids",
];

const SQLITE_UP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS retired_event_ids (event_id text NOT NULL PRIMARY KEY, \
       event_time text NOT NULL, received_at text NOT NULL)",
    "CREATE INDEX IF NOT EXISTS retired_event_ids_received_at ON retired_event_ids (received_at)",
];

const SQLITE_DOWN: &[&str] = &["DROP TABLE IF EXISTS retired_event_ids"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let statements = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_UP,
            _ => SQLITE_UP,
        };
        for s in statements {
            db.execute_unprepared(s).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        let statements = match db.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DOWN,
            _ => SQLITE_DOWN,
        };
        for s in statements {
            db.execute_unprepared(s).await?;
        }
        Ok(())
    }
}
