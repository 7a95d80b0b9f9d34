//! The one numeric encoding of a session's [`ShoppersFeatures`] for the
//! purchase-intent model, shared by offline training and online serving so the
//! two can never drift apart (no training/serving skew).
//!
//! An [`Encoder`] is *fitted* on training rows only (the statistics it keeps are
//! part of the model and are serialized into the model manifest), then turns any
//! session into a fixed-length `Vec<f32>`:
//!
//! - counts, durations and page values: `log1p` (they are heavy-tailed: a few
//!   sessions last hours), then standardized with the training mean and std;
//! - bounce rate, exit rate, special day: standardized as they are (bounded 0..=1);
//! - a `page_values > 0` flag: most buying sessions saw a valued page, and the
//!   log of a mostly-zero feature hides that jump from a small net;
//! - month, OS, browser, region, traffic type, visitor type: one-hot over the
//!   levels seen at least [`MIN_LEVEL_COUNT`] times in training. No input is
//!   left untrained: a slot exists only if training rows activate it, and a
//!   level without a slot still encodes to something the net was trained on
//!   (a new browser code in production must still encode, and must not hit
//!   random, never-updated weights):
//!   - Month is cyclic: a month without a slot (January and April never occur
//!     in the UCI file) is the linear interpolation, around the 12-month
//!     circle, of the nearest kept months before and after it (January =
//!     ½ December + ½ February);
//!   - the other fields keep an "other" slot only when at least
//!     [`MIN_LEVEL_COUNT`] training rows have rare levels; rare and unseen
//!     levels then go there. Without it (e.g. Region: every region is common)
//!     such a level encodes as the training frequencies of the kept levels,
//!     the expected one-hot vector of a training row, so the first layer sees
//!     the frequency-weighted mean of the trained level weights;
//! - weekend: 0/1;
//! - optionally ([`Encoder::fit_with`], used by the purchase model) a rank
//!   input for the heavy-tailed columns in `RANKED`: the empirical CDF of the
//!   raw value over 101 training quantiles, linearly interpolated, then
//!   standardized. It spreads the dense low end (many near-zero page values
//!   and exit rates) that `log1p` still compresses;
//! - optionally ([`EncoderOptions::piecewise_bins`]) a piecewise-linear
//!   encoding of every numeric column over its training quantile bins: with
//!   distinct knots `q_0 < … < q_T`, input `t` is
//!   `clamp((x − q_t) / (q_{t+1} − q_t), 0, 1)`, so a value fills the bins
//!   below it and part of its own. Continuous in `x` (a rate rebuilt live with
//!   rounding error moves its inputs by as little), and it generalizes the
//!   rank input (whose value is roughly the mean of these inputs).

use super::session::ShoppersFeatures;
use crate::event::VisitorType;
use serde::{Deserialize, Serialize};

/// Levels seen fewer times than this in training share the "other" slot: a
/// one-hot weight fitted on a handful of rows is noise.
pub const MIN_LEVEL_COUNT: usize = 10;

/// Version of the encoding scheme itself; bump when `encode` changes meaning so
/// an old manifest is refused rather than silently mis-encoded. Version 2: no
/// untrained slots (cyclic Month, "other" only when trained, unseen levels as
/// the training mix).
pub const ENCODING_VERSION: u32 = 2;

/// Encoding versions an [`Encoder`] read from a manifest may have: a version-1
/// encoder (always an "other" slot, unseen levels there) deserializes with
/// `other_slot` true and no cycle or mix, and encodes as it always did.
pub const READABLE_ENCODING_VERSIONS: [u32; 2] = [1, 2];

/// How a numeric input is transformed before standardization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `ln(1 + max(x, 0))` (durations of `-1` mean "unknown" and count as 0).
    Log1p,
    /// The value as it is.
    Identity,
    /// `1` when the value is `> 0`, else `0`.
    Positive,
    /// Empirical CDF over the column's fitted knots (training quantiles), in 0..=1.
    Rank,
}

impl Transform {
    fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Log1p => x.max(0.0).ln_1p(),
            Transform::Identity => x,
            Transform::Positive => f64::from(u8::from(x > 0.0)),
            Transform::Rank => x,
        }
    }
}

