//! Live evaluation of a served model: how its final scores did against what
//! the sessions really did. A session scored at close keeps that score and
//! the version that gave it (table `sessions`); once it is closed its outcome
//! (`purchased`) is known. Over those sessions, per day (of the session's
//! end, UTC) and overall: count, positive rate, accuracy at the version's
//! decision threshold, ROC AUC (exact, ties counted half), Brier score and a
//! reliability table (10 equal-width score bins). The same figures by
//! session age judge the scores the sessions got while still open, at 1, 3,
//! 5 and 10 page views (`sessions.score_p1` … `score_p10`, kept only when the
//! same version gave the final score), over the closed sessions that reached
//! that age.
//!
//! The figures are computed from the stored rows when asked, so every
//! replica answers the same and nothing is lost when a process restarts.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

/// Figures over a set of scored, closed sessions.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub sessions: u64,
    /// Sessions that ended in a purchase.
    pub positives: u64,
    pub positive_rate: f64,
    /// Share of sessions whose prediction (score ≥ threshold) was right.
    pub accuracy: f64,
    /// ROC AUC; `None` until both outcomes occurred.
    pub auc: Option<f64>,
    /// Mean squared difference between score and outcome.
    pub brier: f64,
    /// Reliability: the sessions of each score bin, their mean score and how
    /// many of them purchased.
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CalibrationBin {
    pub from: f64,
    pub to: f64,
    pub sessions: u64,
    pub mean_score: Option<f64>,
    pub purchase_rate: Option<f64>,
}

/// The evaluation of one version.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Evaluation {
    pub version: String,
    pub threshold: f64,
    pub overall: Figures,
    /// One entry per day with sessions, oldest first.
    pub days: Vec<Day>,
    /// The open-session scores at each age of
    /// `actors::data::state::SCORED_AGES`, youngest first.
    pub by_age: Vec<Age>,
}

/// Figures of the scores sessions got while open, when they reached `pages`
/// page views.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Age {
    pub pages: u32,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Day {
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

const BINS: usize = 10;

impl Figures {
    /// Figures of `(score, purchased)` pairs at `threshold`.
    pub fn of(scored: &[(f64, bool)], threshold: f64) -> Figures {
        let n = scored.len() as u64;
        let positives = scored.iter().filter(|(_, y)| *y).count() as u64;
        let share = |k: f64| if n == 0 { 0.0 } else { k / n as f64 };
        let correct = scored.iter().filter(|(p, y)| (*p >= threshold) == *y).count();
        let brier = share(scored.iter().map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)).sum());
        let mut bins = vec![(0u64, 0f64, 0u64); BINS];
        for (p, y) in scored {
            let b = ((p * BINS as f64).floor().max(0.0) as usize).min(BINS - 1);
            bins[b].0 += 1;
            bins[b].1 += p;
            bins[b].2 += u64::from(*y);
        }
        Figures {
            sessions: n,
            positives,
            positive_rate: share(positives as f64),
            accuracy: share(correct as f64),
            auc: auc(scored),
            brier,
            calibration: bins
                .into_iter()
                .enumerate()
                .map(|(i, (k, sum, pos))| CalibrationBin {
                    from: i as f64 / BINS as f64,
                    to: (i + 1) as f64 / BINS as f64,
                    sessions: k,
                    mean_score: (k > 0).then(|| sum / k as f64),
                    purchase_rate: (k > 0).then(|| pos as f64 / k as f64),
                })
                .collect(),
        }
    }
}

/// ROC AUC by the rank-sum (Mann–Whitney) statistic, tied scores sharing
/// their average rank.
fn auc(scored: &[(f64, bool)]) -> Option<f64> {
    let pos = scored.iter().filter(|(_, y)| *y).count();
    let neg = scored.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let mean_rank = (i + j + 2) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..=j].iter().filter(|(_, y)| *y).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// A closed session `version` scored: its final score, outcome, end, and
/// its scores while open at each age of `actors::data::state::SCORED_AGES`.
struct ScoredRow {
    score: f64,
    purchased: bool,
    ended: Option<DateTime<Utc>>,
    ages: [Option<f64>; 4],
}

