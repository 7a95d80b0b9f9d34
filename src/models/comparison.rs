//! A/B analysis of two model versions on their live evaluations: each arm is
//! the closed sessions its version scored at close (`models::evaluation`);
//! an A/B split (`promote --traffic`) puts each customer on one arm, so the
//! arms are independent samples of sessions.
//!
//! Per arm: sessions, conversion (share that purchased), accuracy at the
//! arm's threshold, ROC AUC and Brier score. For each figure, the difference
//! B − A with a 95 % confidence interval and a two-sided p-value, by normal
//! approximations that are exact enough at the thousands of sessions an A/B
//! test needs and cost one pass over the sessions (no resampling):
//! - conversion and accuracy: difference of two proportions (Wald interval,
//!   pooled z-test);
//! - AUC: DeLong's variance of each arm's AUC from its placement values,
//!   summed because the arms are independent;
//! - Brier score: difference of two means (Welch's standard error).
//!
//! "Ahead" is the better value (higher, or lower for the Brier score);
//! "significant" is p < 0.05.

use super::evaluation::Figures;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use serde::{Deserialize, Serialize};

/// Two-sided level of every interval and test.
pub const CONFIDENCE: f64 = 0.95;
/// The normal quantile of [`CONFIDENCE`].
const Z: f64 = 1.959_963_984_540_054;

/// One arm of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Arm {
    pub version: String,
    pub threshold: f64,
    pub sessions: u64,
    pub purchases: u64,
    /// Share of the arm's sessions that ended in a purchase.
    pub conversion: f64,
    pub accuracy: f64,
    /// `None` until the arm has sessions with and without a purchase.
    pub auc: Option<f64>,
    pub brier: f64,
}

/// What a difference is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Conversion,
    Accuracy,
    Auc,
    Brier,
}

impl Metric {
    fn higher_is_better(self) -> bool {
        self != Metric::Brier
    }

    fn label(self) -> &'static str {
        match self {
            Metric::Conversion => "conversion",
            Metric::Accuracy => "accuracy",
            Metric::Auc => "AUC",
            Metric::Brier => "Brier score",
        }
    }
}

/// B − A on one figure.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Difference {
    pub metric: Metric,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// `b − a`; `None` when either side is missing or has too few sessions.
    pub difference: Option<f64>,
    /// The 95 % confidence interval of the difference.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Two-sided p-value of "no difference".
    pub p_value: Option<f64>,
    /// `p_value < 0.05`.
    pub significant: bool,
    /// The version with the better value, when they differ.
    pub ahead: Option<String>,
}

/// The analysis of two versions.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    pub a: Arm,
    pub b: Arm,
    pub confidence: f64,
    /// Conversion, accuracy, AUC and Brier score, in that order.
    pub differences: Vec<Difference>,
    /// One sentence on the AUC: which version ranks sessions better, and
    /// whether that is significant.
    pub verdict: String,
}

/// A version's scored sessions: `(final score, purchased)`.
pub struct ArmInput<'a> {
    pub version: &'a str,
    pub threshold: f64,
    pub scored: &'a [(f64, bool)],
}

/// The analysis of `a` against `b`.
pub fn compare(a: ArmInput<'_>, b: ArmInput<'_>) -> Comparison {
    let arm = |x: &ArmInput<'_>| {
        let f = Figures::of(x.scored, x.threshold);
        Arm {
            version: x.version.to_owned(),
            threshold: x.threshold,
            sessions: f.sessions,
            purchases: f.positives,
            conversion: f.positive_rate,
            accuracy: f.accuracy,
            auc: f.auc,
            brier: f.brier,
        }
    };
    let (arm_a, arm_b) = (arm(&a), arm(&b));
    let correct = |x: &ArmInput<'_>| x.scored.iter().filter(|(p, y)| (*p >= x.threshold) == *y).count() as u64;
    let differences = vec![
        difference(
            Metric::Conversion,
            (&arm_a, &arm_b),
            proportions((arm_a.purchases, arm_a.sessions), (arm_b.purchases, arm_b.sessions)),
        ),
        difference(
            Metric::Accuracy,
            (&arm_a, &arm_b),
            proportions((correct(&a), arm_a.sessions), (correct(&b), arm_b.sessions)),
        ),
        difference(Metric::Auc, (&arm_a, &arm_b), aucs(a.scored, b.scored)),
        difference(Metric::Brier, (&arm_a, &arm_b), briers(a.scored, b.scored)),
    ];
    let verdict = verdict(&arm_a, &arm_b, &differences[2]);
    Comparison { a: arm_a, b: arm_b, confidence: CONFIDENCE, differences, verdict }
}