/// One standardized numeric input: `(transform(x) - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericColumn {
    /// UCI column name the value comes from.
    pub column: String,
    pub transform: Transform,
    pub mean: f64,
    /// Never 0: a constant column gets std 1 so it encodes to 0.
    pub std: f64,
    /// For [`Transform::Rank`]: ascending training quantiles; the value is the
    /// interpolated fraction of knots below x.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knots: Vec<f64>,
}

impl NumericColumn {
    fn value(&self, f: &ShoppersFeatures) -> f64 {
        let x = self.transform.apply(numeric_value(f, &self.column));
        if self.transform != Transform::Rank || self.knots.len() < 2 {
            return x;
        }
        let k = &self.knots;
        // A value within a relative 1e-9 of a knot counts as equal to it. The
        // ECDF jumps at tied knots (many sessions have exactly 0 or 0.2), and a
        // rate rebuilt live from page events (0.6000000000000001 / 3) must not
        // land on the other side of the jump from the file's 0.2.
        let tol = RANK_TIE_TOLERANCE * x.abs().max(1.0);
        let lo = k.partition_point(|&q| q < x - tol);
        let hi = k.partition_point(|&q| q <= x + tol);
        // Ties: the middle of the run of equal knots; between knots: linear.
        let pos = if hi > lo {
            (lo + hi - 1) as f64 / 2.0
        } else if lo == 0 {
            0.0
        } else if lo >= k.len() {
            (k.len() - 1) as f64
        } else {
            let (a, b) = (k[lo - 1], k[lo]);
            (lo - 1) as f64 + (x - a) / (b - a)
        };
        pos / (k.len() - 1) as f64
    }
}

/// Relative distance within which a value is taken to equal a knot.
const RANK_TIE_TOLERANCE: f64 = 1e-9;

/// Quantile knots of a rank-transformed column.
const RANK_KNOTS: usize = 101;

/// Numeric columns that also get a rank input when asked for.
const RANKED: [&str; 6] =
    ["PageValues", "ExitRates", "BounceRates", "ProductRelated_Duration", "ProductRelated", "Administrative_Duration"];

/// One one-hot encoded categorical field: a slot per kept level, then
/// "other" if there is one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    /// UCI column name.
    pub column: String,
    /// Kept level codes, ascending; slot `i` is `levels[i]`, slot `levels.len()`
    /// is "other" when `other_slot`.
    pub levels: Vec<u16>,
    /// Whether there is an "other" slot for levels not kept (always in
    /// encoding version 1).
    #[serde(default = "default_true")]
    pub other_slot: bool,
    /// A cyclic field (Month, period 12): a level without a slot is
    /// interpolated between the nearest kept levels around the cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<u16>,
    /// Without "other" slot or cycle: the encoding of a level without a slot,
    /// the training frequency of each kept level (sums to 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<f32>,
}

fn default_true() -> bool {
    true
}

impl CategoricalColumn {
    fn width(&self) -> usize {
        self.levels.len() + usize::from(self.other_slot)
    }

    /// Writes the field's encoding of `code` into `out` (its `width()` slots,
    /// zeroed by the caller).
    fn encode_into(&self, code: u16, out: &mut [f32]) {
        if let Ok(i) = self.levels.binary_search(&code) {
            out[i] = 1.0;
        } else if self.other_slot {
            out[self.levels.len()] = 1.0;
        } else if let (Some(period), false) = (self.cycle, self.levels.is_empty()) {
            let (before, after) = self.neighbours(code);
            // Steps forward from a to b around the cycle.
            let d = |a: u16, b: u16| f64::from((b % period + period - a % period) % period);
            let (d_before, d_after) = (d(self.levels[before], code), d(code, self.levels[after]));
            if before == after || d_before + d_after == 0.0 {
                out[before] = 1.0;
            } else {
                out[before] = (d_after / (d_before + d_after)) as f32;
                out[after] += (d_before / (d_before + d_after)) as f32;
            }
        } else {
            for (o, &w) in out.iter_mut().zip(&self.unseen) {
                *o = w;
            }
        }
    }

