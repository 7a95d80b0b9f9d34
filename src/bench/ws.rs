//! `cartpulse bench ws`: how many WebSocket clients one gateway holds, what
//! each costs in memory, how many messages per second it fans out, and how
//! long an acknowledged event takes to reach a subscribed client.
//!
//! The bench starts a release `serve` of this same executable per phase (a
//! fresh SQLite file, an admin key from `keys create`) and spreads each
//! phase's clients over load processes (`bench ws-worker`, hidden; one per
//! 5,000 clients unless `--workers` says otherwise), because every process
//! here may hold at most 20,000 open files; it raises its soft limit to the
//! hard one first, and the children inherit it. Each load process is one
//! thread, and no more of them than that: they share the 2 cores with the
//! server, and every extra one takes scheduling time from what is measured
//! (2,000 fan-out clients over 4 processes instead of 1 cut the delivered
//! rate by about a third here). Workers talk to the bench over stdin/stdout
//! lines.
//!
//! Phases:
//! 1. capacity: `--clients` clients subscribe to `kpis`; the server's RSS
//!    before and after gives the memory per connection; every client must
//!    then answer a protocol ping (`{"type":"ping"}` → pong) to count.
//! 2. fan-out: the server publishes `kpis` `--fanout-hz` times a second to
//!    `--fanout-clients` clients; delivered = messages the clients received.
//! 3. latency: `--latency-clients` clients each watch one customer
//!    (`customer:{id}`); the bench posts `--events-per-s` page views spread
//!    over those customers, each batch stamped when its acknowledgement
//!    arrives. A view with `open_session.n_events = n` proves events 1..n of
//!    that customer applied; latency = its receipt − the acknowledgement of
//!    each event it newly covers (the same machine clock for all processes).
//!
//! The load processes share the 2 cores with the server, so the figures are
//! floors for a server with the machine to itself.

use super::servers::{round, ReplicaOptions, Replicas, Server};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Args, Debug, Clone)]
pub struct WsArgs {
    /// Clients held at once in the capacity phase.
    #[arg(long, default_value_t = 15_000)]
    pub clients: usize,
    /// Load processes each phase spreads its clients over (default: one
    /// per 5,000 clients).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Clients of the fan-out phase (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub fanout_clients: usize,
    /// kpis publications per second in the fan-out phase.
    #[arg(long, default_value_t = 100)]
    pub fanout_hz: u64,
    #[arg(long, default_value_t = 10)]
    pub fanout_seconds: u64,
    /// Clients of the latency phase, one customer each (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub latency_clients: usize,
    /// Events posted per second in the latency phase.
    #[arg(long, default_value_t = 10_000)]
    pub events_per_s: u64,
    #[arg(long, default_value_t = 20)]
    pub latency_seconds: u64,
    /// With 2 or more (and `--redis-url`), the latency phase runs a second
    /// time across replicas: one `serve --role processor` and this many
    /// `--role gateway` processes over a fresh Postgres database and a fresh
    /// Redis prefix; clients and producer batches are spread over the gateways.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Redis of the many-replica latency phase.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Postgres server of the many-replica phase (a fresh database is created
    /// on it and dropped afterwards).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_admin_url: String,
    /// Event stream partitions of the many-replica phase.
    #[arg(long, default_value_t = 8)]
    pub partitions: usize,
    /// Skip the single-process latency phase (run only the one across gateways).
    #[arg(long)]
    pub skip_local_latency: bool,
}

/// Arguments of one load process (started by the bench, not by hand).
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub url: String,
    /// `kpis`, or a customer id prefix: client i watches `customer:{prefix}{first + i}`.
    #[arg(long)]
    pub topic: String,
    #[arg(long)]
    pub clients: usize,
    #[arg(long, default_value_t = 0)]
    pub first: usize,
}

/// Clients one load process holds unless `--workers` is given.
const CLIENTS_PER_WORKER: usize = 5_000;

impl WsArgs {
    /// Load processes for a phase of `clients` clients.
    fn workers_for(&self, clients: usize) -> usize {
        self.workers.unwrap_or_else(|| clients.div_ceil(CLIENTS_PER_WORKER)).max(1)
    }
}

