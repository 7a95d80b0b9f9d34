//! The serving path: everything a running replica does for its clients.
//! A shop's request enters [`http`] (or [`console`] for people), events go
//! through [`ingest`] into the log and the session actors, scores come from
//! the [`inference`] pool, and [`stream`] fans live KPIs and customer views
//! out to WebSocket dashboards.

pub mod console;
pub mod http;
pub mod inference;
pub mod ingest;
pub mod stream;
pub mod web;

pub mod cli;
