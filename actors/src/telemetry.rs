//! Telemetry of the runtime core as typed events: [`ActorMetrics::record`] is
//! the one place that logs an event and bumps its metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Something worth counting that happened in the runtime core.
#[derive(Debug)]
pub enum ActorEvent<'a> {
    /// Events folded into customer state (batch of `n`).
    Applied { n: u64 },
    /// Events received again that an actor had already applied (after a
    /// reload or a redelivery); skipped.
    Skipped { n: u64 },
    /// An actor started (from its snapshot, or empty).
    Activated { customer: &'a str },
    /// An idle actor flushed and stopped.
    Passivated { customer: &'a str },
    /// A session closed; `reason` is a fixed label.
    SessionClosed { reason: &'static str },
    /// The persister wrote a batch.
    Persisted { customers: usize, sessions: usize, seconds: f64 },
    /// The persister failed to write; it keeps the rows and retries.
    PersistFailed { error: &'a str },
    /// Loading actors from the database failed; it is retried.
    LoadFailed { error: &'a str },
    /// A session got a score (`final_score`: taken at its close).
    Scored { final_score: bool },
    /// A score request failed; the session keeps its previous score.
    ScoreFailed { error: &'a crate::hooks::ScoreError },
    /// A customer moved to another segment (or got its first one).
    SegmentChanged,
}

/// The runtime core's Prometheus metrics.
#[derive(Clone)]
pub struct ActorMetrics {
    applied: IntCounter,
    skipped: IntCounter,
    active: IntGauge,
    activations: IntCounter,
    passivations: IntCounter,
    sessions_closed: IntCounterVec,
    persisted_rows: IntCounterVec,
    persist_seconds: Histogram,
    errors: IntCounterVec,
    scored: IntCounterVec,
    segment_changes: IntCounter,
}

impl ActorMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ActorMetrics {
            applied: IntCounter::new("cartpulse_events_applied_total", "Events applied by customer session actors")?,
            skipped: IntCounter::new(
                "cartpulse_events_reapplied_skipped_total",
                "Events an actor had already applied and skipped (redelivery after reload)",
            )?,
            active: IntGauge::new("cartpulse_actors_active", "Customer session actors currently alive")?,
            activations: IntCounter::new("cartpulse_actor_activations_total", "Customer session actors started")?,
            passivations: IntCounter::new("cartpulse_actor_passivations_total", "Idle actors flushed and stopped")?,
            sessions_closed: IntCounterVec::new(
                Opts::new("cartpulse_sessions_closed_total", "Sessions closed, by reason"),
                &["reason"],
            )?,
            persisted_rows: IntCounterVec::new(
                Opts::new("cartpulse_persisted_rows_total", "Snapshot rows written, by table"),
                &["table"],
            )?,
            persist_seconds: Histogram::with_opts(
                HistogramOpts::new("cartpulse_persist_duration_seconds", "Time to write one snapshot batch")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14)?),
            )?,
            errors: IntCounterVec::new(
                Opts::new("cartpulse_runtime_errors_total", "Recoverable runtime errors, by kind"),
                &["kind"],
            )?,
            scored: IntCounterVec::new(
                Opts::new(
                    "cartpulse_sessions_scored_total",
                    "Session scores received by actors, by kind (open or final)",
                ),
                &["kind"],
            )?,
            segment_changes: IntCounter::new(
                "cartpulse_segment_assignments_total",
                "Customers assigned to a (new) segment by their actor",
            )?,
        };
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.active.clone()))?;
        registry.register(Box::new(m.activations.clone()))?;
        registry.register(Box::new(m.passivations.clone()))?;
        registry.register(Box::new(m.sessions_closed.clone()))?;
        registry.register(Box::new(m.persisted_rows.clone()))?;
        registry.register(Box::new(m.persist_seconds.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.scored.clone()))?;
        registry.register(Box::new(m.segment_changes.clone()))?;
        Ok(m)
    }

    /// Logs the event (at a level that fits it) and updates the metrics.
    pub fn record(&self, event: ActorEvent<'_>) {
        match event {
            ActorEvent::Applied { n } => self.applied.inc_by(n),
            ActorEvent::Skipped { n } => {
                tracing::debug!(n, "skipped events already applied");
                self.skipped.inc_by(n)
            }
            ActorEvent::Activated { customer } => {
                tracing::trace!(customer, "actor activated");
                self.active.inc();
                self.activations.inc();
            }
            ActorEvent::Passivated { customer } => {
                tracing::trace!(customer, "actor passivated");
                self.active.dec();
                self.passivations.inc();
            }
            ActorEvent::SessionClosed { reason } => self.sessions_closed.with_label_values(&[reason]).inc(),
            ActorEvent::Persisted { customers, sessions, seconds } => {
                tracing::trace!(customers, sessions, seconds, "snapshot batch written");
                self.persisted_rows.with_label_values(&["customers"]).inc_by(customers as u64);
                self.persisted_rows.with_label_values(&["sessions"]).inc_by(sessions as u64);
                self.persist_seconds.observe(seconds);
            }
            ActorEvent::PersistFailed { error } => {
                tracing::warn!(error, "writing snapshots failed; keeping them and retrying");
                self.errors.with_label_values(&["persist"]).inc();
            }
            ActorEvent::LoadFailed { error } => {
                tracing::warn!(error, "loading customer state failed; retrying");
                self.errors.with_label_values(&["load"]).inc();
            }
            ActorEvent::Scored { final_score } => {
                self.scored.with_label_values(&[if final_score { "final" } else { "open" }]).inc()
            }
            ActorEvent::ScoreFailed { error } => {
                tracing::debug!(%error, "score request failed");
                let kind = match error {
                    crate::hooks::ScoreError::NoModel => "score_no_model",
                    crate::hooks::ScoreError::Overloaded => "score_overloaded",
                    crate::hooks::ScoreError::Failed(_) => "score_failed",
                };
                self.errors.with_label_values(&[kind]).inc();
            }
            ActorEvent::SegmentChanged => self.segment_changes.inc(),
        }
    }

    /// Events applied so far (for drain checks and benchmarks).
    pub fn applied_total(&self) -> u64 {
        self.applied.get()
    }
}