#[derive(Debug, Serialize)]
pub struct WsBenchReport {
    pub bench: &'static str,
    /// Load processes of the capacity phase.
    pub workers: usize,
    /// Load processes of the fan-out phase.
    pub fanout_workers: usize,
    /// Load processes of each latency phase.
    pub latency_workers: usize,
    pub clients_target: usize,
    pub clients_connected: u64,
    pub clients_answering_ping: u64,
    pub connect_s: f64,
    pub server_rss_before_mib: f64,
    pub server_rss_after_mib: f64,
    pub kib_per_connection: f64,
    pub kpis_received_per_s_at_capacity: f64,
    pub fanout_clients: usize,
    pub fanout_hz: u64,
    pub fanout_offered_per_s: f64,
    pub fanout_delivered_per_s: f64,
    pub fanout_coalesced: f64,
    /// The latency phase in one process.
    #[serde(flatten)]
    pub latency: LatencyFigures,
    /// The latency phase across gateways via Redis (`--gateways 2 --redis-url`).
    pub gateways: Option<GatewaysLatency>,
}

/// Figures of one latency phase: events produced at a target rate to
/// watched customers, ack → client receipt.
#[derive(Debug, Serialize, Default)]
pub struct LatencyFigures {
    pub latency_clients: usize,
    pub events_per_s_target: u64,
    pub events_acked: u64,
    pub events_per_s_achieved: f64,
    pub events_seen_by_clients: u64,
    pub ack_to_receipt_p50_ms: f64,
    pub ack_to_receipt_p99_ms: f64,
    pub ack_to_receipt_max_ms: f64,
    /// The server's own ack → aggregator p99 (histogram bucket bound); the
    /// processor's across gateways.
    pub server_latency_p99_ms: Option<f64>,
    /// ack → receipt p99 of the events acknowledged in each second of the run.
    pub p99_by_second_ms: Vec<f64>,
}

/// Figures of the latency phase run across a processor and several gateways.
#[derive(Debug, Serialize, Default)]
pub struct GatewaysLatency {
    pub gateways: usize,
    pub partitions: usize,
    #[serde(flatten)]
    pub latency: LatencyFigures,
}

/// `cartpulse bench ws`.
pub fn run_cli(args: WsArgs) -> anyhow::Result<()> {
    super::run_printed(run(args)).map(|_| ())
}

/// Raises the soft open-file limit to the hard one (children inherit it).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            // rlim_t is u64 on Linux but not on every target.
            #[allow(clippy::unnecessary_cast)]
            return l.rlim_cur as u64;
        }
    }
    0
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

