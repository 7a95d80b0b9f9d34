//! Drift of the live traffic away from what a model was trained on, as the
//! population stability index (PSI) of a live sample against a reference
//! distribution stored in the model's manifest (`reference`, written by
//! `cartpulse train`):
//! - per session feature: the training rows' distribution, in deciles for
//!   the 10 numeric features (distinct decile edges, so a feature that is
//!   mostly 0 gets fewer, wider bins) and per level for the 7 categorical
//!   ones (plus one bin for levels never seen in training);
//! - per version: the score distribution, against the final model's
//!   out-of-fold scores on its training rows (deciles).
//!
//! PSI = Σ (a − e) ln(a / e) over the bins, a and e the live and reference
//! shares, each floored at 1e-4 so an empty bin counts without an infinite
//! term. The usual reading: < 0.1 stable, 0.1–0.2 moderate, > 0.2 a shift
//! worth acting on, the level at which drift is flagged (and the alert rules
//! fire). With fewer than [`MIN_SESSIONS`] live sessions nothing is flagged:
//! a handful of sessions always looks shifted.
//!
//! The live sample is the sessions closed (their row last written) in the
//! window (`inference.drift_window_s`, a day by default) by the wall clock,
//! whatever their event times: replayed history counts when it is replayed.

use actors::features::ShoppersFeatures;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};

/// PSI above which drift is flagged.
pub const PSI_ALERT: f64 = 0.2;
/// Live sessions needed before anything is flagged.
pub const MIN_SESSIONS: u64 = 100;
/// The floor of a bin's share in the PSI.
const FLOOR: f64 = 1e-4;
const DECILES: usize = 10;
/// The first 10 UCI columns are numeric, the last 7 categorical.
const NUMERIC: usize = 10;

/// How a feature (or the score) is binned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bins {
    /// Bin k holds edges[k-1] < x ≤ edges[k]; the first and last are open.
    Numeric { edges: Vec<f64> },
    /// One bin per level, in order, then one for every other level.
    Categorical { levels: Vec<String> },
}

impl Bins {
    fn len(&self) -> usize {
        match self {
            Bins::Numeric { edges } => edges.len() + 1,
            Bins::Categorical { levels } => levels.len() + 1,
        }
    }

    fn index(&self, v: &Value) -> usize {
        match (self, v) {
            (Bins::Numeric { edges }, Value::Number(x)) => edges.partition_point(|e| e < x),
            (Bins::Categorical { levels }, Value::Level(s)) => {
                levels.iter().position(|l| l == s).unwrap_or(levels.len())
            }
            // A value of the other kind cannot match a level: the "other" bin.
            (b, _) => b.len() - 1,
        }
    }
}

/// A reference distribution: the bins and the share of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Distribution {
    #[serde(flatten)]
    pub bins: Bins,
    pub shares: Vec<f64>,
}

impl Distribution {
    fn numeric(values: &[f64]) -> Distribution {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> =
            (1..DECILES).filter_map(|k| sorted.get((k * sorted.len() / DECILES).saturating_sub(1)).copied()).collect();
        edges.dedup();
        Distribution::of(Bins::Numeric { edges }, values.iter().map(|x| Value::Number(*x)))
    }

    fn categorical(values: &[String]) -> Distribution {
        let mut levels: Vec<String> = values.to_vec();
        levels.sort();
        levels.dedup();
        Distribution::of(Bins::Categorical { levels }, values.iter().map(|s| Value::Level(s.clone())))
    }

    fn of(bins: Bins, values: impl Iterator<Item = Value>) -> Distribution {
        let counts = counts(&bins, values);
        let n = counts.iter().sum::<u64>().max(1) as f64;
        Distribution { shares: counts.iter().map(|&c| c as f64 / n).collect(), bins }
    }

    /// PSI of the live `counts` (per bin of `self.bins`) against the shares.
    pub fn psi(&self, counts: &[u64]) -> f64 {
        let n = counts.iter().sum::<u64>().max(1) as f64;
        self.shares
            .iter()
            .zip(counts)
            .map(|(&e, &c)| {
                let (e, a) = (e.max(FLOOR), (c as f64 / n).max(FLOOR));
                (a - e) * (a / e).ln()
            })
            .sum()
    }
}

/// One feature's value: a number, or a category level as the UCI file spells it.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Number(f64),
    Level(String),
}

fn counts(bins: &Bins, values: impl Iterator<Item = Value>) -> Vec<u64> {
    let mut c = vec![0u64; bins.len()];
    for v in values {
        c[bins.index(&v)] += 1;
    }
    c
}

/// The 17 features of a session, by UCI column.
fn values(f: &ShoppersFeatures) -> Vec<Value> {
    let json = f.to_uci_json();
    ShoppersFeatures::UCI_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| match &json[*c] {
            serde_json::Value::String(s) => Value::Level(s.clone()),
            v if i < NUMERIC => Value::Number(v.as_f64().unwrap_or(f64::NAN)),
            v => Value::Level(v.to_string()),
        })
        .collect()
}