/// Reads both versions' scored, closed sessions and compares them.
pub async fn compare_versions(
    db: &DatabaseConnection,
    (a, threshold_a): (&str, f64),
    (b, threshold_b): (&str, f64),
) -> Result<Comparison, DbErr> {
    let pairs =
        |rows: Vec<(f64, bool, Option<DateTime<Utc>>)>| rows.into_iter().map(|(s, y, _)| (s, y)).collect::<Vec<_>>();
    let sa = pairs(super::evaluation::scored_sessions(db, a).await?);
    let sb = pairs(super::evaluation::scored_sessions(db, b).await?);
    Ok(compare(
        ArmInput { version: a, threshold: threshold_a, scored: &sa },
        ArmInput { version: b, threshold: threshold_b, scored: &sb },
    ))
}

/// The two versions of an A/B split, the one with the larger traffic share
/// (the control) first; `None` unless exactly two are active.
pub async fn active_pair(registry: &super::ModelRegistry) -> Result<Option<(String, String)>, super::RegistryError> {
    let mut active: Vec<_> = registry.list().await?.into_iter().filter(|m| m.status == "active").collect();
    if active.len() != 2 {
        return Ok(None);
    }
    active.sort_by(|x, y| y.traffic_share.total_cmp(&x.traffic_share));
    Ok(Some((active[0].version.clone(), active[1].version.clone())))
}

/// A difference's estimate and the standard errors of its interval and of
/// its test (they differ for proportions, whose test pools the arms).
struct Estimate {
    difference: f64,
    se: f64,
    se_null: f64,
}

fn difference(metric: Metric, (a, b): (&Arm, &Arm), estimate: Option<Estimate>) -> Difference {
    let value = |arm: &Arm| match metric {
        Metric::Conversion => Some(arm.conversion),
        Metric::Accuracy => Some(arm.accuracy),
        Metric::Auc => arm.auc,
        Metric::Brier => Some(arm.brier),
    };
    let (va, vb) = if a.sessions == 0 || b.sessions == 0 { (None, None) } else { (value(a), value(b)) };
    let mut out = Difference {
        metric,
        a: va,
        b: vb,
        difference: None,
        ci_low: None,
        ci_high: None,
        p_value: None,
        significant: false,
        ahead: None,
    };
    let (Some(_), Some(_), Some(e)) = (va, vb, estimate) else { return out };
    out.difference = Some(e.difference);
    out.ci_low = Some(e.difference - Z * e.se);
    out.ci_high = Some(e.difference + Z * e.se);
    let p = p_of(e.difference, e.se_null);
    out.p_value = Some(p);
    out.significant = p < 1.0 - CONFIDENCE;
    if e.difference != 0.0 {
        let b_better = (e.difference > 0.0) == metric.higher_is_better();
        out.ahead = Some(if b_better { b.version.clone() } else { a.version.clone() });
    }
    out
}

fn verdict(a: &Arm, b: &Arm, auc: &Difference) -> String {
    let (Some(d), Some(lo), Some(hi), Some(p)) = (auc.difference, auc.ci_low, auc.ci_high, auc.p_value) else {
        return format!(
            "not enough sessions yet: the AUC needs sessions with and without a purchase on both arms \
             ({}: {} sessions, {} purchases; {}: {} sessions, {} purchases)",
            a.version, a.sessions, a.purchases, b.version, b.sessions, b.purchases
        );
    };
    let interval =
        format!("AUC {} − {} = {d:+.4}, 95 % CI [{lo:+.4}, {hi:+.4}], p {}", b.version, a.version, show_p(p));
    match (&auc.ahead, auc.significant) {
        (Some(ahead), true) => {
            let behind = if *ahead == a.version { &b.version } else { &a.version };
            format!("{ahead} ranks sessions significantly better than {behind} ({interval})")
        }
        (Some(ahead), false) => format!("{ahead} is ahead on AUC, but not significantly ({interval})"),
        (None, _) => format!("no difference in {} ({interval})", Metric::Auc.label()),
    }
}

