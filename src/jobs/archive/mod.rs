//! `cartpulse archive`: writes the committed, checkpointed events of the log
//! to the data lake as Parquet (docs/data-lake.md); the run itself is
//! [`crate::lake::archive`].

pub mod cli;

use crate::config::Settings;
pub use crate::lake::archive::{archive_with, ArchiveReport};
use crate::lake::LakeStore;
use anyhow::Context;

/// [`archive`] on a runtime of its own, for the CLI and for callers that
/// are not on a multi-threaded Tokio runtime.
pub fn run(settings: &Settings, progress: bool) -> anyhow::Result<ArchiveReport> {
    crate::cli::tokio_rt()?.block_on(archive(settings, progress))
}

/// Archives every complete block below the horizon. `progress` draws a bar
/// on stderr when it is a terminal.
pub async fn archive(settings: &Settings, progress: bool) -> anyhow::Result<ArchiveReport> {
    let db = crate::db::connect(settings).await.context("connecting to the database")?;
    let store = LakeStore::from_settings(settings).await?;
    archive_with(&db, &store, settings, progress).await
}
