//! The service level objectives as CloudWatch metrics: every minute, each
//! replica prints per objective how many events were good and how many
//! counted, as Embedded Metric Format lines on stdout (the ECS log driver
//! ships them; CloudWatch Logs turns them into metrics). The multi-window,
//! multi-burn-rate alarms of `terraform/monitoring.tf` divide their sums
//! over the same windows the Prometheus rules use
//! (`deploy/prometheus/slo-rules.yml`; docs/operations.md, "Service level
//! objectives"). Counts come from the same histograms `/metrics` serves, so
//! both alerting paths measure one thing.
//!
//! The same minute's lines carry the largest model drift the replica
//! measured (`ModelFeaturePsiMax`, `ModelScorePsiMax`: the maxima of the
//! `cartpulse_model_*_psi` gauges), for the drift alarms next to the SLO
//! ones.

use prometheus::proto::{MetricFamily, MetricType};
use std::collections::HashMap;

/// One objective: what counts and what is good.
#[derive(Clone, Copy, Debug)]
pub enum Objective {
    /// Valid ingest requests (not 4xx) answered without a 5xx.
    IngestAvailability,
    /// Events broadcast within 1 s of their acknowledgement.
    DashboardLatency,
    /// Stream connection attempts (not 4xx) that did not fail with a 5xx.
    StreamConnect,
    /// Predictions answered within 10 ms.
    ScoringLatency,
}

impl Objective {
    pub const ALL: [Objective; 4] = [
        Objective::IngestAvailability,
        Objective::DashboardLatency,
        Objective::StreamConnect,
        Objective::ScoringLatency,
    ];

    /// The `Objective` dimension (the names of the Prometheus alerts' `slo` label).
    pub fn name(self) -> &'static str {
        match self {
            Objective::IngestAvailability => "ingest-availability",
            Objective::DashboardLatency => "dashboard-latency",
            Objective::StreamConnect => "stream-connect",
            Objective::ScoringLatency => "scoring-latency",
        }
    }
}

/// Cumulative (good, total) of an objective in `families`; `None` when this
/// process has no such metric (a processor serves no ingest).
pub fn counts(families: &[MetricFamily], objective: Objective) -> Option<(f64, f64)> {
    match objective {
        Objective::IngestAvailability => route_counts(families, "/v1/events"),
        Objective::StreamConnect => route_counts(families, "/v1/stream"),
        Objective::DashboardLatency => within(families, "cartpulse_stream_latency_seconds", 1.0),
        Objective::ScoringLatency => within(families, "cartpulse_prediction_latency_seconds", 0.01),
    }
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> Option<&'a MetricFamily> {
    families.iter().find(|f| f.name() == name && f.get_field_type() == MetricType::HISTOGRAM)
}

/// Requests of `route` that were not refused as the client's fault, and
/// those of them not answered with a 5xx.
fn route_counts(families: &[MetricFamily], route: &str) -> Option<(f64, f64)> {
    let f = family(families, "cartpulse_http_request_duration_seconds")?;
    let (mut good, mut total) = (0.0, 0.0);
    for m in f.get_metric() {
        let label = |name: &str| m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_owned());
        if label("route").as_deref() != Some(route) {
            continue;
        }
        let status = label("status").unwrap_or_default();
        let n = m.get_histogram().get_sample_count() as f64;
        if status.starts_with('4') {
            continue;
        }
        total += n;
        if !status.starts_with('5') {
            good += n;
        }
    }
    Some((good, total))
}

/// Observations of histogram `name` at or under `bound` (a bucket bound:
/// the histograms are built with it), and all of them.
fn within(families: &[MetricFamily], name: &str, bound: f64) -> Option<(f64, f64)> {
    let f = family(families, name)?;
    let (mut good, mut total) = (0.0, 0.0);
    for m in f.get_metric() {
        let h = m.get_histogram();
        total += h.get_sample_count() as f64;
        good += h
            .get_bucket()
            .iter()
            .find(|b| (b.upper_bound() - bound).abs() < 1e-9)
            .map(|b| b.cumulative_count() as f64)
            .unwrap_or(0.0);
    }
    Some((good, total))
}

/// Turns cumulative counts into per-minute deltas and EMF lines.
pub struct SloReporter {
    namespace: String,
    deployment: String,
    last: HashMap<&'static str, (f64, f64)>,
}

impl SloReporter {
    pub fn new(namespace: &str, deployment: &str) -> SloReporter {
        SloReporter { namespace: namespace.to_owned(), deployment: deployment.to_owned(), last: HashMap::new() }
    }

    /// The EMF lines for what happened since the previous call (none for an
    /// objective this process does not serve or that saw nothing).
    pub fn lines(&mut self, families: &[MetricFamily], at_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        for o in Objective::ALL {
            let Some((good, total)) = counts(families, o) else { continue };
            let (good_before, total_before) = self.last.insert(o.name(), (good, total)).unwrap_or((0.0, 0.0));
            // Counters only grow; a smaller value means the process restarted them.
            let (dg, dt) = if total < total_before || good < good_before {
                (good, total)
            } else {
                (good - good_before, total - total_before)
            };
            if dt > 0.0 {
                out.push(emf_line(&self.namespace, &self.deployment, o.name(), at_ms, dg, dt));
            }
        }
        let drift: Vec<(&str, serde_json::Value)> =
            [("ModelFeaturePsiMax", "cartpulse_model_feature_psi"), ("ModelScorePsiMax", "cartpulse_model_score_psi")]
                .into_iter()
                .filter_map(|(metric, gauge)| Some((metric, gauge_max(families, gauge)?.into())))
                .collect();
        if !drift.is_empty() {
            out.push(super::emf_document(&self.namespace, at_ms, &[("Deployment", &self.deployment)], &drift, "None"));
        }
        out
    }
}

