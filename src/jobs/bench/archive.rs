//! `cartpulse bench archive`: how fast the event log goes into the lake and
//! how small it gets there. It writes a log of synthetic traffic (the
//! generator of `replay --synthetic`: page views, carts, orders) straight
//! into a fresh database, as the group commit stores it, marks it
//! checkpointed, then times `archive` over it into a fresh local lake.
//!
//! Printed: events archived, seconds, events/s (database reads included),
//! Parquet bytes per event and as a share of the log's bytes, against the
//! product's floors (200,000 events/s; 25 %).

use crate::config::Settings;
use crate::jobs::replay::synthetic::{generate_events, SyntheticConfig};
use crate::lake::LakeStore;
use anyhow::Context;
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde::Serialize;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    /// Events in the log (archived in whole blocks of --block-events).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Log positions per lake block.
    #[arg(long, default_value_t = 250_000)]
    pub block_events: u64,
    /// Seed of the synthetic traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the database and the lake in this directory (a temporary one,
    /// removed afterwards, when absent).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// The product's floors on this bench (docs/data-lake.md).
pub const FLOOR_EVENTS_PER_S: f64 = 200_000.0;
pub const FLOOR_PARQUET_SHARE: f64 = 0.25;

#[derive(Debug, Serialize)]
pub struct ArchiveBenchReport {
    pub events_logged: u64,
    pub events_archived: u64,
    pub blocks: u64,
    pub files: u64,
    /// Seconds to write the log (not part of the figure).
    pub fill_s: f64,
    pub archive_s: f64,
    pub events_per_s: f64,
    pub parquet_bytes: u64,
    pub log_bytes: u64,
    pub parquet_bytes_per_event: f64,
    pub log_bytes_per_event: f64,
    pub parquet_share: f64,
    pub floor_events_per_s: f64,
    pub floor_parquet_share: f64,
    pub ok: bool,
}

pub async fn run(args: ArchiveArgs, mut settings: Settings) -> anyhow::Result<ArchiveBenchReport> {
    anyhow::ensure!(args.block_events > 0, "--block-events must be > 0");
    anyhow::ensure!(
        args.events >= args.block_events,
        "--events {} is less than one block of {}: nothing would be archived",
        args.events,
        args.block_events
    );
    let tmp = tempfile::tempdir().context("a temporary directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db_path = dir.join("bench-archive.db");
    anyhow::ensure!(!db_path.exists(), "{} exists; give an empty --dir", db_path.display());
    settings.database_url = format!("sqlite://{}?mode=rwc", db_path.display()).into();
    settings.lake.store = dir.join("lake").display().to_string();
    settings.lake.endpoint = None;
    settings.lake.block_events = args.block_events;
    settings.redis.partitions = 1;
    let db = crate::db::connect(&settings).await?;
    crate::db::migrate(&db).await?;

    eprintln!("writing a log of {} synthetic events into {} …", args.events, db_path.display());
    let filled = Instant::now();
    let logged = fill(&db, args.events, args.seed).await?;
    actors::store::write_checkpoint(&db, actors::store::RUNTIME_CHECKPOINT, logged as i64)
        .await
        .context("writing the checkpoint")?;
    let fill_s = filled.elapsed().as_secs_f64();

    eprintln!("archiving into {} …", settings.lake.store);
    let store = LakeStore::from_settings(&settings).await?;
    let r = crate::lake::archive::archive_with(&db, &store, &settings, true).await?;
    let per_event = |bytes: u64| if r.events > 0 { bytes as f64 / r.events as f64 } else { 0.0 };
    let share = if r.log_bytes > 0 { r.parquet_bytes as f64 / r.log_bytes as f64 } else { 0.0 };
    let report = ArchiveBenchReport {
        events_logged: logged,
        events_archived: r.events,
        blocks: r.blocks,
        files: r.files,
        fill_s,
        archive_s: r.seconds,
        events_per_s: r.events_per_s,
        parquet_bytes: r.parquet_bytes,
        log_bytes: r.log_bytes,
        parquet_bytes_per_event: per_event(r.parquet_bytes),
        log_bytes_per_event: per_event(r.log_bytes),
        parquet_share: share,
        floor_events_per_s: FLOOR_EVENTS_PER_S,
        floor_parquet_share: FLOOR_PARQUET_SHARE,
        ok: r.events_per_s >= FLOOR_EVENTS_PER_S && share <= FLOOR_PARQUET_SHARE,
    };
    eprintln!(
        "archived {} events in {:.2} s: {:.0} events/s (floor {:.0}); Parquet {:.1} bytes/event, {:.1} % of the log's {:.1} (floor {:.0} %)",
        report.events_archived,
        report.archive_s,
        report.events_per_s,
        FLOOR_EVENTS_PER_S,
        report.parquet_bytes_per_event,
        share * 100.0,
        report.log_bytes_per_event,
        FLOOR_PARQUET_SHARE * 100.0
    );
    db.close().await.ok();
    Ok(report)
}

/// Writes `n` synthetic events as log rows (seq 1..=n, in session order);
/// returns how many.
async fn fill(db: &sea_orm::DatabaseConnection, n: u64, seed: u64) -> anyhow::Result<u64> {
    use entities::event::{ActiveModel, Entity};
    let sessions = tokio::task::spawn_blocking(move || generate_events(&SyntheticConfig::new(0, seed), n))
        .await
        .context("the synthetic generator panicked")?;
    let received = chrono::Utc::now();
    let mut rows = Vec::with_capacity(1000);
    let mut written = 0u64;
    let bar = indicatif::ProgressBar::new(n);
    for e in sessions.into_iter().flat_map(|s| s.events) {
        rows.push(ActiveModel {
            event_id: Set(e.event_id.as_str().to_owned()),
            customer_id: Set(e.customer_id.as_str().to_owned()),
            session_id: Set(e.session_id.as_ref().map(|s| s.as_str().to_owned())),
            event_type: Set(e.kind.name().to_owned()),
            event_time: Set(e.time),
            received_at: Set(received),
            body: Set(serde_json::to_string(&e.kind)?),
            ..Default::default()
        });
        if rows.len() == 1000 {
            written += rows.len() as u64;
            Entity::insert_many(std::mem::take(&mut rows)).exec(db).await.context("writing the log")?;
            bar.set_position(written);
        }
    }
    if !rows.is_empty() {
        written += rows.len() as u64;
        Entity::insert_many(rows).exec(db).await.context("writing the log")?;
    }
    bar.finish_and_clear();
    Ok(written)
}
