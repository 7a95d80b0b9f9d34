//! `cartpulse segment` fits a segmentation; `cartpulse segments list |
//! activate VERSION` manages the versions, over the database of the global
//! flags. Activation is stored in the database; running servers pick it up
//! within their watcher's poll interval ([`crate::segments::assign::WATCH_EVERY`]).

use crate::cli::GlobalArgs;
use crate::config::Settings;
use std::path::PathBuf;

/// `cartpulse segment`: K-Means over the customer profiles; stores a new
/// version and prints it as JSON on the last stdout line.
#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    /// Number of segments, or `auto` (best silhouette over 2..=12).
    #[arg(long, default_value = "auto")]
    pub k: super::KChoice,
    /// Also write the transformed matrix as CSV (customer_id, then the features).
    #[arg(long)]
    pub export_matrix: Option<PathBuf>,
    /// Also write every customer's segment as CSV (customer_id,segment).
    #[arg(long)]
    pub assignments: Option<PathBuf>,
    /// Also draw charts (segment sizes, feature profiles) into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Only customers with at least one order (recency measured from their latest activity).
    #[arg(long)]
    pub buyers_only: bool,
    /// With --from-lake: build the profiles from the archived events instead
    /// of the customers' stored snapshots.
    #[command(flatten)]
    pub history: crate::lake::cli::FromLakeArgs,
}

pub fn segment(global: &GlobalArgs, args: SegmentArgs) -> anyhow::Result<()> {
    let settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", false);
    let SegmentArgs { k, export_matrix, assignments, report, seed, buyers_only, history } = args;
    let lake = history.chosen()?;
    let opts = super::SegmentOptions {
        settings,
        k,
        export_matrix,
        assignments,
        report,
        seed,
        print_table: true,
        buyers_only,
        lake,
    };
    let r = crate::cli::tokio_rt()?.block_on(super::run(opts))?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// `cartpulse segments …`.
pub fn segments(global: &GlobalArgs, command: SegmentsCommand) -> anyhow::Result<()> {
    let settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", false);
    crate::cli::tokio_rt()?.block_on(run(&settings, command))
}

/// What `cartpulse segments` can do.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SegmentsCommand {
    /// Every version: k, inertia, silhouette, segment names and sizes (live sizes for the active one).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make VERSION the active segmentation: every session actor then assigns its customer to its nearest segment.
    Activate { version: i32 },
}

/// Runs one `segments` command; results go to stdout, errors are returned.
pub async fn run(settings: &Settings, command: SegmentsCommand) -> anyhow::Result<()> {
    let db = crate::db::connect(settings).await?;
    crate::db::migrate(&db).await?;
    match command {
        SegmentsCommand::List { json } => {
            let rows = crate::segments::versions::list(&db).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", crate::segments::versions::table(&rows));
            }
        }
        SegmentsCommand::Activate { version } => {
            crate::segments::assign::activate(&db, version).await?;
            eprintln!(
                "segmentation v{version} is active; running servers switch within {} s",
                crate::segments::assign::WATCH_EVERY.as_secs()
            );
            println!("{}", serde_json::json!({ "active": version }));
        }
    }
    Ok(())
}
