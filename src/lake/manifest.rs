//! The manifest of the `events` table (`events/_manifest.json`): which
//! blocks of the log are archived, and the files each block wrote.
//!
//! The log is cut into fixed blocks of `block_events` log positions: block
//! `k` holds the events with `k·B < seq ≤ (k+1)·B` (positions left unused by
//! the database, such as rolled-back sequence values, simply have no row).
//! A block is archived only once it is complete (its last position is at or
//! below the archive horizon), and its rows never change after that, so the
//! files of a block are always the same: one per UTC day of event time,
//! `events/date=YYYY-MM-DD/part-<first seq>-<last seq>.parquet`, named by the
//! first and last seq of that day's rows in the block. Writing a block again
//! (after a crash between its files and the manifest, or by two archivers at
//! once) replaces each file with the same rows under the same name: never a
//! second copy, never an overlapping range.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The manifest's key in the lake.
pub const MANIFEST_KEY: &str = "events/_manifest.json";

/// The folder of the table's data files.
pub const EVENTS_DIR: &str = "events";

/// The format of this manifest; a reader refuses a newer one.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub table: String,
    /// Log positions per block; fixed for the life of the lake.
    pub block_events: i64,
    /// Every event with `seq` at or below this is archived (the last
    /// position of the last archived block; 0 when none is).
    pub archived_through: i64,
    pub updated_at: DateTime<Utc>,
    /// The archived blocks, in log order, contiguous from block 0.
    pub blocks: Vec<Block>,
}

/// One archived block: the seq range it covers and its files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: u64,
    pub archived_at: DateTime<Utc>,
    pub files: Vec<FileEntry>,
}

/// One data file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Key relative to the lake's root.
    pub path: String,
    pub date: NaiveDate,
    pub first_seq: i64,
    pub last_seq: i64,
    pub rows: u64,
    pub bytes: u64,
}

impl Manifest {
    pub fn new(block_events: i64) -> Manifest {
        Manifest {
            format: FORMAT,
            table: "events".into(),
            block_events,
            archived_through: 0,
            updated_at: Utc::now(),
            blocks: Vec::new(),
        }
    }

    /// Reads a manifest, refusing formats and shapes this build does not know.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)?;
        anyhow::ensure!(m.format <= FORMAT, "format {} is newer than this build reads ({FORMAT})", m.format);
        anyhow::ensure!(m.block_events > 0, "block_events must be > 0, not {}", m.block_events);
        let mut next = 1;
        for b in &m.blocks {
            anyhow::ensure!(
                b.first_seq == next && b.last_seq == b.first_seq + m.block_events - 1,
                "block {}-{} is not the block after {} of {} positions",
                b.first_seq,
                b.last_seq,
                next - 1,
                m.block_events
            );
            next = b.last_seq + 1;
        }
        anyhow::ensure!(
            m.archived_through == next - 1,
            "archived_through is {} but the blocks end at {}",
            m.archived_through,
            next - 1
        );
        Ok(m)
    }

    /// The first and last seq of the block after the archived ones.
    pub fn next_block(&self) -> (i64, i64) {
        let first = self.archived_through + 1;
        (first, first + self.block_events - 1)
    }

    /// Records an archived block (the one [`Manifest::next_block`] names).
    pub fn push(&mut self, block: Block) {
        debug_assert_eq!((block.first_seq, block.last_seq), self.next_block());
        self.archived_through = block.last_seq;
        self.updated_at = block.archived_at;
        self.blocks.push(block);
    }

    /// Every data file, in block order.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.blocks.iter().flat_map(|b| b.files.iter())
    }

    /// Rows archived in all.
    pub fn rows(&self) -> u64 {
        self.blocks.iter().map(|b| b.rows).sum()
    }
}

/// The key of the file holding `date`'s rows of a block.
pub fn file_key(date: NaiveDate, first_seq: i64, last_seq: i64) -> String {
    format!("{EVENTS_DIR}/date={}/part-{first_seq}-{last_seq}.parquet", date.format("%Y-%m-%d"))
}

/// The first and last seq a data file's key names, if it is one.
pub fn parse_file_key(key: &str) -> Option<(NaiveDate, i64, i64)> {
    let rest = key.strip_prefix(EVENTS_DIR)?.strip_prefix("/date=")?;
    let (date, name) = rest.split_once('/')?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let range = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (a, b) = range.split_once('-')?;
    Some((date, a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let k = file_key(d, 1001, 1999);
        assert_eq!(k, "events/date=2026-12-04/part-1001-1999.parquet");
        assert_eq!(parse_file_key(&k), Some((d, 1001, 1999)));
        assert_eq!(parse_file_key("events/_manifest.json"), None);
    }

    #[test]
    fn blocks_must_be_contiguous() {
        let mut m = Manifest::new(10);
        assert_eq!(m.next_block(), (1, 10));
        m.push(Block { first_seq: 1, last_seq: 10, rows: 3, archived_at: Utc::now(), files: vec![] });
        assert_eq!(m.next_block(), (11, 20));
        let text = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
        let mut bad = m.clone();
        bad.blocks[0].first_seq = 2;
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        let mut bad = m;
        bad.archived_through = 20;
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
    }
}