async fn run(args: WsArgs) -> anyhow::Result<WsBenchReport> {
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let workers = args.workers_for(args.clients);
    let mut r = WsBenchReport {
        bench: "ws",
        workers,
        fanout_workers: args.workers_for(args.fanout_clients),
        latency_workers: args.workers_for(args.latency_clients),
        clients_target: args.clients,
        clients_connected: 0,
        clients_answering_ping: 0,
        connect_s: 0.0,
        server_rss_before_mib: 0.0,
        server_rss_after_mib: 0.0,
        kib_per_connection: 0.0,
        kpis_received_per_s_at_capacity: 0.0,
        fanout_clients: args.fanout_clients,
        fanout_hz: args.fanout_hz,
        fanout_offered_per_s: (args.fanout_clients as u64 * args.fanout_hz) as f64,
        fanout_delivered_per_s: 0.0,
        fanout_coalesced: 0.0,
        latency: LatencyFigures {
            latency_clients: args.latency_clients,
            events_per_s_target: args.events_per_s,
            ..Default::default()
        },
        gateways: None,
    };
    if args.gateways > 1 && args.redis_url.is_none() {
        bail!("--gateways {} needs --redis-url", args.gateways);
    }

    if args.clients > 0 {
        eprintln!("capacity: {} clients over {workers} load processes", args.clients);
        let server = Server::start(&[]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = server.rss_kib()?;
        let started = Instant::now();
        let mut pool =
            Workers::spawn(std::slice::from_ref(&server.base), &server.key, workers, args.clients, "kpis").await?;
        r.clients_connected = pool.ready().await?;
        r.connect_s = round(started.elapsed().as_secs_f64(), 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = server.rss_kib()?;
        r.server_rss_before_mib = round(before as f64 / 1024.0, 1);
        r.server_rss_after_mib = round(after as f64 / 1024.0, 1);
        r.kib_per_connection = round(after.saturating_sub(before) as f64 / r.clients_connected.max(1) as f64, 2);
        let c0 = pool.sum("count").await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let c1 = pool.sum("count").await?;
        r.kpis_received_per_s_at_capacity = round((c1 - c0) as f64 / 5.0, 1);
        r.clients_answering_ping = pool.sum("ping").await?;
        eprintln!(
            "  {} connected in {:.1} s, {} answered a ping; RSS {:.0} → {:.0} MiB ({:.1} KiB per connection)",
            r.clients_connected,
            r.connect_s,
            r.clients_answering_ping,
            r.server_rss_before_mib,
            r.server_rss_after_mib,
            r.kib_per_connection
        );
        pool.quit().await;
        server.stop().await;
    }

    if args.fanout_clients > 0 {
        eprintln!(
            "fan-out: kpis at {} Hz to {} clients over {} load processes",
            args.fanout_hz, args.fanout_clients, r.fanout_workers
        );
        let interval = (1000 / args.fanout_hz.max(1)).max(1).to_string();
        let server = Server::start(&[("CARTPULSE_STREAM__KPIS_INTERVAL_MS", interval.as_str())]).await?;
        let mut pool = Workers::spawn(
            std::slice::from_ref(&server.base),
            &server.key,
            r.fanout_workers,
            args.fanout_clients,
            "kpis",
        )
        .await?;
        pool.ready().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let coalesced0 = server.metric("cartpulse_stream_messages_coalesced_total").await?;
        let c0 = pool.sum("count").await?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.fanout_seconds.max(1))).await;
        let c1 = pool.sum("count").await?;
        let secs = t0.elapsed().as_secs_f64();
        r.fanout_delivered_per_s = round((c1 - c0) as f64 / secs, 0);
        r.fanout_coalesced = server.metric("cartpulse_stream_messages_coalesced_total").await? - coalesced0;
        eprintln!(
            "  delivered {:.0} messages/s (offered {:.0}/s, {} coalesced)",
            r.fanout_delivered_per_s, r.fanout_offered_per_s, r.fanout_coalesced
        );
        pool.quit().await;
        server.stop().await;
    }

    if args.latency_clients > 0 && !args.skip_local_latency {
        eprintln!(
            "latency: {} events/s over {} watched customers, {} s",
            args.events_per_s, args.latency_clients, args.latency_seconds
        );
        let server = Server::start(&[]).await?;
        let measured =
            latency_phase(&args, std::slice::from_ref(&server.base), &server.key, r.latency_workers, &server).await;
        server.stop().await;
        r.latency = measured?;
    }

    if let (true, Some(redis_url)) = (args.latency_clients > 0 && args.gateways > 1, &args.redis_url) {
        r.gateways = Some(replicas_latency(&args, redis_url).await?);
    }
    Ok(r)
}

/// One latency phase: `latency_clients` clients spread over the `bases`,
/// each watching a customer; events produced to them at the target rate
/// through the same bases; `server` reports its ack → aggregator p99.
async fn latency_phase(
    args: &WsArgs,
    bases: &[String],
    key: &secrecy::SecretString,
    workers: usize,
    server: &Server,
) -> anyhow::Result<LatencyFigures> {
    let mut pool = Workers::spawn(bases, key, workers, args.latency_clients, "lb-").await?;
    pool.ready().await?;
    let (acks, elapsed) = produce(bases, key, args.latency_clients, args.events_per_s, args.latency_seconds).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = pool.records().await?;
    pool.quit().await;
    let (seen, lat, p99s) = latencies(&acks, records);
    let mut f = LatencyFigures {
        latency_clients: args.latency_clients,
        events_per_s_target: args.events_per_s,
        events_acked: acks.len() as u64,
        events_per_s_achieved: round(acks.len() as f64 / elapsed, 0),
        events_seen_by_clients: seen,
        p99_by_second_ms: p99s,
        server_latency_p99_ms: server.latency_p99_ms().await.ok().flatten(),
        ..Default::default()
    };
    if !lat.is_empty() {
        f.ack_to_receipt_p50_ms = round(quantile(&lat, 0.5) / 1000.0, 2);
        f.ack_to_receipt_p99_ms = round(quantile(&lat, 0.99) / 1000.0, 2);
        f.ack_to_receipt_max_ms = round(lat[lat.len() - 1] / 1000.0, 2);
    }
    eprintln!(
        "  {} events acked ({:.0}/s), {} seen by clients; ack → receipt p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        f.events_acked,
        f.events_per_s_achieved,
        f.events_seen_by_clients,
        f.ack_to_receipt_p50_ms,
        f.ack_to_receipt_p99_ms,
        f.ack_to_receipt_max_ms
    );
    Ok(f)
}

