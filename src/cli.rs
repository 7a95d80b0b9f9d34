//! The command line: `cartpulse serve | migrate | keys | users | replay | bench | demo | train | predict | segment | segments | models | archive | openapi`.

use crate::config::{Overrides, Settings};
use clap::{Args, Parser, Subcommand};
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
    Serve(crate::serving::cli::ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: crate::keys::cli::KeysCommand,
    },
    /// Send a data file (or synthetic traffic) to a running service.
    Replay(crate::jobs::replay::cli::ReplayArgs),
    /// Benchmarks; each prints its figures as JSON on the last stdout line.
    Bench {
        #[command(subcommand)]
        command: crate::jobs::bench::cli::BenchCommand,
    },
    /// Train the purchase-intent model with stratified k-fold CV; last stdout line is JSON.
    Train(crate::jobs::train::cli::TrainArgs),
    /// Score every row of a UCI-format CSV with a trained model (CSV `row,probability`).
    Predict(crate::jobs::train::cli::PredictArgs),
    /// One round of scheduled retraining: judge the shadow candidate against the active version on the sessions
    /// closed since it was trained (promote it if significantly better), then train, publish and shadow a new one.
    Retrain(crate::jobs::retrain::cli::RetrainArgs),
    /// K-Means segmentation of the customer profiles; stores a new version, last stdout line is JSON.
    Segment(crate::jobs::segment::cli::SegmentArgs),
    /// Segmentation versions: list them, activate one for live assignment.
    Segments {
        #[command(subcommand)]
        command: crate::jobs::segment::cli::SegmentsCommand,
    },
    /// Admin console users: create (password from CARTPULSE_USER_PASSWORD or stdin), list.
    Users {
        #[command(subcommand)]
        command: crate::serving::console::cli::UsersCommand,
    },
    /// Model registry: publish a trained model, list, promote (A/B with --traffic), roll back.
    Models {
        #[command(subcommand)]
        command: crate::models::cli::ModelsCommand,
    },
    /// Serve and feed the service its own traffic; prints where to look.
    Demo(crate::jobs::demo::cli::DemoArgs),
    /// Write the committed, checkpointed events of the log to the data lake as Parquet (one run; resumes after the
    /// last archived block); last stdout line is JSON.
    Archive(crate::jobs::archive::cli::ArchiveArgs),
    /// Print the API contract: the OpenAPI 3.1 document served at /v1/openapi.json.
    Openapi,
}

impl GlobalArgs {
    pub fn overrides(&self, listen: Option<String>) -> Overrides {
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

/// Runs a command to completion; each module's `cli` does the work.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Serve(args) => crate::serving::cli::serve(global, args),
        Command::Migrate => {
            let settings = global.settings(None)?;
            crate::telemetry::init_logging(&settings.log.level, settings.log.format == crate::config::LogFormat::Json);
            tokio_rt()?.block_on(async {
                let db = crate::db::connect(&settings).await?;
                crate::db::migrate(&db).await?;
                eprintln!("migrations applied");
                Ok(())
            })
        }
        Command::Keys { command } => crate::keys::cli::run(global, command),
        Command::Replay(args) => crate::jobs::replay::cli::replay(global, args),
        Command::Bench { command } => crate::jobs::bench::cli::run(global, command),
        Command::Train(args) => crate::jobs::train::cli::train(global, args),
        Command::Predict(args) => crate::jobs::train::cli::predict(args),
        Command::Retrain(args) => crate::jobs::retrain::cli::retrain(global, args),
        Command::Segment(args) => crate::jobs::segment::cli::segment(global, args),
        Command::Segments { command } => crate::jobs::segment::cli::segments(global, command),
        Command::Users { command } => crate::serving::console::cli::run(global, command),
        Command::Models { command } => crate::models::cli::run(global, command),
        Command::Demo(args) => crate::jobs::demo::cli::demo(global, args),
        Command::Archive(args) => crate::jobs::archive::cli::archive(global, args),
        Command::Openapi => {
            println!("{}", crate::serving::http::openapi::json());
            Ok(())
        }
    }
}

/// A multi-threaded Tokio runtime for the commands that are not actix systems.
pub fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
