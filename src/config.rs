//! Typed, layered configuration, read once at start-up.
//!
//! Layers, later wins: built-in defaults → a TOML file (`--config FILE`, or
//! `cartpulse.toml` in the working directory if present) → `CARTPULSE_*`
//! environment variables (nested keys with `__`, e.g.
//! `CARTPULSE_INGEST__MAX_BODY_BYTES`) → command-line flags.
//! Secrets (database and Redis URLs can carry passwords) are `SecretString`s,
//! so they cannot end up in logs or `Debug` output by accident.

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Everything the service can be told.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address the HTTP server binds, e.g. `127.0.0.1:8080` (port 0 picks one).
    pub listen: String,
    /// `sqlite://FILE?mode=rwc` (default, embedded) or `postgres://…`.
    pub database_url: SecretString,
    /// Redis for the multi-replica roles (`redis://` or `rediss://` for TLS).
    /// Without it the service is one process with in-process queues.
    pub redis_url: Option<SecretString>,
    /// What this process runs: `all` (default), `gateway` or `processor`.
    /// `gateway` and `processor` need `redis_url`.
    pub role: Role,
    /// Redis Streams and pub/sub (`redis.*`).
    pub redis: RedisSettings,
    /// Where trained models live: a directory, or `s3://bucket/prefix`.
    pub model_store: String,
    /// S3-compatible endpoint for an `s3://` model store (e.g. a local server);
    /// path-style addressing is used with it. AWS's own endpoints when absent.
    pub model_store_endpoint: Option<String>,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub actors: ActorSettings,
    /// How events become features (`features.*`).
    #[serde(default)]
    pub features: FeatureSettings,
    pub inference: InferenceSettings,
    pub log: LogSettings,
    /// The live stream (`stream.*`; defaults in `StreamSettings::default`).
    #[serde(default)]
    pub stream: crate::serving::stream::StreamSettings,
    /// The admin console (`console.*`; defaults in `ConsoleSettings::default`).
    #[serde(default)]
    pub console: crate::serving::console::ConsoleSettings,
    /// Body limits and trusted proxies (`http.*`).
    #[serde(default)]
    pub http: crate::serving::web::client::HttpSettings,
    /// The graceful stop (`shutdown.*`).
    #[serde(default)]
    pub shutdown: ShutdownSettings,
    /// Distributed tracing over OTLP (`telemetry.*`; off by default).
    #[serde(default)]
    pub telemetry: crate::telemetry::traces::TracingSettings,
    /// The data lake `cartpulse archive` writes (`lake.*`; docs/data-lake.md).
    #[serde(default)]
    pub lake: LakeSettings,
    /// How long the database keeps the event log (`retention.*`;
    /// docs/data-lake.md, "Retention").
    #[serde(default)]
    pub retention: RetentionSettings,
}

/// How long the event log stays in the database (`retention.*`). Events
/// leave it only once archived to the lake and checkpointed, so without an
/// archive nothing is ever deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    /// Days an event stays in the database after it was received (default
    /// 30); 0 keeps every event. Must be the same on every processor: their
    /// group commit checks resends of events older than this against the
    /// retired ids.
    pub events_days: u32,
    /// Days the ids of deleted events are kept, so that a resend of one is
    /// still recognised as a duplicate (default 90, at least `events_days`).
    pub dedup_days: u32,
    /// Events deleted per transaction on SQLite (and from Postgres' default
    /// partition): each batch briefly holds SQLite's single writer.
    pub batch_rows: u64,
    /// Seconds between the runs of the Postgres partition maintenance (each
    /// process makes the coming days' partitions of `events`; default 600).
    #[serde(deserialize_with = "units::secs")]
    pub maintenance_every_s: std::time::Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            events_days: 30,
            dedup_days: 90,
            batch_rows: 500,
            maintenance_every_s: std::time::Duration::from_secs(600),
        }
    }
}

