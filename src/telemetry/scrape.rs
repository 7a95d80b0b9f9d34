//! Reading the Prometheus text format that `/metrics` serves, for the
//! benches and the black-box tests: one series' value, the sum over a
//! metric's series, and a quantile of a histogram (as its bucket bound).

/// The value of the series written exactly `series` (a name, or a name with
/// its labels as exported, e.g. `x_total{reason="full"}`); `None` if absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// Sums the samples of `name` (every label set) in Prometheus text format;
/// `None` when there is none.
pub fn sum(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value_part = if let Some(labels) = rest.strip_prefix('{') {
            match labels.rfind('}') {
                Some(end) => &labels[end + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            // Another metric sharing the prefix (e.g. `…_total_created`).
            continue;
        };
        if let Some(v) = value_part.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The upper bound of the bucket holding quantile `q` of an unlabelled
/// histogram `name` (seconds, as exported); `None` when it is empty.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix(&prefix) {
            if let Some((le, v)) = rest.split_once("\"} ") {
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                buckets.push((le, v.trim().parse().ok()?));
            }
        }
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total == 0.0 {
        return None;
    }
    buckets.iter().find(|(_, n)| *n >= total * q).map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_over_series() {
        let text = "# HELP cartpulse_events_applied_total Events applied\n\
                    # TYPE cartpulse_events_applied_total counter\n\
                    cartpulse_events_applied_total{shard=\"0\"} 10\n\
                    cartpulse_events_applied_total{shard=\"1\"} 5 1700000000\n\
                    cartpulse_events_applied_total_created 1.7e9\n\
                    cartpulse_other_total 99\n";
        assert_eq!(sum(text, "cartpulse_events_applied_total"), Some(15.0));
        assert_eq!(sum("cartpulse_events_applied_total 3\n", "cartpulse_events_applied_total"), Some(3.0));
        assert_eq!(sum("cartpulse_other_total 1\n", "cartpulse_events_applied_total"), None);
    }

    #[test]
    fn histogram_quantile_is_a_bucket_bound() {
        let text = "h_seconds_bucket{le=\"0.005\"} 50\n\
                    h_seconds_bucket{le=\"0.01\"} 98\n\
                    h_seconds_bucket{le=\"0.05\"} 100\n\
                    h_seconds_bucket{le=\"+Inf\"} 100\n";
        assert_eq!(histogram_quantile(text, "h_seconds", 0.5), Some(0.005));
        assert_eq!(histogram_quantile(text, "h_seconds", 0.99), Some(0.05));
        assert_eq!(histogram_quantile("", "h_seconds", 0.99), None);
    }

    #[test]
    fn one_series_by_its_exact_name() {
        let text = "# TYPE x_total counter\nx_total{reason=\"full\"} 4\nx_total{reason=\"slow\"} 2\ny 7 1700000000\n";
        assert_eq!(sample(text, "x_total{reason=\"full\"}"), Some(4.0));
        assert_eq!(sample(text, "y"), Some(7.0));
        assert_eq!(sample(text, "x_total"), None);
    }
}
