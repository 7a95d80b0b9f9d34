//! The command line: `cartpulse serve | migrate | keys | users | replay | bench | demo | train | predict | segment | segments | models`.

use crate::config::{Overrides, Settings};
use crate::keys::Scope;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "cartpulse", version, about = "Real-time e-commerce analytics: events in, live customer features out")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every command understands (each also has a `CARTPULSE_*` env form).
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// TOML config file (default: ./cartpulse.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL: sqlite://FILE?mode=rwc (default) or postgres://… [env: CARTPULSE_DATABASE_URL]
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Redis URL for the multi-replica roles: redis://… or rediss://… [env: CARTPULSE_REDIS_URL]
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// Model store: a directory or s3://bucket/prefix [env: CARTPULSE_MODEL_STORE]
    #[arg(long, global = true)]
    pub model_store: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the session actors.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080, env: CARTPULSE_LISTEN]
        #[arg(long)]
        listen: Option<String>,
        /// all: everything in one process (default); gateway: HTTP ingest and
        /// WebSockets over Redis; processor: the actors over Redis [env: CARTPULSE_ROLE]
        #[arg(long, value_enum)]
        role: Option<crate::config::Role>,
        /// Number of event stream partitions; every replica must agree [default: 16]
        #[arg(long)]
        partitions: Option<usize>,
        /// Partitions a processor consumes, a-b inclusive [default: all]
        #[arg(long)]
        owns: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Send a data file (or synthetic traffic) to a running service.
    Replay(ReplayArgs),
    /// Benchmarks; each prints its figures as JSON on the last stdout line.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Train the purchase-intent model with stratified k-fold CV; last stdout line is JSON.
    Train {
        #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv")]
        data: PathBuf,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value = "models/purchase-intent")]
        out: PathBuf,
        /// Also write ROC, calibration and confusion data to this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Repeats of the stratified k-fold, on split seeds seed, seed+1, …
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// Write every row's fold per repeat (CSV row,seed,fold) for peers run on the same folds.
        #[arg(long)]
        folds_out: Option<PathBuf>,
        /// Write every row's out-of-fold probability per repeat (CSV row,seed,fold,label,score,threshold).
        #[arg(long)]
        oof_out: Option<PathBuf>,
        /// Evaluate only: do not fit or write the final model.
        #[arg(long)]
        no_model: bool,
        /// Model configuration as JSON (fields of ModelConfig; missing ones keep their defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Score every row of a UCI-format CSV with a trained model (CSV `row,probability`).
    Predict {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Output file (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// K-Means segmentation of the customer profiles; stores a new version, last stdout line is JSON.
    Segment {
        /// Number of segments, or `auto` (best silhouette over 2..=12).
        #[arg(long, default_value = "auto")]
        k: String,
        /// Also write the transformed matrix as CSV (customer_id, then the features).
        #[arg(long)]
        export_matrix: Option<PathBuf>,
        /// Also write every customer's segment as CSV (customer_id,segment).
        #[arg(long)]
        assignments: Option<PathBuf>,
        /// Also draw charts (segment sizes, feature profiles) into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Only customers with at least one order (recency measured from their latest activity).
        #[arg(long)]
        buyers_only: bool,
    },
    /// Segmentation versions: list them, activate one for live assignment.
    Segments {
        #[command(subcommand)]
        command: crate::segment::cli::SegmentsCommand,
    },
    /// Admin console users: create (password from CARTPULSE_USER_PASSWORD or stdin), list.
    Users {
        #[command(subcommand)]
        command: crate::console::users::UsersCommand,
    },
    /// Model registry: publish a trained model, list, promote (A/B with --traffic), roll back.
    Models {
        #[command(subcommand)]
        command: crate::models::cli::ModelsCommand,
    },
    /// Serve and feed the service its own traffic; prints where to look.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// UCI Online Shoppers CSV to replay (synthetic traffic if absent).
        #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv")]
        file: PathBuf,
        /// Synthetic sessions to send when the file is absent.
        #[arg(long, default_value_t = 5_000)]
        synthetic: u64,
        /// UCI Online Retail CSV to replay as orders (skipped if absent).
        #[arg(long, default_value = "../shared/data/online_retail.csv")]
        retail: PathBuf,
        /// Seconds the retail file's year of orders is replayed in.
        #[arg(long, default_value_t = 60.0)]
        retail_seconds: f64,
        /// Live events per second once the history is in (0: stop feeding).
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// ingest, read or admin.
        #[arg(long)]
        scope: String,
    },
    /// List keys (ids, names, scopes; never secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Input format.
    #[arg(long, value_enum, default_value = "shoppers")]
    pub format: ReplayFormatArg,
    /// Data file (required unless --synthetic).
    #[arg(long, required_unless_present = "synthetic")]
    pub file: Option<PathBuf>,
    /// Generate N synthetic sessions instead of reading a file.
    #[arg(long, conflicts_with = "file")]
    pub synthetic: Option<u64>,
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

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ReplayFormatArg {
    Shoppers,
    Retail,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ingest throughput and acknowledgement latency against a release server.
    Ingest(BenchIngestArgs),
    /// Inference pool throughput and latency with a trained model.
    Inference(BenchInferenceArgs),
    /// Live stream: WebSocket clients held, memory per connection, fan-out, ack → client latency.
    Ws(crate::bench::ws::WsArgs),
    /// A rolling restart of 2 gateways and 2 processors under load: failed
    /// requests, lost or doubled events, missed stream frames (scripts/rolling-restart.sh).
    Roll(crate::bench::roll::RollArgs),
    /// One load process of `bench ws` (started by it).
    #[command(hide = true)]
    WsWorker(crate::bench::ws::WorkerArgs),
}

#[derive(Args, Debug)]
pub struct BenchInferenceArgs {
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

#[derive(Args, Debug)]
pub struct BenchIngestArgs {
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
    pub scale: crate::bench::ingest_replicas::ScaleArgs,
}

impl GlobalArgs {
    fn overrides(&self, listen: Option<String>) -> Overrides {
        Overrides {
            listen,
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            model_store: self.model_store.clone(),
            ..Default::default()
        }
    }

    /// Reads the settings with these flags on top.
    pub fn settings(&self, listen: Option<String>) -> anyhow::Result<Settings> {
        Settings::load(self.config.as_deref(), &self.overrides(listen))
    }
}

/// Runs a command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, role, partitions, owns } => {
            let overrides = Overrides { role, partitions, owns, ..cli.global.overrides(listen) };
            let settings = Settings::load(cli.global.config.as_deref(), &overrides)?;
            crate::telemetry::init_logging(&settings.log.level, settings.log.format == "json");
            actix_web::rt::System::new().block_on(serve(settings))
        }
        Command::Migrate => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging(&settings.log.level, settings.log.format == "json");
            tokio_rt()?.block_on(async {
                let db = crate::db::connect(&settings).await?;
                crate::db::migrate(&db).await?;
                eprintln!("migrations applied");
                Ok(())
            })
        }
        Command::Keys { command } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(keys(settings, command))
        }
        Command::Replay(args) => {
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(crate::commands::replay(args))
        }
        Command::Bench { command: BenchCommand::Inference(args) } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            actix_web::rt::System::new().block_on(crate::bench::inference::run(
                crate::bench::inference::InferenceBenchOptions {
                    model: args.model,
                    data: args.data,
                    seconds: args.seconds,
                    rate: args.rate,
                    pool: settings.pool_settings(),
                },
            ))
        }
        Command::Bench { command: BenchCommand::Ws(args) } => {
            crate::telemetry::init_logging("warn", false);
            crate::bench::ws::run_cli(args)
        }
        Command::Bench { command: BenchCommand::Roll(args) } => {
            crate::telemetry::init_logging("warn", false);
            crate::bench::roll::run_cli(args)
        }
        Command::Bench { command: BenchCommand::WsWorker(args) } => crate::bench::ws::worker_cli(args),
        Command::Bench { command: BenchCommand::Ingest(args) } => {
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(crate::commands::bench_ingest(cli.global, args))
        }
        Command::Train { data, folds, seed, out, report, repeats, folds_out, oof_out, no_model, config } => {
            crate::telemetry::init_logging("warn", false);
            let config = match config {
                Some(path) => std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice(&b)?))
                    .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?,
                None => Default::default(),
            };
            let r = crate::train::run_protocol(
                crate::train::TrainOptions { data, folds, seed, out, report, config, progress: true },
                &crate::train::Protocol { repeats, folds_out, oof_out, no_model },
            )?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Predict { model, data, out } => crate::train::predict(&model, &data, out.as_deref()),
        Command::Segment { k, export_matrix, assignments, report, seed, buyers_only } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            let k = k.parse()?;
            let opts = crate::segment::SegmentOptions {
                settings,
                k,
                export_matrix,
                assignments,
                report,
                seed,
                print_table: true,
                buyers_only,
            };
            let r = tokio_rt()?.block_on(crate::segment::run(opts))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::Segments { command } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(crate::segment::cli::run(&settings, command))
        }
        Command::Users { command } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(crate::console::users::run(&settings, command))
        }
        Command::Models { command } => {
            let settings = cli.global.settings(None)?;
            crate::telemetry::init_logging("warn", false);
            tokio_rt()?.block_on(crate::models::cli::run(&settings, command))
        }
        Command::Demo { listen, file, synthetic, retail, retail_seconds, rate } => {
            let settings = cli.global.settings(Some(listen))?;
            crate::telemetry::init_logging(&settings.log.level, settings.log.format == "json");
            anyhow::ensure!(
                retail_seconds.is_finite() && retail_seconds > 0.0,
                "--retail-seconds must be a positive number of seconds (got {retail_seconds})"
            );
            let opts = crate::demo::DemoOptions { file, synthetic, retail: Some(retail), retail_seconds, rate };
            actix_web::rt::System::new().block_on(crate::demo::run(settings, opts))
        }
    }
}

fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = crate::startup::Application::build(settings).await?;
    app.run_until_stopped().await
}

async fn keys(settings: Settings, command: KeysCommand) -> anyhow::Result<()> {
    let db = crate::db::connect(&settings).await?;
    crate::db::migrate(&db).await?;
    match command {
        KeysCommand::Create { name, scope } => {
            let scope: Scope = scope.parse().map_err(anyhow::Error::msg)?;
            let k = crate::keys::create(&db, &name, scope).await?;
            eprintln!("created {} key {:?} (id {}); store it now, it is not shown again:", scope.as_str(), name, k.id);
            println!("{}", k.key.expose_secret());
        }
        KeysCommand::List => {
            for k in crate::keys::list(&db).await? {
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                println!("{}\t{}\t{}\t{}\t{}", k.id, k.scope, state, k.created_at.to_rfc3339(), k.name);
            }
        }
        KeysCommand::Revoke { id } => {
            anyhow::ensure!(crate::keys::revoke(&db, &id).await?, "no key with id {id}");
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