/// The data lake: the event log as Parquet (`lake.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LakeSettings {
    /// Where the lake is: a directory (default `./lake`, beside the default
    /// SQLite file) or `s3://bucket/prefix`.
    pub store: String,
    /// S3-compatible endpoint for an `s3://` lake (path-style addressing);
    /// AWS's own endpoints when absent.
    pub endpoint: Option<String>,
    /// Log positions per archived block. Fixed for the life of a lake (the
    /// archive refuses another size): blocks are what makes a re-run write
    /// the same files. A block is archived once complete, so at R events a
    /// day the lake trails the checkpoints by up to `block_events / R` days.
    pub block_events: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Seconds between the archive runs `serve` makes itself (in the process
    /// that holds partition 0, or owns every customer); 0 (default) leaves
    /// archiving to `cartpulse archive` on a schedule of its own.
    #[serde(deserialize_with = "units::secs")]
    pub archive_every_s: std::time::Duration,
}

impl Default for LakeSettings {
    fn default() -> Self {
        LakeSettings {
            store: "./lake".into(),
            endpoint: None,
            block_events: 1_000_000,
            row_group_rows: 131_072,
            archive_every_s: std::time::Duration::ZERO,
        }
    }
}

/// What happens between SIGTERM and the stop.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShutdownSettings {
    /// Seconds between the signal and closing anything: `/readyz` answers
    /// 503 at once and everything else keeps serving while the load balancer
    /// deregisters the replica. Then WebSocket clients get close code 1001
    /// and in-flight requests finish. 0 (default) closes at once; a second
    /// signal cuts the wait short; processors do not wait (no client is sent
    /// to them; they hand their partitions over at once). On ECS it matches
    /// the target group's deregistration delay (Terraform sets both from
    /// `drain_seconds`).
    #[serde(deserialize_with = "units::secs")]
    pub drain_s: std::time::Duration,
}

/// SQLite's `synchronous` pragma (`database.sqlite_synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// A commit survives power loss.
    Full,
    /// A commit survives a crash of the process only.
    Normal,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The parts one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// HTTP ingest, WebSockets, the session actors: everything.
    All,
    /// HTTP ingest into the Redis Streams and the WebSocket fan-out; no actors.
    Gateway,
    /// Consumes its partitions of the Redis Streams and runs the actors.
    Processor,
}

