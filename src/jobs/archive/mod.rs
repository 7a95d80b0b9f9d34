//! `cartpulse archive`: writes the committed, checkpointed events of the log
//! to the data lake as Parquet (docs/data-lake.md); the run itself is
//! [`crate::lake::archive`].

pub mod cli;

pub use crate::lake::archive::{archive, archive_with, run, ArchiveReport};
