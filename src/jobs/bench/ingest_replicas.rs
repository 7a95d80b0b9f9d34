//! `cartpulse bench ingest --gateways N --redis-url URL [--processors M]`:
//! the scale-out ingest path end to end: producers → N gateways (parse,
//! XADD to the partitioned streams, acknowledge) → Redis → M processors
//! (XREADGROUP, group commit to Postgres, actors, XACK).
//!
//! It starts the replicas with [`super::servers::Replicas`] (this same
//! executable; a fresh Postgres database created on `--pg-admin-url` and
//! dropped at the end; a fresh Redis key prefix deleted at the end) and
//! drives them with P producers ("lanes"), each with its own customers and
//! one request in flight, so every customer's events arrive in order. A lane
//! sends its batches to the gateways in turn (batch i of lane l goes to
//! gateway (l + i) mod N). A 503 (over capacity) or a connection error is
//! retried after 50 ms, counted, and the batch is timed from its first try.
//!
//! Two modes:
//! - closed loop (default): `--events` events, each lane sending its next
//!   batch as soon as the previous one is acknowledged; the run ends when the
//!   processors have committed and applied every acknowledged event;
//! - sustained (`--duration 60s --rate R`): open loop. Lane l's batches are
//!   due at a fixed schedule carrying R/P events per second (lanes offset
//!   from each other); a batch goes at its due time or, when its lane is
//!   still waiting for the previous one, as soon as that is acknowledged, and
//!   its acknowledgement latency counts from its due time (no coordinated
//!   omission). Production stops after the duration; the processors then
//!   drain what is left.
//!
//! The events are synthetic (the same generator as `bench ingest`, unique ids
//! per run) and generated and encoded before the clock starts.
//!
//! Figures:
//! - acknowledged/s: events the gateways acknowledged (HTTP 200) per second;
//! - committed/s and applied/s: the processors' `cartpulse_events_ingested_total`
//!   (events newly written to the log by a group commit) and
//!   `cartpulse_events_applied_total` (applied by the session actors);
//! - backlog: sampled every second from Redis, the sum over partitions of
//!   the group's `lag + pending` (`XINFO GROUPS`: entries not yet delivered
//!   to a processor plus delivered and not yet acknowledged after their
//!   commit) — the same figure the gateways export as `cartpulse_stream_lag_events`;
//! - ack → commit: for every acknowledged event, `events.received_at` (the
//!   processor's clock when its group commit inserted the event; the commit
//!   is durable at most one commit duration later, reported alongside as
//!   the processors' `cartpulse_commit_duration_seconds` p99 bucket) minus
//!   the time the producer received its batch's acknowledgement. Both clocks
//!   are this machine's. An event can be committed before its producer has
//!   read the HTTP response; those count as 0;
//! - bounded (sustained mode): the backlog at the end of production is below
//!   one second of the target rate, and its least-squares slope over the
//!   last 20 s of production would take more than 80 s to add one second of
//!   traffic (slope < rate / 80 per second); `sustained` also needs the
//!   acknowledged and committed rates within 2 % of the target.

use super::cpu::{pids_named, CpuMeter, CpuUse, Groups};
use super::ingest::{prepare, IngestBenchOptions, APPLIED_METRIC};
use super::servers::{round, ReplicaOptions, Replicas};
use crate::jobs::replay::sender::Batch;
use crate::telemetry::scrape::{histogram_quantile, sum as metric_sum};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// The metric of events committed to the log.
pub const COMMITTED_METRIC: &str = "cartpulse_events_ingested_total";

