//! `cartpulse bench ingest`: how many events per second the system takes in
//! and applies, end to end, and how long producers wait for acknowledgements.
//!
//! Without `--target` it starts a server of its own: this same executable
//! (`std::env::current_exe()`, so run the release build) with
//! `serve --listen 127.0.0.1:<free port>` on `--database-url`, or on a fresh
//! SQLite file in a temporary directory; it creates an admin key with
//! `keys create` first and kills the server at the end, on error and on
//! Ctrl-C too. With `--target URL --api-key KEY` it measures that server.
//!
//! Method: unique synthetic events (ids carry a per-run nonce, so reruns
//! against the same database are never duplicates) are generated and encoded
//! up front, outside the measurement. P producers, each with its own
//! customers and one request in flight, then send them in batches. The clock
//! runs from the first send until the server's
//! `cartpulse_events_applied_total` has grown by the number of accepted
//! events (polled every 50 ms), so the rate counts events that the session
//! actors have applied, not merely committed. Acknowledgement latency is per
//! batch, from its first attempt to its acknowledgement.
//!
//! On the 2-core dev/CI machines the load generator shares the 2 cores with
//! the server it measures: the numbers are a floor for a server with the
//! machine to itself.
//!
//! With `--gateways N --redis-url URL` the bench measures the scale-out path
//! instead (gateways, Redis Streams, processors, Postgres): see
//! [`super::ingest_replicas`].

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::task::JoinSet;

use super::ingest_replicas::ScaleArgs;
use super::servers::Server;
use crate::jobs::replay::sender::{
    plan_batches, resolve, Batch, SendReport, Sender, SenderConfig, MAX_EVENTS_PER_REQUEST,
};
use crate::jobs::replay::synthetic::{generate_events, SyntheticConfig};
use crate::jobs::replay::{per_second, progress_bar};
use crate::telemetry::scrape::sum as metric_sum;

/// The metric that counts events applied by the session actors.
pub const APPLIED_METRIC: &str = "cartpulse_events_applied_total";

/// What to measure.
#[derive(Clone, Debug)]
pub struct IngestBenchOptions {
    /// Database of the server started by the bench (a fresh SQLite file when
    /// `None`); with `target`, only used to label the report.
    pub database_url: Option<SecretString>,
    /// Events to send (default 300,000).
    pub events: u64,
    /// Concurrent producers, each with its own customers (default 8).
    pub producers: usize,
    /// Events per request (default 1,000).
    pub batch_size: usize,
    /// Measure this running server instead of starting one.
    pub target: Option<url::Url>,
    /// Key for `target` (ingest scope; admin if `/metrics` needs it).
    pub api_key: Option<SecretString>,
    /// Seed of the synthetic traffic.
    pub seed: u64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// How long the actors may take to apply everything after the last ack.
    pub catch_up_timeout: Duration,
    /// With `scale.gateways > 0`: the scale-out bench ([`super::ingest_replicas`]).
    pub scale: ScaleArgs,
    /// Redis of the scale-out bench.
    pub redis_url: Option<String>,
}

impl Default for IngestBenchOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            events: 300_000,
            producers: 8,
            batch_size: 1_000,
            target: None,
            api_key: None,
            seed: 42,
            progress: true,
            catch_up_timeout: Duration::from_secs(300),
            scale: ScaleArgs::default(),
            redis_url: None,
        }
    }
}

/// The result, printed as the last stdout line in this shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IngestBenchReport {
    pub bench: &'static str,
    /// `sqlite`, `postgres`, or `unknown` for a `--target` without a URL.
    pub database: String,
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    pub producers: usize,
    pub batch_size: usize,
}

