//! The producers of `bench roll`: open-loop lanes that resend on 503 and
//! refused connections to whichever gateway is live.

use super::{customer_id, Live, RollArgs};
use anyhow::anyhow;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the producers did.
pub(super) struct Produced {
    /// Acknowledged events: `event_id` → customer index.
    pub(super) acked: HashMap<String, usize>,
    pub(super) batches_acked: u64,
    pub(super) retried: u64,
    pub(super) failed: u64,
    /// (due time since the start, acknowledgement latency in ms) per batch.
    pub(super) latencies: Vec<(Duration, f64)>,
    pub(super) seconds: f64,
}

/// Producer lanes: each owns the customers `c ≡ lane (mod LANES)`, with one
/// batch in flight, so every customer's events arrive in order.
pub(super) const LANES: usize = 8;
/// Events per batch.
const BATCH: usize = 10;

pub(super) async fn produce(
    args: RollArgs,
    live: Live,
    key: SecretString,
    producing: Arc<AtomicBool>,
) -> anyhow::Result<Produced> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(16).build()?;
    let out = Arc::new(Mutex::new(Produced {
        acked: HashMap::new(),
        batches_acked: 0,
        retried: 0,
        failed: 0,
        latencies: Vec::new(),
        seconds: 0.0,
    }));
    let started = Instant::now();
    // Lane l's batches are due every `period`, lanes offset from each other.
    let period = Duration::from_secs_f64((LANES * BATCH) as f64 / args.rate.max(1) as f64);
    let customers = args.customers.max(LANES);
    let mut lanes = Vec::new();
    for lane in 0..LANES {
        let (client, live, key, producing, out) =
            (client.clone(), live.clone(), key.clone(), producing.clone(), out.clone());
        lanes.push(tokio::spawn(async move {
            let mine: Vec<usize> = (lane..customers).step_by(LANES).collect();
            let mut due = started + period.mul_f64(lane as f64 / LANES as f64);
            let mut n = 0usize;
            let mut tries = 0usize;
            while producing.load(Ordering::SeqCst) {
                tokio::time::sleep_until(due.into()).await;
                let mut ids = Vec::with_capacity(BATCH);
                let mut events = Vec::with_capacity(BATCH);
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                for _ in 0..BATCH {
                    let c = mine[n % mine.len()];
                    let id = format!("rr-{lane}-{n}");
                    events.push(serde_json::json!({
                        "type": "page_view", "event_id": id, "customer_id": customer_id(c),
                        "session_id": format!("{}-s", customer_id(c)), "time": now,
                        "page_kind": "product", "duration_s": 5.0, "bounce_rate": 0.01,
                        "exit_rate": 0.02, "page_value": 0.0,
                    }));
                    ids.push((id, c));
                    n += 1;
                }
                let body = serde_json::to_string(&events).unwrap_or_default();
                let (mut retried, mut failed, mut ok) = (0u64, 0u64, false);
                while due.elapsed() < Duration::from_secs(30) {
                    tries += 1;
                    let Some(base) = live.pick(tries) else {
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let sent = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(key.expose_secret())
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            ok = true;
                            break;
                        }
                        Ok(r) if r.status() == 503 => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(_) => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(r) => {
                            let status = r.status();
                            let text = r.text().await.unwrap_or_default();
                            eprintln!("  {base} answered {status} to a batch (not resent): {text:.300}");
                            failed += 1;
                            break;
                        }
                    }
                }
                let latency_ms = due.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut o) = out.lock() {
                    o.retried += retried;
                    if ok {
                        o.batches_acked += 1;
                        o.acked.extend(ids);
                        o.latencies.push((due - started, latency_ms));
                    } else {
                        o.failed += failed.max(1);
                    }
                }
                // Behind schedule, the next batch goes at once; its latency
                // still counts from its due time (no coordinated omission).
                due += period;
            }
        }));
    }
    for l in lanes {
        l.await.map_err(|e| anyhow!("producer lane: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut out = Arc::try_unwrap(out)
        .map_err(|_| anyhow!("producer lanes still running"))?
        .into_inner()
        .map_err(|_| anyhow!("poisoned"))?;
    out.seconds = seconds;
    Ok(out)
}