/// Flags of the scale-out mode of `bench ingest`.
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// Gateways (`serve --role gateway`) to start and spread the batches over;
    /// needs `--redis-url`. 0: one `serve` does everything (the classic bench).
    #[arg(long, default_value_t = 0)]
    pub gateways: usize,
    /// Processors (`serve --role processor`), each owning a disjoint range of the partitions.
    #[arg(long, default_value_t = 1)]
    pub processors: usize,
    /// Event stream partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: usize,
    /// Postgres server of the replicas: a fresh database is created through
    /// this URL and dropped at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_admin_url: String,
    /// Sustained mode: produce for this long (`60s`, `2m`, `500ms`), open loop at `--rate`.
    #[arg(long, value_parser = parse_duration, requires = "rate")]
    pub duration: Option<Duration>,
    /// Sustained mode: target events per second over all producers.
    #[arg(long, requires = "duration")]
    pub rate: Option<u64>,
}

impl Default for ScaleArgs {
    fn default() -> Self {
        ScaleArgs {
            gateways: 0,
            processors: 1,
            partitions: 8,
            pg_admin_url: "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            duration: None,
            rate: None,
        }
    }
}

/// `60`, `60s`, `2m`, `1500ms`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("not a duration: {s:?} (try 60s)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" | "min" => n * 60.0,
        _ => anyhow::bail!("unknown unit in {s:?} (ms, s or m)"),
    };
    anyhow::ensure!(secs > 0.0 && secs.is_finite(), "the duration must be positive: {s:?}");
    Ok(Duration::from_secs_f64(secs))
}

/// One sample of the run, taken every second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the first send.
    pub t: f64,
    pub acked: u64,
    pub committed: u64,
    pub applied: u64,
    /// Redis: lag + pending of the group over every partition.
    pub backlog: u64,
}

/// The result, printed as the last stdout line in this shape.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScaleReport {
    pub bench: &'static str,
    /// `closed` or `sustained`.
    pub mode: &'static str,
    pub database: &'static str,
    pub gateways: usize,
    pub processors: usize,
    pub partitions: usize,
    pub producers: usize,
    pub batch_size: usize,
    pub rate_target: Option<u64>,
    pub duration_s: Option<f64>,
    pub events: u64,
    pub acked: u64,
    /// Requests answered 503 or failed to connect, then retried.
    pub retries: u64,
    /// From the first send until the processors had committed and applied everything.
    pub elapsed_s: f64,
    /// Closed: acknowledged events / time of the last acknowledgement.
    /// Sustained: acknowledged within the duration / duration.
    pub acked_per_s: f64,
    /// Closed: events / time until all were committed. Sustained: committed
    /// during the duration (sampled) / sampled span.
    pub committed_per_s: f64,
    pub applied_per_s: f64,
    /// Closed: from the batch's send; sustained: from its due time.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    /// Events whose commit time was found in the log (should equal `acked`).
    pub ack_to_commit_events: u64,
    pub ack_to_commit_p50_ms: f64,
    pub ack_to_commit_p99_ms: f64,
    pub ack_to_commit_max_ms: f64,
    /// The processors' group-commit duration p99 (bucket bound): how much
    /// later than `received_at` a commit can have been durable.
    pub commit_duration_p99_ms: Option<f64>,
    pub backlog_max: u64,
    /// Sustained: at the end of production; closed: at the last ack.
    pub backlog_at_end: u64,
    /// Sustained: least-squares slope of the backlog over the last 20 s of production.
    pub backlog_slope_per_s: Option<f64>,
    pub backlog_bounded: Option<bool>,
    /// Sustained: bounded and both rates within 2 % of the target.
    pub sustained: Option<bool>,
    /// From the end of production until the processors had committed everything.
    pub drain_s: f64,
    /// Cores used by each part (sustained: during production; closed: until
    /// everything was applied). `postgres` counts every Postgres process
    /// of the machine, `redis` the server when it is local.
    pub cpu: Option<CpuUse>,
    pub samples: Vec<Sample>,
}

