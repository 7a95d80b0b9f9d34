//! Reading the lake back: the archived events whose event time falls in a
//! window, in log order, a block at a time (`replay`, `segment` and
//! `train --from-lake`). Only the columns that rebuild an event are read
//! (`seq`, `event_id`, `customer_id`, `session_id`, `event_time`,
//! `payload`); the payload is the log's body, so an event read back is the
//! one that was logged.
//!
//! A block's rows are spread over one file per day of event time; the
//! window picks the files by their day and then the rows by their time, and
//! the rows of a block are merged back into log order before they are handed
//! on. Memory is bounded by one block (`lake.block_events` positions).

use super::manifest::{FileEntry, Manifest, MANIFEST_KEY};
use super::LakeStore;
use actors::event::{CustomerId, Event, EventId, EventKind, LoggedEvent, SessionId};
use anyhow::Context;
use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

/// The event times to read: `since` inclusive, `until` exclusive.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Window {
    /// The window from `--since` / `--until`; refuses an empty one.
    pub fn new(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> anyhow::Result<Window> {
        if let (Some(s), Some(u)) = (since, until) {
            anyhow::ensure!(s < u, "--since {s} must be before --until {u}");
        }
        Ok(Window { since, until })
    }

    fn holds(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Whether a file of `date`'s events (a UTC day) may hold rows of the window.
    fn may_hold(&self, date: NaiveDate) -> bool {
        let starts = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        self.since.is_none_or(|s| date >= s.date_naive()) && self.until.is_none_or(|u| starts.is_some_and(|t| t < u))
    }
}

/// What a read went through.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReadStats {
    /// Data files read (those of days outside the window are not).
    pub files: u64,
    pub bytes: u64,
    /// Events in the window, handed on.
    pub events: u64,
    /// Rows whose payload does not parse as an event (never written by
    /// cartpulse; skipped and counted).
    pub unreadable: u64,
    /// The log position the lake is archived through.
    pub archived_through: i64,
}

/// A lake opened for reading: its store and manifest.
pub struct LakeReader {
    store: LakeStore,
    manifest: Manifest,
}

