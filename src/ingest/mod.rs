//! Ingest: parsing at the edge ([`parse`]) and the durable group commit into
//! the event log ([`committer`]).

pub mod committer;
pub mod parse;
