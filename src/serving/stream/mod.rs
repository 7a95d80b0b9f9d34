//! The live stream (`GET /v1/stream`, protocol in docs/stream.md): dashboards
//! subscribe to `kpis`, `scores`, `segments` and `customer:{id}` over
//! WebSocket.
//!
//! - [`aggregator`]: the `Aggregator` actor turns the session actors' updates
//!   into the per-second KPI rollup and the topic messages;
//! - [`hub`]: the `Hub` actor numbers, keeps (bounded history) and fans out
//!   every topic's messages;
//! - [`connection`]: one task per client: authentication, subscriptions,
//!   heartbeats, and its bounded [`outbox`];
//! - [`token`]: signed short-lived tokens for browsers;
//! - [`relay`]: the Redis fan-out across replicas ([`Fanout::Redis`]):
//!   processes that run the actors publish each message through a Lua script
//!   that numbers and keeps it in Redis and publishes it on the topic's
//!   sharded channel; processes that serve clients subscribe once per topic
//!   and fan out locally, recovering gaps from the Redis history;
//! - [`protocol`]: the wire format, with the server's messages typed in
//!   [`frames`]; [`telemetry`]: metrics.
//!
//! [`Stream`] is the handle the HTTP layer holds.

pub mod aggregator;
pub mod connection;
pub mod credentials;
pub mod frames;
pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod relay;
pub mod telemetry;
pub mod token;

use actix::{Actor, Addr, Arbiter, AsyncContext};
use actors::hooks::Hooks;
use secrecy::SecretString;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `stream.*` settings (every key optional; defaults below).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StreamSettings {
    /// HMAC secret of stream tokens, at least 32 bytes; every replica must
    /// share it (required with Redis). A random per-process secret when
    /// absent in a single process.
    pub token_secret: Option<SecretString>,
    /// Lifetime of a stream token.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub token_ttl_s: std::time::Duration,
    /// How often a connection's key or console session is re-checked (also
    /// when its token expires); a revoked one is closed with 4001.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub recheck_ms: std::time::Duration,
    /// Without credentials on the upgrade, the `auth` message must come within this.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub auth_timeout_ms: std::time::Duration,
    /// The server pings this often.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub heartbeat_interval_ms: std::time::Duration,
    /// A client silent (no pong, no message) this long is closed with 4002.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub idle_timeout_ms: std::time::Duration,
    /// Per-connection queue bound, in messages …
    pub queue_max_messages: usize,
    /// … and in bytes.
    pub queue_max_bytes: usize,
    /// A client at its queue limit this long is closed with 4008.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub slow_after_ms: std::time::Duration,
    /// History kept per topic for `since` recovery, in messages …
    pub history_messages: usize,
    /// … and in bytes.
    pub history_bytes: usize,
    /// History kept per `customer:{id}` topic.
    pub customer_history_messages: usize,
    /// How long a customer topic (and its history) outlives its last subscriber.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub customer_linger_s: std::time::Duration,
    /// Most customer topics kept without subscribers.
    pub max_lingering_topics: usize,
    /// Most topics one connection may subscribe to.
    pub max_topics_per_connection: usize,
    /// Most connections waiting for their `auth` message at once; beyond,
    /// upgrades without credentials get 503.
    pub max_unauthenticated: usize,
    /// Largest accepted client frame.
    pub max_frame_bytes: usize,
    /// How often the KPI rollup is published.
    #[serde(deserialize_with = "crate::config::units::millis")]
    pub kpis_interval_ms: std::time::Duration,
    /// Window of the `conversion_rate` KPI.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub conversion_window_s: std::time::Duration,
    /// With Redis: messages waiting to be published at most (beyond, they
    /// are dropped and counted) …
    pub redis_publish_queue: usize,
    /// … and sent per pipeline at most.
    pub redis_publish_batch: usize,
    /// With Redis: gateways re-announce the customers they follow this often
    /// (a watch expires after three times this without a refresh).
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub watch_refresh_s: std::time::Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            token_secret: None,
            token_ttl_s: std::time::Duration::from_secs(300),
            recheck_ms: std::time::Duration::from_secs(30),
            auth_timeout_ms: std::time::Duration::from_secs(5),
            heartbeat_interval_ms: std::time::Duration::from_secs(15),
            idle_timeout_ms: std::time::Duration::from_secs(45),
            queue_max_messages: 512,
            queue_max_bytes: 1 << 20,
            slow_after_ms: std::time::Duration::from_secs(5),
            history_messages: 1_000,
            history_bytes: 4 << 20,
            customer_history_messages: 50,
            customer_linger_s: std::time::Duration::from_secs(60),
            max_lingering_topics: 10_000,
            max_topics_per_connection: 100,
            max_unauthenticated: 1_000,
            max_frame_bytes: 64 << 10,
            kpis_interval_ms: std::time::Duration::from_secs(1),
            conversion_window_s: std::time::Duration::from_secs(300),
            redis_publish_queue: 16_384,
            redis_publish_batch: 256,
            watch_refresh_s: std::time::Duration::from_secs(10),
        }
    }
}

