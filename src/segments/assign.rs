//! Live segment assignment: a stored segmentation version turned into the
//! [`SegmentAssigner`] the session actors call on every profile change.
//!
//! The assigner applies exactly what the batch job applied to build its
//! matrix (the stored [`Scaler`]: signed `log1p`, then median/IQR scaling)
//! and picks the nearest centroid with [`nearest_centroid`], the same function
//! the batch uses for its own labels, sizes and `--assignments` file. That
//! shared code path is what makes "offline = online" hold exactly rather than
//! approximately: a customer whose features are equal gets the same segment.
//!
//! Activation is stored in the database (`segmentations.active`, at most one
//! row), not only in a process: [`activate`] flips it in one transaction, and
//! every process that serves actors runs [`spawn_watcher`], which polls the
//! active version (one query over a table of a few rows)
//! and swaps its [`SegmentSlot`] when it changed. So an activation made by
//! `cartpulse segments activate`, or by `POST /v1/segments/{v}/activate` on
//! any replica, reaches every replica within one poll interval.

use std::sync::Arc;
use std::time::Duration;

use actors::features::profile::ProfileFeatures;
use actors::hooks::{SegmentAssigner, SegmentSlot};
use anyhow::Context;
use entities::segmentation::{Column, Entity, Model};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait};

use super::transform::Scaler;