    /// Slots of the nearest kept levels before and after `code`, wrapping
    /// around (levels must not be empty).
    fn neighbours(&self, code: u16) -> (usize, usize) {
        let after = self.levels.partition_point(|&l| l < code);
        let before = if after == 0 { self.levels.len() - 1 } else { after - 1 };
        let after = if after == self.levels.len() { 0 } else { after };
        (before, after)
    }
}

/// Piecewise-linear encoding of one numeric column over its training quantile
/// bins (see the module documentation); one input per bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PiecewiseColumn {
    /// UCI column name.
    pub column: String,
    /// Distinct ascending bin edges (at least 2).
    pub knots: Vec<f64>,
}

impl PiecewiseColumn {
    fn width(&self) -> usize {
        self.knots.len().saturating_sub(1)
    }

    fn encode_into(&self, f: &ShoppersFeatures, out: &mut Vec<f32>) {
        // Durations of -1 ("unknown") count as 0, as for log1p.
        let x = numeric_value(f, &self.column).max(0.0);
        for w in self.knots.windows(2) {
            let v = ((x - w[0]) / (w[1] - w[0])).clamp(0.0, 1.0);
            out.push(if v.is_finite() { v as f32 } else { 0.0 });
        }
    }
}

/// What [`Encoder::fit_options`] adds to the base encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderOptions {
    /// Rank inputs for the columns in `RANKED`.
    pub rank: bool,
    /// Quantile bins of the piecewise-linear encoding of every numeric column
    /// (0 = none); tied quantiles merge, so a column may get fewer.
    pub piecewise_bins: usize,
}

/// The fitted encoding: what the model's input vector means and how to build it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub encoding_version: u32,
    pub numeric: Vec<NumericColumn>,
    pub categorical: Vec<CategoricalColumn>,
    /// Encoded after the categorical fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub piecewise: Vec<PiecewiseColumn>,
}

/// The numeric inputs, in encoded order.
const NUMERIC: [(&str, Transform); 11] = [
    ("Administrative", Transform::Log1p),
    ("Administrative_Duration", Transform::Log1p),
    ("Informational", Transform::Log1p),
    ("Informational_Duration", Transform::Log1p),
    ("ProductRelated", Transform::Log1p),
    ("ProductRelated_Duration", Transform::Log1p),
    ("BounceRates", Transform::Identity),
    ("ExitRates", Transform::Identity),
    ("PageValues", Transform::Log1p),
    ("SpecialDay", Transform::Identity),
    ("PageValues", Transform::Positive),
];

/// The categorical inputs, in encoded order.
const CATEGORICAL: [&str; 7] =
    ["Month", "OperatingSystems", "Browser", "Region", "TrafficType", "VisitorType", "Weekend"];

fn numeric_value(f: &ShoppersFeatures, column: &str) -> f64 {
    match column {
        "Administrative" => f64::from(f.administrative),
        "Administrative_Duration" => f.administrative_duration,
        "Informational" => f64::from(f.informational),
        "Informational_Duration" => f.informational_duration,
        "ProductRelated" => f64::from(f.product_related),
        "ProductRelated_Duration" => f.product_related_duration,
        "BounceRates" => f.bounce_rates,
        "ExitRates" => f.exit_rates,
        "PageValues" => f.page_values,
        "SpecialDay" => f.special_day,
        _ => 0.0,
    }
}

fn category_code(f: &ShoppersFeatures, column: &str) -> u16 {
    match column {
        "Month" => u16::from(f.month),
        "OperatingSystems" => f.operating_systems,
        "Browser" => f.browser,
        "Region" => f.region,
        "TrafficType" => f.traffic_type,
        "VisitorType" => match f.visitor_type {
            VisitorType::Returning => 0,
            VisitorType::New => 1,
            VisitorType::Other => 2,
        },
        "Weekend" => u16::from(f.weekend),
        _ => 0,
    }
}

impl Encoder {
    /// Fits the statistics on `rows` (training rows only). An empty slice gives
    /// an encoder with no kept levels and unit scaling, which still encodes.
    pub fn fit(rows: &[ShoppersFeatures]) -> Encoder {
        Encoder::fit_with(rows, false)
    }

    /// [`Encoder::fit`], with extra rank inputs when `rank` is set.
    pub fn fit_with(rows: &[ShoppersFeatures], rank: bool) -> Encoder {
        Encoder::fit_options(rows, EncoderOptions { rank, piecewise_bins: 0 })
    }