/// How topic messages travel from the aggregator to the clients.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // made once per process
pub enum Fanout {
    /// One process: the hub numbers, keeps and fans out every message itself.
    Local,
    /// Many replicas: messages are numbered and kept in Redis and reach every
    /// gateway over sharded pub/sub. `role` says whether this process
    /// publishes (runs actors), serves clients, or both.
    Redis { link: crate::redis_link::RedisLink, role: crate::config::Role, kpis: KpiShare },
}

/// Whose `kpis` a publishing process computes.
#[derive(Clone, Debug)]
pub enum KpiShare {
    /// It runs the actors of every partition: its rollup is the deployment's.
    Whole,
    /// It owns some partitions (`owner` names it, e.g. `0-7`); the `leader`,
    /// the one holding partition 0, merges every processor's part and publishes.
    Part { owner: String, leader: Leader },
}

/// Whether a process merges and publishes `kpis` now.
#[derive(Clone, Debug)]
pub enum Leader {
    /// A fixed range: whether it holds partition 0.
    Fixed(bool),
    /// Leases: while it holds partition 0.
    WhileHolding(actors::runtime::PartitionSet),
}

impl Leader {
    pub fn now(&self) -> bool {
        match self {
            Leader::Fixed(b) => *b,
            Leader::WhileHolding(set) => set.contains(0),
        }
    }
}

/// The stream layer as the HTTP handlers see it; cheap to clone.
#[derive(Clone)]
pub struct Stream {
    pub hub: Addr<Hub>,
    pub settings: Arc<StreamSettings>,
    pub tokens: Arc<token::TokenSigner>,
    pub metrics: telemetry::StreamMetrics,
    next_id: Arc<AtomicU64>,
    /// Connection tasks past authentication.
    pub(crate) live: Arc<AtomicUsize>,
    /// Connections still waiting for their `auth` message.
    unauthenticated: Arc<AtomicUsize>,
    _arbiter: Arc<ArbiterGuard>,
}

use hub::Hub;