/// Runs the scale-out bench; prints the table (stderr) and returns the report.
pub async fn run(opts: &IngestBenchOptions, redis_url: &str) -> anyhow::Result<ScaleReport> {
    let scale = &opts.scale;
    if scale.processors == 0 {
        bail!("--processors must be at least 1");
    }
    if scale.processors > scale.partitions {
        bail!("--processors {} needs at least as many --partitions", scale.processors);
    }
    if opts.target.is_some() {
        bail!("--gateways starts its own replicas; it does not take --target");
    }
    let sustained = match (scale.duration, scale.rate) {
        (Some(d), Some(r)) if r > 0 => Some((d, r)),
        (Some(_), Some(_)) => bail!("--rate must be at least 1"),
        _ => None,
    };
    let events = match sustained {
        Some((d, r)) => (d.as_secs_f64() * r as f64).ceil() as u64,
        None => opts.events,
    };
    eprintln!("generating {events} events for {} producers…", opts.producers);
    let work = prepare(&IngestBenchOptions { events, ..opts.clone() }).await?;
    eprintln!(
        "starting {} processor(s) and {} gateway(s) over {} partitions (fresh Postgres database, fresh Redis prefix)…",
        scale.processors, scale.gateways, scale.partitions
    );
    let replicas = Replicas::start(&ReplicaOptions {
        bench: "ingest",
        gateways: scale.gateways,
        processors: scale.processors,
        partitions: scale.partitions,
        redis_url: redis_url.to_owned(),
        pg_admin_url: scale.pg_admin_url.clone(),
        leased: false,
        env: Vec::new(),
    })
    .await?;
    let result = tokio::select! {
        r = measure(opts, &replicas, redis_url, work, events, sustained) => r,
        Ok(()) = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    eprintln!("stopping the replicas, dropping the database and the Redis keys…");
    replicas.stop().await;
    let report = result?;
    print_table(&report);
    Ok(report)
}

/// What every lane shares.
struct Shared {
    client: reqwest::Client,
    urls: Vec<String>,
    key: SecretString,
    acked: AtomicU64,
    retries: AtomicU64,
}

/// What one lane measured: per batch (lane, index), its acknowledgement
/// time (µs since the epoch) and latency (µs).
struct LaneResult {
    lane: usize,
    acks: Vec<(i64, u64)>,
    accepted: u64,
}

async fn measure(
    opts: &IngestBenchOptions,
    replicas: &Replicas,
    redis_url: &str,
    work: Vec<Vec<Batch>>,
    events: u64,
    sustained: Option<(Duration, u64)>,
) -> anyhow::Result<ScaleReport> {
    let scale = &opts.scale;
    let shared = Arc::new(Shared {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(opts.producers.max(8))
            .build()?,
        urls: replicas.gateway_bases().iter().map(|b| format!("{b}/v1/events")).collect(),
        key: replicas.key().clone(),
        acked: AtomicU64::new(0),
        retries: AtomicU64::new(0),
    });
    let processors: Vec<&super::servers::Server> = replicas.processors.iter().collect();
    let counters = Counters { processors: &processors };
    let (committed0, applied0) = counters.read().await?;
    let mut rconn = super::servers::redis_conn(redis_url).await.context("connecting to Redis")?;
    let partition_keys: Vec<String> = (0..scale.partitions)
        .map(|p| {
            format!(
                "{}:events:{{{}}}",
                replicas.prefix,
                crate::serving::ingest::streams::partition_tag(p, scale.partitions)
            )
        })
        .collect();

    // CPU accounting per part.
    let mut groups = Groups::default();
    groups.add("gateways", replicas.gateways.iter().map(|g| g.pid()));
    groups.add("processors", replicas.processors.iter().map(|p| p.pid()));
    groups.add("bench", [std::process::id()]);
    groups.add("postgres", pids_named("postgres"));
    if let Some(pid) = redis_pid(&mut rconn).await {
        groups.add("redis", [pid]);
    }

    // Lanes.
    let lanes = work.len();
    let meter = CpuMeter::start(groups);
    let started = Instant::now();
    let mut tasks: JoinSet<anyhow::Result<LaneResult>> = JoinSet::new();
    let mut ids: Vec<Vec<Vec<actors::event::EventId>>> = Vec::with_capacity(lanes);
    for (lane, batches) in work.into_iter().enumerate() {
        ids.push(batches.iter().map(|b| b.event_ids.clone()).collect());
        let bodies: Vec<(bytes::Bytes, usize)> = batches.into_iter().map(|b| (b.body.clone(), b.len())).collect();
        let schedule = sustained.map(|(_, rate)| {
            // Each lane carries rate / lanes; lanes start offset by a share of one batch period.
            let per_event = lanes as f64 / rate as f64;
            let first = bodies.first().map_or(0, |b| b.1) as f64;
            let offset = first * per_event * lane as f64 / lanes as f64;
            (per_event, offset)
        });
        let shared = shared.clone();
        tasks.spawn(run_lane(lane, bodies, shared, started, schedule));
    }

    // Samples every second while producing and draining.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop_sampling = tokio::sync::watch::channel(false);
    let sampler = {
        let (samples, shared, keys) = (samples.clone(), shared.clone(), partition_keys.clone());
        let mut stop = stop_sampling.1.clone();
        let procs: Vec<(String, SecretString)> = processors.iter().map(|p| (p.base.clone(), p.key.clone())).collect();
        let client = shared.client.clone();
        let mut rconn = rconn.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(started + Duration::from_secs(1)),
                Duration::from_secs(1),
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let t = started.elapsed().as_secs_f64();
                let acked = shared.acked.load(Ordering::Relaxed);
                let (committed, applied) = match read_counters(&client, &procs).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("  sample at {t:.0} s: {e}");
                        continue;
                    }
                };
                let backlog = crate::serving::ingest::streams::backlog_of(&mut rconn, &keys)
                    .await
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                let s = Sample {
                    t: round(t, 2),
                    acked,
                    committed: committed.saturating_sub(committed0),
                    applied: applied.saturating_sub(applied0),
                    backlog,
                };
                eprintln!(
                    "  {:>5.0} s  acked {:>9}  committed {:>9}  applied {:>9}  backlog {:>8}",
                    s.t, s.acked, s.committed, s.applied, s.backlog
                );
                if let Ok(mut v) = samples.lock() {
                    v.push(s);
                }
            }
        })
    };

    // Production.
    let mut results: Vec<LaneResult> = Vec::with_capacity(lanes);
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a producer panicked").and_then(|r| r) {
            Ok(r) => results.push(r),
            Err(e) => {
                failure.get_or_insert(e);
                tasks.abort_all();
            }
        }
    }
    if let Some(e) = failure {
        let _ = stop_sampling.0.send(true);
        return Err(e);
    }
    let produced_at = started.elapsed();
    let mut cpu = sustained.is_some().then(|| meter.read());
    let acked: u64 = results.iter().map(|r| r.accepted).sum();
    let backlog_at_last_ack = crate::serving::ingest::streams::backlog_of(&mut rconn, &partition_keys)
        .await
        .map(|v| v.iter().sum::<u64>())
        .unwrap_or(0);

    // Drain: until every acknowledged event is committed and applied.
    let mut committed_at = None;
    let applied_at;
    loop {
        let (c, a) = counters.read().await?;
        let (c, a) = (c.saturating_sub(committed0), a.saturating_sub(applied0));
        if committed_at.is_none() && c >= acked {
            committed_at = Some(started.elapsed());
        }
        if committed_at.is_some() && a >= acked {
            applied_at = started.elapsed();
            break;
        }
        if started.elapsed() > produced_at + opts.catch_up_timeout {
            let _ = stop_sampling.0.send(true);
            bail!(
                "after {:.0} s of draining the processors had committed {c} and applied {a} of {acked} acknowledged events",
                opts.catch_up_timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let committed_at = committed_at.unwrap_or(applied_at);
    if cpu.is_none() {
        cpu = Some(meter.read());
    }
    // One more sample after the drain, then stop sampling.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = stop_sampling.0.send(true);
    let _ = sampler.await;
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();

    // Latency of the acknowledgements.
    let mut ack_lat: Vec<u64> = results.iter().flat_map(|r| r.acks.iter().map(|a| a.1)).collect();
    ack_lat.sort_unstable();
    let last_ack_us = results.iter().flat_map(|r| r.acks.iter().map(|a| a.0)).max().unwrap_or(0);
    let first_send_us = epoch_us() - started.elapsed().as_micros() as i64;

    // ack → commit from the log.
    eprintln!("reading the commit times of {acked} events from the log…");
    let mut ack_of: HashMap<&str, i64> = HashMap::with_capacity(acked as usize);
    for r in &results {
        for (i, (at, _)) in r.acks.iter().enumerate() {
            for id in &ids[r.lane][i] {
                ack_of.insert(id.as_str(), *at);
            }
        }
    }
    let mut commit_lat = commit_latencies(&replicas.database_url, &ack_of).await?;
    commit_lat.sort_unstable();
    let commit_duration_p99_ms = {
        let mut worst: Option<f64> = None;
        for p in &processors {
            if let Ok(text) = p.metrics().await {
                if let Some(s) = histogram_quantile(&text, "cartpulse_commit_duration_seconds", 0.99) {
                    worst = Some(worst.map_or(s, |w: f64| w.max(s)));
                }
            }
        }
        worst.map(|s| round(s * 1000.0, 1))
    };

    let q = |v: &[u64], q: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        round(v[i] as f64 / 1000.0, 2)
    };
    let mut r = ScaleReport {
        bench: "ingest",
        mode: if sustained.is_some() { "sustained" } else { "closed" },
        database: "postgres",
        gateways: scale.gateways,
        processors: scale.processors,
        partitions: scale.partitions,
        producers: lanes,
        batch_size: opts.batch_size,
        rate_target: sustained.map(|s| s.1),
        duration_s: sustained.map(|s| s.0.as_secs_f64()),
        events,
        acked,
        retries: shared.retries.load(Ordering::Relaxed),
        elapsed_s: round(applied_at.as_secs_f64(), 3),
        ack_p50_ms: q(&ack_lat, 0.5),
        ack_p99_ms: q(&ack_lat, 0.99),
        ack_max_ms: q(&ack_lat, 1.0),
        ack_to_commit_events: commit_lat.len() as u64,
        ack_to_commit_p50_ms: q(&commit_lat, 0.5),
        ack_to_commit_p99_ms: q(&commit_lat, 0.99),
        ack_to_commit_max_ms: q(&commit_lat, 1.0),
        commit_duration_p99_ms,
        backlog_max: samples.iter().map(|s| s.backlog).max().unwrap_or(0),
        drain_s: round(committed_at.saturating_sub(produced_at).as_secs_f64(), 2),
        cpu,
        ..Default::default()
    };
    match sustained {
        None => {
            let last_ack_s = ((last_ack_us - first_send_us).max(1) as f64) / 1e6;
            r.acked_per_s = round(acked as f64 / last_ack_s, 1);
            r.committed_per_s = round(acked as f64 / committed_at.as_secs_f64(), 1);
            r.applied_per_s = round(acked as f64 / applied_at.as_secs_f64(), 1);
            r.backlog_at_end = backlog_at_last_ack;
        }
        Some((duration, rate)) => {
            let d = duration.as_secs_f64();
            let acked_in_time: u64 = results
                .iter()
                .flat_map(|res| res.acks.iter().enumerate().map(move |(i, a)| (res.lane, i, a.0)))
                .filter(|(_, _, at)| ((at - first_send_us) as f64) / 1e6 <= d)
                .map(|(lane, i, _)| ids[lane][i].len() as u64)
                .sum();
            r.acked_per_s = round(acked_in_time as f64 / d, 1);
            let window: Vec<&Sample> = samples.iter().filter(|s| s.t <= d + 0.5).collect();
            if let (Some(a), Some(b)) = (window.first(), window.last()) {
                let span = (b.t - a.t).max(1e-9);
                r.committed_per_s = round((b.committed - a.committed) as f64 / span, 1);
                r.applied_per_s = round((b.applied - a.applied) as f64 / span, 1);
                r.backlog_at_end = b.backlog;
            }
            let tail: Vec<(f64, f64)> =
                window.iter().filter(|s| s.t >= d - 20.0).map(|s| (s.t, s.backlog as f64)).collect();
            let slope = slope(&tail);
            r.backlog_slope_per_s = slope.map(|s| round(s, 1));
            let bounded = (r.backlog_at_end as f64) < rate as f64 && slope.is_some_and(|s| s < rate as f64 / 80.0);
            r.backlog_bounded = Some(bounded);
            let near = |x: f64| x >= rate as f64 * 0.98;
            r.sustained = Some(bounded && near(r.acked_per_s) && near(r.committed_per_s));
        }
    }
    r.samples = samples;
    Ok(r)
}

/// The processors' summed counters.
struct Counters<'a> {
    processors: &'a [&'a super::servers::Server],
}

