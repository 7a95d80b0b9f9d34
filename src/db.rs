//! Connecting to the database (SQLite or Postgres) and migrating it.

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use secrecy::ExposeSecret;
use std::time::Duration;

use crate::config::Settings;

/// Opens the pool. SQLite runs in WAL mode (readers never block the single
/// writer) with `synchronous` from the settings; a busy timeout absorbs the
/// short waits between the committer and the persister.
pub async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let url = settings.database_url.expose_secret().to_owned();
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(settings.database.max_connections.max(2))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let full = settings.database.sqlite_synchronous == crate::config::SqliteSync::Full;
    opts.map_sqlx_sqlite_opts(move |o| {
        use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-65536")
            .create_if_missing(true)
    });
    let db = Database::connect(opts).await.context("connecting to the database")?;
    Ok(db)
}

/// Applies pending migrations.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await.context("running database migrations")
}
