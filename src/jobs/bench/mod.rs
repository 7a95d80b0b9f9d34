//! `cartpulse bench`: measurements of the running system, each printing a
//! small human table to stderr and one JSON object as the last stdout line, so
//! that scripts and CI can record the numbers.
//!
//! - [`ingest`]: sustained ingest throughput (events acknowledged and applied
//!   by the session actors per second) and acknowledgement latency.
//!   With `--gateways N --redis-url URL` ([`ingest_replicas`]): the same
//!   through N gateways, Redis Streams and M processors, closed loop or
//!   sustained at a target rate, with the backlog over time and ack → commit.
//! - [`inference`]: the inference pool's predictions/s and latency.
//! - [`ws`]: WebSocket clients held, memory per connection, fan-out and
//!   acknowledgement → client latency of the live stream.
//! - [`roll`]: a rolling restart of two gateways and two processors under
//!   load, and whether users saw it (failed requests, lost or doubled
//!   events, missed stream frames, ingest latency during the roll).
//! - [`archive`]: archive throughput into the data lake and Parquet bytes
//!   per event, over a synthetic log written straight into a fresh database.
//! - [`servers`]: the `serve` children both start (one process, or
//!   processors and gateways over a fresh Postgres database and Redis prefix).

pub mod archive;
pub mod cli;
pub mod cpu;
pub mod inference;
pub mod ingest;
pub mod ingest_replicas;
pub mod retention;
pub mod retention_load;
pub mod roll;
pub mod serve_process;
pub mod servers;
pub mod ws;

/// Runs a bench on its own 2-thread runtime with the open-file limit raised
/// (children inherit it), ends it on Ctrl-C, and prints its report as the
/// last stdout line; answers the report.
pub fn run_printed<R: serde::Serialize>(
    bench: impl std::future::Future<Output = anyhow::Result<R>>,
) -> anyhow::Result<R> {
    ws::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = rt.block_on(async {
        tokio::select! {
            r = bench => r,
            Ok(()) = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(report)
}
