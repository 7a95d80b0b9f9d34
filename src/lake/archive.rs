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
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::mpsc;

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
    if complete > 0 {
        let reached = |seq: i64| bar.set_position((seq - base) as u64);
        write_blocks(db, store, &mut manifest, complete, lake.row_group_rows, &mut report, &reached).await?;
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

/// Pages in flight from the reader to the encoder, besides the one each of
/// them is on.
const PAGES_AHEAD: usize = 2;

/// What the reader hands the encoder: a page of a block's rows (in log
/// order), or the end of that block.
enum Page {
    Rows(Vec<LogRow>),
    EndOfBlock,
}

/// One day's file of a block, encoded and not yet in the store.
struct Encoded {
    date: NaiveDate,
    first_seq: i64,
    last_seq: i64,
    rows: u64,
    bytes: Vec<u8>,
}

/// A block whose rows are all with the encoder, its files not yet stored.
struct Read {
    first: i64,
    last: i64,
    rows: u64,
    log_bytes: u64,
}

/// The Parquet encoding of a run, on a blocking thread of its own: it takes
/// the pages of one block after another and, at each end of block, answers
/// that block's files (one per UTC day of event time). It holds one block's
/// writers at a time.
struct Encoder {
    pages: mpsc::Sender<Page>,
    files: mpsc::Receiver<Vec<Encoded>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Encoder {
    fn spawn(row_group_rows: usize) -> Encoder {
        let (pages, mut rx) = mpsc::channel::<Page>(PAGES_AHEAD);
        let (done, files) = mpsc::channel(1);
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut days: BTreeMap<NaiveDate, FileWriter> = BTreeMap::new();
            while let Some(page) = rx.blocking_recv() {
                match page {
                    Page::Rows(rows) => {
                        for row in &rows {
                            let w = match days.entry(row.event_time.date_naive()) {
                                Entry::Occupied(e) => e.into_mut(),
                                Entry::Vacant(e) => e.insert(FileWriter::new(row_group_rows)?),
                            };
                            w.push(row)?;
                        }
                    }
                    Page::EndOfBlock => {
                        let mut out = Vec::with_capacity(days.len());
                        for (date, w) in std::mem::take(&mut days) {
                            let (first_seq, last_seq, rows) = (w.first_seq, w.last_seq, w.rows);
                            let bytes = w.finish().context("encoding Parquet")?;
                            out.push(Encoded { date, first_seq, last_seq, rows, bytes });
                        }
                        if done.blocking_send(out).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(())
        });
        Encoder { pages, files, task }
    }

    async fn send(&mut self, page: Page) -> anyhow::Result<()> {
        match self.pages.send(page).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure().await),
        }
    }

    /// The files of the oldest block whose end was sent.
    async fn files(&mut self) -> anyhow::Result<Vec<Encoded>> {
        match self.files.recv().await {
            Some(files) => Ok(files),
            None => Err(self.failure().await),
        }
    }

    /// Why the encoder stopped (it stops only on an error).
    async fn failure(&mut self) -> anyhow::Error {
        match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("the Parquet encoder stopped early"),
            Err(e) => anyhow::anyhow!("the Parquet encoder failed: {e}"),
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        drop(self.pages);
        self.task.await.context("the Parquet encoder failed")?
    }
}

/// Archives the next `complete` blocks of `manifest`: reads each block's
/// rows in pages, writes one file per UTC day of event time, then records
/// the block in the manifest. Reading overlaps encoding: the encoder works
/// on its own thread a page or two behind the reader, and the next block's
/// first page is read while the last block's files are finished. Files and
/// manifest entries are still put strictly in block order, each block's
/// entry after all of its files (reading ahead writes nothing).
async fn write_blocks(
    db: &DatabaseConnection,
    store: &LakeStore,
    manifest: &mut Manifest,
    complete: i64,
    row_group_rows: usize,
    report: &mut ArchiveReport,
    reached: &dyn Fn(i64),
) -> anyhow::Result<()> {
    let mut encoder = Encoder::spawn(row_group_rows);
    let mut pending: Option<Read> = None;
    let (mut first, mut last) = manifest.next_block();
    for _ in 0..complete {
        let mut read = Read { first, last, rows: 0, log_bytes: 0 };
        let mut after = first - 1;
        loop {
            let page = read_page(db, after, last)
                .await
                .context("reading the log")
                .with_context(|| format!("archiving block {first}-{last} to {}", store.describe()))?;
            let n = page.len();
            if let Some(end) = page.last().map(|r| r.seq) {
                read.rows += n as u64;
                read.log_bytes += page.iter().map(log_bytes).sum::<u64>();
                after = end;
                encoder.send(Page::Rows(page)).await?;
                reached(end);
            }
            if let Some(done) = pending.take() {
                store_block(store, manifest, &mut encoder, done, report).await?;
            }
            if (n as u64) < PAGE_ROWS {
                break;
            }
        }
        encoder.send(Page::EndOfBlock).await?;
        pending = Some(read);
        (first, last) = (last + 1, last + manifest.block_events);
    }
    if let Some(done) = pending.take() {
        store_block(store, manifest, &mut encoder, done, report).await?;
    }
    encoder.close().await
}

/// Puts the files of the block `read` (the encoder's oldest), then records
/// the block in the manifest.
async fn store_block(
    store: &LakeStore,
    manifest: &mut Manifest,
    encoder: &mut Encoder,
    read: Read,
    report: &mut ArchiveReport,
) -> anyhow::Result<()> {
    let context = || format!("archiving block {}-{} to {}", read.first, read.last, store.describe());
    let encoded = encoder.files().await.with_context(context)?;
    let mut files = Vec::with_capacity(encoded.len());
    for f in encoded {
        let key = manifest::file_key(f.date, f.first_seq, f.last_seq);
        let size = f.bytes.len() as u64;
        store.put(&key, f.bytes).await.with_context(context)?;
        report.files += 1;
        report.parquet_bytes += size;
        files.push(FileEntry {
            path: key,
            date: f.date,
            first_seq: f.first_seq,
            last_seq: f.last_seq,
            rows: f.rows,
            bytes: size,
        });
    }
    report.events += read.rows;
    report.log_bytes += read.log_bytes;
    manifest.push(Block {
        first_seq: read.first,
        last_seq: read.last,
        rows: read.rows,
        archived_at: Utc::now(),
        files,
    });
    put_manifest(store, manifest).await?;
    report.blocks += 1;
    Ok(())
}

/// A row's bytes in the log (see [`ArchiveReport::log_bytes`]).
fn log_bytes(row: &LogRow) -> u64 {
    (row.event_id.len()
        + row.customer_id.len()
        + row.session_id.as_ref().map_or(0, String::len)
        + row.event_type.len()
        + row.body.len()
        + 24) as u64
}

/// Up to [`PAGE_ROWS`] rows with `after < seq <= last`, in log order:
/// through SQLite's C API on SQLite ([`sqlite`]), through sea-orm otherwise.
async fn read_page(db: &DatabaseConnection, after: i64, last: i64) -> anyhow::Result<Vec<LogRow>> {
    if matches!(db, DatabaseConnection::SqlxSqlitePoolConnection(_)) {
        if let Some(rows) = sqlite::read_page(db.get_sqlite_connection_pool(), after, last).await? {
            return Ok(rows);
        }
    }
    Ok(read_page_orm(db, after, last).await?)
}

/// [`read_page`] through sea-orm.
async fn read_page_orm(db: &DatabaseConnection, after: i64, last: i64) -> Result<Vec<LogRow>, sea_orm::DbErr> {
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

/// The log's pages straight from SQLite's C API on the pool's connection
/// (locked out of sqlx's worker for the page): sqlx's row path copies every
/// value with `sqlite3_value_dup` on its worker thread and frees it on
/// ours, and that malloc traffic was most of the archive's read time. Only
/// values as sqlx reads them through sea-orm are taken (integer `seq`, UTF-8
/// text, RFC 3339 times, decoded as sqlx decodes them); a page with any
/// other value, or any SQLite error, answers `None` and is read again
/// through sea-orm, which decides.
mod sqlite {
    use super::{LogRow, PAGE_ROWS};
    use chrono::{DateTime, Utc};
    use libsqlite3_sys as ffi;
    use std::os::raw::c_int;

    const SQL: &std::ffi::CStr =
        c"SELECT seq, event_id, customer_id, session_id, event_type, event_time, received_at, body \
        FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq ASC LIMIT ?3";

    pub(super) async fn read_page(
        pool: &sea_orm::sqlx::SqlitePool,
        after: i64,
        last: i64,
    ) -> Result<Option<Vec<LogRow>>, sea_orm::sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle();
        // SAFETY: the handle is locked out of sqlx's worker (no other use of
        // the connection) until `handle` drops, after the statement is
        // finalized.
        Ok(unsafe { read(db.as_ptr(), after, last) })
    }

    /// Finalizes its statement when dropped.
    struct Statement(*mut ffi::sqlite3_stmt);

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: a statement of `sqlite3_prepare_v2` (or null), finalized once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }

    unsafe fn read(db: *mut ffi::sqlite3, after: i64, last: i64) -> Option<Vec<LogRow>> {
        let mut raw = std::ptr::null_mut();
        let rc = ffi::sqlite3_prepare_v2(db, SQL.as_ptr(), -1, &mut raw, std::ptr::null_mut());
        let stmt = Statement(raw);
        if rc != ffi::SQLITE_OK || stmt.0.is_null() {
            return None;
        }
        let limit = i64::try_from(PAGE_ROWS).ok()?;
        for (i, v) in [(1, after), (2, last), (3, limit)] {
            if ffi::sqlite3_bind_int64(stmt.0, i, v) != ffi::SQLITE_OK {
                return None;
            }
        }
        let mut rows = Vec::with_capacity(PAGE_ROWS as usize);
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => rows.push(row(stmt.0)?),
                ffi::SQLITE_DONE => return Some(rows),
                _ => return None,
            }
        }
    }

    unsafe fn row(stmt: *mut ffi::sqlite3_stmt) -> Option<LogRow> {
        if ffi::sqlite3_column_type(stmt, 0) != ffi::SQLITE_INTEGER {
            return None;
        }
        let session_id = match ffi::sqlite3_column_type(stmt, 3) {
            ffi::SQLITE_NULL => None,
            _ => Some(text(stmt, 3)?.to_owned()),
        };
        Some(LogRow {
            seq: ffi::sqlite3_column_int64(stmt, 0),
            event_id: text(stmt, 1)?.to_owned(),
            customer_id: text(stmt, 2)?.to_owned(),
            session_id,
            event_type: text(stmt, 4)?.to_owned(),
            event_time: time(stmt, 5)?,
            received_at: time(stmt, 6)?,
            body: text(stmt, 7)?.to_owned(),
        })
    }

    /// A text value, borrowed until the next step.
    unsafe fn text<'a>(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<&'a str> {
        if ffi::sqlite3_column_type(stmt, i) != ffi::SQLITE_TEXT {
            return None;
        }
        let p = ffi::sqlite3_column_text(stmt, i);
        let n = usize::try_from(ffi::sqlite3_column_bytes(stmt, i)).ok()?;
        if p.is_null() {
            return None;
        }
        std::str::from_utf8(std::slice::from_raw_parts(p, n)).ok()
    }

    /// As sqlx decodes a `DateTime<Utc>` stored as RFC 3339 text.
    unsafe fn time(stmt: *mut ffi::sqlite3_stmt, i: c_int) -> Option<DateTime<Utc>> {
        let t = DateTime::parse_from_rfc3339(text(stmt, i)?).ok()?;
        Some(t.with_timezone(&Utc))
    }
}
