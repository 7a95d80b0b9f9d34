//! Binary-classification metrics for the purchase-intent model: ROC AUC by the
//! rank statistic, and the confusion-matrix figures at a decision threshold.

pub use crate::models::manifest::Confusion;

/// ROC AUC as the Mann–Whitney rank statistic: the probability that a random
/// positive scores above a random negative, ties counting one half (average
/// ranks). Exact and O(n log n); `None` when a class is absent.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        // A run of tied scores shares the mean of the ranks it spans.
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += mean_rank * order[i..=j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// The threshold that maximizes accuracy on (`scores`, `labels`): the midpoint
/// between two consecutive distinct scores, so it does not sit on a training
/// score. Among equally accurate cut points the one nearest the median of the
/// best range is taken, which is less sensitive to where exactly the
/// validation scores happened to fall. 0.5 for empty input.
pub fn best_accuracy_threshold(scores: &[f32], labels: &[bool]) -> f32 {
    if scores.is_empty() {
        return 0.5;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Threshold below everything: all predicted positive.
    let mut correct: i64 = labels.iter().filter(|&&l| l).count() as i64;
    let mut best = correct;
    let mut best_cuts: Vec<f32> = vec![scores[order[0]] - 1e-6];
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            // Moving the cut above this score flips it to negative.
            correct += if labels[order[i]] { -1 } else { 1 };
            i += 1;
        }
        let cut = match order.get(i) {
            Some(&next) => (s + scores[next]) / 2.0,
            None => s + 1e-6,
        };
        if correct > best {
            best = correct;
            best_cuts.clear();
            best_cuts.push(cut);
        } else if correct == best {
            best_cuts.push(cut);
        }
    }
    best_cuts[best_cuts.len() / 2]
}

/// Brier score: the mean squared difference between probability and outcome
/// (0 is perfect; always predicting the base rate `r` gives `r(1-r)`).
pub fn brier(scores: &[f32], labels: &[bool]) -> f64 {
    let n = scores.len().min(labels.len());
    if n == 0 {
        return f64::NAN;
    }
    scores.iter().zip(labels).map(|(&p, &y)| (f64::from(p) - f64::from(u8::from(y))).powi(2)).sum::<f64>() / n as f64
}

/// The threshold maximizing accuracy smoothed over thresholds: each row
/// counts as correct with weight `σ((z − t)/h)` for a buyer and
/// `σ((t − z)/h)` otherwise, `z` its score's logit, `t` the threshold's,
/// `h` = `bandwidth` logits. Searched on a 0.01-logit grid over [−5, 5].
/// Less sensitive to a few rows than [`best_accuracy_threshold`].
pub fn smoothed_accuracy_threshold(scores: &[f32], labels: &[bool], bandwidth: f32) -> f32 {
    if scores.is_empty() || bandwidth <= 0.0 {
        return best_accuracy_threshold(scores, labels);
    }
    let z = logits(scores);
    let h = f64::from(bandwidth);
    let mut best = (f64::NEG_INFINITY, 0.0f64);
    for step in -500..=500 {
        let t = f64::from(step) * 0.01;
        let soft: f64 = z
            .iter()
            .zip(labels)
            .map(|(&zi, &y)| {
                let d = if y { zi - t } else { t - zi };
                1.0 / (1.0 + (-d / h).exp())
            })
            .sum();
        if soft > best.0 {
            best = (soft, t);
        }
    }
    (1.0 / (1.0 + (-best.1).exp())) as f32
}

/// Each probability's log-odds, clamped away from 0 and 1.
fn logits(scores: &[f32]) -> Vec<f64> {
    scores
        .iter()
        .map(|&p| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            (p / (1.0 - p)).ln()
        })
        .collect()
}

/// Platt scaling `[a, b]` for `sigmoid(a · logit(p) + b)`: minimizes the
/// log-loss on (`scores`, `labels`) by Newton's method (a little ridge on
/// `a − 1` and `b` keeps it defined on separable input). `[1, 0]` (identity)
/// for empty input or one class only.
pub fn fit_platt(scores: &[f32], labels: &[bool]) -> [f32; 2] {
    let pos = labels.iter().filter(|&&y| y).count();
    if scores.is_empty() || pos == 0 || pos == labels.len() {
        return [1.0, 0.0];
    }
    let z = logits(scores);
    let ridge = 1e-3;
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (ridge * (a - 1.0), ridge * b, ridge, 0.0, ridge);
        for (&zi, &y) in z.iter().zip(labels) {
            let q = 1.0 / (1.0 + (-(a * zi + b)).exp());
            let r = q - f64::from(u8::from(y));
            let w = q * (1.0 - q);
            ga += r * zi;
            gb += r;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-12 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        // Damped: a full Newton step from confident scores can overshoot
        // and diverge; halve it until the penalized log loss goes down.
        let before = platt_loss(&z, labels, a, b, ridge);
        let mut step = 1.0;
        while step > 1e-6 && platt_loss(&z, labels, a - step * da, b - step * db, ridge) > before {
            step /= 2.0;
        }
        a -= step * da;
        b -= step * db;
        if (step * da).abs() < 1e-10 && (step * db).abs() < 1e-10 {
            break;
        }
    }
    [a as f32, b as f32]
}

/// Log loss of Platt scaling `(a, b)` on logits `z`, with the ridge pulling `a` to 1 and `b` to 0.
fn platt_loss(z: &[f64], labels: &[bool], a: f64, b: f64, ridge: f64) -> f64 {
    let nll: f64 = z
        .iter()
        .zip(labels)
        .map(|(&zi, &y)| {
            let t = a * zi + b;
            // log(1 + e^t) - y·t, computed without overflow.
            let softplus = if t > 0.0 { t + (-t).exp().ln_1p() } else { t.exp().ln_1p() };
            softplus - if y { t } else { 0.0 }
        })
        .sum();
    nll + 0.5 * ridge * ((a - 1.0).powi(2) + b * b)
}