    /// [`Encoder::fit`] with the optional inputs of `options`.
    pub fn fit_options(rows: &[ShoppersFeatures], options: EncoderOptions) -> Encoder {
        let n = rows.len().max(1) as f64;
        let mut specs: Vec<(&str, Transform)> = NUMERIC.to_vec();
        if options.rank {
            specs.extend(RANKED.iter().map(|&c| (c, Transform::Rank)));
        }
        let numeric = specs
            .iter()
            .map(|&(column, transform)| {
                let knots = if transform == Transform::Rank && !rows.is_empty() {
                    let mut v: Vec<f64> = rows.iter().map(|r| numeric_value(r, column)).collect();
                    v.sort_by(f64::total_cmp);
                    (0..RANK_KNOTS).map(|q| v[q * (v.len() - 1) / (RANK_KNOTS - 1)]).collect()
                } else {
                    Vec::new()
                };
                let probe = NumericColumn { column: column.to_owned(), transform, mean: 0.0, std: 1.0, knots };
                let values = rows.iter().map(|r| probe.value(r));
                let mean = values.clone().sum::<f64>() / n;
                let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = var.sqrt();
                NumericColumn { mean, std: if std > 1e-12 { std } else { 1.0 }, ..probe }
            })
            .collect();
        let categorical = CATEGORICAL
            .iter()
            .map(|&column| {
                let mut counts = std::collections::BTreeMap::<u16, usize>::new();
                for r in rows {
                    *counts.entry(category_code(r, column)).or_default() += 1;
                }
                let kept: Vec<(u16, usize)> =
                    counts.iter().filter(|&(_, &c)| c >= MIN_LEVEL_COUNT).map(|(&l, &c)| (l, c)).collect();
                let rare_rows = rows.len() - kept.iter().map(|&(_, c)| c).sum::<usize>();
                let cycle = (column == "Month").then_some(12);
                let other_slot = cycle.is_none() && rare_rows >= MIN_LEVEL_COUNT;
                let kept_rows = kept.iter().map(|&(_, c)| c).sum::<usize>().max(1) as f64;
                CategoricalColumn {
                    column: column.to_owned(),
                    levels: kept.iter().map(|&(l, _)| l).collect(),
                    other_slot,
                    cycle,
                    unseen: if other_slot || cycle.is_some() {
                        Vec::new()
                    } else {
                        kept.iter().map(|&(_, c)| (c as f64 / kept_rows) as f32).collect()
                    },
                }
            })
            .collect();
        let bins = options.piecewise_bins;
        let piecewise = if bins == 0 || rows.is_empty() {
            Vec::new()
        } else {
            ShoppersFeatures::UCI_COLUMNS[..10]
                .iter()
                .filter_map(|&column| {
                    let mut v: Vec<f64> = rows.iter().map(|r| numeric_value(r, column).max(0.0)).collect();
                    v.sort_by(f64::total_cmp);
                    let mut knots: Vec<f64> = (0..=bins).map(|q| v[q * (v.len() - 1) / bins]).collect();
                    knots.dedup();
                    (knots.len() >= 2).then(|| PiecewiseColumn { column: column.to_owned(), knots })
                })
                .collect()
        };
        Encoder { encoding_version: ENCODING_VERSION, numeric, categorical, piecewise }
    }

    /// Length of every encoded vector.
    pub fn dim(&self) -> usize {
        self.numeric.len()
            + self.categorical.iter().map(CategoricalColumn::width).sum::<usize>()
            + self.piecewise.iter().map(PiecewiseColumn::width).sum::<usize>()
    }

