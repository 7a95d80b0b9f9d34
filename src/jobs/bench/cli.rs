//! `cartpulse bench ingest | inference | ws | roll | archive | retention`: each bench prints a
//! small table to stderr and its figures as JSON on the last stdout line.

use crate::cli::GlobalArgs;
use secrecy::SecretString;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Ingest throughput and acknowledgement latency against a release server.
    Ingest(IngestArgs),
    /// Inference pool throughput and latency with a trained model.
    Inference(InferenceArgs),
    /// Live stream: WebSocket clients held, memory per connection, fan-out, ack → client latency.
    Ws(super::ws::WsArgs),
    /// A rolling restart of 2 gateways and 2 processors under load: failed
    /// requests, lost or doubled events, missed stream frames (scripts/rolling-restart.sh).
    Roll(super::roll::RollArgs),
    /// Archive throughput into the data lake and Parquet bytes per event, over a synthetic log.
    Archive(super::archive::ArchiveArgs),
    /// Retention: a day of the log deleted under live load (ingest p99 against
    /// steady state), or a simulated run of many days (`--simulate-days`).
    Retention(super::retention::RetentionArgs),
    /// One load process of `bench ws` (started by it).
    #[command(hide = true)]
    WsWorker(super::ws::WorkerArgs),
}

#[derive(clap::Args, Debug)]
pub struct InferenceArgs {
    /// Model directory written by `cartpulse train`.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Rows to score (the UCI file).
    #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv")]
    pub data: std::path::PathBuf,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Requests per second of the open-loop phase (single-row requests).
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Events to send.
    #[arg(long, default_value_t = 300_000)]
    pub events: u64,
    /// Concurrent producers.
    #[arg(long, default_value_t = 8)]
    pub producers: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Drive an already running server instead of starting one.
    #[arg(long, requires = "api_key")]
    pub target: Option<url::Url>,
    /// Key for --target.
    #[arg(long, env = "CARTPULSE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub scale: super::ingest_replicas::ScaleArgs,
}

/// Runs one bench to completion.
pub fn run(global: &GlobalArgs, command: BenchCommand) -> anyhow::Result<()> {
    // A ws worker keeps its stderr for its parent; every bench logs warnings only.
    let quiet = || crate::telemetry::init_logging("warn", false);
    match command {
        BenchCommand::WsWorker(args) => super::ws::worker_cli(args),
        BenchCommand::Inference(args) => {
            quiet();
            let settings = global.settings(None)?;
            actix_web::rt::System::new().block_on(super::inference::run(super::inference::InferenceBenchOptions {
                model: args.model,
                data: args.data,
                seconds: args.seconds,
                rate: args.rate,
                pool: settings.pool_settings(),
            }))
        }
        BenchCommand::Ws(args) => {
            quiet();
            super::ws::run_cli(args)
        }
        BenchCommand::Archive(args) => {
            quiet();
            let settings = global.settings(None)?;
            super::run_printed(super::archive::run(args, settings)).map(|_| ())
        }
        BenchCommand::Retention(args) => {
            quiet();
            let settings = global.settings(None)?;
            super::run_printed(super::retention::run(args, settings)).map(|_| ())
        }
        BenchCommand::Roll(args) => {
            quiet();
            super::roll::run_cli(args)
        }
        BenchCommand::Ingest(args) => {
            quiet();
            crate::cli::tokio_rt()?.block_on(super::ingest::run(super::ingest::IngestBenchOptions {
                database_url: global.database_url.clone().map(SecretString::from),
                events: args.events,
                producers: args.producers,
                batch_size: args.batch_size,
                target: args.target,
                api_key: args.api_key.map(SecretString::from),
                scale: args.scale,
                redis_url: global.redis_url.clone(),
                ..Default::default()
            }))?;
            Ok(())
        }
    }
}
