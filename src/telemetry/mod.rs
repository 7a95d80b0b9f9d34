//! Logging set-up and the service's own metrics (ingest and HTTP), recorded as
//! typed events: [`Metrics::record`] is the one place that logs them and
//! bumps the counters. The runtime core has its own in `actors::telemetry`.

pub mod scrape;
pub mod slo;
pub mod traces;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global `tracing` subscriber (once; later calls are no-ops).
pub fn init_logging(level: &str, json: bool) {
    init(level, json, None);
}

/// [`init_logging`], plus span export through `tracer` when tracing is on.
/// The log level filters log lines only: the exported spans are this
/// crate's, whatever the level (a quiet `warn` log keeps its traces), and
/// log lines inside a request carry its `trace_id` at any level.
pub fn init(level: &str, json: bool, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if json {
        fmt::layer().json().with_writer(std::io::stderr).with_target(false).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
    };
    let spans = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(Targets::new().with_target("cartpulse", LevelFilter::INFO))
    });
    // The request span always reaches the log layer, whatever the level: a
    // warning inside a traced request names its trace_id even at `warn`.
    let request_span = tracing_subscriber::filter::filter_fn(|m| m.is_span() && m.name() == "http.request");
    let logs = logs.with_filter(tracing_subscriber::filter::FilterExt::or(filter, request_span));
    let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
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
    /// A gateway appended events to the partitioned streams (acknowledged).
    Queued { events: usize },
    /// Redis refused or was unreachable: the request got 503.
    QueueFailed { error: String },
    /// Fewer replicas than required confirmed a request's entries in time:
    /// the request got 503.
    NotReplicated { events: usize, wanted: u32, got: u32 },
    /// The streams' backlog per partition and the dead-letter stream's length.
    Backlog { per_partition: Vec<u64>, dead_letters: u64 },
    /// A processor moved an entry to the dead-letter stream.
    DeadLettered { partition: usize, entry: String, reason: String },
    /// A processor took over entries another consumer left unacknowledged.
    Reclaimed { partition: usize, entries: usize },
    /// A processor's read, commit or acknowledgement failed; it retries.
    ConsumerRetry { step: &'static str, error: String },
    /// A processor took a partition's lease: fenced with `token`, replayed
    /// `replayed` events of the log, in `seconds`.
    LeaseTaken { partition: usize, token: i64, replayed: u64, seconds: f64 },
    /// A processor handed a partition over (its share shrank, or it stops).
    LeaseReleased { partition: usize },
    /// The database refused a processor's commit of `events` events because
    /// another processor had taken `partitions` over (fencing token moved on).
    CommitFenced { partitions: Vec<usize>, events: usize },
    /// A processor lost a partition's lease without handing it over.
    LeaseLost { partition: usize, reason: &'static str },
    /// A scheduled archive run finished: `events` new events in `blocks`
    /// blocks; the lake holds the log up to `archived_through`, and
    /// `waiting` checkpointed positions wait for their block to fill.
    Archived { blocks: u64, events: u64, archived_through: i64, waiting: i64, store: String },
    /// A scheduled archive run failed; the next interval retries.
    ArchiveFailed { error: String },
    /// Retention after a scheduled archive run deleted `events` events
    /// (`partitions` whole day partitions among them) and forgot
    /// `expired_ids` retired ids.
    Retained { events: u64, partitions: usize, expired_ids: u64, kept: usize },
    /// Retention failed; the next archive run retries.
    RetentionFailed { error: String },
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
    queued: IntCounter,
    queue_failures: IntCounter,
    not_replicated: IntCounter,
    stream_lag: IntGaugeVec,
    dead_letters: IntCounter,
    dead_letter_len: IntGauge,
    reclaimed: IntCounter,
    consumer_retries: IntCounterVec,
    leases: IntCounterVec,
    partitions_held: IntGauge,
    fenced: IntCounter,
    archive_runs: IntCounterVec,
    archived_events: IntCounter,
    archived_through: IntGauge,
    archive_waiting: IntGauge,
    retention_runs: IntCounterVec,
    retained_events: IntCounter,
    /// CloudWatch Embedded Metric Format output of the backlog, if asked for.
    emf: Option<std::sync::Arc<Emf>>,
}

/// Where and when the backlog last went out as an EMF line.
struct Emf {
    namespace: String,
    deployment: String,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often the backlog goes out as an EMF line.
const EMF_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
            queued: IntCounter::new(
                "cartpulse_events_queued_total",
                "Events a gateway appended to the partitioned Redis Streams (acknowledged)",
            )?,
            queue_failures: IntCounter::new(
                "cartpulse_ingest_redis_failures_total",
                "Ingest requests answered 503 because Redis failed",
            )?,
            not_replicated: IntCounter::new(
                "cartpulse_ingest_not_replicated_total",
                "Ingest requests answered 503 because fewer than redis.ack_replicas replicas confirmed them in time",
            )?,
            stream_lag: IntGaugeVec::new(
                Opts::new("cartpulse_stream_lag_events", "Events in a partition not yet committed by a processor"),
                &["partition"],
            )?,
            dead_letters: IntCounter::new(
                "cartpulse_events_dead_lettered_total",
                "Entries this processor moved to the dead-letter stream",
            )?,
            dead_letter_len: IntGauge::new("cartpulse_dead_letter_events", "Entries in the dead-letter stream")?,
            reclaimed: IntCounter::new(
                "cartpulse_stream_reclaimed_total",
                "Unacknowledged entries taken over from another consumer",
            )?,
            consumer_retries: IntCounterVec::new(
                Opts::new("cartpulse_stream_consumer_retries_total", "Processor steps that failed and were retried"),
                &["step"],
            )?,
            leases: IntCounterVec::new(
                Opts::new(
                    "cartpulse_partition_leases_total",
                    "Partition leases this processor took, released (handed over), lost, or lost to a refused commit (fenced)",
                ),
                &["outcome"],
            )?,
            partitions_held: IntGauge::new(
                "cartpulse_partitions_held",
                "Event-stream partitions this processor consumes now (by lease)",
            )?,
            fenced: IntCounter::new(
                "cartpulse_commits_fenced_events_total",
                "Events whose commit the database refused because another processor had taken their partition over",
            )?,
            archive_runs: IntCounterVec::new(
                Opts::new("cartpulse_lake_archive_runs_total", "Scheduled archive runs, by outcome (ok, failed)"),
                &["outcome"],
            )?,
            archived_events: IntCounter::new(
                "cartpulse_lake_archived_events_total",
                "Events this process archived to the data lake",
            )?,
            archived_through: IntGauge::new(
                "cartpulse_lake_archived_through",
                "Log position the data lake holds every event up to (at this process's last archive run)",
            )?,
            archive_waiting: IntGauge::new(
                "cartpulse_lake_waiting_events",
                "Checkpointed log positions not archived yet (their block is not full)",
            )?,
            retention_runs: IntCounterVec::new(
                Opts::new("cartpulse_retention_runs_total", "Retention runs after scheduled archives, by outcome (ok, failed)"),
                &["outcome"],
            )?,
            retained_events: IntCounter::new(
                "cartpulse_retention_deleted_events_total",
                "Archived, checkpointed events this process's retention deleted from the database",
            )?,
            emf: None,
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
        m.registry.register(Box::new(m.queued.clone()))?;
        m.registry.register(Box::new(m.queue_failures.clone()))?;
        m.registry.register(Box::new(m.not_replicated.clone()))?;
        m.registry.register(Box::new(m.stream_lag.clone()))?;
        m.registry.register(Box::new(m.dead_letters.clone()))?;
        m.registry.register(Box::new(m.dead_letter_len.clone()))?;
        m.registry.register(Box::new(m.reclaimed.clone()))?;
        m.registry.register(Box::new(m.consumer_retries.clone()))?;
        m.registry.register(Box::new(m.leases.clone()))?;
        m.registry.register(Box::new(m.partitions_held.clone()))?;
        m.registry.register(Box::new(m.fenced.clone()))?;
        m.registry.register(Box::new(m.archive_runs.clone()))?;
        m.registry.register(Box::new(m.archived_events.clone()))?;
        m.registry.register(Box::new(m.archived_through.clone()))?;
        m.registry.register(Box::new(m.archive_waiting.clone()))?;
        m.registry.register(Box::new(m.retention_runs.clone()))?;
        m.registry.register(Box::new(m.retained_events.clone()))?;
        Ok(m)
    }

    /// Also prints the backlog as CloudWatch EMF lines in `namespace`, with
    /// the dimension `Deployment` = `deployment` (the Redis prefix).
    pub fn with_cloudwatch(mut self, namespace: Option<&str>, deployment: &str) -> Metrics {
        self.emf = namespace.map(|n| {
            std::sync::Arc::new(Emf {
                namespace: n.to_owned(),
                deployment: deployment.to_owned(),
                last: std::sync::Mutex::new(None),
            })
        });
        self
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
            IngestEvent::Queued { events } => self.queued.inc_by(events as u64),
            IngestEvent::QueueFailed { error } => {
                tracing::warn!(%error, "appending to the event streams failed; answering 503");
                self.queue_failures.inc();
            }
            IngestEvent::NotReplicated { events, wanted, got } => {
                tracing::warn!(events, wanted, got, "Redis replicas did not confirm in time; answering 503");
                self.not_replicated.inc();
            }
            IngestEvent::Backlog { per_partition, dead_letters } => {
                for (p, n) in per_partition.iter().enumerate() {
                    self.stream_lag.with_label_values(&[&p.to_string()]).set(*n as i64);
                }
                self.dead_letter_len.set(dead_letters as i64);
                if let Some(emf) = &self.emf {
                    emf.backlog(per_partition.iter().sum(), dead_letters);
                }
            }
            IngestEvent::DeadLettered { partition, entry, reason } => {
                tracing::error!(partition, %entry, %reason, "event moved to the dead-letter stream");
                self.dead_letters.inc();
            }
            IngestEvent::Reclaimed { partition, entries } => {
                tracing::warn!(partition, entries, "took over unacknowledged entries of another consumer");
                self.reclaimed.inc_by(entries as u64);
            }
            IngestEvent::ConsumerRetry { step, error } => {
                tracing::warn!(step, %error, "processor step failed; retrying");
                self.consumer_retries.with_label_values(&[step]).inc();
            }
            IngestEvent::LeaseTaken { partition, token, replayed, seconds } => {
                tracing::info!(partition, token, replayed, seconds, "took the partition's lease");
                self.leases.with_label_values(&["taken"]).inc();
                self.partitions_held.inc();
            }
            IngestEvent::LeaseReleased { partition } => {
                tracing::info!(partition, "handed the partition over");
                self.leases.with_label_values(&["released"]).inc();
                self.partitions_held.dec();
            }
            IngestEvent::CommitFenced { partitions, events } => {
                tracing::warn!(?partitions, events, "commit refused: the partitions belong to another processor now");
                self.fenced.inc_by(events as u64);
            }
            IngestEvent::LeaseLost { partition, reason } => {
                tracing::warn!(partition, reason, "lost the partition's lease");
                let outcome = if reason == crate::serving::ingest::leases::FENCED { "fenced" } else { "lost" };
                self.leases.with_label_values(&[outcome]).inc();
                self.partitions_held.dec();
            }
            IngestEvent::Archived { blocks, events, archived_through, waiting, store } => {
                if blocks > 0 {
                    tracing::info!(blocks, events, archived_through, lake = %store, "archived to the data lake");
                } else {
                    tracing::debug!(archived_through, waiting, "archive: no complete block");
                }
                self.archive_runs.with_label_values(&["ok"]).inc();
                self.archived_events.inc_by(events);
                self.archived_through.set(archived_through);
                self.archive_waiting.set(waiting);
            }
            IngestEvent::ArchiveFailed { error } => {
                tracing::warn!(%error, "archive failed; retrying at the next interval");
                self.archive_runs.with_label_values(&["failed"]).inc();
            }
            IngestEvent::Retained { events, partitions, expired_ids, kept } => {
                if events > 0 || expired_ids > 0 {
                    tracing::info!(events, partitions, expired_ids, kept, "retention deleted old events");
                }
                self.retention_runs.with_label_values(&["ok"]).inc();
                self.retained_events.inc_by(events);
            }
            IngestEvent::RetentionFailed { error } => {
                tracing::warn!(%error, "retention failed; retrying after the next archive run");
                self.retention_runs.with_label_values(&["failed"]).inc();
            }
        }
    }

    /// One finished HTTP request; `route` is the matched pattern (bounded).
    pub fn http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_seconds.with_label_values(&[method, route, &status.to_string()]).observe(seconds);
    }
}