/// Bins of [`expected_calibration_error`].
pub const ECE_BINS: usize = 10;

/// Expected calibration error over [`ECE_BINS`] equal-width probability bins
/// (`[0, 0.1)`, …, `[0.9, 1]`): the row-weighted mean of |mean predicted −
/// observed positive rate| per bin.
pub fn expected_calibration_error(scores: &[f32], labels: &[bool]) -> f64 {
    let n = scores.len().min(labels.len());
    if n == 0 {
        return f64::NAN;
    }
    let mut bins = [(0f64, 0f64, 0usize); ECE_BINS];
    for (&p, &y) in scores.iter().zip(labels) {
        let b = ((f64::from(p) * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[b].0 += f64::from(p);
        bins[b].1 += f64::from(u8::from(y));
        bins[b].2 += 1;
    }
    bins.iter().filter(|b| b.2 > 0).map(|&(sp, sy, _)| (sp - sy).abs()).sum::<f64>() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoothed_threshold_sits_between_the_classes() {
        // Negatives around 0.2, positives around 0.8: the cut lands in between,
        // and a narrow kernel gives the exact rule's accuracy.
        let scores: Vec<f32> =
            (0..100).map(|i| if i < 60 { 0.1 + 0.002 * i as f32 } else { 0.7 + 0.002 * i as f32 }).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 60).collect();
        let t = smoothed_accuracy_threshold(&scores, &labels, 0.3);
        assert!(t > 0.22 && t < 0.82, "{t}");
        assert!(scores.iter().zip(&labels).all(|(&p, &y)| (p >= t) == y));
        assert_eq!(smoothed_accuracy_threshold(&scores, &labels, 0.0), best_accuracy_threshold(&scores, &labels));
    }

    #[test]
    fn auc_perfect_inverted_and_ties() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels), Some(0.5));
        assert_eq!(roc_auc(&[0.5; 2], &[true, true]), None);
    }

    #[test]
    fn auc_matches_pair_counting() {
        let scores = [0.3, 0.7, 0.7, 0.1, 0.9, 0.3, 0.5, 0.7];
        let labels = [false, true, false, false, true, true, false, true];
        let mut num = 0.0;
        let mut den = 0.0;
        for i in 0..scores.len() {
            for j in 0..scores.len() {
                if labels[i] && !labels[j] {
                    den += 1.0;
                    num += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        let auc = roc_auc(&scores, &labels).unwrap();
        assert!((auc - num / den).abs() < 1e-12);
    }

    #[test]
    fn confusion_figures() {
        let scores = [0.9, 0.8, 0.4, 0.2, 0.6];
        let labels = [true, false, true, false, false];
        let c = Confusion::at(&scores, &labels, 0.5);
        assert_eq!(c, Confusion { tp: 1, fp: 2, tn: 1, r#fn: 1 });
        assert!((c.accuracy() - 0.4).abs() < 1e-12);
        assert!((c.precision() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 0.5).abs() < 1e-12);
        assert!((c.f1() - 0.4).abs() < 1e-12);
        let none = Confusion::at(&scores, &labels, 2.0);
        assert_eq!(none.precision(), 0.0);
        assert_eq!(none.f1(), 0.0);
    }

    #[test]
    fn brier_and_ece() {
        let labels = [true, false, true, false];
        assert_eq!(brier(&[1.0, 0.0, 1.0, 0.0], &labels), 0.0);
        assert!((brier(&[0.5; 4], &labels) - 0.25).abs() < 1e-12);
        // Perfectly calibrated bins: 0.5 predicted, half positive.
        assert!(expected_calibration_error(&[0.5; 4], &labels).abs() < 1e-12);
        // Bin [0.9, 1]: predicts 0.95, observes 0.5; bin [0, 0.1): 0.05 vs 0.5.
        let ece = expected_calibration_error(&[0.95, 0.95, 0.05, 0.05], &[true, false, true, false]);
        assert!((ece - 0.45).abs() < 1e-6, "{ece}");
        assert!(brier(&[], &[]).is_nan());
    }

    #[test]
    fn platt_recovers_a_known_miscalibration() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        // True probability sigmoid(z); the scores are sigmoid(2z - 1).
        let mut rng = StdRng::seed_from_u64(1);
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..20_000 {
            let z: f64 = rng.random_range(-4.0..4.0);
            labels.push(rng.random::<f64>() < 1.0 / (1.0 + (-z).exp()));
            scores.push((1.0 / (1.0 + (-(2.0 * z - 1.0)).exp())) as f32);
        }
        // z = (s + 1) / 2 with s the scores' logit: a = 0.5, b = 0.5.
        let [a, b] = fit_platt(&scores, &labels);
        assert!((a - 0.5).abs() < 0.05 && (b - 0.5).abs() < 0.08, "{a} {b}");
        assert_eq!(fit_platt(&[0.3, 0.4], &[true, true]), [1.0, 0.0]);
    }

    #[test]
    fn threshold_maximizes_accuracy() {
        let scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.35];
        let labels = [false, false, false, true, true, false];
        let t = best_accuracy_threshold(&scores, &labels);
        assert!(t > 0.35 && t < 0.6, "{t}");
        assert_eq!(Confusion::at(&scores, &labels, t).accuracy(), 1.0);
        // All negative: the cut goes above every score.
        let t = best_accuracy_threshold(&[0.2, 0.4], &[false, false]);
        assert!(t > 0.4);
    }
}