impl Role {
    /// True when this process accepts HTTP ingest and WebSocket clients.
    pub fn serves_clients(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    /// True when this process runs the session actors.
    pub fn runs_actors(self) -> bool {
        matches!(self, Role::All | Role::Processor)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Processor => "processor",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// Prefix of every key and channel, so that deployments (and tests) can
    /// share one Redis.
    pub prefix: String,
    /// Number of event stream partitions (partition = hash(customer_id) % P).
    /// Every replica of a deployment must agree on it.
    pub partitions: usize,
    /// Partitions this processor consumes, `a-b` inclusive (default: all).
    pub owns: Option<String>,
    /// Command connections pooled per process.
    pub pool_size: u32,
    /// Most entries read per partition in one XREADGROUP.
    pub read_count: usize,
    /// Pending entries idle this long are reclaimed (XAUTOCLAIM) from
    /// whichever consumer read them and did not acknowledge.
    #[serde(deserialize_with = "units::millis")]
    pub claim_idle_ms: std::time::Duration,
    /// An entry delivered this many times without being committed goes to
    /// the dead-letter stream.
    pub max_attempts: u64,
    /// Unprocessed events in the streams beyond which gateways answer 503.
    pub max_backlog: u64,
    /// Replicas that must hold a request's entries (Redis `WAIT`) before a
    /// gateway acknowledges it, so a failover cannot lose an acknowledged
    /// event. Unset: 1 when the primary has a replica, else 0.
    pub ack_replicas: Option<u32>,
    /// How long a gateway waits for those replicas; past it the request gets
    /// 503 with `Retry-After` (resending is safe: `event_id` de-duplicates).
    #[serde(deserialize_with = "units::millis")]
    pub ack_timeout_ms: std::time::Duration,
    /// Without `owns`: how long a processor's partition lease lasts without
    /// renewal, i.e. how soon a dead processor's partitions are taken over.
    #[serde(deserialize_with = "units::millis")]
    pub lease_ms: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InferenceSettings {
    /// Worker threads scoring batches; 0 = one per CPU.
    pub workers: usize,
    /// Most rows the pool puts in one batch.
    pub max_batch: usize,
    /// Rows queued beyond which score requests are refused (503).
    pub max_queued_rows: usize,
    /// An open session is rescored at most this often, in milliseconds.
    #[serde(deserialize_with = "units::millis")]
    pub score_debounce_ms: std::time::Duration,
    /// Sessions whose score reaches this are announced on the `scores` topic.
    pub alert_threshold: f64,
    /// Serve this model directory (as written by `cartpulse train`) instead of
    /// the registry's active versions; for development and checks.
    pub model_dir: Option<String>,
    /// How often the registry is polled for promotions made elsewhere, in seconds.
    #[serde(deserialize_with = "units::secs")]
    pub refresh_s: std::time::Duration,
    /// How often the served versions' live evaluation on `/metrics` is
    /// recomputed from the stored sessions, in seconds.
    #[serde(deserialize_with = "units::secs")]
    pub evaluate_every_s: std::time::Duration,
    /// The drift window: sessions closed this long ago or less are the live
    /// sample compared with each version's training rows, in seconds.
    #[serde(deserialize_with = "units::secs")]
    pub drift_window_s: std::time::Duration,
}

/// How events become features.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FeatureSettings {
    /// The shop's time zone (an IANA name such as `America/Los_Angeles`):
    /// Month, Weekend, and the hour and weekday of orders are read on its
    /// clock, live and in every job that reads what the service computed.
    #[serde(deserialize_with = "units::timezone")]
    pub timezone: chrono_tz::Tz,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings { timezone: chrono_tz::Tz::UTC }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// Connection pool size.
    pub max_connections: u32,
    /// SQLite `synchronous` pragma: `full` (default: a commit survives power
    /// loss) or `normal` (survives a process crash only).
    pub sqlite_synchronous: SqliteSync,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngestSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Most events the group committer puts in one transaction.
    pub commit_max_events: usize,
    /// How long the committer waits for more events before committing a
    /// non-full batch, in milliseconds (0 = commit as soon as the previous
    /// commit is done, which is what group commit needs under load).
    #[serde(deserialize_with = "units::millis")]
    pub commit_max_wait_ms: std::time::Duration,
    /// Events waiting for commit beyond which requests get 503.
    pub queue_max_events: usize,
    /// Events stamped further than this in the future are rejected.
    #[serde(deserialize_with = "units::secs")]
    pub max_future_skew_s: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActorSettings {
    /// Number of shards (each an actor on its own arbiter thread); 0 = one per CPU.
    pub shards: usize,
    /// A session closes when the customer is inactive this long (event time
    /// between two events, or wall time with no event at all).
    #[serde(deserialize_with = "units::secs")]
    pub session_gap_s: std::time::Duration,
    /// An actor with no message for this long flushes its state and stops.
    #[serde(deserialize_with = "units::secs")]
    pub passivate_after_s: std::time::Duration,
    /// Snapshot an actor's state after this many applied events …
    pub snapshot_every_events: u32,
    /// … or this many milliseconds after its first unsnapshotted change.
    #[serde(deserialize_with = "units::millis")]
    pub snapshot_max_delay_ms: std::time::Duration,
    /// Most live actors per shard; the least recently used beyond it are
    /// passivated early.
    pub max_active_per_shard: usize,
    /// Closed sessions an actor keeps in memory for reads.
    pub recent_sessions: usize,
    /// Persister: most rows written in one transaction.
    pub persist_max_batch: usize,
    /// How often every actor's state is made durable and the checkpoint
    /// moved; after a crash, the log since the checkpoint is replayed.
    #[serde(deserialize_with = "units::millis")]
    pub checkpoint_interval_ms: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `tracing` filter, e.g. `info` or `cartpulse=debug,info`; `CARTPULSE_LOG`
    /// also sets it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// When set, gateways also print the stream backlog every 10 s to stdout
    /// as a CloudWatch Embedded Metric Format line in this namespace (the
    /// ECS log driver turns it into a CloudWatch metric that processor
    /// autoscaling tracks), and every replica prints its service level
    /// objectives' good and valid counts every minute (the CloudWatch
    /// burn-rate alarms; `telemetry::slo`).
    pub cloudwatch_namespace: Option<String>,
}

/// Command-line overrides; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub model_store: Option<String>,
    pub role: Option<Role>,
    pub partitions: Option<usize>,
    pub owns: Option<String>,
}

impl Settings {
    /// Reads the layers. `file` is an explicit `--config`; when absent,
    /// `cartpulse.toml` in the working directory is used if it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Settings> {
        let mut b = config::Config::builder()
            .set_default("listen", "127.0.0.1:8080")?
            .set_default("database_url", "sqlite://cartpulse.db?mode=rwc")?
            .set_default("model_store", "./models")?
            .set_default("role", "all")?
            .set_default("redis.prefix", "cp")?
            .set_default("redis.partitions", 16)?
            .set_default("redis.pool_size", 16)?
            .set_default("redis.read_count", 2000)?
            .set_default("redis.claim_idle_ms", 30_000)?
            .set_default("redis.max_attempts", 5)?
            .set_default("redis.max_backlog", 1_000_000)?
            .set_default("redis.ack_timeout_ms", 500)?
            .set_default("redis.lease_ms", 5_000)?
            .set_default("database.max_connections", 8)?
            .set_default("database.sqlite_synchronous", "full")?
            .set_default("ingest.max_body_bytes", 16 * 1024 * 1024)?
            .set_default("ingest.max_events_per_request", 10_000)?
            .set_default("ingest.commit_max_events", 8_000)?
            .set_default("ingest.commit_max_wait_ms", 0)?
            .set_default("ingest.queue_max_events", 200_000)?
            .set_default("ingest.max_future_skew_s", 86_400)?
            .set_default("actors.shards", 0)?
            .set_default("actors.session_gap_s", 1800)?
            .set_default("actors.passivate_after_s", 300)?
            .set_default("actors.snapshot_every_events", 2000)?
            .set_default("actors.snapshot_max_delay_ms", 5000)?
            .set_default("actors.recent_sessions", 20)?
            .set_default("actors.max_active_per_shard", 100_000)?
            .set_default("actors.persist_max_batch", 2000)?
            .set_default("actors.checkpoint_interval_ms", 5000)?
            .set_default("inference.workers", 0)?
            .set_default("inference.max_batch", 256)?
            .set_default("inference.max_queued_rows", 100_000)?
            .set_default("inference.score_debounce_ms", 2000)?
            .set_default("inference.alert_threshold", 0.5)?
            .set_default("inference.refresh_s", 10)?
            .set_default("inference.evaluate_every_s", 60)?
            .set_default("inference.drift_window_s", 86_400)?
            .set_default("log.level", "info")?
            .set_default("log.format", "text")?;
        let default_file = PathBuf::from("cartpulse.toml");
        match file {
            Some(f) => {
                anyhow::ensure!(f.exists(), "config file {} does not exist", f.display());
                b = b.add_source(config::File::from(f));
            }
            None if default_file.exists() => {
                b = b.add_source(config::File::from(default_file));
            }
            None => {}
        }
        // CARTPULSE_LOG is the conventional shorthand for log.level; it must not
        // reach the env source, which would read it as the whole `log` table.
        let env: std::collections::HashMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("CARTPULSE_") && k != "CARTPULSE_LOG").collect();
        b = b.add_source(
            config::Environment::with_prefix("CARTPULSE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        if let Ok(level) = std::env::var("CARTPULSE_LOG") {
            b = b.set_override("log.level", level)?;
        }
        if let Some(v) = &overrides.listen {
            b = b.set_override("listen", v.as_str())?;
        }
        if let Some(v) = &overrides.database_url {
            b = b.set_override("database_url", v.as_str())?;
        }
        if let Some(v) = &overrides.redis_url {
            b = b.set_override("redis_url", v.as_str())?;
        }
        if let Some(v) = overrides.role {
            b = b.set_override("role", v.name())?;
        }
        if let Some(v) = overrides.partitions {
            b = b.set_override("redis.partitions", v as u64)?;
        }
        if let Some(v) = &overrides.owns {
            b = b.set_override("redis.owns", v.as_str())?;
        }
        if let Some(v) = &overrides.model_store {
            b = b.set_override("model_store", v.as_str())?;
        }
        let s: Settings =
            b.build().context("reading configuration")?.try_deserialize().context("invalid configuration")?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = self.database_url.expose_secret();
        anyhow::ensure!(
            url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "database_url must start with sqlite: or postgres:// (got a URL with scheme {:?})",
            url.split(':').next().unwrap_or("")
        );
        anyhow::ensure!(self.ingest.max_events_per_request > 0, "ingest.max_events_per_request must be > 0");
        anyhow::ensure!(self.ingest.commit_max_events > 0, "ingest.commit_max_events must be > 0");
        anyhow::ensure!(!self.actors.session_gap_s.is_zero(), "actors.session_gap_s must be > 0");
        anyhow::ensure!(self.actors.session_gap_s <= MAX_SPAN, "actors.session_gap_s must be at most 10 years");
        anyhow::ensure!(self.ingest.max_future_skew_s <= MAX_SPAN, "ingest.max_future_skew_s must be at most 10 years");
        let r = &self.retention;
        anyhow::ensure!(r.events_days <= 3_650, "retention.events_days must be at most 3650 (0 keeps every event)");
        anyhow::ensure!(
            r.events_days == 0 || r.dedup_days >= r.events_days,
            "retention.dedup_days ({}) must be at least retention.events_days ({}): a resend of a deleted event \
             is recognised only while its id is kept",
            r.dedup_days,
            r.events_days
        );
        anyhow::ensure!(r.dedup_days <= 3_650, "retention.dedup_days must be at most 3650");
        anyhow::ensure!(r.batch_rows > 0, "retention.batch_rows must be > 0");
        anyhow::ensure!(!r.maintenance_every_s.is_zero(), "retention.maintenance_every_s must be > 0");
        if let Some(url) = &self.redis_url {
            let url = url.expose_secret();
            anyhow::ensure!(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "redis_url must start with redis:// or rediss:// (got a URL with scheme {:?})",
                url.split(':').next().unwrap_or("")
            );
        }
        anyhow::ensure!(
            self.role == Role::All || self.redis_url.is_some(),
            "--role {} needs a Redis (--redis-url or CARTPULSE_REDIS_URL)",
            self.role.name()
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.redis.partitions),
            "redis.partitions must be in 1..=1024 (got {})",
            self.redis.partitions
        );
        self.owned_partitions()?;
        anyhow::ensure!(self.redis.max_attempts > 0, "redis.max_attempts must be > 0");
        anyhow::ensure!(
            (300..=600_000).contains(&self.redis.lease_ms.as_millis()),
            "redis.lease_ms must be from 300 to 600000 (ms); got {}",
            self.redis.lease_ms.as_millis()
        );
        anyhow::ensure!(self.redis.read_count > 0, "redis.read_count must be > 0");
        anyhow::ensure!(!self.redis.prefix.is_empty(), "redis.prefix must not be empty");
        // Keys carry hash tags (`{…}`) that must come from us, not the prefix.
        anyhow::ensure!(
            !self.redis.prefix.contains(['{', '}']),
            "redis.prefix must not contain '{{' or '}}' (they would change which Redis Cluster slot keys land in)"
        );
        anyhow::ensure!(self.inference.max_batch > 0, "inference.max_batch must be > 0");
        anyhow::ensure!(
            (1..=i64::MAX as u64 / 4).contains(&self.lake.block_events),
            "lake.block_events must be > 0 (got {})",
            self.lake.block_events
        );
        anyhow::ensure!(self.lake.row_group_rows > 0, "lake.row_group_rows must be > 0");
        self.telemetry.validate()?;
        self.validate_token_secret()?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.inference.alert_threshold),
            "inference.alert_threshold must be in [0, 1]"
        );
        Ok(())
    }

    /// Stream tokens are checked by whichever replica the client reaches, so
    /// with Redis every replica needs the same secret, and a short one can be
    /// guessed offline from a single token.
    fn validate_token_secret(&self) -> anyhow::Result<()> {
        const MIN: usize = crate::serving::stream::token::MIN_SECRET_BYTES;
        match &self.stream.token_secret {
            Some(s) if s.expose_secret().len() < MIN => anyhow::bail!(
                "stream.token_secret (CARTPULSE_STREAM__TOKEN_SECRET) is {} bytes; it must be at least {MIN} \
                 (e.g. `openssl rand -base64 48`)",
                s.expose_secret().len()
            ),
            None if self.redis_url.is_some() => anyhow::bail!(
                "stream.token_secret (CARTPULSE_STREAM__TOKEN_SECRET) must be set, to the same value of at least \
                 {MIN} bytes on every replica, when Redis is used (role {}); e.g. `openssl rand -base64 48`",
                self.role.name()
            ),
            _ => Ok(()),
        }
    }

    /// The partitions this process consumes as a processor: `redis.owns`
    /// (`a-b`, inclusive) or all of them.
    pub fn owned_partitions(&self) -> anyhow::Result<std::ops::RangeInclusive<usize>> {
        let p = self.redis.partitions;
        let Some(owns) = &self.redis.owns else { return Ok(0..=p.saturating_sub(1)) };
        let bad = || anyhow::anyhow!("--owns must be a-b with 0 <= a <= b < partitions ({p}); got {owns:?}");
        let (a, b) = owns.split_once('-').unwrap_or((owns, owns));
        let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        anyhow::ensure!(a <= b && b < p, bad());
        Ok(a..=b)
    }

    /// The fixed range of partitions this process consumes (`redis.owns`),
    /// or `None` when it claims them by lease.
    pub fn fixed_partitions(&self) -> anyhow::Result<Option<std::ops::RangeInclusive<usize>>> {
        Ok(match self.redis.owns {
            Some(_) => Some(self.owned_partitions()?),
            None => None,
        })
    }

    /// True when the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose_secret().starts_with("sqlite:")
    }

    /// The inference pool's settings.
    pub fn pool_settings(&self) -> crate::serving::inference::PoolSettings {
        let i = &self.inference;
        crate::serving::inference::PoolSettings {
            workers: if i.workers > 0 { i.workers } else { self.shard_count() },
            max_batch: i.max_batch,
            max_queued_rows: i.max_queued_rows.max(i.max_batch),
        }
    }

    /// How a customer's state applies events (the session actors, and the
    /// jobs that rebuild states from the data lake).
    pub fn state_rules(&self) -> actors::data::state::StateRules {
        actors::data::state::StateRules {
            session_gap: chrono_span(self.actors.session_gap_s),
            recent_cap: self.actors.recent_sessions,
            timezone: self.features.timezone,
        }
    }

    /// Number of shards to run.
    pub fn shard_count(&self) -> usize {
        if self.actors.shards > 0 {
            self.actors.shards
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        }
    }
}

/// The longest span a setting compared with event times may have.
const MAX_SPAN: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

/// A validated setting as a span of event time (settings are at most
/// [`MAX_SPAN`], so the conversion cannot fail for them).
pub fn chrono_span(d: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d.min(MAX_SPAN)).unwrap_or(chrono::TimeDelta::MAX)
}

/// Durations in the configuration: keys keep their unit in the name
/// (`drain_s`, `lease_ms`) and are read as whole numbers into
/// [`std::time::Duration`], so code never converts units by hand.
pub mod units {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// A key in whole seconds.
    pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    /// A key in whole milliseconds.
    pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// An IANA time zone name.
    pub fn timezone<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{name:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/Los_Angeles)"
            ))
        })
    }
}
