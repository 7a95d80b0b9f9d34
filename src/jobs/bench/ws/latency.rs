//! The latency phase of `bench ws`: events produced to watched customers at
//! a target rate, each view matched to the acknowledgements it covers.

use super::workers::Workers;
use super::{now_us, GatewaysLatency, LatencyFigures, WsArgs};
use crate::jobs::bench::servers::{round, ReplicaOptions, Replicas, Server};
use anyhow::anyhow;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One latency phase: `latency_clients` clients spread over the `bases`,
/// each watching a customer; events produced to them at the target rate
/// through the same bases; `server` reports its ack → aggregator p99.
pub(super) async fn latency_phase(
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
pub(super) async fn replicas_latency(args: &WsArgs, redis_url: &str) -> anyhow::Result<GatewaysLatency> {
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
