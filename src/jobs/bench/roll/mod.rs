//! `cartpulse bench roll`: a rolling restart under load, as ECS performs
//! one, and what users saw of it.
//!
//! Two gateways and two processors (sharing the partitions through leases)
//! run over a fresh Postgres database and Redis prefix
//! ([`super::servers::Replicas`]). Producers post page views at `--rate`
//! events/s and `--viewers` WebSocket clients follow `kpis` and one
//! `customer:{id}` each. After `--steady` seconds every replica is replaced
//! in turn: a new one of the same role is started and ready before the old
//! one gets SIGTERM (the load balancer here stops sending new requests and
//! connections to a gateway at that moment, as an ALB deregistering it
//! does) and exits. Then production stops, the processors drain the streams
//! and the run checks:
//! - **failed requests**: answers other than 200 that a producer may not
//!   resend (503 and refused connections are resent, as docs/api.md tells
//!   shops to do, with the same `event_id`s; a batch still not acknowledged
//!   after 30 s is failed too);
//! - **lost / counted twice**: every acknowledged event is in the log exactly
//!   once (by `event_id`), and every customer's session shows exactly the
//!   events acknowledged for it (more: counted twice; fewer: lost by the
//!   actors);
//! - **missed frames**: each viewer checks that every topic's `seq` goes up
//!   by one; a close makes it reconnect to a live gateway with `since` (the
//!   close codes are counted); at the end each must reach the seq Redis holds
//!   for its topics;
//! - **ingest latency**: acknowledgement p50/p99 of the batches due before
//!   the roll (steady) and during it, timed from the batch's due time
//!   (open loop, retries included).
//!
//! Every replica must exit 0 after its SIGTERM. The command exits non-zero
//! when anything above is not zero, after printing its report (the last
//! stdout line, JSON).

mod checks;
mod producers;
mod viewers;

use super::servers::{round, ReplicaOptions, Replicas};
use anyhow::{anyhow, bail, Context};
use checks::{check_customers, check_log, drained, topic_heads};
use clap::Args;
use producers::produce;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use viewers::{viewer, Tally};

/// Flags of `bench roll`.
#[derive(Args, Debug, Clone)]
pub struct RollArgs {
    /// Redis of the replicas, a single node (a fresh key prefix is used and deleted).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Postgres server of the replicas: a fresh database is created through
    /// this URL and dropped at the end.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_admin_url: String,
    /// Events per second the producers offer (open loop).
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// WebSocket viewers, each on `kpis` and one customer's topic.
    #[arg(long, default_value_t = 500)]
    pub viewers: usize,
    /// Customers the producers send events for (viewer i follows customer i mod this).
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// Seconds of steady traffic before the roll (and after it).
    #[arg(long, default_value_t = 10)]
    pub steady: u64,
    /// `shutdown.drain_s` of every replica: how long a stopping gateway keeps
    /// serving while the load balancer deregisters it.
    #[arg(long, default_value_t = 2)]
    pub drain_s: u64,
    /// `redis.lease_ms` of the processors.
    #[arg(long, default_value_t = 2_000)]
    pub lease_ms: u64,
    /// Event stream partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: usize,
    /// Seconds to wait between one replacement and the next (leases rebalance).
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
}

/// The result, printed as the last stdout line in this shape.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RollReport {
    pub bench: &'static str,
    pub rate_target: u64,
    pub viewers: usize,
    pub replicas_restarted: usize,
    /// Every replaced replica exited 0 after SIGTERM.
    pub clean_exits: usize,
    pub roll_seconds: f64,
    pub batches_acked: u64,
    /// Attempts answered 503 or refused (then resent).
    pub requests_retried: u64,
    /// Answers that may not be resent, or batches never acknowledged.
    pub requests_failed: u64,
    pub events_acked: u64,
    pub events_per_s_achieved: f64,
    /// Acknowledged events whose `event_id` is not in the log.
    pub events_lost: u64,
    /// `event_id`s in the log more than once (the column is unique: always 0
    /// unless that constraint is gone) plus events a customer's session counts
    /// beyond those acknowledged.
    pub events_counted_twice: u64,
    /// Acknowledged events the customers' sessions do not count.
    pub events_not_applied: u64,
    pub customers_checked: usize,
    pub frames_received: u64,
    pub frames_missed: u64,
    pub frames_repeated: u64,
    pub gap_notices: u64,
    pub reconnects: u64,
    /// Close codes viewers received, by code.
    pub close_codes: BTreeMap<u16, u64>,
    pub ingest_p50_steady_ms: f64,
    pub ingest_p99_steady_ms: f64,
    pub ingest_p50_roll_ms: f64,
    pub ingest_p99_roll_ms: f64,
    pub ingest_max_roll_ms: f64,
    /// Nothing failed, lost, counted twice or missed, and every exit was clean.
    pub ok: bool,
}