/// What a model was trained on, kept in its manifest for drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reference {
    /// Training rows the distributions were taken from.
    pub rows: usize,
    /// One per UCI feature column, in file order.
    pub features: Vec<FeatureReference>,
    /// The final model's out-of-fold scores on its training rows.
    pub scores: Distribution,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureReference {
    pub name: String,
    #[serde(flatten)]
    pub distribution: Distribution,
}

impl Reference {
    /// The reference of a model trained on `rows`, whose out-of-fold
    /// scores on them are `scores`.
    pub fn of(rows: &[ShoppersFeatures], scores: &[f32]) -> Reference {
        let table: Vec<Vec<Value>> = rows.iter().map(values).collect();
        let features = ShoppersFeatures::UCI_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let distribution = if i < NUMERIC {
                    let column: Vec<f64> = table
                        .iter()
                        .map(|r| match &r[i] {
                            Value::Number(x) => *x,
                            Value::Level(_) => f64::NAN,
                        })
                        .collect();
                    Distribution::numeric(&column)
                } else {
                    let column: Vec<String> = table
                        .iter()
                        .map(|r| match &r[i] {
                            Value::Level(s) => s.clone(),
                            Value::Number(x) => x.to_string(),
                        })
                        .collect();
                    Distribution::categorical(&column)
                };
                FeatureReference { name: (*name).to_owned(), distribution }
            })
            .collect();
        let scores: Vec<f64> = scores.iter().map(|&p| f64::from(p)).collect();
        Reference { rows: rows.len(), features, scores: Distribution::numeric(&scores) }
    }
}

/// The drift of one version's live traffic.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub version: String,
    /// The live window: sessions closed since this time.
    pub since: DateTime<Utc>,
    pub window_s: u64,
    /// Closed sessions in the window (features drift).
    pub sessions: u64,
    /// Of them, those this version scored at close (score drift).
    pub scored_sessions: u64,
    /// Stored features that could not be read (skipped).
    pub unreadable: u64,
    pub alert_threshold: f64,
    pub min_sessions: u64,
    /// Per feature, in UCI column order.
    pub features: Vec<FeatureDrift>,
    pub score: FeatureDrift,
    /// The flagged features (and `score` when the score drifted).
    pub flagged: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub name: String,
    /// `None` without live sessions.
    pub psi: Option<f64>,
    /// PSI above the alert threshold, over at least `min_sessions` sessions.
    pub flagged: bool,
}

fn drift_of(name: &str, reference: &Distribution, values: impl Iterator<Item = Value>) -> FeatureDrift {
    let c = counts(&reference.bins, values);
    let n: u64 = c.iter().sum();
    let psi = (n > 0).then(|| reference.psi(&c));
    FeatureDrift { name: name.to_owned(), psi, flagged: n >= MIN_SESSIONS && psi.is_some_and(|p| p > PSI_ALERT) }
}

/// The drift of `live` sessions (and of `scores`, the version's final
/// scores among them) against `reference`.
pub fn report(
    reference: &Reference,
    version: &str,
    live: &[ShoppersFeatures],
    scores: &[f64],
    (since, window_s): (DateTime<Utc>, u64),
) -> DriftReport {
    let table: Vec<Vec<Value>> = live.iter().map(values).collect();
    let features: Vec<FeatureDrift> = reference
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| drift_of(&f.name, &f.distribution, table.iter().map(|r| r[i].clone())))
        .collect();
    let score = drift_of("score", &reference.scores, scores.iter().map(|p| Value::Number(*p)));
    let flagged =
        features.iter().chain(std::iter::once(&score)).filter(|f| f.flagged).map(|f| f.name.clone()).collect();
    DriftReport {
        version: version.to_owned(),
        since,
        window_s,
        sessions: live.len() as u64,
        scored_sessions: scores.len() as u64,
        unreadable: 0,
        alert_threshold: PSI_ALERT,
        min_sessions: MIN_SESSIONS,
        features,
        score,
        flagged,
    }
}

/// The sessions closed in the last `window`: what every served version's
/// drift is measured on. Read once, then [`LiveSample::report`] per version.
pub struct LiveSample {
    pub since: DateTime<Utc>,
    pub window_s: u64,
    features: Vec<ShoppersFeatures>,
    /// Per session (same order): its final score and the version that gave it.
    scored: Vec<Option<(f64, String)>>,
    unreadable: u64,
}

