//! `cartpulse retrain`: one round of the scheduled retraining (see the
//! module above), over the database and model store of the global flags;
//! the last stdout line is the round's report as JSON.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RetrainArgs {
    /// A session counts (for training and for judging) once it ended this many seconds ago.
    #[arg(long, default_value_t = 3600)]
    pub label_delay_s: u64,
    /// Train only on sessions that ended at or after this time (RFC 3339); default all.
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Promote the shadow candidate when the 95 % interval of its AUC gain over the active version lies above this.
    #[arg(long, default_value_t = 0.0)]
    pub margin: f64,
    /// Settled sessions closed since the candidate was trained, needed to judge it.
    #[arg(long, default_value_t = 1000)]
    pub min_sessions: u64,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model configuration as JSON: fields of ModelConfig laid over the recommended
    /// configuration (as with `cartpulse train`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the trained model directories are written.
    #[arg(long, default_value = "models/retrain")]
    pub work_dir: PathBuf,
}

pub fn retrain(global: &crate::cli::GlobalArgs, args: RetrainArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn", false);
    anyhow::ensure!(args.margin.is_finite() && args.margin >= 0.0, "--margin must be 0 or more, not {}", args.margin);
    anyhow::ensure!(args.folds >= 2, "--folds must be at least 2, not {}", args.folds);
    let config = crate::jobs::train::config_file::model_config(args.config.as_deref())?;
    let report = super::run(&super::RetrainOptions {
        settings: global.settings(None)?,
        label_delay: std::time::Duration::from_secs(args.label_delay_s),
        since: args.since,
        margin: args.margin,
        min_sessions: args.min_sessions,
        folds: args.folds,
        seed: args.seed,
        config,
        work_dir: args.work_dir,
        progress: true,
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