    /// Encodes one session; always returns [`Encoder::dim`] finite values.
    pub fn encode(&self, f: &ShoppersFeatures) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dim());
        self.encode_into(f, &mut out);
        out
    }

    /// Appends the encoding of `f` to `out` (batch building without a
    /// per-row allocation).
    pub fn encode_into(&self, f: &ShoppersFeatures, out: &mut Vec<f32>) {
        for c in &self.numeric {
            let z = (c.value(f) - c.mean) / c.std;
            // Inputs are finite by construction, but a NaN reaching the net
            // would poison the whole batch, so it is pinned to the mean.
            out.push(if z.is_finite() { z as f32 } else { 0.0 });
        }
        for c in &self.categorical {
            let start = out.len();
            out.resize(start + c.width(), 0.0);
            c.encode_into(category_code(f, &c.column), &mut out[start..]);
        }
        for c in &self.piecewise {
            c.encode_into(f, out);
        }
    }

    /// Names of the encoded inputs, in order (`PageValues:log1p`, `Month=11`,
    /// `Browser=other`, …), for the manifest's feature schema.
    pub fn input_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .numeric
            .iter()
            .map(|c| {
                format!(
                    "{}:{}",
                    c.column,
                    serde_json::to_value(c.transform)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            })
            .collect();
        for c in &self.categorical {
            names.extend(c.levels.iter().map(|l| format!("{}={l}", c.column)));
            if c.other_slot {
                names.push(format!("{}=other", c.column));
            }
        }
        for c in &self.piecewise {
            names.extend(c.knots.windows(2).map(|w| format!("{}:bin[{},{}]", c.column, w[0], w[1])));
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pv: f64, browser: u16, month: u8) -> ShoppersFeatures {
        ShoppersFeatures {
            administrative: 2,
            administrative_duration: -1.0,
            informational: 0,
            informational_duration: 0.0,
            product_related: 10,
            product_related_duration: 300.0,
            bounce_rates: 0.01,
            exit_rates: 0.03,
            page_values: pv,
            special_day: 0.0,
            month,
            operating_systems: 2,
            browser,
            region: 1,
            traffic_type: 3,
            visitor_type: VisitorType::Returning,
            weekend: false,
        }
    }

    fn training_rows() -> Vec<ShoppersFeatures> {
        (0..40).map(|i| row(f64::from(i), if i < 30 { 1 } else { 2 }, 11)).collect()
    }

    #[test]
    fn dim_matches_encoding_and_names() {
        let enc = Encoder::fit(&training_rows());
        let v = enc.encode(&row(3.0, 1, 11));
        assert_eq!(v.len(), enc.dim());
        assert_eq!(enc.input_names().len(), enc.dim());
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn training_numeric_columns_are_standardized() {
        let rows = training_rows();
        let enc = Encoder::fit(&rows);
        let encoded: Vec<Vec<f32>> = rows.iter().map(|r| enc.encode(r)).collect();
        // PageValues:log1p is numeric column 8 and varies in the rows.
        let col: Vec<f64> = encoded.iter().map(|v| f64::from(v[8])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-4, "var {var}");
        // A constant column encodes to exactly 0.
        assert_eq!(encoded[0][9], 0.0);
    }

    /// Names of the slots that are non-zero in `v`, with their values.
    fn active(enc: &Encoder, v: &[f32]) -> Vec<(String, f32)> {
        enc.input_names()
            .into_iter()
            .zip(v)
            .filter(|(n, x)| n.contains('=') && **x != 0.0)
            .map(|(n, x)| (n, *x))
            .collect()
    }

    #[test]
    fn unseen_levels_without_an_other_slot_encode_as_the_training_mix() {
        let mut rows = training_rows(); // browser 1 ×30, 2 ×10
        rows.push(row(0.0, 7, 11)); // browser 7 seen once: rare, too few rows for an "other" slot
        let enc = Encoder::fit(&rows);
        let browser = &enc.categorical[2];
        assert_eq!(browser.column, "Browser");
        assert_eq!(browser.levels, vec![1, 2]);
        assert!(!browser.other_slot);
        assert!(!enc.input_names().iter().any(|n| n.ends_with("=other")), "{:?}", enc.input_names());
        for code in [7, 99] {
            let v = enc.encode(&row(0.0, code, 11));
            let hot = active(&enc, &v);
            assert!(hot.contains(&("Browser=1".into(), 0.75)) && hot.contains(&("Browser=2".into(), 0.25)), "{hot:?}");
        }
        // A kept level is plain one-hot.
        assert!(active(&enc, &enc.encode(&row(0.0, 2, 11))).contains(&("Browser=2".into(), 1.0)));
    }

    #[test]
    fn rare_levels_with_enough_rows_share_a_trained_other_slot() {
        let mut rows = training_rows();
        rows.extend((0..12).map(|i| row(0.0, 7 + (i % 3), 11))); // browsers 7, 8, 9: 4 rows each
        let enc = Encoder::fit(&rows);
        let browser = &enc.categorical[2];
        assert_eq!(browser.levels, vec![1, 2]);
        assert!(browser.other_slot);
        for code in [7, 99] {
            assert!(active(&enc, &enc.encode(&row(0.0, code, 11))).contains(&("Browser=other".into(), 1.0)));
        }
    }

    #[test]
    fn a_month_without_a_slot_interpolates_its_neighbours_around_the_year() {
        // Feb, Mar, May, Aug, Dec kept; June seen 3 times (rare).
        let mut rows: Vec<_> =
            [2u8, 3, 5, 8, 12].iter().flat_map(|&m| (0..10).map(move |i| row(f64::from(i), 1, m))).collect();
        rows.extend((0..3).map(|_| row(0.0, 1, 6)));
        let enc = Encoder::fit(&rows);
        let month = &enc.categorical[0];
        assert_eq!(month.levels, vec![2, 3, 5, 8, 12]);
        assert!(!month.other_slot);
        let m = |x: u8| {
            active(&enc, &enc.encode(&row(0.0, 1, x)))
                .into_iter()
                .filter(|(n, _)| n.starts_with("Month"))
                .collect::<Vec<_>>()
        };
        assert_eq!(m(1), vec![("Month=2".into(), 0.5), ("Month=12".into(), 0.5)]);
        assert_eq!(m(4), vec![("Month=3".into(), 0.5), ("Month=5".into(), 0.5)]);
        // June: 1 step after May, 2 before Aug.
        assert_eq!(m(6), vec![("Month=5".into(), (2.0f64 / 3.0) as f32), ("Month=8".into(), (1.0f64 / 3.0) as f32)]);
        // November: 3 steps after Aug, 1 before Dec.
        assert_eq!(m(11), vec![("Month=8".into(), 0.25), ("Month=12".into(), 0.75)]);
        assert_eq!(m(8), vec![("Month=8".into(), 1.0)]);
    }

    #[test]
    fn every_input_is_active_on_some_training_row() {
        // Rare browsers, one month only, one region: no slot may be left
        // without a training row that sets it (its weights would stay at their
        // random initial values).
        let mut rows = training_rows();
        rows.push(row(0.0, 7, 11));
        let enc = Encoder::fit_with(&rows, true);
        let encoded: Vec<Vec<f32>> = rows.iter().map(|r| enc.encode(r)).collect();
        for (j, name) in enc.input_names().iter().enumerate().filter(|(_, n)| n.contains('=')) {
            assert!(encoded.iter().any(|v| v[j] != 0.0), "slot {name} is never active in training");
        }
    }

    #[test]
    fn a_version_1_encoder_still_encodes_with_its_other_slot() {
        let enc = Encoder::fit(&training_rows());
        let mut json = serde_json::to_value(&enc).unwrap();
        json["encoding_version"] = 1.into();
        for c in json["categorical"].as_array_mut().unwrap() {
            let c = c.as_object_mut().unwrap();
            c.remove("other_slot");
            c.remove("cycle");
            c.remove("unseen");
        }
        let v1: Encoder = serde_json::from_value(json).unwrap();
        assert!(v1.categorical.iter().all(|c| c.other_slot && c.cycle.is_none()));
        assert_eq!(v1.dim(), enc.dim() + enc.categorical.iter().filter(|c| !c.other_slot).count());
        let hot: Vec<String> = active(&v1, &v1.encode(&row(0.0, 99, 3))).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            hot,
            vec![
                "Month=other",
                "OperatingSystems=2",
                "Browser=other",
                "Region=1",
                "TrafficType=3",
                "VisitorType=0",
                "Weekend=0"
            ]
        );
    }

    #[test]
    fn unknown_duration_counts_as_zero_and_flag_marks_page_value() {
        let enc = Encoder::fit(&training_rows());
        let a = enc.encode(&row(0.0, 1, 11));
        let mut r = row(0.0, 1, 11);
        r.administrative_duration = 0.0;
        assert_eq!(a, enc.encode(&r));
        let b = enc.encode(&row(5.0, 1, 11));
        assert!(b[10] > a[10]);
    }

    #[test]
    fn round_trips_through_json() {
        let enc = Encoder::fit(&training_rows());
        let json = serde_json::to_string(&enc).unwrap();
        let back: Encoder = serde_json::from_str(&json).unwrap();
        assert_eq!(enc, back);
        assert_eq!(enc.encode(&row(4.0, 2, 11)), back.encode(&row(4.0, 2, 11)));
    }

    #[test]
    fn rank_inputs_follow_training_quantiles() {
        let rows = training_rows(); // PageValues 0..39
        let enc = Encoder::fit_with(&rows, true);
        assert_eq!(enc.dim(), Encoder::fit(&rows).dim() + RANKED.len());
        let pv = enc.numeric.iter().find(|c| c.transform == Transform::Rank && c.column == "PageValues").unwrap();
        assert_eq!(pv.knots.len(), RANK_KNOTS);
        // Monotone, clamped to 0..=1 outside the training range.
        let v = |x: f64| pv.value(&row(x, 1, 11));
        assert_eq!(v(-5.0), 0.0);
        assert_eq!(v(1000.0), 1.0);
        assert!(v(10.0) < v(10.5) && v(10.5) < v(30.0));
        assert!((v(19.5) - 0.5).abs() < 0.02, "{}", v(19.5));
        let json = serde_json::to_string(&enc).unwrap();
        let back: Encoder = serde_json::from_str(&json).unwrap();
        assert_eq!(enc.encode(&row(7.3, 2, 11)), back.encode(&row(7.3, 2, 11)));
    }

    #[test]
    fn a_value_rebuilt_with_rounding_error_ranks_like_the_exact_one() {
        // Many tied knots at 0.2, as in the file's bounce rates.
        let rows: Vec<_> = (0..100).map(|i| row(if i < 60 { 0.2 } else { f64::from(i) }, 1, 11)).collect();
        let enc = Encoder::fit_with(&rows, true);
        let pv = enc.numeric.iter().find(|c| c.transform == Transform::Rank && c.column == "PageValues").unwrap();
        let exact = pv.value(&row(0.2, 1, 11));
        let rebuilt = pv.value(&row(0.6000000000000001 / 3.0, 1, 11));
        assert_ne!(0.2, 0.6000000000000001 / 3.0);
        assert_eq!(exact, rebuilt);
        // A real difference still moves the rank.
        assert!(pv.value(&row(0.21, 1, 11)) > exact);
    }

    #[test]
    fn piecewise_inputs_fill_the_bins_below_the_value() {
        let rows = training_rows(); // PageValues 0..39
        let enc = Encoder::fit_options(&rows, EncoderOptions { rank: true, piecewise_bins: 4 });
        let pv = enc.piecewise.iter().find(|c| c.column == "PageValues").unwrap();
        assert_eq!(pv.knots, vec![0.0, 9.0, 19.0, 29.0, 39.0]);
        // Constant columns (Informational …) get no bins.
        assert!(enc.piecewise.iter().all(|c| c.column != "Informational"));
        assert_eq!(enc.dim(), enc.input_names().len());
        let v = enc.encode(&row(14.0, 1, 11));
        assert_eq!(v.len(), enc.dim());
        let names = enc.input_names();
        let pv_inputs: Vec<f32> =
            names.iter().zip(&v).filter(|(n, _)| n.starts_with("PageValues:bin")).map(|(_, x)| *x).collect();
        assert_eq!(pv_inputs, vec![1.0, 0.5, 0.0, 0.0]);
        // Continuous: a value off by rounding error moves its inputs by as little.
        let a = enc.encode(&row(9.0, 1, 11));
        let b = enc.encode(&row(9.000000000000002, 1, 11));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
        let json = serde_json::to_string(&enc).unwrap();
        let back: Encoder = serde_json::from_str(&json).unwrap();
        assert_eq!(enc.encode(&row(7.3, 2, 11)), back.encode(&row(7.3, 2, 11)));
    }

    #[test]
    fn empty_fit_still_encodes() {
        let enc = Encoder::fit(&[]);
        let v = enc.encode(&row(1.0, 1, 1));
        assert_eq!(v.len(), enc.dim());
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