/// The latency phase across one processor and `--gateways` gateways.
async fn replicas_latency(args: &WsArgs, redis_url: &str) -> anyhow::Result<GatewaysLatency> {
    eprintln!(
        "latency across {} gateways via Redis: {} events/s over {} watched customers, {} s",
        args.gateways, args.events_per_s, args.latency_clients, args.latency_seconds
    );
    let replicas = Replicas::start(&ReplicaOptions {
        bench: "ws",
        gateways: args.gateways,
        processors: 1,
        partitions: args.partitions,
        redis_url: redis_url.to_owned(),
        pg_admin_url: args.pg_admin_url.clone(),
        leased: false,
        env: Vec::new(),
    })
    .await?;
    let res = async {
        let bases = replicas.gateway_bases();
        let latency = latency_phase(
            args,
            &bases,
            replicas.key(),
            args.workers_for(args.latency_clients),
            &replicas.processors[0],
        )
        .await?;
        Ok(GatewaysLatency { gateways: args.gateways, partitions: args.partitions, latency })
    }
    .await;
    replicas.stop().await;
    res
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Acknowledgement time (µs) of event n (1-based) of customer c.
type Acks = HashMap<(usize, u32), i64>;

/// For every acknowledged event, the first view of its customer covering it.
/// Also answers the p99 per second of acknowledgement time (ms), to tell a
/// steady tail from periodic stalls.
fn latencies(acks: &Acks, mut records: Vec<(usize, u32, i64)>) -> (u64, Vec<f64>, Vec<f64>) {
    records.sort_by_key(|&(c, n, t)| (c, t, n));
    let mut covered: HashMap<usize, u32> = HashMap::new();
    let mut out = Vec::new();
    let first_ack = acks.values().min().copied().unwrap_or(0);
    let mut by_second: Vec<Vec<f64>> = Vec::new();
    for (c, n, t) in records {
        let from = covered.get(&c).copied().unwrap_or(0);
        if n <= from {
            continue;
        }
        for k in from + 1..=n {
            if let Some(ack) = acks.get(&(c, k)) {
                // A view can beat the HTTP response to the client: clamp at 0.
                let lat = (t - ack).max(0) as f64;
                out.push(lat);
                let sec = ((ack - first_ack) / 1_000_000) as usize;
                if by_second.len() <= sec {
                    by_second.resize_with(sec + 1, Vec::new);
                }
                by_second[sec].push(lat);
            }
        }
        covered.insert(c, n);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    let p99s = by_second
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            if v.is_empty() {
                0.0
            } else {
                round(quantile(&v, 0.99) / 1000.0, 1)
            }
        })
        .collect();
    (out.len() as u64, out, p99s)
}