impl Counters<'_> {
    async fn read(&self) -> anyhow::Result<(u64, u64)> {
        let (mut c, mut a) = (0.0, 0.0);
        for p in self.processors {
            let text = p.metrics().await?;
            c += metric_sum(&text, COMMITTED_METRIC).unwrap_or(0.0);
            a += metric_sum(&text, APPLIED_METRIC).unwrap_or(0.0);
        }
        Ok((c as u64, a as u64))
    }
}

async fn read_counters(client: &reqwest::Client, procs: &[(String, SecretString)]) -> anyhow::Result<(u64, u64)> {
    let (mut c, mut a) = (0.0, 0.0);
    for (base, key) in procs {
        let text = client
            .get(format!("{base}/metrics"))
            .bearer_auth(key.expose_secret())
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        c += metric_sum(&text, COMMITTED_METRIC).unwrap_or(0.0);
        a += metric_sum(&text, APPLIED_METRIC).unwrap_or(0.0);
    }
    Ok((c as u64, a as u64))
}

/// The Redis server's pid when it runs on this machine.
/// The pid of the Redis server answering (on a cluster, of one node).
async fn redis_pid(c: &mut impl redis::aio::ConnectionLike) -> Option<u32> {
    let info: String = redis::cmd("INFO").arg("server").query_async(c).await.ok()?;
    let pid: u32 = info.lines().find_map(|l| l.strip_prefix("process_id:"))?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.trim().starts_with("redis").then_some(pid)
}