/// Runs the benchmark, prints the table (stderr) and the JSON line (stdout),
/// and returns the report.
pub async fn run(opts: IngestBenchOptions) -> anyhow::Result<Option<IngestBenchReport>> {
    if opts.events == 0 {
        bail!("--events must be at least 1");
    }
    if opts.producers == 0 {
        bail!("--producers must be at least 1");
    }
    if !(1..=MAX_EVENTS_PER_REQUEST).contains(&opts.batch_size) {
        bail!("--batch-size must be 1..={MAX_EVENTS_PER_REQUEST}");
    }
    if opts.target.is_some() != opts.api_key.is_some() {
        bail!("--target and --api-key go together");
    }
    if opts.scale.gateways > 0 {
        let Some(redis_url) = opts.redis_url.as_deref() else {
            bail!("--gateways {} needs --redis-url", opts.scale.gateways);
        };
        let report = super::ingest_replicas::run(&opts, redis_url).await?;
        println!("{}", serde_json::to_string(&report).context("encoding the report")?);
        return Ok(None);
    }
    if opts.scale.duration.is_some() || opts.scale.processors != 1 {
        bail!("--duration, --rate and --processors need --gateways N --redis-url URL");
    }
    // Ctrl-C drops the bench future, and with it the server it started.
    let report = tokio::select! {
        r = measure(&opts) => r?,
        Ok(()) = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    print_table(&report);
    println!("{}", serde_json::to_string(&report).context("encoding the report")?);
    Ok(Some(report))
}

async fn measure(opts: &IngestBenchOptions) -> anyhow::Result<IngestBenchReport> {
    let work = prepare(opts).await?;
    let events: u64 = work.iter().flatten().map(|b| b.len() as u64).sum();

    let mut server = None;
    let (target, key) = match (&opts.target, &opts.api_key) {
        (Some(t), Some(k)) => (t.clone(), k.clone()),
        _ => {
            // Ready once this returns (it waits for /readyz).
            let s = match &opts.database_url {
                Some(db) => Server::start_with(db.expose_secret(), None, &[], &[]).await?,
                None => Server::start(&[]).await?,
            };
            let target_and_key = (url::Url::parse(&s.base).context("server URL")?, s.key.clone());
            server = Some(s);
            target_and_key
        }
    };
    let result = drive(opts, work, events, &target, &key).await;
    if let Some(s) = server {
        s.stop().await;
    }
    let (report, elapsed) = result?;

    let round = |x: f64, digits: i32| {
        let f = 10f64.powi(digits);
        (x * f).round() / f
    };
    Ok(IngestBenchReport {
        bench: "ingest",
        database: database_label(opts.database_url.as_ref(), opts.target.is_none()),
        events,
        accepted: report.accepted,
        duplicates: report.duplicates,
        elapsed_s: round(elapsed.as_secs_f64(), 3),
        events_per_s: round(per_second(report.accepted, elapsed), 1),
        ack_p50_ms: round(report.ack_ms(0.5), 3),
        ack_p99_ms: round(report.ack_ms(0.99), 3),
        ack_max_ms: round(report.ack_max_ms(), 3),
        producers: opts.producers,
        batch_size: opts.batch_size,
    })
}

/// Generates and encodes every producer's batches (not timed).
pub(crate) async fn prepare(opts: &IngestBenchOptions) -> anyhow::Result<Vec<Vec<Batch>>> {
    let nonce = format!("{:08x}", rand::random::<u32>());
    let producers = opts.producers as u64;
    let (events, seed, batch_size) = (opts.events, opts.seed, opts.batch_size);
    tokio::task::spawn_blocking(move || {
        (0..producers)
            .map(|p| {
                let share = events / producers + u64::from(p < events % producers);
                let mut cfg = SyntheticConfig::new(0, seed.wrapping_add(p));
                // A prefix per producer keeps every producer's customers its own.
                cfg.prefix = format!("bench-{nonce}-p{p}");
                plan_batches(generate_events(&cfg, share), batch_size)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    .context("event generation panicked")?
}

/// Sends everything and waits for the actors; returns the sums and the time
/// from the first send until the last accepted event was applied.
async fn drive(
    opts: &IngestBenchOptions,
    work: Vec<Vec<Batch>>,
    events: u64,
    target: &url::Url,
    key: &SecretString,
) -> anyhow::Result<(SendReport, Duration)> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("building the HTTP client")?;
    wait_ready(&client, target, Duration::from_secs(15)).await?;
    let metrics = resolve(target, "metrics")?;
    let baseline = applied_total(&client, &metrics, key).await?.unwrap_or(0.0);

    let progress = if opts.progress { Some(progress_bar(events)?) } else { None };
    let mut config = SenderConfig::new(target.clone(), key.clone());
    config.concurrency = 1;
    config.progress = progress.clone();
    let sender = Sender::new(config)?;

    let started = Instant::now();
    let mut producers = JoinSet::new();
    for batches in work {
        let sender = sender.clone();
        producers.spawn(async move { sender.send(batches).await });
    }
    let mut report: Option<SendReport> = None;
    while let Some(joined) = producers.join_next().await {
        let r = joined.context("a producer panicked")??;
        match report.as_mut() {
            Some(total) => total.merge(&r)?,
            None => report = Some(r),
        }
    }
    if let Some(pb) = &progress {
        pb.finish_and_clear();
    }
    let report = report.ok_or_else(|| anyhow!("no producer ran"))?;

    // The actors apply asynchronously after the commit that the ack confirms.
    let want = baseline + report.accepted as f64;
    let acked_at = Instant::now();
    loop {
        let applied = applied_total(&client, &metrics, key).await?;
        if applied.unwrap_or(0.0) >= want {
            break;
        }
        if acked_at.elapsed() > opts.catch_up_timeout {
            bail!(
                "the actors applied {} of {} accepted events within {:.0} s after the last ack{}",
                applied.map_or(0.0, |a| a - baseline),
                report.accepted,
                opts.catch_up_timeout.as_secs_f64(),
                if applied.is_none() {
                    format!(" ({APPLIED_METRIC} is missing from {metrics})")
                } else {
                    String::new()
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((report, started.elapsed()))
}

/// The sum of every `cartpulse_events_applied_total` series on `/metrics`;
/// `None` if the metric is not there (yet).
async fn applied_total(
    client: &reqwest::Client,
    metrics: &url::Url,
    key: &SecretString,
) -> anyhow::Result<Option<f64>> {
    let response = client
        .get(metrics.clone())
        .bearer_auth(key.expose_secret())
        .send()
        .await
        .with_context(|| format!("GET {metrics}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("GET {metrics} answered {status}");
    }
    let text = response.text().await.with_context(|| format!("reading {metrics}"))?;
    Ok(metric_sum(&text, APPLIED_METRIC))
}

async fn wait_ready(client: &reqwest::Client, target: &url::Url, limit: Duration) -> anyhow::Result<()> {
    let readyz = resolve(target, "readyz")?;
    let started = Instant::now();
    loop {
        let last = match client.get(readyz.clone()).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if started.elapsed() > limit {
            bail!("{readyz} not ready after {} s: {last}", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn database_label(url: Option<&SecretString>, local: bool) -> String {
    match url.map(|u| u.expose_secret()) {
        Some(u) if u.starts_with("postgres") => "postgres",
        Some(u) if u.starts_with("sqlite") => "sqlite",
        Some(_) => "other",
        None if local => "sqlite",
        None => "unknown",
    }
    .to_owned()
}

fn print_table(r: &IngestBenchReport) {
    eprintln!("ingest bench: {} database, {} producers, batches of {}", r.database, r.producers, r.batch_size);
    eprintln!("  {:<14} {:>12}", "events", r.events);
    eprintln!("  {:<14} {:>12}", "accepted", r.accepted);
    eprintln!("  {:<14} {:>12}", "duplicates", r.duplicates);
    eprintln!("  {:<14} {:>12.3} s", "elapsed", r.elapsed_s);
    eprintln!("  {:<14} {:>12.0} events/s", "throughput", r.events_per_s);
    eprintln!("  {:<14} {:>12.1} ms", "ack p50", r.ack_p50_ms);
    eprintln!("  {:<14} {:>12.1} ms", "ack p99", r.ack_p99_ms);
    eprintln!("  {:<14} {:>12.1} ms", "ack max", r.ack_max_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_labels() {
        let pg = SecretString::from("postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(database_label(Some(&pg), true), "postgres");
        assert_eq!(database_label(None, true), "sqlite");
        assert_eq!(database_label(None, false), "unknown");
    }

    #[tokio::test]
    async fn prepared_events_are_unique_per_run_and_split_over_producers() {
        let opts = IngestBenchOptions { events: 2_001, producers: 3, batch_size: 100, ..IngestBenchOptions::default() };
        let a = prepare(&opts).await.unwrap();
        let b = prepare(&opts).await.unwrap();
        assert_eq!(a.len(), 3);
        let total: usize = a.iter().flatten().map(Batch::len).sum();
        assert_eq!(total, 2_001);
        // Producers never share a customer.
        let customers: Vec<std::collections::HashSet<_>> =
            a.iter().map(|bs| bs.iter().flat_map(|b| b.customers.iter().cloned()).collect()).collect();
        assert!(customers[0].is_disjoint(&customers[1]) && customers[1].is_disjoint(&customers[2]));
        assert_ne!(a[0][0].event_ids[0], b[0][0].event_ids[0], "a fresh nonce per run");
    }
}
