//! `cartpulse train` and `cartpulse predict`: fit and evaluate the purchase
//! model from a UCI-format CSV, and score a file with a trained model.

use std::path::PathBuf;

/// `cartpulse train`: stratified k-fold CV, then the final model; the last
/// stdout line is the report as JSON.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv")]
    pub data: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "models/purchase-intent")]
    pub out: PathBuf,
    /// Also write ROC, calibration and confusion data to this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Repeats of the stratified k-fold, on split seeds seed, seed+1, …
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Write every row's fold per repeat (CSV row,seed,fold) for peers run on the same folds.
    #[arg(long)]
    pub folds_out: Option<PathBuf>,
    /// Write every row's out-of-fold probability per repeat (CSV row,seed,fold,label,score,threshold).
    #[arg(long)]
    pub oof_out: Option<PathBuf>,
    /// Evaluate only: do not fit or write the final model.
    #[arg(long)]
    pub no_model: bool,
    /// Model configuration as JSON (fields of ModelConfig; missing ones keep their defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `cartpulse predict`: scores every row (CSV `row,probability`).
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Output file (stdout when absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn", false);
    let config = match &args.config {
        Some(path) => std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?,
        None => Default::default(),
    };
    let TrainArgs { data, folds, seed, out, report, repeats, folds_out, oof_out, no_model, .. } = args;
    let r = super::run_protocol(
        super::TrainOptions { data, folds, seed, out, report, config, progress: true },
        &super::Protocol { repeats, folds_out, oof_out, no_model },
    )?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    super::predict(&args.model, &args.data, args.out.as_deref())
}