/// How often [`spawn_watcher`] looks for a new active version by default.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Index of the centroid nearest to `x` (squared Euclidean distance, summed
/// in column order). Ties go to the lowest index, so the answer never depends
/// on anything but the numbers.
pub fn nearest_centroid(centroids: &[Vec<f64>], x: &[f64]) -> usize {
    let mut best = (0usize, f64::INFINITY);
    for (i, c) in centroids.iter().enumerate() {
        let d: f64 = c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// A segmentation version ready to assign profiles.
#[derive(Debug)]
pub struct ActiveSegmentation {
    version: i32,
    scaler: Scaler,
    centroids: Vec<Vec<f64>>,
    names: Vec<String>,
}

impl ActiveSegmentation {
    /// Reads a stored version. Refuses one whose features are not the ones
    /// this build computes (a version made by another release) or whose JSON
    /// columns disagree in shape, rather than assigning nonsense.
    pub fn from_row(row: &Model) -> anyhow::Result<ActiveSegmentation> {
        let v = row.version;
        let features: Vec<String> = serde_json::from_str(&row.feature_names)
            .with_context(|| format!("segmentation {v}: feature_names is not a JSON list of names"))?;
        anyhow::ensure!(
            features.iter().map(String::as_str).eq(ProfileFeatures::NAMES.iter().copied()),
            "segmentation {v} was made over other features ({} of them) than this build computes ({}); run `cartpulse segment` again",
            features.len(),
            ProfileFeatures::NAMES.len()
        );
        let scaler: Scaler =
            serde_json::from_str(&row.scaler).with_context(|| format!("segmentation {v}: unreadable scaler"))?;
        let centroids: Vec<Vec<f64>> =
            serde_json::from_str(&row.centroids).with_context(|| format!("segmentation {v}: unreadable centroids"))?;
        let names: Vec<String> =
            serde_json::from_str(&row.names).with_context(|| format!("segmentation {v}: unreadable names"))?;
        let d = features.len();
        anyhow::ensure!(
            scaler.log1p.len() == d && scaler.median.len() == d && scaler.iqr.len() == d,
            "segmentation {v}: the scaler has not one entry per feature ({d})"
        );
        anyhow::ensure!(!centroids.is_empty(), "segmentation {v} has no centroids");
        anyhow::ensure!(
            centroids.iter().all(|c| c.len() == d),
            "segmentation {v}: a centroid has not one value per feature ({d})"
        );
        anyhow::ensure!(
            names.len() == centroids.len(),
            "segmentation {v}: {} names for {} centroids",
            names.len(),
            centroids.len()
        );
        Ok(ActiveSegmentation { version: v, scaler, centroids, names })
    }

    /// Segment index of a raw profile vector (in [`ProfileFeatures::NAMES`] order).
    pub fn segment_of(&self, features: &[f64]) -> usize {
        nearest_centroid(&self.centroids, &self.scaler.transform(features))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl SegmentAssigner for ActiveSegmentation {
    fn version(&self) -> i32 {
        self.version
    }

    fn assign(&self, profile: &ProfileFeatures) -> (u32, String) {
        let i = self.segment_of(&profile.to_vec());
        // k ≤ 12 in practice; u32 cannot overflow.
        (i as u32, self.names[i].clone())
    }
}

/// Why an activation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("no segmentation version {0}")]
    UnknownVersion(i32),
    #[error("segmentation version {version} cannot be activated: {reason:#}")]
    Unusable { version: i32, reason: anyhow::Error },
    #[error("database error while activating: {0}")]
    Database(#[from] DbErr),
}

/// The active version, if any (the watcher's cheap poll).
pub async fn active_version(db: &DatabaseConnection) -> Result<Option<i32>, DbErr> {
    Entity::find().select_only().column(Column::Version).filter(Column::Active.eq(true)).into_tuple().one(db).await
}

/// One version, checked and ready to assign; `None` if it does not exist.
pub async fn load_version(db: &DatabaseConnection, version: i32) -> anyhow::Result<Option<Arc<ActiveSegmentation>>> {
    let Some(row) =
        Entity::find_by_id(version).one(db).await.with_context(|| format!("reading segmentation {version}"))?
    else {
        return Ok(None);
    };
    Ok(Some(Arc::new(ActiveSegmentation::from_row(&row)?)))
}

/// The active version, ready to assign; `None` if none is active.
pub async fn load_active(db: &DatabaseConnection) -> anyhow::Result<Option<Arc<ActiveSegmentation>>> {
    match active_version(db).await.context("reading the active segmentation")? {
        Some(v) => load_version(db, v).await,
        None => Ok(None),
    }
}

/// Makes `version` the one active segmentation (in one transaction, so no
/// reader ever sees two active or, when one was active before, none), and
/// returns it ready to assign, for the caller's own process to use at once.
/// Re-activating the active version only refreshes `activated_at`.
pub async fn activate(db: &DatabaseConnection, version: i32) -> Result<Arc<ActiveSegmentation>, ActivateError> {
    let row = Entity::find_by_id(version).one(db).await?.ok_or(ActivateError::UnknownVersion(version))?;
    let seg = ActiveSegmentation::from_row(&row).map_err(|reason| ActivateError::Unusable { version, reason })?;
    let txn = db.begin().await?;
    Entity::update_many()
        .col_expr(Column::Active, Expr::value(false))
        .filter(Column::Active.eq(true))
        .filter(Column::Version.ne(version))
        .exec(&txn)
        .await?;
    Entity::update_many()
        .col_expr(Column::Active, Expr::value(true))
        .col_expr(Column::ActivatedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::Version.eq(version))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    tracing::info!(version, "segmentation activated");
    Ok(Arc::new(seg))
}

/// Brings `slot` in line with the database: loads the active version if it is
/// not the one in the slot, empties the slot if none is active. Returns the
/// version now in the slot.
pub async fn sync_slot(db: &DatabaseConnection, slot: &SegmentSlot) -> anyhow::Result<Option<i32>> {
    let want = active_version(db).await.context("reading the active segmentation")?;
    let have = slot.current().map(|a| a.version());
    if want == have {
        return Ok(have);
    }
    match want {
        None => slot.set(None),
        Some(v) => match load_version(db, v).await? {
            Some(seg) => slot.set(Some(seg)),
            // Deleted between the two queries: the next poll sees the truth.
            None => return Ok(have),
        },
    }
    tracing::info!(from = ?have, to = ?want, "active segmentation changed");
    Ok(want)
}

/// Polls the active version every `every` and swaps `slot` when it changes,
/// so an activation made by any process reaches this one. Failures (database
/// down, an unusable version) are logged once per cause and retried.
pub fn spawn_watcher(db: DatabaseConnection, slot: SegmentSlot, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tick.tick().await;
            match sync_slot(&db, &slot).await {
                Ok(_) => last_error = None,
                Err(e) => {
                    let msg = format!("{e:#}");
                    if last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %msg, "cannot follow the active segmentation; keeping the current one");
                        last_error = Some(msg);
                    }
                }
            }
        }
    })
}

/// Puts the active version into `slot` at start-up, before any actor runs.
/// A failure is logged, not fatal: the service serves without segments and
/// the watcher keeps trying.
pub async fn install_active(db: &DatabaseConnection, slot: &SegmentSlot) {
    match sync_slot(db, slot).await {
        Ok(Some(v)) => tracing::info!(version = v, "segmentation active"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot load the active segmentation; none for now"),
    }
}