/// Posts `rate` page views per second for `seconds` in batches every 10 ms.
async fn produce(
    bases: &[String],
    key: &SecretString,
    customers: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<(Acks, f64)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let urls: Vec<String> = bases.iter().map(|b| format!("{b}/v1/events")).collect();
    let mut batch_no = 0usize;
    let acks: Arc<Mutex<Acks>> = Arc::default();
    let per_tick = (rate / 100).max(1) as usize;
    let base = chrono::Utc::now() - chrono::Duration::hours(2);
    let mut next_customer = 0usize;
    let mut counts = vec![0u32; customers];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let mut ids = Vec::with_capacity(per_tick);
        let mut body = String::with_capacity(per_tick * 200);
        body.push('[');
        for i in 0..per_tick {
            let c = next_customer;
            next_customer = (next_customer + 1) % customers;
            counts[c] += 1;
            let n = counts[c];
            ids.push((c, n));
            let time = (base + chrono::Duration::seconds(n as i64)).to_rfc3339();
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"type":"page_view","event_id":"lb-{c}-{n}","customer_id":"lb-{c}","session_id":"lb-{c}-s","time":"{time}","page_kind":"product","duration_s":5.0,"bounce_rate":0.01,"exit_rate":0.02,"page_value":0.0}}"#
            ));
        }
        body.push(']');
        let permit = limit.clone().acquire_owned().await?;
        let url = urls[batch_no % urls.len()].clone();
        batch_no += 1;
        let (client, key, acks) = (client.clone(), key.clone(), acks.clone());
        tasks.spawn(async move {
            let res = client
                .post(&url)
                .bearer_auth(key.expose_secret())
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await;
            let at = now_us();
            drop(permit);
            if let Ok(r) = res {
                if r.status().is_success() {
                    if let Ok(mut a) = acks.lock() {
                        for id in ids {
                            a.insert(id, at);
                        }
                    }
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let acks = Arc::try_unwrap(acks).map_err(|_| anyhow!("producer tasks still running"))?;
    Ok((acks.into_inner().map_err(|_| anyhow!("poisoned"))?, elapsed))
}

/// The load processes of one phase.
struct Workers {
    procs: Vec<(Child, ChildStdin, tokio::io::Lines<BufReader<ChildStdout>>)>,
}

impl Workers {
    /// `n` load processes, spread round-robin over the servers at `bases`.
    async fn spawn(
        bases: &[String],
        key: &SecretString,
        n: usize,
        clients: usize,
        topic: &str,
    ) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe()?;
        let mut procs = Vec::new();
        let mut first = 0;
        for w in 0..n {
            let share = clients / n + usize::from(w < clients % n);
            let url = format!("{}/v1/stream", bases[w % bases.len()].replacen("http://", "ws://", 1));
            let mut child = Command::new(&exe)
                .args(["bench", "ws-worker", "--url", &url, "--topic", topic])
                .args(["--clients", &share.to_string(), "--first", &first.to_string()])
                .env("CARTPULSE_BENCH_KEY", key.expose_secret())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            first += share;
            let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            procs.push((child, stdin, BufReader::new(stdout).lines()));
        }
        Ok(Workers { procs })
    }

    async fn line(lines: &mut tokio::io::Lines<BufReader<ChildStdout>>) -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .context("a load process stopped answering")??
            .ok_or_else(|| anyhow!("a load process exited"))
    }

    /// Waits until every worker has connected its clients; total connected.
    async fn ready(&mut self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (_, _, lines) in &mut self.procs {
            let l = Self::line(lines).await?;
            let n: u64 =
                l.strip_prefix("ready ").and_then(|v| v.parse().ok()).ok_or_else(|| anyhow!("bad line {l:?}"))?;
            total += n;
        }
        Ok(total)
    }

    /// Sends a command to every worker and sums their numeric answers.
    async fn sum(&mut self, cmd: &str) -> anyhow::Result<u64> {
        for (_, stdin, _) in &mut self.procs {
            stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        }
        let mut total = 0;
        for (_, _, lines) in &mut self.procs {
            let l = Self::line(lines).await?;
            total += l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(total)
    }

    /// Every (customer, n_events, receipt µs) the workers saw.
    async fn records(&mut self) -> anyhow::Result<Vec<(usize, u32, i64)>> {
        for (_, stdin, _) in &mut self.procs {
            stdin.write_all(b"records\n").await?;
        }
        let mut out = Vec::new();
        for (_, _, lines) in &mut self.procs {
            loop {
                let l = Self::line(lines).await?;
                if l == "end" {
                    break;
                }
                let mut it = l.split_whitespace().skip(1).map(|v| v.parse::<i64>());
                if let (Some(Ok(c)), Some(Ok(n)), Some(Ok(t))) = (it.next(), it.next(), it.next()) {
                    out.push((c as usize, n as u32, t));
                }
            }
        }
        Ok(out)
    }

    async fn quit(mut self) {
        for (_, stdin, _) in &mut self.procs {
            let _ = stdin.write_all(b"quit\n").await;
        }
        for (child, _, _) in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                let _ = child.start_kill();
            }
        }
    }
}

// ------------------------------------------------------------------ worker

/// What one load process has seen.
#[derive(Default)]
struct Seen {
    data: AtomicU64,
    pongs: AtomicU64,
    records: Mutex<Vec<(usize, u32, i64)>>,
}

