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
///
/// On Postgres a session left idle inside a transaction for longer than a
/// partition lease is ended by the server: a processor frozen in the middle
/// of a commit (a long pause, a stopped VM) would otherwise keep its row
/// locks on `partition_leases` and stall every processor that takes its
/// partitions over. Its commit then fails and nothing of it was
/// acknowledged, as with any failed commit.
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
    let idle_ms = settings.redis.lease_ms.max(Duration::from_secs(1)).as_millis().to_string();
    opts.map_sqlx_postgres_opts(move |o| o.options([("idle_in_transaction_session_timeout", idle_ms.as_str())]));
    let db = Database::connect(opts).await.context("connecting to the database")?;
    Ok(db)
}

/// Applies pending migrations. On Postgres they run in one transaction
/// behind an advisory lock: replicas starting together over a database
/// take turns, and the later ones find nothing left to do (a migration
/// that rewrites a table, such as partitioning `events`, cannot run twice).
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
    if db.get_database_backend() != DbBackend::Postgres {
        return Migrator::up(db, None).await.context("running database migrations");
    }
    let txn = db.begin().await.context("starting the migrations' transaction")?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await
        .context("waiting for another replica's migrations")?;
    Migrator::up(&txn, None).await.context("running database migrations")?;
    txn.commit().await.context("committing the migrations")
}

/// Key of the advisory lock migrations run under on Postgres ("cartmigr").
const MIGRATION_LOCK: i64 = 0x6361_7274_6d69_6772;
