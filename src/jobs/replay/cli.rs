//! `cartpulse replay`: sends a data file, synthetic traffic or the data
//! lake's archived events to a running service and prints the summary as
//! JSON on the last stdout line.

use super::ReplayFormat;
use secrecy::SecretString;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Input format.
    #[arg(long, value_enum, default_value = "shoppers")]
    pub format: ReplayFormat,
    /// Data file (required unless --synthetic or --from-lake).
    #[arg(long, required_unless_present_any = ["synthetic", "from_lake"], conflicts_with = "from_lake")]
    pub file: Option<PathBuf>,
    /// Generate N synthetic sessions instead of reading a file.
    #[arg(long, conflicts_with_all = ["file", "from_lake"])]
    pub synthetic: Option<u64>,
    /// With --from-lake: re-drive the archived events as they were logged.
    #[command(flatten)]
    pub history: crate::lake::cli::FromLakeArgs,
    /// Base URL of the service, e.g. http://127.0.0.1:8080
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: url::Url,
    /// Ingest (or admin) key [env: CARTPULSE_API_KEY]
    #[arg(long, env = "CARTPULSE_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Events per second (unlimited when absent).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Replay at X times real time by the events' timestamps (as fast as possible when absent).
    #[arg(long, value_name = "X")]
    pub speedup: Option<f64>,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seed for synthetic traffic.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn replay(global: &crate::cli::GlobalArgs, args: ReplayArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn", false);
    let from_lake = args.history.chosen()?;
    let opts = super::ReplayOptions {
        format: args.format,
        file: args.file,
        synthetic: args.synthetic,
        target: args.target,
        api_key: SecretString::from(args.api_key),
        rate: args.rate,
        speedup: args.speedup,
        batch_size: args.batch_size,
        concurrency: args.concurrency,
        seed: args.seed,
        progress: !args.quiet,
    };
    let rt = crate::cli::tokio_rt()?;
    let summary = if let Some((lake, window)) = from_lake {
        anyhow::ensure!(opts.speedup.is_none(), "--speedup does not apply to --from-lake");
        let settings = global.settings(None)?;
        rt.block_on(async {
            let store = lake.store(&settings).await?;
            super::lake::run(&opts, store, window).await
        })?
    } else {
        rt.block_on(super::run(opts))?
    };
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