/// Held by a connection until it has authenticated (or gone).
pub struct UnauthenticatedSlot(Arc<AtomicUsize>);

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stops the stream's arbiter thread when the last handle goes.
struct ArbiterGuard(Arbiter);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Stream {
    /// Starts the hub and the aggregator on an arbiter thread of their own.
    /// Must run inside an actix system, before the actors replay the log
    /// (the aggregator subscribes to the bus here).
    pub fn start(
        settings: &StreamSettings,
        hooks: &Hooks,
        registry: &prometheus::Registry,
        session_gap: Duration,
        fanout: Fanout,
    ) -> anyhow::Result<Stream> {
        let metrics = telemetry::StreamMetrics::register(registry)?;
        let tokens = Arc::new(token::TokenSigner::new(settings.token_secret.as_ref(), settings.token_ttl_s));
        let arbiter = Arbiter::new();
        let hub_settings = hub::HubSettings {
            history_messages: settings.history_messages.max(1),
            history_bytes: settings.history_bytes.max(1),
            customer_history_messages: settings.customer_history_messages.max(1),
            customer_linger: settings.customer_linger_s,
            max_lingering_topics: settings.max_lingering_topics,
        };
        // Which parts this process runs: one process does everything through
        // its own hub; with Redis, a process that runs the actors publishes
        // to Redis and one that serves clients receives from it (both, with
        // role `all`: its own clients get what every other gateway gets).
        let (link, publishes, receives) = match &fanout {
            Fanout::Local => (None, true, false),
            Fanout::Redis { link, role, .. } => (Some(link.clone()), role.runs_actors(), role.serves_clients()),
        };
        let bus = hooks.updates.clone();
        let m = metrics.clone();
        let hub_link = link.clone().filter(|_| receives);
        let refresh = settings.watch_refresh_s.max(Duration::from_secs(1));
        let hub = Hub::start_in_arbiter(&arbiter.handle(), move |ctx| {
            let remote = hub_link.map(|link| {
                let addr = ctx.address();
                let sm = m.clone();
                let subscriber =
                    relay::subscriber::Subscriber::start(link.clone(), "subscriber", m.clone(), move |ev| {
                        on_topic_event(&addr, &sm, ev)
                    });
                let announcer = relay::watch::Announcer::start(link.clone(), refresh, m.clone());
                hub::Remote { link, subscriber, announcer }
            });
            Hub::new(hub_settings, bus, m, remote)
        });
        if publishes {
            let rx = hooks.updates.subscribe();
            let (h, m) = (hub.clone(), metrics.clone());
            let interval = settings.kpis_interval_ms.max(Duration::from_millis(1));
            let window = settings.conversion_window_s.max(Duration::from_secs(1));
            let publish = relay::publisher::PublishSettings {
                queue: settings.redis_publish_queue.max(1),
                batch: settings.redis_publish_batch.max(1),
                history_messages: settings.history_messages.max(1),
                customer_history_messages: settings.customer_history_messages.max(1),
                customer_ttl_s: (settings.customer_linger_s.as_secs() * 4).max(60),
            };
            let bus = hooks.updates.clone();
            let share = match &fanout {
                Fanout::Redis { kpis, .. } => kpis.clone(),
                Fanout::Local => KpiShare::Whole,
            };
            aggregator::Aggregator::start_in_arbiter(&arbiter.handle(), move |_| {
                let to = match link {
                    None => aggregator::PublishTo::Hub(h),
                    Some(link) => {
                        relay::watch::start_follower(link.clone(), bus, m.clone());
                        let publisher = relay::publisher::Publisher::start(link.clone(), publish, m.clone());
                        match share {
                            KpiShare::Whole => aggregator::PublishTo::Redis(publisher),
                            KpiShare::Part { owner, leader } => {
                                aggregator::PublishTo::RedisShare { publisher, link, owner, leader }
                            }
                        }
                    }
                };
                aggregator::Aggregator::new(to, rx, interval, session_gap, window, m)
            });
        }
        Ok(Stream {
            hub,
            settings: Arc::new(settings.clone()),
            tokens,
            metrics,
            next_id: Arc::new(AtomicU64::new(1)),
            live: Arc::new(AtomicUsize::new(0)),
            unauthenticated: Arc::new(AtomicUsize::new(0)),
            _arbiter: Arc::new(ArbiterGuard(arbiter)),
        })
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A place for one more connection waiting for its `auth` message, or
    /// `None` when `max_unauthenticated` already wait: anonymous sockets
    /// hold memory until the auth timeout, so their number is bounded.
    pub fn admit_unauthenticated(&self) -> Option<UnauthenticatedSlot> {
        let n = self.unauthenticated.fetch_add(1, Ordering::AcqRel);
        let slot = UnauthenticatedSlot(self.unauthenticated.clone());
        (n < self.settings.max_unauthenticated).then_some(slot)
    }

    /// Connected (authenticated) clients.
    pub fn clients(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> outbox::Limits {
        outbox::Limits {
            max_messages: self.settings.queue_max_messages.max(1),
            max_bytes: self.settings.queue_max_bytes.max(1),
            slow_after: self.settings.slow_after_ms,
        }
    }

    /// Closes every client with 1001 and waits (briefly) until their close
    /// frames are out, so the HTTP server's graceful stop does not wait on
    /// WebSockets.
    pub async fn shutdown(&self) {
        let n = self.hub.send(hub::messages::Shutdown).await.unwrap_or(0);
        if n > 0 {
            tracing::info!(clients = n, "closing stream clients (1001)");
        }
        // The tasks close on their own worker threads; wait for them, briefly.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while self.live.load(Ordering::Relaxed) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A gateway's subscriber event, handed to the hub: frames (the topic and
/// seq read from the frame's head), and reconnections (the hub then reads
/// every topic's history from where it stopped).
fn on_topic_event(hub: &Addr<Hub>, metrics: &telemetry::StreamMetrics, ev: relay::subscriber::SubEvent) {
    use relay::subscriber::SubEvent;
    match ev {
        SubEvent::Connected { reconnect } => {
            if reconnect {
                hub.do_send(hub::messages::Resync);
            }
        }
        SubEvent::Message { payload, .. } => {
            let Some((name, seq)) = relay::frame_head(&payload) else { return };
            let (Some(topic), Ok(text)) = (protocol::Topic::parse(&name), String::from_utf8(payload)) else { return };
            // A frame the hub cannot take now is read back from the history
            // when the next one shows the gap.
            if hub.try_send(hub::messages::Received { topic, seq, text: text.into() }).is_err() {
                metrics.record(telemetry::StreamEvent::PublishDropped { topic: &name });
            }
        }
    }
}
