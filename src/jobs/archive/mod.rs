//! `cartpulse archive`: writes the committed, checkpointed events of the log
//! to the data lake as Parquet (docs/data-lake.md), then lets retention
//! delete what the database need not keep any more; the run itself is
//! [`crate::lake::archive`], retention [`crate::retention`].

pub mod cli;

pub use crate::lake::archive::{archive, archive_with, run, ArchiveReport};

use crate::config::Settings;
use anyhow::Context;

/// One archive run and, with `retain`, retention up to what the lake holds,
/// on a Tokio runtime of its own.
pub fn run_and_retain(settings: &Settings, progress: bool, retain: bool) -> anyhow::Result<ArchiveReport> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let db = crate::db::connect(settings).await.context("connecting to the database")?;
        let store = crate::lake::LakeStore::from_settings(settings).await?;
        let mut report = archive_with(&db, &store, settings, progress).await?;
        if retain {
            let gate = actors::WriteGate::open();
            let r = crate::retention::retain(&db, &gate, settings, report.archived_through, chrono::Utc::now())
                .await
                .context("retention after the archive run")?;
            report.retention = Some(r);
        }
        Ok(report)
    })
}