/// The largest value of gauge `name` over its series; `None` without any.
fn gauge_max(families: &[MetricFamily], name: &str) -> Option<f64> {
    let f = families.iter().find(|f| f.name() == name && f.get_field_type() == MetricType::GAUGE)?;
    f.get_metric().iter().map(|m| m.get_gauge().get_value()).reduce(f64::max)
}

fn emf_line(namespace: &str, deployment: &str, objective: &str, at_ms: i64, good: f64, total: f64) -> String {
    super::emf_document(
        namespace,
        at_ms,
        &[("Deployment", deployment), ("Objective", objective)],
        &[("SloGoodEvents", good.into()), ("SloValidEvents", total.into())],
        "Count",
    )
}

/// Prints the lines every minute until the process ends.
pub fn spawn(registry: prometheus::Registry, namespace: &str, deployment: &str) {
    let mut reporter = SloReporter::new(namespace, deployment);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for line in reporter.lines(&registry.gather(), chrono::Utc::now().timestamp_millis()) {
                println!("{line}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, Registry};

    fn registry() -> (Registry, HistogramVec, prometheus::Histogram) {
        let r = Registry::new();
        let http = HistogramVec::new(
            HistogramOpts::new("cartpulse_http_request_duration_seconds", "h"),
            &["method", "route", "status"],
        )
        .unwrap();
        let latency = prometheus::Histogram::with_opts(
            HistogramOpts::new("cartpulse_stream_latency_seconds", "l").buckets(vec![0.1, 1.0, 5.0]),
        )
        .unwrap();
        r.register(Box::new(http.clone())).unwrap();
        r.register(Box::new(latency.clone())).unwrap();
        (r, http, latency)
    }

    #[test]
    fn client_errors_do_not_count_and_server_errors_are_bad() {
        let (r, http, _) = registry();
        for (route, status, n) in
            [("/v1/events", "200", 7), ("/v1/events", "503", 2), ("/v1/events", "401", 5), ("/v1/stream", "101", 3)]
        {
            for _ in 0..n {
                http.with_label_values(&["POST", route, status]).observe(0.01);
            }
        }
        let f = r.gather();
        assert_eq!(counts(&f, Objective::IngestAvailability), Some((7.0, 9.0)));
        assert_eq!(counts(&f, Objective::StreamConnect), Some((3.0, 3.0)));
        assert_eq!(counts(&f, Objective::ScoringLatency), None, "no such histogram here");
    }

    #[test]
    fn latency_objectives_count_observations_within_the_bound() {
        let (r, _, latency) = registry();
        for s in [0.05, 0.5, 1.0, 2.0] {
            latency.observe(s);
        }
        assert_eq!(counts(&r.gather(), Objective::DashboardLatency), Some((3.0, 4.0)));
    }

    #[test]
    fn lines_carry_deltas_per_objective_and_skip_quiet_ones() {
        let (r, http, latency) = registry();
        let mut rep = SloReporter::new("cartpulse", "cp");
        http.with_label_values(&["POST", "/v1/events", "200"]).observe(0.01);
        latency.observe(3.0);
        let lines = rep.lines(&r.gather(), 1000);
        assert_eq!(lines.len(), 2, "{lines:?}");
        http.with_label_values(&["POST", "/v1/events", "500"]).observe(0.01);
        let lines = rep.lines(&r.gather(), 2000);
        assert_eq!(lines.len(), 1, "the quiet dashboard objective is skipped: {lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["Objective"], "ingest-availability");
        assert_eq!((v["SloGoodEvents"].as_f64(), v["SloValidEvents"].as_f64()), (Some(0.0), Some(1.0)));
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Dimensions"][0], serde_json::json!(["Deployment", "Objective"]));
        assert_eq!(m["Namespace"], "cartpulse");
    }

    #[test]
    fn the_largest_drift_rides_on_its_own_line() {
        let (r, _, _) = registry();
        let psi = prometheus::GaugeVec::new(
            prometheus::Opts::new("cartpulse_model_feature_psi", "p"),
            &["version", "feature"],
        )
        .unwrap();
        r.register(Box::new(psi.clone())).unwrap();
        let mut rep = SloReporter::new("cartpulse", "cp");
        assert!(rep.lines(&r.gather(), 1000).is_empty(), "no drift measured, no line");
        psi.with_label_values(&["v1", "Month"]).set(0.7);
        psi.with_label_values(&["v1", "Region"]).set(0.05);
        let lines = rep.lines(&r.gather(), 2000);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["ModelFeaturePsiMax"], 0.7);
        assert!(v.get("ModelScorePsiMax").is_none(), "{v}");
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Metrics"][0], serde_json::json!({"Name": "ModelFeaturePsiMax", "Unit": "None"}));
        assert_eq!(m["Dimensions"][0], serde_json::json!(["Deployment"]));
    }
}