/// A p-value for people: `= 0.042`, or `< 0.001`.
pub fn show_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("= {p:.3}")
    }
}

/// Difference of two proportions `(successes, trials)`.
fn proportions((ka, na): (u64, u64), (kb, nb): (u64, u64)) -> Option<Estimate> {
    if na == 0 || nb == 0 {
        return None;
    }
    let (na, nb) = (na as f64, nb as f64);
    let (pa, pb) = (ka as f64 / na, kb as f64 / nb);
    let pooled = (ka + kb) as f64 / (na + nb);
    Some(Estimate {
        difference: pb - pa,
        se: (pa * (1.0 - pa) / na + pb * (1.0 - pb) / nb).sqrt(),
        se_null: (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt(),
    })
}

/// Difference of the arms' mean squared errors.
fn briers(a: &[(f64, bool)], b: &[(f64, bool)]) -> Option<Estimate> {
    let errors = |s: &[(f64, bool)]| s.iter().map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)).collect::<Vec<_>>();
    let (ma, va) = mean_and_variance(&errors(a))?;
    let (mb, vb) = mean_and_variance(&errors(b))?;
    let se = (va / a.len() as f64 + vb / b.len() as f64).sqrt();
    Some(Estimate { difference: mb - ma, se, se_null: se })
}

/// Difference of the arms' AUCs, each with DeLong's variance.
fn aucs(a: &[(f64, bool)], b: &[(f64, bool)]) -> Option<Estimate> {
    let (auc_a, var_a) = delong(a)?;
    let (auc_b, var_b) = delong(b)?;
    let se = (var_a + var_b).sqrt();
    Some(Estimate { difference: auc_b - auc_a, se, se_null: se })
}

/// ROC AUC and DeLong's estimate of its variance: each purchase's placement
/// is the share of non-purchases scored below it (ties half), each
/// non-purchase's the share of purchases scored above it; the AUC is the
/// mean of either set, and its variance var(V10)/m + var(V01)/n. Needs two
/// sessions of each outcome.
pub fn delong(scored: &[(f64, bool)]) -> Option<(f64, f64)> {
    let (v10, v01) = placements(scored.iter().copied())?;
    let (auc, s10) = mean_and_variance(&v10)?;
    let (_, s01) = mean_and_variance(&v01)?;
    Some((auc, s10 / v10.len() as f64 + s01 / v01.len() as f64))
}

/// DeLong's placement values, in the sessions' order: for each purchase the
/// share of non-purchases scored below it, for each non-purchase the share
/// of purchases scored above it (ties half). `None` unless there are two
/// sessions of each outcome.
fn placements(scored: impl Iterator<Item = (f64, bool)>) -> Option<(Vec<f64>, Vec<f64>)> {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (p, y) in scored {
        if y {
            pos.push(p)
        } else {
            neg.push(p)
        }
    }
    if pos.len() < 2 || neg.len() < 2 {
        return None;
    }
    let sorted = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let (sp, sn) = (sorted(&pos), sorted(&neg));
    // The share of sorted `v` below x, ties counting half.
    let below = |v: &[f64], x: f64| {
        let lo = v.partition_point(|s| *s < x);
        let hi = v.partition_point(|s| *s <= x);
        (lo as f64 + 0.5 * (hi - lo) as f64) / v.len() as f64
    };
    Some((pos.iter().map(|x| below(&sn, *x)).collect(), neg.iter().map(|y| 1.0 - below(&sp, *y)).collect()))
}

/// Two models' AUCs on the same sessions, and the difference B − A.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PairedAuc {
    pub sessions: u64,
    pub purchases: u64,
    pub auc_a: f64,
    pub auc_b: f64,
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
}

