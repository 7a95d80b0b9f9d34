//! `cartpulse bench`: measurements of the running system, each printing a
//! small human table to stderr and one JSON object as the last stdout line, so
//! that scripts and CI can record the numbers.
//!
//! - [`ingest`]: sustained ingest throughput (events acknowledged and applied
//!   by the session actors per second) and acknowledgement latency.
//! - [`inference`]: the inference pool's predictions/s and latency.
//! - [`ws`]: WebSocket clients held, memory per connection, fan-out and
//!   acknowledgement → client latency of the live stream.

pub mod inference;
pub mod ingest;
pub mod ws;