impl Emf {
    /// One EMF line (stdout; logs go to stderr) at most every [`EMF_EVERY`].
    fn backlog(&self, events: u64, dead_letters: u64) {
        let now = std::time::Instant::now();
        {
            let Ok(mut last) = self.last.lock() else { return };
            if last.is_some_and(|l| now.duration_since(l) < EMF_EVERY) {
                return;
            }
            *last = Some(now);
        }
        println!(
            "{}",
            emf_line(&self.namespace, &self.deployment, chrono::Utc::now().timestamp_millis(), events, dead_letters)
        );
    }
}

/// `buckets` with `bound` added (sorted, no duplicate): a service level
/// objective's threshold must be a bucket bound for its ratio to be exact
/// (docs/operations.md, "Service level objectives").
pub fn with_bound(mut buckets: Vec<f64>, bound: f64) -> Vec<f64> {
    if !buckets.iter().any(|&b| (b - bound).abs() < f64::EPSILON * bound.abs().max(1.0)) {
        buckets.push(bound);
        buckets.sort_by(f64::total_cmp);
    }
    buckets
}

/// The EMF document: two gauges under one dimension.
fn emf_line(namespace: &str, deployment: &str, at_ms: i64, events: u64, dead_letters: u64) -> String {
    emf_document(
        namespace,
        at_ms,
        &[("Deployment", deployment)],
        &[("StreamBacklogEvents", events.into()), ("DeadLetterEvents", dead_letters.into())],
        "Count",
    )
}