/// DeLong's paired test: both models scored the same sessions, so the
/// variance of the difference is that of the placement differences
/// (var(V10_B − V10_A)/m + var(V01_B − V01_A)/n), smaller than the sum of
/// the two variances when the models agree. `None` unless there are two
/// sessions of each outcome.
pub fn paired_auc(a: &[f64], b: &[f64], purchased: &[bool]) -> Option<PairedAuc> {
    assert!(a.len() == purchased.len() && b.len() == purchased.len(), "one score per session from each model");
    let (a10, a01) = placements(a.iter().copied().zip(purchased.iter().copied()))?;
    let (b10, b01) = placements(b.iter().copied().zip(purchased.iter().copied()))?;
    let (m, n) = (a10.len(), a01.len());
    let diff = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| q - p).collect::<Vec<f64>>();
    let (auc_a, _) = mean_and_variance(&a10)?;
    let (auc_b, _) = mean_and_variance(&b10)?;
    let (_, v10) = mean_and_variance(&diff(&a10, &b10))?;
    let (_, v01) = mean_and_variance(&diff(&a01, &b01))?;
    let se = (v10 / m as f64 + v01 / n as f64).sqrt();
    let difference = auc_b - auc_a;
    let p_value = p_of(difference, se);
    Some(PairedAuc {
        sessions: purchased.len() as u64,
        purchases: m as u64,
        auc_a,
        auc_b,
        difference,
        ci_low: difference - Z * se,
        ci_high: difference + Z * se,
        p_value,
    })
}

/// Mean and sample variance (divisor n − 1); `None` below two values.
fn mean_and_variance(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    Some((mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)))
}

/// Two-sided p-value of `difference` against no difference, at standard
/// error `se` (a difference with no spread at all is certain, or nothing).
fn p_of(difference: f64, se: f64) -> f64 {
    if se > 0.0 {
        two_sided_p(difference / se)
    } else if difference == 0.0 {
        1.0
    } else {
        0.0
    }
}

