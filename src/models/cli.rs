//! `cartpulse models publish DIR | list | promote VERSION [--traffic P] | rollback | shadow VERSION | unshadow`:
//! the registry from the command line, over the database and model store of
//! the global flags (`--database-url`, `--model-store`). Publishing is
//! command-line only (with the report images of `DIR/report` or `--report`);
//! the rest is also on `/v1/models`.

use super::registry::{Change, ModelInfo, ModelRegistry, ShadowChange};
use crate::config::Settings;
use std::path::PathBuf;

/// What `cartpulse models` can do.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ModelsCommand {
    /// Check a model directory (from `cartpulse train --out DIR`), put it in the model store, register it as a candidate.
    /// The report images (`*.png` of `DIR/report`, or of --report) are stored with it.
    Publish {
        dir: PathBuf,
        /// Directory of the report images (`cartpulse train --report`); default `DIR/report` when it exists.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Every version: status, traffic share, CV figures.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make VERSION active: alone (share 1), or with --traffic P next to the active version (A/B split).
    Promote {
        version: String,
        /// Share of customers for VERSION, strictly between 0 and 1; the active version keeps the rest.
        #[arg(long)]
        traffic: Option<f64>,
    },
    /// Restore the versions that were active before the last promotion.
    Rollback,
    /// Put VERSION in shadow: serving processes also score every batch with it (after answering) and only
    /// compare its scores (metrics); at most one shadow, the previous one goes back to candidate.
    Shadow { version: String },
    /// End the shadow deployment (the shadow version goes back to candidate).
    Unshadow,
}

/// Runs one `models` command; results go to stdout, errors are returned.
pub fn run(global: &crate::cli::GlobalArgs, command: ModelsCommand) -> anyhow::Result<()> {
    let settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", false);
    crate::cli::tokio_rt()?.block_on(run_async(&settings, command))
}

async fn run_async(settings: &Settings, command: ModelsCommand) -> anyhow::Result<()> {
    let db = crate::db::connect(settings).await?;
    crate::db::migrate(&db).await?;
    let registry = ModelRegistry::from_settings(db, settings).await?;
    match command {
        ModelsCommand::Publish { dir, report } => {
            let p = registry.publish_with_report(&dir, report.as_deref()).await?;
            let images = if p.report.is_empty() {
                "no report images".to_owned()
            } else {
                format!("report images: {}", p.report.join(", "))
            };
            if p.already_published {
                eprintln!("{} was already published with the same contents; nothing changed ({images})", p.version);
            } else {
                eprintln!("published {} as a candidate ({}; {images})", p.version, p.store_key);
            }
            println!("{}", serde_json::to_string(&p)?);
        }
        ModelsCommand::List { json } => {
            let rows = registry.list().await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
        }
        ModelsCommand::Promote { version, traffic } => {
            let c = registry.promote(&version, traffic).await?;
            eprintln!("{}", describe(&c));
            println!("{}", serde_json::to_string(&c)?);
        }
        ModelsCommand::Rollback => {
            let c = registry.rollback().await?;
            eprintln!("{}", describe(&c));
            println!("{}", serde_json::to_string(&c)?);
        }
        ModelsCommand::Shadow { version } => {
            let c = registry.shadow(&version).await?;
            eprintln!("{}", describe_shadow(&c));
            println!("{}", serde_json::to_string(&c)?);
        }
        ModelsCommand::Unshadow => {
            let c = registry.unshadow().await?;
            eprintln!("{}", describe_shadow(&c));
            println!("{}", serde_json::to_string(&c)?);
        }
    }
    Ok(())
}

fn shares(c: &[super::Share]) -> String {
    if c.is_empty() {
        return "nothing".into();
    }
    c.iter().map(|s| format!("{} ({:.0} %)", s.version, s.traffic_share * 100.0)).collect::<Vec<_>>().join(", ")
}

fn describe(c: &Change) -> String {
    if !c.changed {
        return format!("{} is already the only active version; nothing changed", c.version);
    }
    let mut s = format!("active: {} (was: {})", shares(&c.active), shares(&c.before));
    if !c.retired.is_empty() {
        s += &format!("; retired: {}", c.retired.join(", "));
    }
    s
}

fn describe_shadow(c: &ShadowChange) -> String {
    let mut s = match (&c.shadow, c.changed) {
        (Some(v), false) => format!("{v} is already in shadow; nothing changed"),
        (None, false) => "no version is in shadow; nothing changed".to_owned(),
        (Some(v), true) => format!("shadow: {v} (scored alongside the active versions; its scores are not used)"),
        (None, true) => "shadow: none".to_owned(),
    };
    if let Some(r) = &c.released {
        s += &format!("; {} is {} again", r.version, r.status);
    }
    s
}

/// The `models list` table.
pub fn table(rows: &[ModelInfo]) -> String {
    if rows.is_empty() {
        return "no model published yet (cartpulse models publish DIR)\n".into();
    }
    let fig =
        |m: &serde_json::Value, k: &str| m.get(k).and_then(|v| v.as_f64()).map_or("-".into(), |v| format!("{v:.4}"));
    let width = rows.iter().map(|r| r.version.len()).max().unwrap_or(7).max(7);
    let mut s = format!(
        "{:<width$}  {:<9}  {:>7}  {:>8}  {:>6}  {:<20}  {:<20}\n",
        "VERSION", "STATUS", "TRAFFIC", "ACCURACY", "AUC", "PUBLISHED", "PROMOTED"
    );
    for r in rows {
        s += &format!(
            "{:<width$}  {:<9}  {:>7}  {:>8}  {:>6}  {:<20}  {:<20}\n",
            r.version,
            r.status,
            format!("{:.1}%", r.traffic_share * 100.0),
            fig(&r.metrics, "accuracy"),
            fig(&r.metrics, "auc"),
            r.published_at.format("%Y-%m-%d %H:%M:%S"),
            r.promoted_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        );
    }
    s
}