impl LiveSample {
    pub async fn read(db: &DatabaseConnection, window: std::time::Duration) -> Result<LiveSample, DbErr> {
        use entities::session::{Column, Entity};
        let since = Utc::now() - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::days(1));
        /// Session id, stored features, final score, the version that gave it.
        type Row = (String, Option<String>, Option<f64>, Option<String>);
        let rows: Vec<Row> = Entity::find()
            .select_only()
            .columns([Column::SessionId, Column::Features, Column::Score, Column::ModelVersion])
            .filter(Column::Status.eq("closed"))
            .filter(Column::Features.is_not_null())
            .filter(Column::UpdatedAt.gte(since))
            .into_tuple()
            .all(db)
            .await?;
        let mut sample = LiveSample {
            since,
            window_s: window.as_secs(),
            features: Vec::with_capacity(rows.len()),
            scored: Vec::with_capacity(rows.len()),
            unreadable: 0,
        };
        for (id, json, score, scored_by) in rows {
            let parsed = json.map(|j| crate::serving::inference::request::features_from_stored(&id, &j));
            let Some(Ok(features)) = parsed else {
                sample.unreadable += 1;
                continue;
            };
            sample.features.push(features);
            sample.scored.push(score.zip(scored_by));
        }
        Ok(sample)
    }

    /// The drift of this sample (and of `version`'s final scores in it)
    /// against `reference`.
    pub fn report(&self, version: &str, reference: &Reference) -> DriftReport {
        let scores: Vec<f64> = self.scored.iter().flatten().filter(|(_, v)| v == version).map(|(s, _)| *s).collect();
        let mut r = report(reference, version, &self.features, &scores, (self.since, self.window_s));
        r.unreadable = self.unreadable;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        let d = Distribution::numeric(&(0..1000).map(f64::from).collect::<Vec<_>>());
        assert_eq!(d.bins.len(), 10);
        assert!(d.shares.iter().all(|s| (s - 0.1).abs() < 1e-9), "{:?}", d.shares);
        assert!(d.psi(&[10; 10]).abs() < 1e-12);
        // Half the mass moved from the top bin to the bottom one.
        let mut shifted = [10u64; 10];
        shifted[0] = 15;
        shifted[9] = 5;
        let small = d.psi(&shifted);
        // Σ (a − e) ln(a / e) = 0.05 ln 1.5 − 0.05 ln 0.5.
        assert!((small - (0.05 * 1.5f64.ln() - 0.05 * 0.5f64.ln())).abs() < 1e-12, "{small}");
        let mut all_low = [0u64; 10];
        all_low[0] = 100;
        assert!(d.psi(&all_low) > 2.0);
    }

    #[test]
    fn a_mostly_zero_feature_gets_distinct_edges_and_unseen_levels_their_own_bin() {
        let mut v = vec![0.0; 80];
        v.extend((1..=20).map(f64::from));
        let d = Distribution::numeric(&v);
        let Bins::Numeric { edges } = &d.bins else { panic!() };
        assert_eq!(edges[0], 0.0);
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
        assert!((d.shares[0] - 0.8).abs() < 1e-12, "the zeros share one bin: {:?}", d.shares);

        let c = Distribution::categorical(&["Feb".into(), "Mar".into(), "Mar".into(), "Nov".into()]);
        assert_eq!(c.shares, vec![0.25, 0.5, 0.25, 0.0]);
        assert_eq!(c.bins.index(&Value::Level("Jan".into())), 3, "an unseen month goes to the other bin");
        assert!(c.psi(&[0, 0, 0, 50]) > PSI_ALERT);
    }

    #[test]
    fn a_live_sample_like_the_training_rows_is_not_flagged_and_a_shifted_one_is() {
        let rows: Vec<ShoppersFeatures> = (0..2000u32)
            .map(|i| ShoppersFeatures {
                administrative: i % 3,
                administrative_duration: f64::from(i % 7) * 10.0,
                informational: 0,
                informational_duration: 0.0,
                product_related: i % 40,
                product_related_duration: f64::from(i % 40) * 31.5,
                bounce_rates: f64::from(i % 11) / 100.0,
                exit_rates: f64::from(i % 13) / 100.0,
                page_values: if i % 5 == 0 { f64::from(i % 97) } else { 0.0 },
                special_day: 0.0,
                month: [2, 3, 5, 11][(i / 500) as usize],
                operating_systems: (i % 3 + 1) as u16,
                browser: 2,
                region: (i % 9 + 1) as u16,
                traffic_type: (i % 4 + 1) as u16,
                visitor_type: actors::event::VisitorType::Returning,
                weekend: i % 7 < 2,
            })
            .collect();
        let scores: Vec<f32> = (0..2000).map(|i| (i % 100) as f32 / 100.0).collect();
        let r = Reference::of(&rows, &scores);
        assert_eq!(r.features.len(), 17);
        let since = (Utc::now(), 86_400);
        let same: Vec<ShoppersFeatures> = rows.iter().step_by(17).cloned().collect();
        let same_scores: Vec<f64> = scores.iter().step_by(17).map(|&p| f64::from(p)).collect();
        let ok = report(&r, "v", &same, &same_scores, since);
        assert!(ok.flagged.is_empty(), "{:?}", ok.features);
        let november: Vec<ShoppersFeatures> = rows.iter().filter(|f| f.month == 11).cloned().collect();
        let high: Vec<f64> = same_scores.iter().map(|p| (p + 0.5).min(1.0)).collect();
        let shifted = report(&r, "v", &november, &high, since);
        assert_eq!(shifted.flagged, vec!["Month".to_owned(), "score".to_owned()], "{:?}", shifted.features);
        let few = report(&r, "v", &november[..50], &[], since);
        assert!(few.flagged.is_empty() && few.features[10].psi.unwrap() > PSI_ALERT, "too few sessions to flag");
        assert_eq!(few.score.psi, None);
    }
}
