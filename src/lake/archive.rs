//! One archive run (docs/data-lake.md): every complete block below the
//! horizon ([`super::horizon`]), in log order. Block by block it reads the
//! block's rows from the database in pages, writes one zstd Parquet file per
//! UTC day of event time, then records the block in the manifest. The next
//! run resumes after the last recorded block. A run stopped anywhere leaves
//! at worst some files of the next block without its manifest entry; the
//! next run writes the same files again (see [`super::manifest`]), so the
//! lake never holds an event twice. `cartpulse archive`
//! (`crate::jobs::archive`) runs it.

use super::events::{FileWriter, LogRow};
use super::manifest::{self, Block, FileEntry, Manifest, MANIFEST_KEY};
use super::LakeStore;
use crate::config::Settings;
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use entities::event;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeMap;
use std::time::Instant;

/// Rows read from the database per query.
const PAGE_ROWS: u64 = 20_000;

/// What one run did; the CLI prints it as JSON.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ArchiveReport {
    /// The lake (`lake.store`).
    pub store: String,
    /// Every event at or below this seq was committed and checkpointed.
    pub horizon: i64,
    /// The partition whose checkpoint set the horizon.
    pub lowest_partition: usize,
    /// Every event at or below this seq is in the lake (after the run).
    pub archived_through: i64,
    pub block_events: i64,
    /// Blocks, events, files and Parquet bytes this run wrote.
    pub blocks: u64,
    pub events: u64,
    pub files: u64,
    pub parquet_bytes: u64,
    /// The same events' bytes in the log: ids, type and JSON body as text,
    /// plus 8 bytes each for seq and the two times (indexes not counted).
    pub log_bytes: u64,
    pub seconds: f64,
    /// Events written per second of the run (database reads included).
    pub events_per_s: f64,
    /// Log positions above `archived_through` up to the horizon: the
    /// incomplete block, archived once it fills up.
    pub waiting: i64,
    /// What retention deleted after the run (`cartpulse archive`, unless
    /// `--no-retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::RetentionReport>,
}

/// One run over the database and lake of `settings` (connections of its own).
pub async fn archive(settings: &Settings, progress: bool) -> anyhow::Result<ArchiveReport> {
    let db = crate::db::connect(settings).await.context("connecting to the database")?;
    let store = LakeStore::from_settings(settings).await?;
    archive_with(&db, &store, settings, progress).await
}

/// [`archive`] on a Tokio runtime of its own, for the command and for
/// callers on a blocking thread.
pub fn run(settings: &Settings, progress: bool) -> anyhow::Result<ArchiveReport> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(archive(settings, progress))
}

/// The service's scheduled archive (`lake.archive_every_s` > 0): every
/// interval, while `leads()` (the process holds partition 0, or owns every
/// customer), one run on a blocking thread with its own runtime and
/// connections, so the Parquet encoding never holds up an arbiter. A run
/// that fails is logged and tried again at the next interval; one that
/// outlasts the interval delays the next (never two at once here; another
/// archiver running meanwhile is harmless, see docs/data-lake.md).
///
/// After each successful run, retention ([`crate::retention::retain`])
/// deletes what the database no longer needs to keep, on the service's own
/// connections and write gate.
pub fn spawn_scheduled(
    settings: Settings,
    every: std::time::Duration,
    metrics: crate::telemetry::Metrics,
    (db, gate): (DatabaseConnection, actors::WriteGate),
    leads: impl Fn() -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use crate::telemetry::IngestEvent;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if !leads() {
                continue;
            }
            let s = settings.clone();
            match tokio::task::spawn_blocking(move || run(&s, false)).await {
                Ok(Ok(r)) => {
                    let through = r.archived_through;
                    metrics.record(IngestEvent::Archived {
                        blocks: r.blocks,
                        events: r.events,
                        archived_through: r.archived_through,
                        waiting: r.waiting,
                        store: r.store,
                    });
                    match crate::retention::retain(&db, &gate, &settings, through, Utc::now()).await {
                        Ok(r) => metrics.record(IngestEvent::Retained {
                            events: r.deleted_events,
                            partitions: r.dropped_partitions.len(),
                            expired_ids: r.expired_ids,
                            kept: r.kept.len(),
                        }),
                        Err(e) => metrics.record(IngestEvent::RetentionFailed { error: format!("{e:#}") }),
                    }
                }
                Ok(Err(e)) => metrics.record(IngestEvent::ArchiveFailed { error: format!("{e:#}") }),
                Err(e) => metrics.record(IngestEvent::ArchiveFailed { error: format!("the archive task failed: {e}") }),
            }
        }
    })
}

/// Archives every complete block below the horizon into `store`. `progress`
/// draws a bar on stderr when it is a terminal.
pub async fn archive_with(
    db: &DatabaseConnection,
    store: &LakeStore,
    settings: &Settings,
    progress: bool,
) -> anyhow::Result<ArchiveReport> {
    let started = Instant::now();
    let lake = &settings.lake;
    let block_events = i64::try_from(lake.block_events).context("lake.block_events is too large")?;
    let (mut manifest, recorded) = read_manifest(store, block_events).await?;
    let horizon = crate::lake::horizon(db, settings.redis.partitions).await.context("reading the checkpoints")?;
    let mut report = ArchiveReport {
        store: store.describe(),
        horizon: horizon.seq,
        lowest_partition: horizon.lowest_partition,
        block_events,
        ..Default::default()
    };
    let complete = (horizon.seq - manifest.archived_through).max(0) / block_events;
    if complete > 0 && !recorded {
        // A new lake gets its (empty) manifest before its first file, so a
        // run stopped inside the first block is resumed, not refused as
        // files without a manifest.
        put_manifest(store, &manifest).await?;
    }
    let bar = progress_bar(progress, complete as u64 * block_events as u64);
    let base = manifest.archived_through;
    for _ in 0..complete {
        let (first, last) = manifest.next_block();
        let block = write_block(db, store, first, last, lake.row_group_rows, &mut report, &|seq| {
            bar.set_position((seq - base) as u64)
        })
        .await
        .with_context(|| format!("archiving block {first}-{last} to {}", store.describe()))?;
        manifest.push(block);
        put_manifest(store, &manifest).await?;
        report.blocks += 1;
        bar.set_position((last - base) as u64);
    }
    bar.finish_and_clear();
    report.archived_through = manifest.archived_through;
    report.waiting = (horizon.seq - manifest.archived_through).max(0);
    report.seconds = started.elapsed().as_secs_f64();
    report.events_per_s = if report.seconds > 0.0 { report.events as f64 / report.seconds } else { 0.0 };
    Ok(report)
}

