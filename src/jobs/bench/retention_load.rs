//! The live load of `bench retention`: page views of fresh customers sent
//! open-loop at a fixed rate (a request every `batch / rate` seconds, late
//! ones sent at once rather than skipped), each request's acknowledgement
//! time recorded with the moment it was sent.

use super::servers::Server;
use secrecy::ExposeSecret;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Acknowledged requests as (sent at, since the start; milliseconds to the
/// acknowledgement), and the requests that failed.
#[derive(Default)]
pub struct Samples {
    pub ok: Vec<(Duration, f64)>,
    pub failed: u64,
}

pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    samples: Arc<Mutex<Samples>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Requests in flight at most (a slow server makes the load wait, not pile up).
const IN_FLIGHT: usize = 64;

impl Load {
    pub fn start(server: &Server, rate: u64, batch: u64) -> Load {
        let (stop, watch) = tokio::sync::watch::channel(false);
        let samples = Arc::new(Mutex::new(Samples::default()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client");
        let url = format!("{}/v1/events", server.base);
        let key = server.key.expose_secret().to_owned();
        let every = Duration::from_secs_f64(batch as f64 / rate as f64);
        let nonce = format!("{:08x}", rand::random::<u32>());
        let began = Instant::now();
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let s = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wait_stop(watch.clone()) => break,
                }
                let body = batch_body(&nonce, n, batch);
                n += 1;
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let (client, url, key, s) = (client.clone(), url.clone(), key.clone(), s.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let ok = matches!(&r, Ok(r) if r.status().is_success());
                    let ms = sent.elapsed().as_secs_f64() * 1e3;
                    let mut s = s.lock().expect("samples");
                    if ok {
                        s.ok.push((sent - began, ms));
                    } else {
                        s.failed += 1;
                    }
                    drop(permit);
                });
            }
            let _ = slots.acquire_many(IN_FLIGHT as u32).await;
        });
        Load { stop, samples, tasks: vec![task] }
    }

    /// Stops sending, waits for the requests in flight, answers the samples.
    pub async fn stop(self) -> Samples {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

async fn wait_stop(mut watch: tokio::sync::watch::Receiver<bool>) {
    while !*watch.borrow() {
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Request `n`'s events: page views of a few customers of this run, stamped now.
fn batch_body(nonce: &str, n: u64, batch: u64) -> String {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events: Vec<serde_json::Value> = (0..batch)
        .map(|i| {
            let c = (n * batch + i) % 5_000;
            serde_json::json!({
                "type": "page_view", "event_id": format!("live-{nonce}-{n}-{i}"),
                "customer_id": format!("live-{nonce}-c{c}"), "session_id": format!("live-{nonce}-s{c}"),
                "time": time, "page_kind": "product", "duration_s": 12.0, "bounce_rate": 0.02,
                "exit_rate": 0.04, "page_value": 0.0, "special_day": 0.0, "os": 2, "browser": 2, "region": 1,
                "traffic_type": 2, "visitor_type": "returning"
            })
        })
        .collect();
    serde_json::Value::Array(events).to_string()
}

/// The `p` quantile (0..=1) of `v` by rank; 0 for no samples.
pub fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantile_by_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&v, 0.99), 99.0);
        assert_eq!(super::quantile(&v, 0.5), 50.0);
        assert_eq!(super::quantile(&v, 1.0), 100.0);
        assert_eq!(super::quantile(&[], 0.99), 0.0);
    }
}