/// One CloudWatch Embedded Metric Format document: `counts` (all in `unit`,
/// e.g. `Count`) under one set of `dimensions`, at `at_ms`.
pub(crate) fn emf_document(
    namespace: &str,
    at_ms: i64,
    dimensions: &[(&str, &str)],
    counts: &[(&str, serde_json::Value)],
    unit: &str,
) -> String {
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": at_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": counts.iter().map(|(k, _)| serde_json::json!({"Name": k, "Unit": unit})).collect::<Vec<_>>(),
            }]
        },
    });
    for (k, v) in dimensions {
        doc[*k] = serde_json::Value::from(*v);
    }
    for (k, v) in counts {
        doc[*k] = v.clone();
    }
    doc.to_string()
}

#[cfg(test)]
mod emf_tests {
    #[test]
    fn the_emf_line_names_its_metrics_and_dimension() {
        let v: serde_json::Value = serde_json::from_str(&super::emf_line("cartpulse", "prod", 1700, 42, 1)).unwrap();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "cartpulse");
        assert_eq!(m["Dimensions"][0][0], "Deployment");
        assert_eq!(m["Metrics"][0]["Name"], "StreamBacklogEvents");
        assert_eq!(v["Deployment"], "prod");
        assert_eq!(v["StreamBacklogEvents"], 42);
        assert_eq!(v["DeadLetterEvents"], 1);
        assert_eq!(v["_aws"]["Timestamp"], 1700);
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::with_bound;

    #[test]
    fn the_objective_becomes_a_bound_once() {
        let b = with_bound(vec![0.5, 2.0], 1.0);
        assert_eq!(b, vec![0.5, 1.0, 2.0]);
        assert_eq!(with_bound(b.clone(), 1.0), b);
    }
}
