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
//!
//! Files: this one (flags, report, the phases), [`latency`] (the latency
//! phase: producer, acknowledgement → view matching), [`workers`] (the load
//! processes and the bench's handle on them).

mod latency;
mod workers;

use latency::{latency_phase, replicas_latency};
pub use workers::worker_cli;
use workers::Workers;

use super::servers::{round, Server};
use anyhow::bail;
use clap::Args;
use serde::Serialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