pub fn run_cli(args: RollArgs) -> anyhow::Result<()> {
    let report = super::run_printed(run(args))?;
    if !report.ok {
        bail!("the rolling restart was visible to users (see the report above)");
    }
    Ok(())
}

/// The gateways a load balancer would send new work to.
#[derive(Clone, Default)]
pub(crate) struct Live(Arc<RwLock<Vec<String>>>);

impl Live {
    pub(crate) fn pick(&self, n: usize) -> Option<String> {
        let l = self.0.read().ok()?;
        (!l.is_empty()).then(|| l[n % l.len()].clone())
    }
    fn set(&self, bases: Vec<String>) {
        if let Ok(mut l) = self.0.write() {
            *l = bases;
        }
    }
}

async fn run(args: RollArgs) -> anyhow::Result<RollReport> {
    if args.viewers > 0 && args.customers == 0 {
        bail!("--customers must be at least 1");
    }
    let env = vec![
        ("CARTPULSE_SHUTDOWN__DRAIN_S".to_owned(), args.drain_s.to_string()),
        ("CARTPULSE_REDIS__LEASE_MS".to_owned(), args.lease_ms.to_string()),
        ("CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS".to_owned(), "200".to_owned()),
    ];
    eprintln!(
        "rolling restart: 2 gateways, 2 leased processors; {} events/s, {} viewers; {} s steady, drain {} s",
        args.rate, args.viewers, args.steady, args.drain_s
    );
    let mut replicas = Replicas::start(&ReplicaOptions {
        bench: "roll",
        gateways: 2,
        processors: 2,
        partitions: args.partitions,
        redis_url: args.redis_url.clone(),
        pg_admin_url: args.pg_admin_url.clone(),
        leased: true,
        env,
    })
    .await?;
    let res = scenario(&args, &mut replicas).await;
    replicas.stop().await;
    res
}