fn epoch_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// One producer: its batches in order, one in flight.
async fn run_lane(
    lane: usize,
    batches: Vec<(bytes::Bytes, usize)>,
    shared: Arc<Shared>,
    started: Instant,
    schedule: Option<(f64, f64)>,
) -> anyhow::Result<LaneResult> {
    let mut acks = Vec::with_capacity(batches.len());
    let mut accepted_total = 0;
    let mut before = 0usize;
    let n = shared.urls.len();
    for (i, (body, len)) in batches.into_iter().enumerate() {
        let origin = match schedule {
            Some((per_event, offset)) => {
                let due = started + Duration::from_secs_f64(offset + before as f64 * per_event);
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                due
            }
            None => Instant::now(),
        };
        before += len;
        let mut attempt = 0usize;
        let accepted = loop {
            let url = &shared.urls[(lane + i + attempt) % n];
            attempt += 1;
            let res = shared
                .client
                .post(url)
                .bearer_auth(shared.key.expose_secret())
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let ack: crate::jobs::replay::sender::Ack = r.json().await.context("reading an acknowledgement")?;
                    if ack.accepted as usize != len {
                        bail!("a batch of {len} events was acknowledged with {} accepted", ack.accepted);
                    }
                    break ack.accepted;
                }
                Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {}
                Ok(r) => {
                    let status = r.status();
                    bail!("the gateway answered {status}: {}", r.text().await.unwrap_or_default());
                }
                Err(e) if attempt > 1_000 => bail!("giving up on a batch: {e}"),
                Err(_) => {}
            }
            shared.retries.fetch_add(1, Ordering::Relaxed);
            if origin.elapsed() > Duration::from_secs(120) {
                bail!("a batch was not acknowledged within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let at = epoch_us();
        acks.push((at, origin.elapsed().as_micros() as u64));
        accepted_total += accepted;
        shared.acked.fetch_add(accepted, Ordering::Relaxed);
    }
    Ok(LaneResult { lane, acks, accepted: accepted_total })
}

/// `received_at − ack` (µs, at least 0) of every event of `ack_of` found in the log.
async fn commit_latencies(database_url: &str, ack_of: &HashMap<&str, i64>) -> anyhow::Result<Vec<u64>> {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let db = Database::connect(database_url).await.context("connecting to the bench database")?;
    let mut out = Vec::with_capacity(ack_of.len());
    let mut after: i64 = 0;
    loop {
        let rows = db
            .query_all(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT seq, event_id, (extract(epoch FROM received_at) * 1000000)::bigint AS at \
                 FROM events WHERE seq > $1 ORDER BY seq LIMIT 50000",
                [after.into()],
            ))
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("", "seq")?;
        for row in &rows {
            let id: String = row.try_get("", "event_id")?;
            let at: i64 = row.try_get("", "at")?;
            if let Some(ack) = ack_of.get(id.as_str()) {
                out.push((at - ack).max(0) as u64);
            }
        }
    }
    db.close().await.ok();
    Ok(out)
}

