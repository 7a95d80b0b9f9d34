//! Plain-words names for segments, from their centroids in the scaled space
//! (robust z-scores: 0 is the median customer, ±1 is one IQR away).
//!
//! Only recency (`recency_days`, linear), frequency and monetary (both
//! log-scaled) decide the name; the other features show up as "defining
//! features" in the table instead. With r, f, m the centroid's scaled values:
//!
//! - few orders (f ≤ −0.25): "one-timers", prefixed "lapsed" (r ≥ 1),
//!   "cooling" (r ≥ 0.5) or "new" (r ≤ −0.2), and "big-ticket" when m ≥ 0.75;
//! - otherwise "high spenders" (m ≥ 0.75), "low spenders" (m ≤ −0.5) or
//!   "mid spenders", prefixed "loyal" (f ≥ 0.75 and r < 0.5), "frequent"
//!   (f ≥ 0.75 but lapsing), "regular" otherwise, and "lapsed" / "cooling" by r.
//!
//! Recency is right-skewed (a long tail of customers gone for most of a year),
//! so even a cluster of typical customers has a centroid above the median;
//! the recency thresholds are set higher than the others for that reason.
//!
//! Customers with zero or negative net spend come first, before r, f, m:
//! `monetary` is net spend (orders minus cancellations), and it is ≤ 0 for
//! customers whose returns cancel or exceed what they bought in the data
//! (a cancellation of an order placed before the data begins, or a wholesale
//! order returned in full). On the scaled axis they sit far below everyone
//! (the signed log makes −£500 as far below £0 as £500 is above it), so the
//! r/f/m words would call them "low spenders", which hides that they take
//! money back. So a segment whose centroid, taken back to currency units
//! ([`crate::segments::transform::Scaler::inverse`]), has
//!
//! - net spend below −[`NET_SPEND_ZERO`]: "net returners";
//! - net spend within ±[`NET_SPEND_ZERO`]: "no net spend";
//!
//! each prefixed "lapsed" / "cooling" by r as above ("lapsed net returners").
//! The rule names segments, not single customers: a customer with net spend
//! ≤ 0 whose nearest centroid is an ordinary segment carries that segment's
//! name, live and in the batch alike (a per-customer name would disagree with
//! the segment index every reader sees).
//!
//! Thresholds are on scaled values, so they adapt to each shop's data. When
//! two segments get the same words, each gets its most distinctive other
//! feature added ("regular mid spenders, high inter_order_gap_mean_days"), and
//! " #2", " #3" if that still collides, so every name is unique.

/// Net spend (currency units) within ± this counts as none.
pub const NET_SPEND_ZERO: f64 = 1.0;

fn recency_word(r: f64) -> Option<&'static str> {
    if r >= 1.0 {
        Some("lapsed")
    } else if r >= 0.5 {
        Some("cooling")
    } else {
        None
    }
}

/// Name of one centroid from its net spend in currency units, when that is
/// zero or negative ("net returners", "no net spend"); `None` otherwise.
pub fn name_net_spend(r: f64, net_spend: f64) -> Option<String> {
    let what = if net_spend < -NET_SPEND_ZERO {
        "net returners"
    } else if net_spend <= NET_SPEND_ZERO {
        "no net spend"
    } else {
        return None;
    };
    Some(match recency_word(r) {
        Some(w) if what == "no net spend" => format!("{w}, {what}"),
        Some(w) => format!("{w} {what}"),
        None => what.to_owned(),
    })
}

/// Name of one centroid; `r`, `f`, `m` are the scaled recency, frequency, monetary.
pub fn name_rfm(r: f64, f: f64, m: f64) -> String {
    let recency = recency_word(r);
    let mut words: Vec<&str> = Vec::new();
    if f <= -0.25 {
        words.extend(recency.or(if r <= -0.2 { Some("new") } else { None }));
        if m >= 0.75 {
            words.push("big-ticket");
        }
        words.push("one-timers");
    } else {
        words.extend(recency);
        words.push(if f >= 0.75 && r < 0.5 {
            "loyal"
        } else if f >= 0.75 {
            "frequent"
        } else {
            "regular"
        });
        words.push(if m >= 0.75 {
            "high spenders"
        } else if m <= -0.5 {
            "low spenders"
        } else {
            "mid spenders"
        });
    }
    words.join(" ")
}

/// Names every centroid (rows in `feature_names` order), unique.
/// `net_spend[i]`: centroid i's net spend in currency units, when known
/// (the zero-or-negative rule above applies only then).
pub fn name_segments(feature_names: &[&str], centroids: &[Vec<f64>], net_spend: Option<&[f64]>) -> Vec<String> {
    let col = |name: &str| feature_names.iter().position(|n| *n == name);
    let (ri, fi, mi) = (col("recency_days"), col("frequency"), col("monetary"));
    let get = |c: &Vec<f64>, i: Option<usize>| i.and_then(|i| c.get(i).copied()).unwrap_or(0.0);
    let bases: Vec<String> = centroids
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let r = get(c, ri);
            net_spend
                .and_then(|n| n.get(i))
                .and_then(|&n| name_net_spend(r, n))
                .unwrap_or_else(|| name_rfm(r, get(c, fi), get(c, mi)))
        })
        .collect();
    let mut names: Vec<String> = Vec::with_capacity(centroids.len());
    for (c, base) in centroids.iter().zip(&bases) {
        let mut name = base.clone();
        if bases.iter().filter(|b| *b == base).count() > 1 {
            let rfm = ["recency_days", "frequency", "monetary"];
            let other = defining_features(feature_names, c, feature_names.len())
                .into_iter()
                .find(|(n, v)| !rfm.contains(&n.as_str()) && v.abs() > 1e-9);
            if let Some((n, v)) = other {
                name = format!("{base}, {} {n}", if v > 0.0 { "high" } else { "low" });
            }
        }
        let seen = names.iter().filter(|n| **n == name || n.starts_with(&format!("{name} #"))).count();
        names.push(if seen == 0 { name } else { format!("{name} #{}", seen + 1) });
    }
    names
}

/// The `n` features farthest from the median customer, as (name, scaled value).
pub fn defining_features(feature_names: &[&str], centroid: &[f64], n: usize) -> Vec<(String, f64)> {
    let mut idx: Vec<usize> = (0..centroid.len().min(feature_names.len())).collect();
    idx.sort_by(|&a, &b| centroid[b].abs().total_cmp(&centroid[a].abs()).then(a.cmp(&b)));
    idx.into_iter().take(n).map(|i| (feature_names[i].to_owned(), centroid[i])).collect()
}
