//! Wiring: `Application::build` connects and migrates the database, starts
//! the runtime core, the group committer and the HTTP server (binding port 0
//! in tests), and `run_until_stopped` serves until a signal or `stop`, then
//! drains: in-flight requests finish, the committer empties, every actor
//! snapshots and the persister writes it all.

use crate::config::Settings;
use crate::keys::KeyVerifier;
use crate::redis_link::RedisLink;
use crate::serving::http::{self, AppState};
use crate::serving::inference::telemetry::InferenceMetrics;
use crate::serving::inference::{InferenceHandle, ServingSet};
use crate::serving::ingest::committer::{Committer, CommitterSettings};
use crate::serving::ingest::consumer::{Consumer, ConsumerSettings};
use crate::serving::ingest::queue::EventQueue;
use crate::serving::ingest::Ingest;
use crate::telemetry::Metrics;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, HttpServer};
use actors::hooks::ScoringRules;
use actors::runtime::{Ownership, PartitionSet, Runtime, RuntimeSettings};
use actors::telemetry::ActorMetrics;
use actors::WriteGate;
use anyhow::Context;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QuerySelect};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    inference: InferenceHandle,
    model_follower: Option<tokio::task::JoinHandle<()>>,
    /// Keeps the served versions' live evaluation on `/metrics` (replicas
    /// that serve clients: that is where `/metrics` is scraped).
    evaluator: Option<tokio::task::JoinHandle<()>>,
    /// What only a process running the actors has.
    core: Option<Core>,
    /// With Redis: this replica's record in the replica list.
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// `shutdown.drain_s`: not ready but serving, between the stop signal
    /// and closing.
    drain_time: Duration,
    stopper: Stopper,
}

/// Asks a running [`Application`] to stop as SIGTERM does: not ready at
/// once, closing after `shutdown.drain_s`.
#[derive(Clone)]
pub struct Stopper(Arc<Notify>);

impl Stopper {
    pub fn stop(&self) {
        // A stored permit: a stop asked before the server runs still counts.
        self.0.notify_one();
    }
}

/// The session actors and what feeds and persists them.
struct Core {
    runtime: Runtime,
    committer_task: tokio::task::JoinHandle<()>,
    checkpoints: actix_web::rt::task::JoinHandle<()>,
    segment_watcher: tokio::task::JoinHandle<()>,
    /// The scheduled archive to the data lake (`lake.archive_every_s`).
    archiver: Option<tokio::task::JoinHandle<()>>,
    /// Postgres: the event log's day partitions made ahead.
    partitions: Option<tokio::task::JoinHandle<()>>,
    /// With Redis: the partitions' consumer.
    consumer: Option<Consumer>,
    /// With Redis and no `redis.owns`: the partitions' leases.
    leases: Option<Leasing>,
}

/// A processor claiming its partitions by lease.
struct Leasing {
    manager: crate::serving::ingest::leases::LeaseManager,
    link: RedisLink,
    db: DatabaseConnection,
    gate: WriteGate,
    instance: String,
    partitions: usize,
}

/// How this process's actors own customers, decided once from the settings.
struct Plan {
    /// `redis.owns`, if set.
    fixed: Option<std::ops::RangeInclusive<usize>>,
    /// With leases: the partitions held now, and this process's name.
    leased: Option<(PartitionSet, String)>,
}

impl Plan {
    fn new(settings: &Settings, redis: bool, runs_actors: bool) -> anyhow::Result<Plan> {
        let fixed = settings.fixed_partitions()?;
        let leased = (redis && runs_actors && fixed.is_none()).then(|| {
            let instance = format!("processor-{}", crate::replicas::process_name());
            (PartitionSet::new(settings.redis.partitions), instance)
        });
        Ok(Plan { fixed, leased })
    }
}

