//! cartpulse: real-time e-commerce analytics. The binary is a thin shell over
//! this library; see `startup::Application` for how the parts are wired and
//! `docs/architecture.md` for the map.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod db;
pub mod demo;
pub mod http;
pub mod inference;
pub mod ingest;
pub mod keys;
pub mod models;
pub mod redis_link;
pub mod replay;
pub mod replicas;
pub mod segment;
pub mod startup;
pub mod stream;
pub mod telemetry;
pub mod train;
