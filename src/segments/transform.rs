//! The transform from profile features to the matrix K-Means sees.
//!
//! Two steps, fitted on the customers being segmented and stored with the
//! segmentation version so that a live assignment applies the very same ones:
//!
//! 1. Signed `log1p` (`sign(x) · ln(1 + |x|)`) on the heavy-tailed money and
//!    count features listed in [`LOG_FEATURES`]. Money and counts in retail are
//!    roughly log-normal: a few wholesalers spend 1,000× the median, and without
//!    the log they alone would decide the clusters. Signed because `monetary`
//!    and the spend windows can be negative (cancellations of untracked orders).
//!    Ratios, hours and day counts are bounded and stay linear.
//! 2. Robust scaling per feature: `(x − median) / IQR` (IQR = Q3 − Q1, linear
//!    interpolation between order statistics). Median and IQR ignore the tails
//!    that survive the log. When the IQR is 0 (most customers share one value,
//!    e.g. `cancellation_rate` = 0, or every session feature when there is no
//!    clickstream) the range (max − min) is used instead, and 1 when that is 0
//!    too, so a constant feature becomes a column of zeros instead of NaN. Not
//!    the standard deviation: for such sparse features it is tiny, and the few
//!    customers off the common value (the 12 % who ever order on a weekend)
//!    would sit 7 "IQRs" out and decide the clusters on their own; with the
//!    range such a feature adds at most 1 per customer.
//! 3. The same reasoning for the ratios in 0..1 ([`RATIO_FEATURES`]): their
//!    divisor is at least [`RATIO_MIN_SCALE`] (0.5). Their IQR can be small
//!    but non-zero (`weekend_order_share`: Q1 0, Q3 0.11 on Online Retail) and
//!    the customers with a share of 1 then sat 9 units out; measured on Online
//!    Retail that single feature split off its own segment.

use serde::{Deserialize, Serialize};

/// Features that get the signed `log1p` before scaling.
pub const LOG_FEATURES: [&str; 15] = [
    "frequency",
    "monetary",
    "order_value_mean",
    "order_value_std",
    "basket_items_mean",
    "basket_lines_mean",
    "product_breadth",
    "recent_spend_90d",
    "earlier_spend",
    "sessions",
    "session_pages_mean",
    "session_duration_mean_s",
    "cart_adds",
    "cart_removes",
    "countries",
];

/// Ratios in 0..1, whose scaling divisor is floored at [`RATIO_MIN_SCALE`].
pub const RATIO_FEATURES: [&str; 9] = [
    "cancellation_rate",
    "weekend_order_share",
    "evening_order_share",
    "morning_order_share",
    "recent_spend_share",
    "product_page_share",
    "cart_to_order_rate",
    "session_conversion_rate",
    "mean_predicted_intent",
];

/// Smallest divisor of a ratio feature: a ratio moves at most 2 units.
pub const RATIO_MIN_SCALE: f64 = 0.5;

/// A fitted transform; serialized into `segmentations.scaler`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Per column: whether the signed `log1p` is applied first.
    pub log1p: Vec<bool>,
    /// Per column: median after the log step.
    pub median: Vec<f64>,
    /// Per column: the divisor (IQR, or its fallback; never 0).
    pub iqr: Vec<f64>,
}

fn signed_log1p(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

/// Quantile `q` of sorted values, linear interpolation (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

impl Scaler {
    /// Fits on `rows` (each in `names` order). Non-finite inputs count as 0.
    pub fn fit(names: &[&str], rows: &[Vec<f64>]) -> Scaler {
        let log1p: Vec<bool> = names.iter().map(|n| LOG_FEATURES.contains(n)).collect();
        let mut median = Vec::with_capacity(names.len());
        let mut iqr = Vec::with_capacity(names.len());
        for (j, &log) in log1p.iter().enumerate() {
            let mut col: Vec<f64> = rows.iter().map(|r| pre(r.get(j).copied().unwrap_or(0.0), log)).collect();
            col.sort_by(f64::total_cmp);
            let med = quantile(&col, 0.5);
            let mut spread = quantile(&col, 0.75) - quantile(&col, 0.25);
            if spread <= 1e-12 {
                spread = match (col.first(), col.last()) {
                    (Some(lo), Some(hi)) => hi - lo,
                    _ => 0.0,
                };
            }
            if spread <= 1e-12 {
                spread = 1.0;
            }
            if RATIO_FEATURES.contains(&names[j]) {
                spread = spread.max(RATIO_MIN_SCALE);
            }
            median.push(med);
            iqr.push(spread);
        }
        Scaler { log1p, median, iqr }
    }

    /// Transforms one row.
    pub fn transform(&self, row: &[f64]) -> Vec<f64> {
        (0..self.median.len())
            .map(|j| (pre(row.get(j).copied().unwrap_or(0.0), self.log1p[j]) - self.median[j]) / self.iqr[j])
            .collect()
    }
}

impl Scaler {
    /// Back from the scaled space to the features' own units (days, money,
    /// counts): the inverse of [`Scaler::transform`], used to show a centroid
    /// in words a person reads. For a logged feature this is the value at the
    /// centroid's log position (a geometric-mean-like figure), not the
    /// members' arithmetic mean.
    pub fn inverse(&self, scaled: &[f64]) -> Vec<f64> {
        (0..self.median.len())
            .map(|j| {
                let x = scaled.get(j).copied().unwrap_or(0.0) * self.iqr[j] + self.median[j];
                if self.log1p[j] {
                    x.signum() * x.abs().exp_m1()
                } else {
                    x
                }
            })
            .collect()
    }
}

fn pre(x: f64, log: bool) -> f64 {
    let x = if x.is_finite() { x } else { 0.0 };
    if log {
        signed_log1p(x)
    } else {
        x
    }
}
