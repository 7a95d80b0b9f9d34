//! Postgres: `event_ids.event_id` compares bytes (`COLLATE "C"`) instead of
//! the database's locale. The column only ever answers "is this id new?", so
//! its order does not matter, and every group commit descends its primary
//! key once per event: locale-aware comparison of the random ids was a
//! measured share of the commit (docs/benchmarks.md, "Where the time goes").
//! Changing only the collation rewrites no rows, but rebuilds the primary
//! key under an exclusive lock: it ships in the same release as
//! `m20261205_000001_partition_events`, which already stops the previous
//! release's processors (docs/operations.md, "Release and rollback").
//!
//! SQLite: nothing (its text comparison is already bytewise).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE event_ids ALTER COLUMN event_id TYPE varchar COLLATE \"C\"").await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE event_ids ALTER COLUMN event_id TYPE varchar COLLATE \"default\"")
                .await?;
        }
        Ok(())
    }
}
