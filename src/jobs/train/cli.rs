//! `cartpulse train` and `cartpulse predict`: fit and evaluate the purchase
//! model from a UCI-format CSV or the sessions the service recorded, and
//! score a file with a trained model.

use std::path::PathBuf;

/// `cartpulse train`: stratified k-fold CV, then the final model; the last
/// stdout line is the report as JSON.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A UCI Online Shoppers CSV (with its Revenue column).
    #[arg(long, default_value = "../shared/data/online_shoppers_intention.csv", conflicts_with_all = ["from_db", "from_lake"])]
    pub data: PathBuf,
    /// Train on the sessions the service recorded (the database of the
    /// settings / --database-url) instead of a file: closed sessions whose
    /// outcome is settled, labelled by whether they ended in a purchase.
    #[arg(long, conflicts_with = "from_lake")]
    pub from_db: bool,
    /// Train on the sessions of the event log archived in the data lake
    /// (lake.store, or --lake): each customer's events applied in log order
    /// as the session actors did.
    #[arg(long)]
    pub from_lake: bool,
    #[command(flatten)]
    pub lake: crate::lake::cli::LakeArgs,
    /// With --from-db or --from-lake: only sessions that ended at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// With --from-db or --from-lake: only sessions that ended before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// With --from-db or --from-lake: a session counts only once it ended this many seconds
    /// ago (a purchase can come after the last page).
    #[arg(long, default_value_t = 3600)]
    pub label_delay_s: u64,
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
    /// Model configuration as JSON: fields of ModelConfig laid over the recommended
    /// configuration (the network distilled from a gradient-boosted teacher, calibrated).
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

pub fn train(global: &crate::cli::GlobalArgs, args: TrainArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging("warn", false);
    let config = super::config_file::model_config(args.config.as_deref())?;
    let TrainArgs {
        data,
        from_db,
        from_lake,
        lake,
        since,
        until,
        label_delay_s,
        folds,
        seed,
        out,
        report,
        repeats,
        folds_out,
        oof_out,
        no_model,
        ..
    } = args;
    anyhow::ensure!(
        from_db || from_lake || (since.is_none() && until.is_none()),
        "--since and --until choose recorded sessions: give them with --from-db or --from-lake"
    );
    let data = if from_lake {
        super::DataSource::Lake(Box::new(super::LakeQuery {
            settings: global.settings(None)?,
            lake,
            since,
            until,
            label_delay: std::time::Duration::from_secs(label_delay_s),
        }))
    } else if from_db {
        super::DataSource::Database(Box::new(super::SessionQuery {
            settings: global.settings(None)?,
            since,
            until,
            label_delay: std::time::Duration::from_secs(label_delay_s),
        }))
    } else {
        super::DataSource::Csv(data)
    };
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