async fn scenario(args: &RollArgs, replicas: &mut Replicas) -> anyhow::Result<RollReport> {
    let key = replicas.key().clone();
    let live = Live::default();
    live.set(replicas.gateway_bases());
    let stop_viewers = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut viewers = Vec::new();
    for v in 0..args.viewers {
        let topics = vec!["kpis".to_owned(), format!("customer:{}", customer_id(v % args.customers))];
        viewers.push(tokio::spawn(viewer(topics, live.clone(), key.clone(), stop_viewers.clone(), tally.clone())));
    }
    let subscribed = Instant::now();
    while tally.subscribed.load(Ordering::Relaxed) < args.viewers as u64 {
        if subscribed.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {} of {} viewers subscribed within 60 s",
                tally.subscribed.load(Ordering::Relaxed),
                args.viewers
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("  {} viewers subscribed", args.viewers);

    let producing = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let producer = tokio::spawn(produce(args.clone(), live.clone(), key.clone(), producing.clone()));
    tokio::time::sleep(Duration::from_secs(args.steady)).await;

    let roll_from = started.elapsed();
    let mut report = RollReport { bench: "roll", rate_target: args.rate, viewers: args.viewers, ..Default::default() };
    let stop_within = Duration::from_secs(args.drain_s + 60);
    for role in ["processor", "processor", "gateway", "gateway"] {
        let fresh = replicas.spawn(role, None).await.with_context(|| format!("starting a new {role}"))?;
        let mut old = if role == "processor" {
            std::mem::replace(&mut replicas.processors[report.replicas_restarted], fresh)
        } else {
            let i = report.replicas_restarted - 2;
            let old = std::mem::replace(&mut replicas.gateways[i], fresh);
            live.set(replicas.gateway_bases());
            old
        };
        eprintln!("  t={:.1}s: {role} replaced, SIGTERM to the old one", started.elapsed().as_secs_f64());
        let status = old.terminate(stop_within).await?;
        if status.success() {
            report.clean_exits += 1;
        } else {
            eprintln!("  the old {role} exited with {status}");
        }
        report.replicas_restarted += 1;
        eprintln!("  t={:.1}s: the old {role} exited ({status})", started.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
    }
    let roll_until = started.elapsed();
    report.roll_seconds = round((roll_until - roll_from).as_secs_f64(), 1);
    tokio::time::sleep(Duration::from_secs(args.steady)).await;
    producing.store(false, Ordering::SeqCst);
    let produced = producer.await.map_err(|e| anyhow!("producer task: {e}"))??;
    eprintln!("  production stopped after {:.1} s", started.elapsed().as_secs_f64());

    report.batches_acked = produced.batches_acked;
    report.requests_retried = produced.retried;
    report.requests_failed = produced.failed;
    report.events_acked = produced.acked.len() as u64;
    report.events_per_s_achieved = round(produced.acked.len() as f64 / produced.seconds, 0);
    let (steady, during): (Vec<_>, Vec<_>) = produced.latencies.iter().partition(|(due, _)| *due < roll_from);
    let during: Vec<f64> = during.into_iter().filter(|(due, _)| *due < roll_until).map(|(_, l)| l).collect();
    let steady: Vec<f64> = steady.into_iter().map(|(_, l)| l).collect();
    (report.ingest_p50_steady_ms, report.ingest_p99_steady_ms, _) = quantiles(steady);
    (report.ingest_p50_roll_ms, report.ingest_p99_roll_ms, report.ingest_max_roll_ms) = quantiles(during);

    let gateway = replicas.gateways[0].base.clone();
    drained(&gateway).await?;
    check_log(replicas, &produced.acked, &mut report).await?;
    check_customers(&gateway, &key, args.customers, &produced.acked, &mut report).await?;

    // Each viewer must reach the newest seq of its topics.
    let targets = topic_heads(replicas, args).await?;
    *tally.targets.lock().map_err(|_| anyhow!("poisoned"))? = Some(targets);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.caught_up.load(Ordering::Relaxed) < args.viewers as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_viewers.store(true, Ordering::SeqCst);
    for v in viewers {
        let _ = tokio::time::timeout(Duration::from_secs(5), v).await;
    }
    report.frames_received = tally.frames.load(Ordering::Relaxed);
    report.frames_missed = tally.missed.load(Ordering::Relaxed);
    report.frames_repeated = tally.repeated.load(Ordering::Relaxed);
    report.gap_notices = tally.gaps.load(Ordering::Relaxed);
    report.reconnects = tally.reconnects.load(Ordering::Relaxed);
    report.close_codes = tally.closes.lock().map(|c| c.clone()).unwrap_or_default();
    report.ok = report.requests_failed == 0
        && report.events_lost == 0
        && report.events_counted_twice == 0
        && report.events_not_applied == 0
        && report.frames_missed == 0
        && report.gap_notices == 0
        && report.clean_exits == report.replicas_restarted
        && report.events_acked > 0;
    eprintln!(
        "  {} events acknowledged ({:.0}/s), {} requests resent, {} failed; lost {}, counted twice {}, not applied {}",
        report.events_acked,
        report.events_per_s_achieved,
        report.requests_retried,
        report.requests_failed,
        report.events_lost,
        report.events_counted_twice,
        report.events_not_applied
    );
    eprintln!(
        "  viewers: {} frames, {} missed, {} repeated, {} gap notices, {} reconnects, closes {:?}",
        report.frames_received,
        report.frames_missed,
        report.frames_repeated,
        report.gap_notices,
        report.reconnects,
        report.close_codes
    );
    eprintln!(
        "  ingest p50/p99: steady {:.1}/{:.1} ms, during the roll {:.1}/{:.1} ms (max {:.1})",
        report.ingest_p50_steady_ms,
        report.ingest_p99_steady_ms,
        report.ingest_p50_roll_ms,
        report.ingest_p99_roll_ms,
        report.ingest_max_roll_ms
    );
    Ok(report)
}

pub(crate) fn customer_id(i: usize) -> String {
    format!("rr-{i}")
}

/// p50, p99 and max in ms of latencies in ms.
fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (round(q(0.5), 1), round(q(0.99), 1), round(v[v.len() - 1], 1))
}