/// `cartpulse bench ws-worker`: connects its clients, then answers the
/// bench's commands on stdin (`count`, `ping`, `records`, `quit`).
pub fn worker_cli(args: WorkerArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(worker(args))
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let key = std::env::var("CARTPULSE_BENCH_KEY").context("CARTPULSE_BENCH_KEY")?;
    let seen = Arc::new(Seen::default());
    let (ping_tx, ping_rx) = tokio::sync::watch::channel(0u32);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let connected = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::with_capacity(args.clients);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    for i in 0..args.clients {
        let topic =
            if args.topic == "kpis" { "kpis".to_owned() } else { format!("customer:{}{}", args.topic, args.first + i) };
        let index = args.first + i;
        let (url, key, seen, gate, ready_tx) =
            (args.url.clone(), key.clone(), seen.clone(), gate.clone(), ready_tx.clone());
        let (mut ping_rx, mut stop_rx, connected) = (ping_rx.clone(), stop_rx.clone(), connected.clone());
        handles.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let ws = connect_client(&url, &key, &topic).await;
            drop(permit);
            let Ok(mut ws) = ws else {
                let _ = ready_tx.send(false);
                return;
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let _ = ready_tx.send(true);
            let latency = topic.starts_with("customer:");
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if t.starts_with("{\"topic\":\"_") {
                                if t.contains("\"pong\"") {
                                    seen.pongs.fetch_add(1, Ordering::Relaxed);
                                }
                                continue;
                            }
                            seen.data.fetch_add(1, Ordering::Relaxed);
                            if latency {
                                let at = now_us();
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) {
                                    if let Some(n) = v["data"]["open_session"]["n_events"].as_u64() {
                                        if let Ok(mut r) = seen.records.lock() {
                                            r.push((index, n as u32, at));
                                        }
                                    }
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    Ok(()) = ping_rx.changed() => {
                        let _ = ws.send(Message::text(r#"{"type":"ping"}"#)).await;
                    }
                    _ = stop_rx.changed() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    let mut done = 0;
    while done < args.clients {
        match ready_rx.recv().await {
            Some(_) => done += 1,
            None => break,
        }
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {}\n", connected.load(Ordering::Relaxed)).as_bytes()).await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut generation = 0u32;
    while let Some(cmd) = lines.next_line().await? {
        match cmd.trim() {
            "count" => out.write_all(format!("count {}\n", seen.data.load(Ordering::Relaxed)).as_bytes()).await?,
            "ping" => {
                let before = seen.pongs.load(Ordering::Relaxed);
                generation += 1;
                let _ = ping_tx.send(generation);
                let want = connected.load(Ordering::Relaxed);
                let deadline = Instant::now() + Duration::from_secs(20);
                while seen.pongs.load(Ordering::Relaxed) - before < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                out.write_all(format!("pong {}\n", seen.pongs.load(Ordering::Relaxed) - before).as_bytes()).await?;
            }
            "records" => {
                let records = seen.records.lock().map(|r| r.clone()).unwrap_or_default();
                let mut buf = String::with_capacity(records.len() * 24);
                for (c, n, t) in records {
                    buf.push_str(&format!("r {c} {n} {t}\n"));
                }
                buf.push_str("end\n");
                out.write_all(buf.as_bytes()).await?;
            }
            "quit" => break,
            _ => {}
        }
        out.flush().await?;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(handles)).await;
    Ok(())
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_client(url: &str, key: &str, topic: &str) -> anyhow::Result<Client> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("Authorization", format!("Bearer {key}").parse()?);
    // Small buffers: thousands of clients per process.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let mut last = None;
    for attempt in 0..5u64 {
        match tokio_tungstenite::connect_async_with_config(req.clone(), Some(config), true).await {
            Ok((mut ws, _)) => {
                ws.send(Message::text(serde_json::json!({"type": "subscribe", "topics": [topic]}).to_string())).await?;
                // Wait for the confirmation so `ready` means subscribed.
                while let Some(m) = ws.next().await {
                    if let Message::Text(t) = m? {
                        if t.contains("\"subscribed\"") {
                            return Ok(ws);
                        }
                    }
                }
                bail!("closed before subscribing");
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    Err(anyhow!("connect failed: {:?}", last))
}
