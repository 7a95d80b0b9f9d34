//! Logging set-up and the service's own metrics (ingest and HTTP), recorded as
//! typed events: [`Metrics::record`] is the one place that logs them and
//! bumps the counters. The runtime core has its own in `actors::telemetry`.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global `tracing` subscriber (once; later calls are no-ops).
pub fn init_logging(level: &str, json: bool) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Something that happened at ingest.
#[derive(Debug)]
pub enum IngestEvent {
    /// A group commit finished: `accepted` new events, `duplicates` already in the log.
    Committed { events: usize, accepted: usize, duplicates: usize, seconds: f64 },
    /// Events refused at the edge (bad field, bad id, …).
    Rejected { n: usize },
    /// A request refused whole (bad body, content type, size …), by status.
    BodyRefused { status: u16 },
    /// The committer's queue is full: 503.
    Overloaded,
    /// A commit failed: every request in it got 503.
    CommitFailed { error: String, requests: usize },
}

/// The service's Prometheus registry and its ingest/HTTP metrics.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    ingested: IntCounter,
    rejected: IntCounter,
    duplicates: IntCounter,
    refused: IntCounterVec,
    overloaded: IntCounter,
    commit_failures: IntCounter,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    pub queue_events: IntGauge,
    http_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let m = Metrics {
            ingested: IntCounter::new("cartpulse_events_ingested_total", "Events committed to the log (acknowledged)")?,
            rejected: IntCounter::new("cartpulse_events_rejected_total", "Events rejected at ingest")?,
            duplicates: IntCounter::new(
                "cartpulse_events_duplicate_total",
                "Events already in the log (same event_id)",
            )?,
            refused: IntCounterVec::new(
                Opts::new("cartpulse_ingest_requests_refused_total", "Ingest requests refused whole, by status"),
                &["status"],
            )?,
            overloaded: IntCounter::new(
                "cartpulse_ingest_overloaded_total",
                "Ingest requests answered 503 because the queue was full",
            )?,
            commit_failures: IntCounter::new("cartpulse_commit_failures_total", "Group commits that failed")?,
            commit_batch: Histogram::with_opts(
                HistogramOpts::new("cartpulse_commit_batch_events", "Events per group commit")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 15)?),
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new("cartpulse_commit_duration_seconds", "Duration of one group commit")
                    .buckets(prometheus::exponential_buckets(0.0002, 2.0, 16)?),
            )?,
            queue_events: IntGauge::new("cartpulse_ingest_queue_events", "Events waiting for the group committer")?,
            http_seconds: HistogramVec::new(
                HistogramOpts::new("cartpulse_http_request_duration_seconds", "HTTP request latency")
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
                &["method", "route", "status"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.ingested.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.duplicates.clone()))?;
        m.registry.register(Box::new(m.refused.clone()))?;
        m.registry.register(Box::new(m.overloaded.clone()))?;
        m.registry.register(Box::new(m.commit_failures.clone()))?;
        m.registry.register(Box::new(m.commit_batch.clone()))?;
        m.registry.register(Box::new(m.commit_seconds.clone()))?;
        m.registry.register(Box::new(m.queue_events.clone()))?;
        m.registry.register(Box::new(m.http_seconds.clone()))?;
        Ok(m)
    }

    /// Logs the event and updates the metrics.
    pub fn record(&self, ev: IngestEvent) {
        match ev {
            IngestEvent::Committed { events, accepted, duplicates, seconds } => {
                tracing::trace!(events, accepted, duplicates, seconds, "group commit");
                self.ingested.inc_by(accepted as u64);
                self.duplicates.inc_by(duplicates as u64);
                self.commit_batch.observe(events as f64);
                self.commit_seconds.observe(seconds);
            }
            IngestEvent::Rejected { n } => {
                tracing::debug!(n, "events rejected at ingest");
                self.rejected.inc_by(n as u64);
            }
            IngestEvent::BodyRefused { status } => {
                tracing::debug!(status, "ingest request refused");
                self.refused.with_label_values(&[&status.to_string()]).inc();
            }
            IngestEvent::Overloaded => {
                tracing::warn!("ingest queue full; answering 503");
                self.overloaded.inc();
            }
            IngestEvent::CommitFailed { error, requests } => {
                tracing::error!(%error, requests, "group commit failed; nothing acknowledged");
                self.commit_failures.inc();
            }
        }
    }

    /// One finished HTTP request; `route` is the matched pattern (bounded).
    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_seconds.with_label_values(&[method, route, &status.to_string()]).observe(seconds);
    }
}