async fn scored_rows(db: &DatabaseConnection, version: &str) -> Result<Vec<ScoredRow>, DbErr> {
    use entities::session::{Column, Entity};
    type Row = (Option<f64>, bool, Option<DateTime<Utc>>, Option<f64>, Option<f64>, Option<f64>, Option<f64>);
    let rows: Vec<Row> = Entity::find()
        .select_only()
        .columns([
            Column::Score,
            Column::Purchased,
            Column::EndedAt,
            Column::ScoreP1,
            Column::ScoreP3,
            Column::ScoreP5,
            Column::ScoreP10,
        ])
        .filter(Column::ModelVersion.eq(version))
        .filter(Column::Status.eq("closed"))
        .filter(Column::Score.is_not_null())
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, purchased, ended, p1, p3, p5, p10)| {
            Some(ScoredRow { score: s?, purchased, ended, ages: [p1, p3, p5, p10] })
        })
        .collect())
}

/// `(final score, purchased, end)` of every closed session `version` scored.
pub async fn scored_sessions(
    db: &DatabaseConnection,
    version: &str,
) -> Result<Vec<(f64, bool, Option<DateTime<Utc>>)>, DbErr> {
    Ok(scored_rows(db, version).await?.into_iter().map(|r| (r.score, r.purchased, r.ended)).collect())
}

/// Evaluates `version` at `threshold` over the stored sessions.
pub async fn evaluate(db: &DatabaseConnection, version: &str, threshold: f64) -> Result<Evaluation, DbErr> {
    let rows = scored_rows(db, version).await?;
    let by_age = actors::data::state::SCORED_AGES
        .iter()
        .enumerate()
        .map(|(k, &pages)| {
            let scored: Vec<(f64, bool)> = rows.iter().filter_map(|r| Some((r.ages[k]?, r.purchased))).collect();
            Age { pages, figures: Figures::of(&scored, threshold) }
        })
        .collect();
    let mut by_day: std::collections::BTreeMap<NaiveDate, Vec<(f64, bool)>> = Default::default();
    let mut all = Vec::with_capacity(rows.len());
    for r in rows {
        all.push((r.score, r.purchased));
        if let Some(ended) = r.ended {
            by_day.entry(ended.date_naive()).or_default().push((r.score, r.purchased));
        }
    }
    Ok(Evaluation {
        version: version.to_owned(),
        threshold,
        overall: Figures::of(&all, threshold),
        days: by_day.into_iter().map(|(date, s)| Day { date, figures: Figures::of(&s, threshold) }).collect(),
        by_age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUC by its definition: the share of (positive, negative) pairs the
    /// scores order right, ties half.
    fn pairwise_auc(s: &[(f64, bool)]) -> f64 {
        let (mut good, mut pairs) = (0.0, 0.0);
        for (p, _) in s.iter().filter(|(_, y)| *y) {
            for (q, _) in s.iter().filter(|(_, y)| !*y) {
                pairs += 1.0;
                good += if p > q {
                    1.0
                } else if p == q {
                    0.5
                } else {
                    0.0
                };
            }
        }
        good / pairs
    }

    #[test]
    fn the_rank_auc_is_the_pairwise_auc_with_ties() {
        let s = [(0.1, false), (0.4, true), (0.4, false), (0.35, true), (0.8, true), (0.05, false), (0.4, true)];
        assert!((auc(&s).unwrap() - pairwise_auc(&s)).abs() < 1e-15);
        assert_eq!(auc(&[(0.3, true), (0.2, true)]), None);
    }

    #[test]
    fn figures_count_what_they_say() {
        let s = [(0.9, true), (0.2, false), (0.6, false), (0.05, true)];
        let f = Figures::of(&s, 0.5);
        assert_eq!((f.sessions, f.positives), (4, 2));
        assert_eq!(f.accuracy, 0.5);
        assert!((f.brier - (0.01 + 0.04 + 0.36 + 0.9025) / 4.0).abs() < 1e-12);
        assert_eq!(f.calibration.len(), 10);
        assert_eq!(f.calibration[9].sessions, 1);
        assert_eq!(f.calibration[0].purchase_rate, Some(1.0));
        assert_eq!(f.calibration.iter().map(|b| b.sessions).sum::<u64>(), 4);
        let empty = Figures::of(&[], 0.5);
        assert_eq!((empty.sessions, empty.auc, empty.accuracy), (0, None, 0.0));
    }
}
