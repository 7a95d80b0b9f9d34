//! Retention of the event log (docs/data-lake.md, "Retention").
//!
//! Postgres: `events` becomes a table partitioned by UTC day of
//! `event_time`, so that retention drops a day's partition instead of
//! deleting its rows. A unique index of a partitioned table must hold the
//! partition key, so an event is unique by `(event_id, event_time)`: a
//! resend carries its event's time, so it lands in the same partition and
//! conflicts there. Day partitions are made by the service's maintenance
//! task (`cartpulse::retention::partitions`); everything else (history
//! replayed from long ago, this migration's existing rows) lands in
//! `events_default`, whose rows the maintenance moves into a day's
//! partition when it makes one. The existing rows are copied once, keeping
//! their `seq`, and the log's sequence carries on.
//!
//! Both databases get `retired_event_ids`: the ids (and times) of events
//! retention deleted, kept for `retention.dedup_days` so a late resend of
//! one is still recognised. On Postgres it is partitioned by day like
//! `events`; on SQLite it is keyed by id.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE events RENAME TO events_unpartitioned",
    "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS, \
       CONSTRAINT events_seq_time_pkey PRIMARY KEY (seq, event_time), \
       CONSTRAINT events_id_time_key UNIQUE (event_id, event_time)) \
     PARTITION BY RANGE (event_time)",
    "CREATE TABLE events_default PARTITION OF events DEFAULT",
    // Retention trims the default partition by receive time; that index is
    // cheap (receive times arrive in order). No index by event time: the
    // move of a day's rows into its new partition scans the default
    // partition once a day instead of every history insert paying for one.
    "CREATE INDEX events_default_received_at ON events_default (received_at)",
    "INSERT INTO events SELECT * FROM events_unpartitioned",
    "ALTER SEQUENCE events_seq_seq OWNED BY events.seq",
    "DROP TABLE events_unpartitioned",
    "CREATE TABLE retired_event_ids (event_id varchar NOT NULL, event_time timestamptz NOT NULL, \
       received_at timestamptz NOT NULL, \
       CONSTRAINT retired_event_ids_pkey PRIMARY KEY (event_id, event_time)) \
     PARTITION BY RANGE (event_time)",
    "CREATE TABLE retired_event_ids_default PARTITION OF retired_event_ids DEFAULT",
    "CREATE INDEX retired_event_ids_default_received_at ON retired_event_ids_default (received_at)",
];

const POSTGRES_DOWN: &[&str] = &[
    "ALTER TABLE events RENAME TO events_partitioned",
    "CREATE TABLE events (LIKE events_partitioned INCLUDING DEFAULTS, \
       CONSTRAINT events_pkey PRIMARY KEY (seq), CONSTRAINT events_event_id_key UNIQUE (event_id))",
    "INSERT INTO events SELECT * FROM events_partitioned ORDER BY seq ON CONFLICT (event_id) DO NOTHING",
    "ALTER SEQUENCE events_seq_seq OWNED BY events.seq",
    "DROP TABLE events_partitioned",
    "DROP TABLE retired_event_ids",
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