/// Least-squares slope of (t, y); `None` with fewer than 3 points.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    (den > 0.0).then(|| num / den)
}

fn print_table(r: &ScaleReport) {
    eprintln!(
        "ingest bench ({}): {} gateway(s), {} processor(s), {} partitions, Postgres, {} producers, batches of {}",
        r.mode, r.gateways, r.processors, r.partitions, r.producers, r.batch_size
    );
    if let (Some(rate), Some(d)) = (r.rate_target, r.duration_s) {
        eprintln!("  {:<22} {:>12} events/s for {d} s", "target", rate);
    }
    eprintln!("  {:<22} {:>12}", "events acknowledged", r.acked);
    eprintln!("  {:<22} {:>12}", "retried requests", r.retries);
    eprintln!("  {:<22} {:>12.0} events/s", "acknowledged", r.acked_per_s);
    eprintln!("  {:<22} {:>12.0} events/s", "committed", r.committed_per_s);
    eprintln!("  {:<22} {:>12.0} events/s", "applied", r.applied_per_s);
    eprintln!("  {:<22} {:>9.1} / {:.1} / {:.1} ms", "ack p50 / p99 / max", r.ack_p50_ms, r.ack_p99_ms, r.ack_max_ms);
    eprintln!(
        "  {:<22} {:>9.1} / {:.1} / {:.1} ms ({} events)",
        "ack→commit p50/p99/max",
        r.ack_to_commit_p50_ms,
        r.ack_to_commit_p99_ms,
        r.ack_to_commit_max_ms,
        r.ack_to_commit_events
    );
    eprintln!("  {:<22} {:>12} (max {})", "backlog at end", r.backlog_at_end, r.backlog_max);
    if let Some(s) = r.backlog_slope_per_s {
        eprintln!("  {:<22} {:>12.1} events/s over the last 20 s", "backlog slope", s);
    }
    if let (Some(b), Some(s)) = (r.backlog_bounded, r.sustained) {
        eprintln!("  {:<22} {:>12} (sustained: {s})", "backlog bounded", b);
    }
    eprintln!("  {:<22} {:>12.2} s", "drain after production", r.drain_s);
    if let Some(c) = &r.cpu {
        let parts: Vec<String> = c.cores.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        eprintln!(
            "  {:<22} {} | machine {:.2} of {}, others {:.2} (over {:.0} s)",
            "cores used",
            parts.join(", "),
            c.machine_cores,
            c.cpus,
            c.other_cores,
            c.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 5.0 + 2.0 * t as f64)).collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 100.0)).collect();
        assert_eq!(slope(&flat), Some(0.0));
        assert_eq!(slope(&line[..2]), None);
    }
}