/// Two-sided p-value of a standard normal statistic.
fn two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Scores of a model with separation `shift`: purchases (share `rate`)
    /// score higher on average.
    fn synthetic(n: usize, rate: f64, shift: f64, seed: u64) -> Vec<(f64, bool)> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let y = rng.random::<f64>() < rate;
                let noise: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() / 4.0;
                let logit = (noise - 0.5) * 6.0 + if y { shift } else { 0.0 } - 1.0;
                (1.0 / (1.0 + (-logit).exp()), y)
            })
            .collect()
    }

    #[test]
    fn delong_auc_is_the_rank_auc_and_its_variance_matches_the_bootstrap() {
        let s = synthetic(600, 0.2, 1.5, 7);
        let (auc, var) = delong(&s).unwrap();
        let rank = Figures::of(&s, 0.5).auc.unwrap();
        assert!((auc - rank).abs() < 1e-12, "{auc} vs {rank}");
        // The bootstrap variance of the AUC over resampled sessions.
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let draws: Vec<f64> = (0..1500)
            .filter_map(|_| {
                let r: Vec<(f64, bool)> = (0..s.len()).map(|_| s[rng.random_range(0..s.len())]).collect();
                Figures::of(&r, 0.5).auc
            })
            .collect();
        let (_, boot) = mean_and_variance(&draws).unwrap();
        assert!((var / boot - 1.0).abs() < 0.15, "DeLong {var:.3e} vs bootstrap {boot:.3e}");
    }

    #[test]
    fn the_paired_test_sees_a_small_improvement_the_unpaired_one_misses() {
        // Two models scoring the same 2,000 sessions: B is A plus a little
        // extra signal, so they agree closely and differ by a small AUC.
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let (mut a, mut b, mut y) = (vec![], vec![], vec![]);
        for _ in 0..2000 {
            let buy = rng.random::<f64>() < 0.2;
            let base = rng.random::<f64>() * 3.0 + if buy { 1.0 } else { 0.0 };
            let extra = rng.random::<f64>() + if buy { 0.3 } else { 0.0 };
            a.push(base);
            b.push(base + 0.5 * extra);
            y.push(buy);
        }
        let p = paired_auc(&a, &b, &y).unwrap();
        let sa: Vec<(f64, bool)> = a.iter().copied().zip(y.iter().copied()).collect();
        let sb: Vec<(f64, bool)> = b.iter().copied().zip(y.iter().copied()).collect();
        assert!((p.auc_a - delong(&sa).unwrap().0).abs() < 1e-12);
        assert!((p.auc_b - delong(&sb).unwrap().0).abs() < 1e-12);
        let unpaired = aucs(&sa, &sb).unwrap();
        assert!(p.difference > 0.0 && p.ci_low > 0.0, "paired: B significantly better: {p:?}");
        assert!(
            (p.ci_high - p.ci_low) < 0.5 * 2.0 * Z * unpaired.se,
            "the paired interval is much narrower than the unpaired one: {p:?} vs se {}",
            unpaired.se
        );
        // A model against itself: no difference, nothing significant.
        let same = paired_auc(&a, &a, &y).unwrap();
        assert_eq!((same.difference, same.p_value), (0.0, 1.0));
    }

    #[test]
    fn ties_count_half_in_the_placements() {
        let s = [(0.5, true), (0.5, false), (0.9, true), (0.1, false)];
        let (auc, _) = delong(&s).unwrap();
        assert!((auc - 0.875).abs() < 1e-12, "{auc}");
        assert_eq!(delong(&[(0.3, true), (0.2, false), (0.1, false)]), None);
    }

    #[test]
    fn two_proportions_follow_the_textbook_z_test() {
        // 45/100 against 60/100: pooled p 0.525, z = 0.15 / 0.070622 = 2.1240.
        let e = proportions((45, 100), (60, 100)).unwrap();
        assert!((e.difference - 0.15).abs() < 1e-12);
        let z = e.difference / e.se_null;
        assert!((z - 2.1240).abs() < 1e-3, "{z}");
        assert!((two_sided_p(z) - 0.03367).abs() < 2e-4, "{}", two_sided_p(z));
        assert!((two_sided_p(1.959_963_984_540_054) - 0.05).abs() < 1e-9);
    }

    #[test]
    fn a_better_model_is_found_significantly_better() {
        let good = synthetic(3000, 0.15, 1.5, 1);
        let weak = synthetic(3000, 0.15, 0.7, 2);
        let c = compare(
            ArmInput { version: "good", threshold: 0.5, scored: &good },
            ArmInput { version: "weak", threshold: 0.5, scored: &weak },
        );
        let auc = &c.differences[2];
        assert_eq!(auc.metric, Metric::Auc);
        assert!(auc.significant && auc.ahead.as_deref() == Some("good"), "{auc:?}");
        assert!(auc.ci_high.unwrap() < 0.0, "B − A is negative: {auc:?}");
        assert!(c.verdict.starts_with("good ranks sessions significantly better than weak"), "{}", c.verdict);
        let brier = &c.differences[3];
        assert_eq!(brier.ahead.as_deref(), Some("good"), "lower Brier is better: {brier:?}");
    }

    /// Between two equally good models the AUC test rejects at its level:
    /// about 5 % of 400 independent pairs of arms, and the intervals cover 0
    /// about 95 % of the time.
    #[test]
    fn equal_models_differ_significantly_only_at_the_tests_level() {
        let (mut rejected, mut covered) = (0, 0);
        let pairs: u64 = 400;
        for k in 0..pairs {
            let a = synthetic(400, 0.2, 1.5, 1000 + 2 * k);
            let b = synthetic(400, 0.2, 1.5, 1001 + 2 * k);
            let c = compare(
                ArmInput { version: "x", threshold: 0.5, scored: &a },
                ArmInput { version: "y", threshold: 0.5, scored: &b },
            );
            let auc = &c.differences[2];
            rejected += u64::from(auc.significant);
            covered += u64::from(auc.ci_low.unwrap() <= 0.0 && auc.ci_high.unwrap() >= 0.0);
        }
        // Binomial(400, 0.05): mean 20, sd 4.4.
        assert!((6..=36).contains(&rejected), "{rejected} of {pairs} equal pairs found significant");
        assert_eq!(covered, pairs - rejected, "an interval excludes 0 exactly when p < 0.05");
    }

    #[test]
    fn empty_arms_say_why_nothing_is_compared() {
        let good = synthetic(100, 0.2, 2.0, 1);
        let c = compare(
            ArmInput { version: "a", threshold: 0.5, scored: &good },
            ArmInput { version: "b", threshold: 0.5, scored: &[] },
        );
        assert!(c.differences.iter().all(|d| d.difference.is_none() && !d.significant));
        assert!(c.verdict.starts_with("not enough sessions yet"), "{}", c.verdict);
    }
}
