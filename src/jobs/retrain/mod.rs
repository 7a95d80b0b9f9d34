//! `cartpulse retrain`: the scheduled loop that keeps the served model
//! current (run daily by the ECS scheduled task of terraform/retrain.tf).
//! Each run:
//! 1. If a candidate is in shadow, judge it against the active version (the
//!    one with the larger traffic share) on the sessions closed since the
//!    candidate was trained, settled (ended at least the label delay ago),
//!    so none of them trained it. Both models score the sessions' final
//!    features, and DeLong's paired test compares their AUCs
//!    (`models::comparison::paired_auc`):
//!    - fewer than `min_sessions` (or one outcome missing): wait, change
//!      nothing, and train nothing new;
//!    - the 95 % interval of AUC(candidate) − AUC(active) lies above
//!      `margin`: promote the candidate;
//!    - otherwise: end the shadow (the candidate goes back to `candidate`).
//! 2. If nothing is in shadow now, train a new candidate on the settled
//!    sessions (`cartpulse train --from-db`), publish it and put it in
//!    shadow; with no active version at all it is promoted at once.
//!
//! Every registry change it makes carries its reason in `model_promotions`
//! (`reason`, JSON): the decision and the figures that led to it.

pub mod cli;

use crate::config::Settings;
use crate::jobs::train::{DataSource, ModelConfig, Protocol, SessionQuery, TrainOptions};
use crate::models::comparison::{paired_auc, PairedAuc};
use crate::models::registry::{KIND_PROMOTE, KIND_SHADOW, KIND_UNSHADOW};
use crate::models::ModelRegistry;
use actors::features::ShoppersFeatures;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What a run does; the defaults are `cartpulse retrain`'s.
#[derive(Clone, Debug)]
pub struct RetrainOptions {
    pub settings: Settings,
    /// A session counts once it ended this long ago.
    pub label_delay: Duration,
    /// Train only on sessions that ended at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Promote when the 95 % interval of the AUC gain lies above this.
    pub margin: f64,
    /// Sessions needed to judge a candidate.
    pub min_sessions: u64,
    pub folds: usize,
    pub seed: u64,
    pub config: ModelConfig,
    /// Where the trained model directories are written (one per run).
    pub work_dir: PathBuf,
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct RetrainReport {
    /// The judgement of the candidate that was in shadow, if any.
    pub decision: Option<Decision>,
    /// A new candidate trained and published by this run, and what became of it.
    pub trained: Option<Trained>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Not enough settled sessions since the candidate was trained.
    Waiting {
        candidate: String,
        active: String,
        sessions: u64,
        purchases: u64,
        needed: u64,
    },
    Promoted {
        candidate: String,
        active: String,
        margin: f64,
        figures: PairedAuc,
    },
    Rejected {
        candidate: String,
        active: String,
        margin: f64,
        figures: PairedAuc,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Trained {
    pub version: String,
    /// `shadow`, or `active` when no version was active.
    pub status: String,
    pub rows: usize,
    pub cv_auc: f64,
}

/// Runs one retraining round (see the module doc). Synchronous: training
/// uses every core, the registry work runs on a runtime of its own.
pub fn run(opts: &RetrainOptions) -> anyhow::Result<RetrainReport> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let registry = rt.block_on(async {
        let db = crate::db::connect(&opts.settings).await.context("connecting to the database")?;
        crate::db::migrate(&db).await?;
        anyhow::Ok(ModelRegistry::from_settings(db, &opts.settings).await?)
    })?;
    let decision = rt.block_on(judge_shadow(&registry, opts))?;
    if let Some(d) = &decision {
        eprintln!("{}", describe(d));
    }
    if matches!(decision, Some(Decision::Waiting { .. })) {
        return Ok(RetrainReport { decision, trained: None });
    }
    let trained = train_candidate(&rt, &registry, opts)?;
    Ok(RetrainReport { decision, trained: Some(trained) })
}

fn describe(d: &Decision) -> String {
    let figures = |f: &PairedAuc| {
        format!(
            "AUC {:.4} against {:.4} on {} sessions ({} purchases): gain {:+.4}, 95 % CI [{:+.4}, {:+.4}]",
            f.auc_b, f.auc_a, f.sessions, f.purchases, f.difference, f.ci_low, f.ci_high
        )
    };
    match d {
        Decision::Waiting { candidate, sessions, needed, .. } => {
            format!("{candidate} stays in shadow: {sessions} settled sessions since it was trained, {needed} needed")
        }
        Decision::Promoted { candidate, active, margin, figures: f } => {
            format!("promoted {candidate} over {active}: {} (above the margin {margin})", figures(f))
        }
        Decision::Rejected { candidate, active, margin, figures: f } => {
            format!("{candidate} is not better than {active} by the margin {margin}: {}; back to candidate", figures(f))
        }
    }
}

/// Step 1: the shadow candidate against the active version.
async fn judge_shadow(registry: &ModelRegistry, opts: &RetrainOptions) -> anyhow::Result<Option<Decision>> {
    let versions = registry.list().await?;
    let Some(shadow) = versions.iter().find(|m| m.status == "shadow") else { return Ok(None) };
    let Some(active) =
        versions.iter().filter(|m| m.status == "active").max_by(|a, b| a.traffic_share.total_cmp(&b.traffic_share))
    else {
        return Ok(None);
    };
    let (candidate, current) = (registry.model(&shadow.version).await?, registry.model(&active.version).await?);
    let since = candidate.manifest.created_at;
    let (features, purchased) = settled_since(registry.db(), since, opts.label_delay).await?;
    let purchases = purchased.iter().filter(|y| **y).count() as u64;
    let waiting = || Decision::Waiting {
        candidate: shadow.version.clone(),
        active: active.version.clone(),
        sessions: purchased.len() as u64,
        purchases,
        needed: opts.min_sessions,
    };
    if (purchased.len() as u64) < opts.min_sessions {
        return Ok(Some(waiting()));
    }
    let scores = |m: &crate::models::artifact::PurchaseModel| -> anyhow::Result<Vec<f64>> {
        Ok(m.predict(&features)?.into_iter().map(f64::from).collect())
    };
    let (a, b) = (scores(&current)?, scores(&candidate)?);
    let Some(figures) = paired_auc(&a, &b, &purchased) else { return Ok(Some(waiting())) };
    let (candidate, active) = (shadow.version.clone(), active.version.clone());
    let decision = if figures.ci_low > opts.margin {
        registry.promote(&candidate, None).await?;
        Decision::Promoted { candidate: candidate.clone(), active, margin: opts.margin, figures }
    } else {
        registry.unshadow().await?;
        Decision::Rejected { candidate: candidate.clone(), active, margin: opts.margin, figures }
    };
    let kind = if matches!(decision, Decision::Promoted { .. }) { KIND_PROMOTE } else { KIND_UNSHADOW };
    registry.record_reason(kind, &candidate, &serde_json::to_value(&decision)?).await?;
    Ok(Some(decision))
}

/// The final features and outcomes of the closed sessions first written
/// since `since` (so no model trained before then can have seen them) and
/// ended at least `label_delay` ago.
async fn settled_since(
    db: &sea_orm::DatabaseConnection,
    since: DateTime<Utc>,
    label_delay: Duration,
) -> anyhow::Result<(Vec<ShoppersFeatures>, Vec<bool>)> {
    use entities::session::{Column, Entity};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let settled_before = Utc::now() - crate::config::chrono_span(label_delay);
    let query = Entity::find().filter(Column::FirstWrittenAt.gte(since)).filter(Column::EndedAt.lt(settled_before));
    crate::jobs::train::dataset::closed_sessions(db, query)
        .await
        .context("reading the sessions closed since the candidate was trained")
}

/// Step 2: train on the settled sessions, publish, shadow (or promote when
/// nothing is active).
fn train_candidate(
    rt: &tokio::runtime::Runtime,
    registry: &ModelRegistry,
    opts: &RetrainOptions,
) -> anyhow::Result<Trained> {
    let out = opts.work_dir.join(format!("retrain-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")));
    let report = crate::jobs::train::run_protocol(
        TrainOptions {
            data: DataSource::Database(Box::new(SessionQuery {
                settings: opts.settings.clone(),
                since: opts.since,
                until: None,
                label_delay: opts.label_delay,
            })),
            folds: opts.folds,
            seed: opts.seed,
            out: out.clone(),
            report: None,
            config: opts.config.clone(),
            progress: opts.progress,
        },
        &Protocol::default(),
    )
    .context("training a candidate on the recorded sessions")?;
    let rows = report.folds.iter().map(|f| f.test_rows).sum();
    rt.block_on(async {
        let published = registry.publish(&out).await?;
        let version = published.version;
        let any_active = registry.list().await?.iter().any(|m| m.status == "active");
        let status = if any_active {
            registry.shadow(&version).await?;
            let reason = serde_json::json!({
                "decision": "shadowed",
                "reason": "a new candidate trained on the settled sessions; judged against the active version \
                           on the sessions that close after it",
                "rows": rows,
                "cv_auc": report.auc,
            });
            registry.record_reason(KIND_SHADOW, &version, &reason).await?;
            eprintln!("trained {version} on {rows} sessions (CV AUC {:.4}); in shadow", report.auc);
            "shadow"
        } else {
            registry.promote(&version, None).await?;
            let reason = serde_json::json!({
                "decision": "first_model",
                "reason": "no version was active",
                "rows": rows,
                "cv_auc": report.auc,
            });
            registry.record_reason(KIND_PROMOTE, &version, &reason).await?;
            eprintln!("trained {version} on {rows} sessions (CV AUC {:.4}); active (no version was)", report.auc);
            "active"
        };
        anyhow::Ok(Trained { version, status: status.into(), rows, cv_auc: report.auc })
    })
}
