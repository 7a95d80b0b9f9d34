//! cartpulse: real-time e-commerce analytics. The binary is a thin shell over
//! this library; see `startup::Application` for how the serving path is wired
//! and `docs/architecture.md` for the map.
//!
//! The crate is grouped by role:
//! - [`serving`]: the path a request takes while the service runs (HTTP API,
//!   ingest, live stream, inference pool, admin console);
//! - [`jobs`]: offline commands that run beside it or against it (train,
//!   segment, replay, archive, bench, demo);
//! - shared foundations both use: [`config`], [`db`], [`redis_link`],
//!   [`telemetry`], [`keys`], [`models`] (the purchase model: network,
//!   model directory, store and registry), [`segments`] (stored
//!   segmentations and live assignment), [`lake`] (the event log as Parquet
//!   in a directory or on S3), [`retention`] (how long the database keeps
//!   the log) and [`replicas`] (who is up);
//! - the composition: [`startup`] builds the service, [`cli`] parses the
//!   command line and hands each subcommand to its module's `cli`.
//!
//! The session actors, their features and the event types live in the
//! `actors` crate, which depends on none of this.

pub mod jobs;
pub mod serving;

pub mod config;
pub mod db;
pub mod keys;
pub mod lake;
pub mod models;
pub mod redis_link;
pub mod replicas;
pub mod retention;
pub mod segments;
pub mod telemetry;

pub mod cli;
pub mod startup;