impl LakeReader {
    /// Opens the lake at `store`; an empty lake (no manifest) is an error
    /// that says so.
    pub async fn open(store: LakeStore) -> anyhow::Result<LakeReader> {
        let location = store.location(MANIFEST_KEY);
        let bytes = store.get(MANIFEST_KEY).await?.with_context(|| {
            format!("the lake at {} holds nothing archived yet (no manifest {location})", store.describe())
        })?;
        let manifest =
            Manifest::parse(&bytes).with_context(|| format!("the lake's manifest {location} is unreadable"))?;
        Ok(LakeReader { store, manifest })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// The number of archived rows in files the window may touch (for a
    /// progress bar; rows of those days outside the window count too).
    pub fn rows_to_scan(&self, window: Window) -> u64 {
        self.manifest.files().filter(|f| window.may_hold(f.date)).map(|f| f.rows).sum()
    }

    /// The files of each archived block the window may touch, in log
    /// order (blocks with none left out).
    pub fn blocks(&self, window: Window) -> Vec<Vec<FileEntry>> {
        self.manifest
            .blocks
            .iter()
            .map(|b| b.files.iter().filter(|f| window.may_hold(f.date)).cloned().collect::<Vec<_>>())
            .filter(|files| !files.is_empty())
            .collect()
    }

    /// The window's events of one block's `files`, in log order.
    pub async fn read_block(
        &self,
        files: &[FileEntry],
        window: Window,
        stats: &mut ReadStats,
    ) -> anyhow::Result<Vec<LoggedEvent>> {
        stats.archived_through = self.manifest.archived_through;
        let mut events = Vec::with_capacity(files.iter().map(|f| f.rows as usize).sum());
        for f in files {
            let location = self.store.location(&f.path);
            let bytes = self.store.get(&f.path).await?.with_context(|| {
                format!("the manifest lists {location}, but it is not in the lake (restore it from a version)")
            })?;
            stats.files += 1;
            stats.bytes += bytes.len() as u64;
            let (mut rows, unreadable) = tokio::task::spawn_blocking(move || decode(bytes))
                .await
                .context("the Parquet reader panicked")?
                .with_context(|| format!("reading {location}"))?;
            stats.unreadable += unreadable;
            rows.retain(|e| window.holds(e.event.time));
            events.extend(rows);
        }
        // A block's days were written to separate files: back into log order.
        events.sort_unstable_by_key(|e| e.seq);
        stats.events += events.len() as u64;
        Ok(events)
    }

    /// Hands `visit` the window's events block by block, each block's in log
    /// order; stops at the first error `visit` returns.
    pub async fn for_each_block(
        &self,
        window: Window,
        mut visit: impl FnMut(Vec<LoggedEvent>) -> anyhow::Result<()>,
    ) -> anyhow::Result<ReadStats> {
        let mut stats = ReadStats { archived_through: self.manifest.archived_through, ..Default::default() };
        for files in self.blocks(window) {
            let events = self.read_block(&files, window, &mut stats).await?;
            if !events.is_empty() {
                visit(events)?;
            }
        }
        Ok(stats)
    }
}

/// The events of one data file, and how many rows had a payload that does
/// not parse.
pub fn decode(bytes: Vec<u8>) -> anyhow::Result<(Vec<LoggedEvent>, u64)> {
    const COLUMNS: [&str; 6] = ["seq", "event_id", "customer_id", "session_id", "event_time", "payload"];
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?;
    let roots: Vec<usize> = COLUMNS
        .iter()
        .map(|name| builder.schema().index_of(name).map_err(|_| anyhow::anyhow!("the file has no column {name:?}")))
        .collect::<anyhow::Result<_>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder.with_projection(mask).with_batch_size(8192).build()?;
    let (mut out, mut unreadable) = (Vec::new(), 0u64);
    for batch in reader {
        unreadable += decode_batch(&batch?, &mut out)?;
    }
    Ok((out, unreadable))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> anyhow::Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .with_context(|| format!("column {name:?} is missing or of another type"))
}

fn decode_batch(batch: &RecordBatch, out: &mut Vec<LoggedEvent>) -> anyhow::Result<u64> {
    let seq = column::<Int64Array>(batch, "seq")?;
    let event_id = column::<StringArray>(batch, "event_id")?;
    let customer_id = column::<StringArray>(batch, "customer_id")?;
    let session_id = column::<StringArray>(batch, "session_id")?;
    let time = column::<TimestampMicrosecondArray>(batch, "event_time")?;
    let payload = column::<StringArray>(batch, "payload")?;
    let mut unreadable = 0;
    for i in 0..batch.num_rows() {
        let Ok(kind) = serde_json::from_str::<EventKind>(payload.value(i)) else {
            unreadable += 1;
            continue;
        };
        let t = DateTime::from_timestamp_micros(time.value(i))
            .with_context(|| format!("event_time {} is out of range", time.value(i)))?;
        out.push(LoggedEvent {
            seq: seq.value(i),
            event: Event {
                event_id: EventId::new_unchecked(event_id.value(i).to_owned()),
                customer_id: CustomerId::new_unchecked(customer_id.value(i).to_owned()),
                session_id: (!session_id.is_null(i)).then(|| SessionId::new_unchecked(session_id.value(i).to_owned())),
                time: t,
                kind,
            },
            acked_at_ms: 0,
            trace: None,
        });
    }
    Ok(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::events::{FileWriter, LogRow};

    fn row(seq: i64, body: &str, session: Option<&str>) -> LogRow {
        LogRow {
            seq,
            event_id: format!("e{seq}"),
            customer_id: "c1".into(),
            session_id: session.map(str::to_owned),
            event_type: "purchase".into(),
            event_time: DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
            body: body.into(),
        }
    }

    #[test]
    fn a_written_file_reads_back_as_the_logged_events() {
        let purchase = r#"{"type":"purchase","invoice":"i1","lines":[{"sku":"A","quantity":2,"unit_price":1.5}]}"#;
        let mut w = FileWriter::new(2).unwrap();
        w.push(&row(7, purchase, None)).unwrap();
        w.push(&row(8, r#"{"type":"session_end"}"#, Some("s1"))).unwrap();
        w.push(&row(9, "not json", Some("s1"))).unwrap();
        let (events, unreadable) = decode(w.finish().unwrap()).unwrap();
        assert_eq!(unreadable, 1);
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(events[0].event.kind, serde_json::from_str::<EventKind>(purchase).unwrap());
        assert_eq!(events[0].event.session_id, None);
        assert_eq!(events[1].event.session_id.as_ref().map(|s| s.as_str()), Some("s1"));
        assert_eq!(events[1].event.time, DateTime::from_timestamp(1_700_000_008, 0).unwrap());
        assert_eq!(events[1].event.event_id.as_str(), "e8");
    }

    #[test]
    fn the_window_picks_days_then_times() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let w = Window { since: Some(t("2026-12-02T12:00:00Z")), until: Some(t("2026-12-04T00:00:00Z")) };
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(!w.may_hold(d("2026-12-01")));
        assert!(w.may_hold(d("2026-12-02")));
        assert!(w.may_hold(d("2026-12-03")));
        assert!(!w.may_hold(d("2026-12-04")), "until is that day's midnight: none of its rows is before it");
        assert!(w.holds(t("2026-12-02T12:00:00Z")));
        assert!(!w.holds(t("2026-12-04T00:00:00Z")));
        let w = Window { until: Some(t("2026-12-04T00:00:01Z")), ..w };
        assert!(w.may_hold(d("2026-12-04")), "until's own day is read, its rows then filtered");
        assert!(!w.may_hold(d("2026-12-05")));
        assert!(Window::default().holds(t("1999-01-01T00:00:00Z")));
    }
}
