//! The viewers of `bench roll`: WebSocket clients that check every topic's
//! seq goes up by one and come back with `since` after a close.

use super::Live;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What the viewers saw.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) subscribed: AtomicU64,
    pub(super) frames: AtomicU64,
    pub(super) missed: AtomicU64,
    pub(super) repeated: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) caught_up: AtomicU64,
    pub(super) closes: Mutex<BTreeMap<u16, u64>>,
    /// The newest seq of every topic once production is over.
    pub(super) targets: Mutex<Option<HashMap<String, u64>>>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(base: &str, key: &SecretString) -> anyhow::Result<Ws> {
    let mut req = format!("{}/v1/stream", base.replacen("http://", "ws://", 1)).into_client_request()?;
    req.headers_mut().insert("Authorization", format!("Bearer {}", key.expose_secret()).parse()?);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// One viewer: subscribes to `topics` on a live gateway and checks that
/// every topic's seq goes up by one; after a close it reconnects to a live
/// gateway with `since`. Customer topics are followed from their first
/// message (seq 1, before any event is produced); `kpis` from the first
/// message it gets.
pub(super) async fn viewer(
    topics: Vec<String>,
    live: Live,
    key: SecretString,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut last: HashMap<String, u64> =
        topics.iter().filter(|t| t.starts_with("customer:")).map(|t| (t.clone(), 0)).collect();
    let mut first = true;
    let mut caught_up = false;
    while !stop.load(Ordering::SeqCst) {
        // Any live gateway, as a load balancer spreads new connections.
        let Some(base) = live.pick(rand::rng().random_range(0..1024usize)) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut ws = match connect(&base, &key).await {
            Ok(ws) => ws,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let since: serde_json::Map<String, serde_json::Value> =
            last.iter().filter(|(_, s)| **s > 0).map(|(t, s)| (t.clone(), (*s).into())).collect();
        let sub = serde_json::json!({"type": "subscribe", "topics": topics, "since": since});
        if ws.send(Message::text(sub.to_string())).await.is_err() {
            continue;
        }
        if !first {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    if let Ok(mut c) = tally.closes.lock() {
                        *c.entry(code).or_default() += 1;
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                // Reset without a close frame.
                Some(Err(_)) | None => {
                    if let Ok(mut c) = tally.closes.lock() {
                        *c.entry(1006).or_default() += 1;
                    }
                    break;
                }
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let topic = v["topic"].as_str().unwrap_or_default();
            if topic == "_control" {
                match v["data"]["type"].as_str() {
                    Some("subscribed") if first => {
                        first = false;
                        tally.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("gap") => {
                        tally.gaps.fetch_add(1, Ordering::Relaxed);
                        eprintln!("  a viewer got a gap: {v}");
                    }
                    _ => {}
                }
                continue;
            }
            let Some(seq) = v["seq"].as_u64() else { continue };
            tally.frames.fetch_add(1, Ordering::Relaxed);
            match last.get(topic).copied() {
                None => {
                    last.insert(topic.to_owned(), seq);
                }
                Some(prev) if seq == prev + 1 => {
                    last.insert(topic.to_owned(), seq);
                }
                Some(prev) if seq <= prev => {
                    tally.repeated.fetch_add(1, Ordering::Relaxed);
                }
                Some(prev) => {
                    tally.missed.fetch_add(seq - prev - 1, Ordering::Relaxed);
                    last.insert(topic.to_owned(), seq);
                }
            }
            if !caught_up {
                let targets = tally.targets.lock().ok().and_then(|t| t.clone());
                if let Some(t) = targets {
                    if topics
                        .iter()
                        .all(|topic| last.get(topic).copied().unwrap_or(0) >= t.get(topic).copied().unwrap_or(0))
                    {
                        caught_up = true;
                        tally.caught_up.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    // Whatever a viewer never reached of its topics counts as missed.
    if !caught_up {
        if let Some(t) = tally.targets.lock().ok().and_then(|t| t.clone()) {
            for topic in &topics {
                let (have, want) = (last.get(topic).copied().unwrap_or(0), t.get(topic).copied().unwrap_or(0));
                tally.missed.fetch_add(want.saturating_sub(have), Ordering::Relaxed);
            }
        }
    }
}
