//! The live stream's metrics, recorded as typed events: [`StreamMetrics::record`]
//! is the one place that logs them and updates the counters. Credentials
//! never appear in an event.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Something that happened in the stream layer.
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// An authenticated client joined (`how`: header, query, message).
    Connected { how: &'static str },
    /// A client left; `code` is the close code we sent, if any.
    Disconnected { code: Option<u16> },
    /// Authentication refused (`how` as above, or `recheck` when the key or
    /// console session of a live connection is gone).
    AuthRefused { how: &'static str, reason: &'a str },
    /// Frames written to clients' sockets (summed per wake-up of one connection).
    Sent { n: u64 },
    /// One publication's fan-out: frames queued, dropped (queue full) and
    /// replaced by a newer rollup.
    FannedOut { dropped: u64, coalesced: u64 },
    /// A client behind its queue limit for too long, closed with 4008.
    SlowDisconnect,
    /// A publication the hub could not take (mailbox full).
    PublishDropped { topic: &'a str },
    /// The aggregator missed updates from the actors' bus.
    Lagged { n: u64 },
    /// Ingest acknowledgement → broadcast, for one applied batch.
    Latency { seconds: f64 },
    /// A client message answered with an error.
    ClientError { code: &'static str },
    /// A stream token was issued.
    TokenIssued,
    /// Messages numbered, kept and published in Redis (one pipeline).
    RedisPublished { n: u64 },
    /// Messages that never reached Redis (`redis_queue_full`: the
    /// publisher's queue was full; `redis_failed`: a pipeline failed).
    RedisPublishDropped { n: u64, reason: &'static str },
    /// A Redis connection (`conn`: publisher, subscriber, watch_announcer,
    /// watch_follower) was lost or could not be made; recorded once per
    /// outage, not per retry.
    RedisDown { conn: &'static str, error: &'a str },
    /// … and is back; `reconnect` unless it is the first connection.
    RedisUp { conn: &'static str, down_for: std::time::Duration, reconnect: bool },
    /// Frames read from a topic's Redis history to fill a gap of its channel.
    RedisGapFilled { n: u64 },
    /// Frames replayed to a client from the Redis history (`since`).
    RedisReplayed { n: u64 },
    /// A history read failed (Redis unreachable); the caller degrades.
    RedisReadFailed { error: &'a str },
    /// Frames of a topic neither the channel nor the history could provide.
    RedisLost { topic: &'a str, n: u64 },
}

/// Prometheus metrics of the stream layer.
#[derive(Clone)]
pub struct StreamMetrics {
    clients: IntGauge,
    connects: IntCounterVec,
    closes: IntCounterVec,
    auth_refused: IntCounterVec,
    sent: IntCounter,
    dropped: IntCounterVec,
    coalesced: IntCounter,
    slow: IntCounter,
    lagged: IntCounter,
    latency: Histogram,
    client_errors: IntCounterVec,
    tokens: IntCounter,
    redis_published: IntCounter,
    redis_outages: IntCounterVec,
    redis_reconnects: IntCounterVec,
    redis_gap_filled: IntCounter,
    redis_replayed: IntCounter,
    redis_read_failures: IntCounter,
}

impl StreamMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<StreamMetrics> {
        let m = StreamMetrics {
            clients: IntGauge::new("cartpulse_stream_clients", "Connected (authenticated) WebSocket clients")?,
            connects: IntCounterVec::new(
                Opts::new("cartpulse_stream_connections_total", "Authenticated WebSocket connections, by method"),
                &["auth"],
            )?,
            closes: IntCounterVec::new(
                Opts::new("cartpulse_stream_disconnects_total", "WebSocket disconnects, by close code we sent"),
                &["code"],
            )?,
            auth_refused: IntCounterVec::new(
                Opts::new("cartpulse_stream_auth_refused_total", "Stream authentications refused, by method"),
                &["auth"],
            )?,
            sent: IntCounter::new("cartpulse_stream_messages_sent_total", "Messages handed to clients' sockets")?,
            dropped: IntCounterVec::new(
                Opts::new("cartpulse_stream_messages_dropped_total", "Messages dropped, by reason"),
                &["reason"],
            )?,
            coalesced: IntCounter::new(
                "cartpulse_stream_messages_coalesced_total",
                "kpis messages replaced by a newer one before a slow client got them",
            )?,
            slow: IntCounter::new(
                "cartpulse_stream_slow_disconnects_total",
                "Clients closed with 4008 for staying behind their queue limit",
            )?,
            lagged: IntCounter::new(
                "cartpulse_stream_updates_lagged_total",
                "Actor updates the aggregator missed because it fell behind the bus",
            )?,
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "cartpulse_stream_latency_seconds",
                    "Ingest acknowledgement to broadcast, per applied batch (end-to-end latency inside the server)",
                )
                // 1 s: the ingest → dashboard objective.
                .buckets(crate::telemetry::with_bound(prometheus::exponential_buckets(0.0005, 2.0, 16)?, 1.0)),
            )?,
            client_errors: IntCounterVec::new(
                Opts::new("cartpulse_stream_client_errors_total", "Client messages answered with an error, by code"),
                &["code"],
            )?,
            tokens: IntCounter::new("cartpulse_stream_tokens_issued_total", "Stream tokens issued")?,
            redis_published: IntCounter::new(
                "cartpulse_stream_redis_published_total",
                "Topic messages numbered, kept and published in Redis by this process",
            )?,
            redis_outages: IntCounterVec::new(
                Opts::new("cartpulse_stream_redis_outages_total", "Redis connections lost or refused, by connection"),
                &["conn"],
            )?,
            redis_reconnects: IntCounterVec::new(
                Opts::new("cartpulse_stream_redis_reconnects_total", "Redis connections restored after an outage"),
                &["conn"],
            )?,
            redis_gap_filled: IntCounter::new(
                "cartpulse_stream_redis_gap_filled_total",
                "Frames read from the Redis history to fill a gap in a topic's channel",
            )?,
            redis_replayed: IntCounter::new(
                "cartpulse_stream_redis_replayed_total",
                "Frames replayed to clients from the Redis history (since recovery)",
            )?,
            redis_read_failures: IntCounter::new(
                "cartpulse_stream_redis_read_failures_total",
                "Redis history reads that failed",
            )?,
        };
        registry.register(Box::new(m.clients.clone()))?;
        registry.register(Box::new(m.connects.clone()))?;
        registry.register(Box::new(m.closes.clone()))?;
        registry.register(Box::new(m.auth_refused.clone()))?;
        registry.register(Box::new(m.sent.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.slow.clone()))?;
        registry.register(Box::new(m.lagged.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.client_errors.clone()))?;
        registry.register(Box::new(m.tokens.clone()))?;
        registry.register(Box::new(m.redis_published.clone()))?;
        registry.register(Box::new(m.redis_outages.clone()))?;
        registry.register(Box::new(m.redis_reconnects.clone()))?;
        registry.register(Box::new(m.redis_gap_filled.clone()))?;
        registry.register(Box::new(m.redis_replayed.clone()))?;
        registry.register(Box::new(m.redis_read_failures.clone()))?;
        Ok(m)
    }

    /// Logs the event (at a level that fits it) and updates the metrics.
    pub fn record(&self, ev: StreamEvent<'_>) {
        match ev {
            StreamEvent::Connected { how } => {
                tracing::debug!(auth = how, "stream client connected");
                self.clients.inc();
                self.connects.with_label_values(&[how]).inc();
            }
            StreamEvent::Disconnected { code } => {
                tracing::debug!(?code, "stream client disconnected");
                self.clients.dec();
                let label = code.map(|c| c.to_string());
                self.closes.with_label_values(&[label.as_deref().unwrap_or("none")]).inc();
            }
            StreamEvent::AuthRefused { how, reason } => {
                tracing::info!(auth = how, reason, "stream authentication refused");
                self.auth_refused.with_label_values(&[how]).inc();
            }
            StreamEvent::Sent { n } => self.sent.inc_by(n),
            StreamEvent::FannedOut { dropped, coalesced } => {
                if dropped > 0 {
                    tracing::debug!(dropped, "stream frames dropped for clients behind their queue limit");
                    self.dropped.with_label_values(&["queue_full"]).inc_by(dropped);
                }
                self.coalesced.inc_by(coalesced);
            }
            StreamEvent::SlowDisconnect => {
                tracing::info!("closing a slow stream client (4008)");
                self.slow.inc();
            }
            StreamEvent::PublishDropped { topic } => {
                tracing::warn!(topic, "stream hub overloaded; publication dropped");
                self.dropped.with_label_values(&["hub_overloaded"]).inc();
            }
            StreamEvent::Lagged { n } => {
                tracing::warn!(missed = n, "stream aggregator fell behind the update bus");
                self.lagged.inc_by(n);
            }
            StreamEvent::Latency { seconds } => self.latency.observe(seconds.max(0.0)),
            StreamEvent::ClientError { code } => {
                tracing::debug!(code, "stream client message refused");
                self.client_errors.with_label_values(&[code]).inc();
            }
            StreamEvent::TokenIssued => {
                tracing::debug!("stream token issued");
                self.tokens.inc();
            }
            StreamEvent::RedisPublished { n } => self.redis_published.inc_by(n),
            StreamEvent::RedisPublishDropped { n, reason } => {
                // The outage itself is logged once (RedisDown); not every message.
                tracing::debug!(n, reason, "stream messages not published to Redis");
                self.dropped.with_label_values(&[reason]).inc_by(n);
            }
            StreamEvent::RedisDown { conn, error } => {
                tracing::warn!(conn, error, "stream lost its Redis connection; retrying with backoff");
                self.redis_outages.with_label_values(&[conn]).inc();
            }
            StreamEvent::RedisUp { conn, down_for, reconnect } => {
                tracing::info!(conn, down_ms = down_for.as_millis() as u64, "stream Redis connection restored");
                if reconnect {
                    self.redis_reconnects.with_label_values(&[conn]).inc();
                }
            }
            StreamEvent::RedisGapFilled { n } => {
                tracing::debug!(n, "stream gap filled from the Redis history");
                self.redis_gap_filled.inc_by(n);
            }
            StreamEvent::RedisReplayed { n } => self.redis_replayed.inc_by(n),
            StreamEvent::RedisReadFailed { error } => {
                tracing::debug!(error, "stream history read failed");
                self.redis_read_failures.inc();
            }
            StreamEvent::RedisLost { topic, n } => {
                tracing::warn!(topic, n, "stream messages lost: neither the channel nor the Redis history had them");
                self.dropped.with_label_values(&["lost"]).inc_by(n);
            }
        }
    }
}