fn progress_bar(on: bool, len: u64) -> indicatif::ProgressBar {
    if !on || len == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "archive [{bar:30}] {pos}/{len} log positions {per_sec} {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The lake's manifest, or a new one for an empty lake. A lake that holds
/// data files but no manifest is refused (its files could overlap the
/// blocks of a new one); so is a manifest cut in blocks of another size.
async fn read_manifest(store: &LakeStore, block_events: i64) -> anyhow::Result<(Manifest, bool)> {
    let location = store.location(MANIFEST_KEY);
    match store.get(MANIFEST_KEY).await? {
        Some(bytes) => {
            let m = Manifest::parse(&bytes).with_context(|| format!("the lake's manifest {location} is unreadable"))?;
            anyhow::ensure!(
                m.block_events == block_events,
                "the lake at {} is cut in blocks of {} log positions, but lake.block_events is {block_events}; \
                 set it back to {} (a lake keeps its block size)",
                store.describe(),
                m.block_events,
                m.block_events
            );
            Ok((m, true))
        }
        None => {
            let stray = store.list(manifest::EVENTS_DIR).await?;
            if let Some(f) = stray.iter().find(|f| manifest::parse_file_key(&f.key).is_some()) {
                anyhow::bail!(
                    "the lake at {} holds data files ({} and maybe more) but no manifest {location}; \
                     refusing to archive over them (move them away, or restore the manifest)",
                    store.describe(),
                    f.key
                );
            }
            Ok((Manifest::new(block_events), false))
        }
    }
}

async fn put_manifest(store: &LakeStore, m: &Manifest) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(m)?;
    store.put(MANIFEST_KEY, bytes).await.context("writing the manifest")?;
    Ok(())
}

/// Reads the rows of `first..=last` and writes one file per day of event time.
async fn write_block(
    db: &DatabaseConnection,
    store: &LakeStore,
    first: i64,
    last: i64,
    row_group_rows: usize,
    report: &mut ArchiveReport,
    reached: &dyn Fn(i64),
) -> anyhow::Result<Block> {
    let mut days: BTreeMap<NaiveDate, FileWriter> = BTreeMap::new();
    let mut after = first - 1;
    let mut rows = 0u64;
    loop {
        let page = read_page(db, after, last).await.context("reading the log")?;
        let Some(end) = page.last().map(|r| r.seq) else { break };
        for row in &page {
            report.log_bytes += (row.event_id.len()
                + row.customer_id.len()
                + row.session_id.as_ref().map_or(0, String::len)
                + row.event_type.len()
                + row.body.len()
                + 24) as u64;
            let day = row.event_time.date_naive();
            let w = match days.entry(day) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(FileWriter::new(row_group_rows)?),
            };
            w.push(row)?;
        }
        rows += page.len() as u64;
        after = end;
        reached(end);
        if (page.len() as u64) < PAGE_ROWS {
            break;
        }
    }
    let mut files = Vec::with_capacity(days.len());
    for (date, w) in days {
        let (first_seq, last_seq, n) = (w.first_seq, w.last_seq, w.rows);
        let bytes = tokio::task::spawn_blocking(move || w.finish()).await?.context("encoding Parquet")?;
        let key = manifest::file_key(date, first_seq, last_seq);
        let size = bytes.len() as u64;
        store.put(&key, bytes).await?;
        report.files += 1;
        report.parquet_bytes += size;
        files.push(FileEntry { path: key, date, first_seq, last_seq, rows: n, bytes: size });
    }
    report.events += rows;
    Ok(Block { first_seq: first, last_seq: last, rows, archived_at: Utc::now(), files })
}

/// Up to [`PAGE_ROWS`] rows with `after < seq <= last`, in log order.
async fn read_page(db: &DatabaseConnection, after: i64, last: i64) -> Result<Vec<LogRow>, sea_orm::DbErr> {
    type Row = (i64, String, String, Option<String>, String, DateTime<Utc>, DateTime<Utc>, String);
    let rows: Vec<Row> = event::Entity::find()
        .select_only()
        .column(event::Column::Seq)
        .column(event::Column::EventId)
        .column(event::Column::CustomerId)
        .column(event::Column::SessionId)
        .column(event::Column::EventType)
        .column(event::Column::EventTime)
        .column(event::Column::ReceivedAt)
        .column(event::Column::Body)
        .filter(event::Column::Seq.gt(after))
        .filter(event::Column::Seq.lte(last))
        .order_by_asc(event::Column::Seq)
        .limit(PAGE_ROWS)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, event_id, customer_id, session_id, event_type, event_time, received_at, body)| LogRow {
            seq,
            event_id,
            customer_id,
            session_id,
            event_type,
            event_time,
            received_at,
            body,
        })
        .collect())
}
