//! `cartpulse models publish DIR | list | promote VERSION [--traffic P] | rollback | shadow VERSION | unshadow |
//! compare [A B] | open-sessions VERSION`:
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
    /// How VERSION scores sessions still open: the settled sessions of the event log replayed page by page,
    /// scored after 1, 3, 5 and 10 pages and whole (AUC, Brier score, mean score against purchase rate).
    OpenSessions {
        version: String,
        /// Only sessions that ended at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// A session counts once it ended this many seconds ago.
        #[arg(long, default_value_t = 3600)]
        label_delay_s: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A/B analysis of A against B on the closed sessions each scored: per arm sessions, conversion, accuracy,
    /// AUC and Brier score; each difference B − A with its 95 % confidence interval and p-value.
    /// Without A and B: the two active versions (the larger traffic share is A).
    Compare {
        a: Option<String>,
        b: Option<String>,
        /// Print JSON (as GET /v1/models/compare) instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        ModelsCommand::OpenSessions { version, since, label_delay_s, json } => {
            let model = registry.model(&version).await?;
            let settled_before =
                chrono::Utc::now() - crate::config::chrono_span(std::time::Duration::from_secs(label_delay_s));
            let r =
                super::open_sessions::report(registry.db(), &model, settings.features.timezone, since, settled_before)
                    .await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", super::open_sessions::table(&r));
            }
        }
        ModelsCommand::Compare { a, b, json } => {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (Some(_), None) => anyhow::bail!("give both versions A and B, or neither (the two active versions)"),
                _ => super::comparison::active_pair(&registry).await?.ok_or_else(|| {
                    anyhow::anyhow!("exactly two versions must be active to compare them by default; name the two")
                })?,
            };
            anyhow::ensure!(a != b, "A and B are both {a}; compare two different versions");
            let threshold = |info: ModelInfo| {
                info.metrics["threshold"].as_f64().ok_or_else(|| anyhow::anyhow!("{} has no threshold", info.version))
            };
            let (ta, tb) = (threshold(registry.get(&a).await?)?, threshold(registry.get(&b).await?)?);
            let c = super::comparison::compare_versions(registry.db(), (&a, ta), (&b, tb)).await?;
            if json {
                println!("{}", serde_json::to_string(&c)?);
            } else {
                print!("{}", comparison_table(&c));
            }
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

/// The `models compare` table: the arms, then each difference.
pub fn comparison_table(c: &super::comparison::Comparison) -> String {
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.4}"));
    let signed = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.4}"));
    let width = c.a.version.len().max(c.b.version.len()).max(7);
    let mut s = format!(
        "{:<4} {:<width$}  {:>8}  {:>9}  {:>10}  {:>8}  {:>6}  {:>6}\n",
        "ARM", "VERSION", "SESSIONS", "PURCHASES", "CONVERSION", "ACCURACY", "AUC", "BRIER"
    );
    for (name, arm) in [("A", &c.a), ("B", &c.b)] {
        s += &format!(
            "{:<4} {:<width$}  {:>8}  {:>9}  {:>10.4}  {:>8.4}  {:>6}  {:>6.4}\n",
            name,
            arm.version,
            arm.sessions,
            arm.purchases,
            arm.conversion,
            arm.accuracy,
            opt(arm.auc),
            arm.brier
        );
    }
    s += &format!("\n{:<11}  {:>8}  {:>20}  {:>7}  {:<12}  AHEAD\n", "B − A", "DIFF", "95 % CI", "P", "SIGNIFICANT");
    for d in &c.differences {
        s += &format!(
            "{:<11}  {:>8}  {:>20}  {:>7}  {:<12}  {}\n",
            serde_json::to_value(d.metric).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            signed(d.difference),
            match (d.ci_low, d.ci_high) {
                (Some(lo), Some(hi)) => format!("[{lo:+.4}, {hi:+.4}]"),
                _ => "-".into(),
            },
            d.p_value.map_or("-".into(), |p| super::comparison::show_p(p).trim_start_matches("= ").replace("< ", "<")),
            if d.significant { "yes" } else { "no" },
            d.ahead.as_deref().unwrap_or("-"),
        );
    }
    s + "\n" + &c.verdict + "\n"
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