impl Application {
    /// Builds everything this process's role needs; must be called inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let role = settings.role;
        let db = crate::db::connect(&settings).await?;
        crate::db::migrate(&db).await?;
        let redis = match &settings.redis_url {
            Some(url) => Some(RedisLink::connect(url, &settings.redis).await?),
            None => None,
        };
        let metrics = Metrics::new()
            .context("creating metrics")?
            .with_cloudwatch(settings.log.cloudwatch_namespace.as_deref(), &settings.redis.prefix);
        let actor_metrics = ActorMetrics::register(&metrics.registry).context("registering runtime metrics")?;
        if let Some(namespace) = &settings.log.cloudwatch_namespace {
            crate::telemetry::slo::spawn(metrics.registry.clone(), namespace, &settings.redis.prefix);
        }
        let gate = if settings.is_sqlite() { WriteGate::serial() } else { WriteGate::open() };
        let models = crate::models::ModelRegistry::from_settings(db.clone(), &settings)
            .await
            .context("opening the model store")?;
        // The pool serves a model directory named in the settings, else the
        // registry's active versions; loaded before recovery so that the
        // sessions recovery closes are scored too.
        let inference = InferenceHandle::start(
            settings.pool_settings(),
            InferenceMetrics::register(&metrics.registry).context("registering inference metrics")?,
        );
        let model_follower = match &settings.inference.model_dir {
            Some(dir) => {
                inference
                    .set_models(ServingSet::single(crate::serving::inference::source::load_dir(dir.into()).await?));
                None
            }
            None => Some(
                crate::serving::inference::source::follow_registry(
                    models.clone(),
                    inference.clone(),
                    settings.inference.refresh_s.max(Duration::from_secs(1)),
                )
                .await,
            ),
        };
        let evaluator = role.serves_clients().then(|| {
            crate::serving::inference::evaluator::spawn(
                db.clone(),
                inference.clone(),
                settings.inference.evaluate_every_s,
                settings.inference.drift_window_s,
            )
        });
        // What the actors call out to: scorer, active segmentation, update bus.
        let hooks = actors::hooks::Hooks {
            scorer: Some(Arc::new(inference.clone())),
            scoring: ScoringRules {
                debounce: settings.inference.score_debounce_ms,
                alert_threshold: settings.inference.alert_threshold,
            },
            spans: crate::telemetry::traces::recorder(),
            ..Default::default()
        };
        // The live stream's aggregator subscribes to the update bus before
        // the actors start (and replay the log), so it misses nothing.
        let plan = Plan::new(&settings, redis.is_some(), role.runs_actors())?;
        let fanout = match &redis {
            Some(link) => {
                let kpis = match (&plan.fixed, &plan.leased) {
                    (_, Some((set, instance))) => crate::serving::stream::KpiShare::Part {
                        owner: instance.clone(),
                        leader: crate::serving::stream::Leader::WhileHolding(set.clone()),
                    },
                    (Some(owned), None) if owned.clone().count() != settings.redis.partitions => {
                        crate::serving::stream::KpiShare::Part {
                            owner: format!("{}-{}", owned.start(), owned.end()),
                            leader: crate::serving::stream::Leader::Fixed(*owned.start() == 0),
                        }
                    }
                    _ => crate::serving::stream::KpiShare::Whole,
                };
                crate::serving::stream::Fanout::Redis { link: link.clone(), role, kpis }
            }
            None => crate::serving::stream::Fanout::Local,
        };
        let stream = crate::serving::stream::Stream::start(
            &settings.stream,
            &hooks,
            &metrics.registry,
            settings.actors.session_gap_s.max(Duration::from_secs(1)),
            fanout,
        )
        .context("starting the live stream")?;
        let core = if role.runs_actors() {
            Some(start_core(&settings, &plan, &db, &redis, gate, &hooks, &metrics, actor_metrics).await?)
        } else {
            None
        };
        let pipeline = match (&redis, &core) {
            (Some(link), _) => Ingest::Queued(
                EventQueue::start(
                    link.clone(),
                    settings.redis.partitions,
                    settings.redis.max_backlog,
                    crate::serving::ingest::queue::AckPolicy {
                        replicas: settings.redis.ack_replicas,
                        timeout: settings.redis.ack_timeout_ms,
                    },
                    metrics.clone(),
                )
                .await,
            ),
            (None, Some(core)) => Ingest::Direct(core.consumer_committer.clone()),
            (None, None) => anyhow::bail!("a {} needs Redis", role.name()),
        };
        let core = core.map(|c| c.core);
        let listener = TcpListener::bind(&settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let replicas = {
            let host = settings.listen.rsplit_once(':').map(|(h, _)| h).unwrap_or("0.0.0.0");
            let partitions = (role.runs_actors() && redis.is_some()).then(|| match &plan.fixed {
                Some(owned) => format!("{}-{} of {}", owned.start(), owned.end(), settings.redis.partitions),
                None => format!("by lease, of {}", settings.redis.partitions),
            });
            let s = stream.clone();
            crate::replicas::Replicas::new(
                redis.clone(),
                role.name(),
                format!("{host}:{port}"),
                partitions,
                Arc::new(move || s.clients()),
            )
        };
        let heartbeat = replicas.spawn_heartbeat();
        let console = crate::serving::console::Console::new(
            &settings.console,
            redis.clone(),
            &settings.listen,
            stream.tokens.derive_key("console device cookie"),
            &metrics.registry,
        )
        .context("starting the console")?;
        let keys = Arc::new(KeyVerifier::new(db.clone()));
        let credentials = Arc::new(crate::serving::stream::credentials::Credentials::new(
            db.clone(),
            keys.clone(),
            stream.tokens.clone(),
        ));
        let state = web::Data::new(AppState {
            keys,
            credentials,
            http: settings.http.clone(),
            db,
            pipeline,
            runtime: core.as_ref().map(|c| c.runtime.clone()),
            role,
            redis,
            replicas,
            metrics,
            ingest: settings.ingest.clone(),
            stream,
            models,
            inference: inference.clone(),
            drift_window: settings.inference.drift_window_s,
            segments: hooks.segments.clone(),
            console,
            draining: Arc::new(AtomicBool::new(false)),
        });
        let app_state = state.clone();
        let server = HttpServer::new(move || http::app(app_state.clone()))
            .listen(listener)?
            .shutdown_timeout(30)
            // Signals are ours: the drain below must run before the system stops.
            .disable_signals()
            .run();
        tracing::info!(port, role = role.name(), "cartpulse listening");
        // Only what a load balancer sends clients to needs time to be taken
        // out; a processor hands its partitions over at once.
        let drain_time = if role.serves_clients() { settings.shutdown.drain_s } else { Duration::ZERO };
        Ok(Application {
            port,
            server,
            state,
            inference,
            model_follower,
            evaluator,
            core,
            heartbeat,
            drain_time,
            stopper: Stopper(Arc::new(Notify::new())),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The inference pool (tests drive its fault drill and model swaps).
    pub fn inference(&self) -> InferenceHandle {
        self.inference.clone()
    }

    /// A handle to stop the server (graceful with `stop(true)`).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Starts the graceful stop without a signal (tests, embedding).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves until stopped, then drains and flushes everything.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            server,
            state,
            inference,
            model_follower,
            evaluator,
            core,
            heartbeat,
            drain_time,
            stopper,
            ..
        } = self;
        let handle = server.handle();
        let stream = state.stream.clone();
        let draining = state.draining.clone();
        let signals = actix_web::rt::spawn(async move {
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = stopper.0.notified() => {}
            }
            // Not ready from now on, so the load balancer stops sending new
            // requests and connections while the ones it sent still get served.
            draining.store(true, Ordering::Release);
            if !drain_time.is_zero() {
                tracing::info!(
                    drain_s = drain_time.as_secs(),
                    "stop asked; not ready, serving while the replica deregisters"
                );
                tokio::select! {
                    _ = tokio::time::sleep(drain_time) => {}
                    _ = wait_for_signal() => tracing::info!("second signal; closing now"),
                }
            }
            tracing::info!("stopping gracefully");
            // WebSocket clients get 1001 first, or the graceful stop would wait on them.
            stream.shutdown().await;
            handle.stop(true).await;
        });
        server.await.context("HTTP server failed")?;
        signals.abort();
        tracing::info!("HTTP stopped; draining");
        if let Some(h) = heartbeat {
            h.abort();
        }
        state.replicas.leave().await;
        // The server and its workers are gone; dropping the last handle to the
        // committer ends its loop once the queue is empty.
        drop(state);
        if let Some(core) = core {
            // No partition is taken or given up from here on.
            let leases = match core.leases {
                Some(l) => Some((l.manager.stop().await, l.link, l.db, l.gate, l.instance, l.partitions)),
                None => None,
            };
            // The consumer commits and acknowledges the batch in hand, then stops.
            if let Some(consumer) = core.consumer {
                consumer.stop().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), core.committer_task).await;
            core.checkpoints.abort();
            drain(&core.runtime).await.context("flushing actor state")?;
            if let Some((held, link, db, gate, instance, partitions)) = leases {
                // Everything is in snapshots: checkpoint the partitions, then
                // free them so the other processors take them at once.
                let fences = held.fences();
                let upto = core.runtime.checkpoint().await.context("the final checkpoint")?;
                held.write_checkpoints(&db, &gate, &fences, upto)
                    .await
                    .context("writing the partitions' checkpoints")?;
                crate::serving::ingest::leases::release_all(&link, &held, &instance, partitions).await;
                tracing::info!(partitions = fences.len(), "partitions handed over");
            }
            core.runtime.stop();
            core.segment_watcher.abort();
            for task in [core.archiver, core.partitions].into_iter().flatten() {
                task.abort();
            }
        }
        for task in [model_follower, evaluator].into_iter().flatten() {
            task.abort();
        }
        inference.stop();
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// The core plus the committer handle the HTTP ingest uses without Redis.
struct StartedCore {
    core: Core,
    consumer_committer: Committer,
}

/// Starts the actors: recovery of the log after the checkpoint, the
/// checkpoint timer, the group committer and, with Redis, the consumer of
/// the owned partitions.
#[allow(clippy::too_many_arguments)]
async fn start_core(
    settings: &Settings,
    plan: &Plan,
    db: &DatabaseConnection,
    redis: &Option<RedisLink>,
    gate: WriteGate,
    hooks: &actors::hooks::Hooks,
    metrics: &Metrics,
    actor_metrics: ActorMetrics,
) -> anyhow::Result<StartedCore> {
    let owns = match (&plan.fixed, &plan.leased) {
        _ if redis.is_none() => Ownership::All,
        (_, Some((set, _))) => Ownership::Leased(set.clone()),
        (Some(owned), None) if owned.clone().count() != settings.redis.partitions => {
            Ownership::Partitions { of: settings.redis.partitions, range: owned.clone() }
        }
        _ => Ownership::All,
    };
    let runtime = Runtime::start(
        db.clone(),
        RuntimeSettings {
            shards: settings.shard_count(),
            rules: settings.state_rules(),
            passivate_after: settings.actors.passivate_after_s,
            snapshot_every_events: settings.actors.snapshot_every_events,
            snapshot_max_delay: settings.actors.snapshot_max_delay_ms,
            persist_max_batch: settings.actors.persist_max_batch,
            write_gate: gate.clone(),
            max_active_per_shard: settings.actors.max_active_per_shard,
            hooks: hooks.clone(),
            owns,
        },
        actor_metrics,
    );
    if let Some(t) = latest_event_time(db).await? {
        runtime.raise_watermark(t);
    }
    // Segments: the active version before any actor starts, then follow activations made anywhere.
    crate::segments::assign::install_active(db, &hooks.segments).await;
    let segment_watcher = crate::segments::assign::spawn_watcher(
        db.clone(),
        hooks.segments.clone(),
        crate::segments::assign::WATCH_EVERY,
    );
    // The log after the last checkpoint goes to the actors before any new
    // event can, so every customer sees its events in log order.
    let replayed = runtime.recover().await.context("replaying the event log after the checkpoint")?;
    if replayed > 0 {
        tracing::info!(events = replayed, "recovered events after the last checkpoint");
    }
    let held = crate::serving::ingest::leases::Held::default();
    let checkpoints = {
        let runtime = runtime.clone();
        let every = settings.actors.checkpoint_interval_ms.max(Duration::from_millis(100));
        let (db, leased, held, gate) = (db.clone(), plan.leased.is_some(), held.clone(), gate.clone());
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                // With leases: for the partitions held before the checkpoint
                // began (one taken meanwhile may not be flushed yet).
                let fences = held.fences();
                match runtime.checkpoint().await {
                    Ok(seq) if leased => match held.write_checkpoints(&db, &gate, &fences, seq).await {
                        Ok(n) => tracing::debug!(seq, partitions = n, "checkpoint"),
                        Err(e) => tracing::warn!(error = %e, "checkpoint failed; retrying at the next interval"),
                    },
                    Ok(seq) => tracing::debug!(seq, "checkpoint"),
                    Err(e) => tracing::warn!(error = %e, "checkpoint failed; retrying at the next interval"),
                }
            }
        })
    };
    // The day partitions exist before the first commit whenever the locks
    // allow; a day without one still takes events (its default partition).
    let partitions = match settings.is_sqlite() {
        true => None,
        false => Some(
            crate::retention::partitions::start_maintenance(db.clone(), settings.retention.maintenance_every_s).await,
        ),
    };
    let (committer, committer_task) = Committer::start(
        db.clone(),
        gate.clone(),
        runtime.clone(),
        metrics.clone(),
        CommitterSettings {
            max_events: settings.ingest.commit_max_events,
            max_wait: settings.ingest.commit_max_wait_ms,
            queue_max_events: settings.ingest.queue_max_events,
            retired_check: crate::retention::retired_check_span(settings),
        },
    );
    let (lost_tx, lost_rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = redis.as_ref().map(|link| {
        let owns = match &plan.leased {
            Some(_) => None,
            None => Some(plan.fixed.clone().unwrap_or(0..=settings.redis.partitions.saturating_sub(1))),
        };
        let name = match (&owns, &plan.leased) {
            (_, Some((_, instance))) => instance.clone(),
            (Some(range), None) => ConsumerSettings::range_name(range),
            (None, None) => ConsumerSettings::range_name(&(0..=settings.redis.partitions.saturating_sub(1))),
        };
        Consumer::start(
            link.clone(),
            committer.clone(),
            db.clone(),
            metrics.clone(),
            ConsumerSettings {
                partitions: settings.redis.partitions,
                owns,
                name,
                read_count: settings.redis.read_count,
                claim_idle: settings.redis.claim_idle_ms.max(Duration::from_millis(100)),
                max_attempts: settings.redis.max_attempts,
                max_future_skew: settings.ingest.max_future_skew_s,
            },
            plan.leased.is_some().then_some(lost_tx),
        )
    });
    let leases = match (redis, &consumer, &plan.leased) {
        (Some(link), Some(consumer), Some((set, instance))) => Some(Leasing {
            manager: crate::serving::ingest::leases::LeaseManager::start(
                link.clone(),
                db.clone(),
                gate.clone(),
                runtime.clone(),
                set.clone(),
                consumer.control(),
                lost_rx,
                metrics.clone(),
                crate::serving::ingest::leases::LeaseSettings {
                    partitions: settings.redis.partitions,
                    lease: settings.redis.lease_ms,
                    instance: instance.clone(),
                },
                held,
            ),
            link: link.clone(),
            db: db.clone(),
            gate: gate.clone(),
            instance: instance.clone(),
            partitions: settings.redis.partitions,
        }),
        _ => None,
    };
    // The scheduled archive runs in one process: the one holding partition 0
    // (or owning every customer).
    let archiver = (!settings.lake.archive_every_s.is_zero()).then(|| {
        use crate::serving::stream::Leader;
        let leader = match (&plan.fixed, &plan.leased) {
            _ if redis.is_none() => Leader::Fixed(true),
            (_, Some((set, _))) => Leader::WhileHolding(set.clone()),
            (Some(owned), None) => Leader::Fixed(*owned.start() == 0),
            (None, None) => Leader::Fixed(true),
        };
        crate::lake::archive::spawn_scheduled(
            settings.clone(),
            settings.lake.archive_every_s,
            metrics.clone(),
            (db.clone(), gate.clone()),
            move || leader.now(),
        )
    });
    Ok(StartedCore {
        core: Core { runtime, committer_task, checkpoints, segment_watcher, archiver, partitions, consumer, leases },
        consumer_committer: committer,
    })
}

/// Flushes every actor's state; retried a few times, because a pooled
/// database connection opened on an HTTP worker thread dies with that
/// worker's runtime when the server stops, and the first write that picks it
/// fails (the pool then drops it; the persister keeps the rows to write).
async fn drain(runtime: &Runtime) -> Result<(), actors::RuntimeError> {
    let mut attempt = 1;
    loop {
        match runtime.drain().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 4 => {
                tracing::warn!(error = %e, attempt, "flushing actor state failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn latest_event_time(db: &DatabaseConnection) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    use entities::event;
    let t: Option<Option<chrono::DateTime<chrono::Utc>>> = event::Entity::find()
        .select_only()
        .column_as(event::Column::EventTime.max(), "t")
        .into_tuple()
        .one(db)
        .await
        .context("reading the event log")?;
    Ok(t.flatten())
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
