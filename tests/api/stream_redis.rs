//! The live stream across replicas through Redis (docs/stream.md, "Many
//! replicas"), black box: real servers in this process over the real Redis
//! on 127.0.0.1:6379 (a fresh key prefix per test), or over a private
//! `redis-server` this test starts, kills and restarts. Clients of a role
//! `all` app receive through Redis with gap-free seqs; a restarted app
//! recovers `since` from the Redis history (or says `too_old`); a gateway
//! without actors sees the same frames as the app that publishes; one
//! sharded subscription per topic whatever the number of clients; clients
//! keep their connection through a Redis outage and miss nothing when the
//! data survived it.

use crate::helpers::*;
use cartpulse::config::{Role, Settings};
use futures::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const REDIS: &str = "redis://127.0.0.1:6379";

fn prefix() -> String {
    format!("cp_t_{}", hex::encode(rand::random::<[u8; 5]>()))
}

fn with_redis(s: &mut Settings, url: &str, prefix: &str) {
    s.redis_url = Some(SecretString::from(url.to_owned()));
    s.redis.prefix = prefix.to_owned();
}

async fn connect(app: &TestApp) -> Ws {
    let url = format!("{}/v1/stream", app.address.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {}", app.read_key).parse().unwrap());
    tokio_tungstenite::connect_async(req).await.expect("connect").0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON message satisfying `pred` (others are skipped).
async fn until(ws: &mut Ws, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("no matching message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON frame");
                crate::contract::check_frame(&v);
                if pred(&v) {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended while waiting: {other:?}"),
        }
    }
}

fn control(v: &Value, kind: &str) -> bool {
    v["topic"] == "_control" && v["data"]["type"] == kind
}

async fn subscribe(ws: &mut Ws, topics: &[&str], since: Value) {
    send(ws, json!({"type": "subscribe", "topics": topics, "since": since})).await;
    until(ws, Duration::from_secs(5), |v| control(v, "subscribed")).await;
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.expect("test Redis connection")
}

/// Subscribers of each sharded channel (`PUBSUB SHARDNUMSUB`).
async fn shard_subscribers(url: &str, channels: &[String]) -> Vec<u64> {
    let mut c = redis_conn(url).await;
    let reply: Vec<redis::Value> =
        redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channels).query_async(&mut c).await.unwrap();
    reply.chunks(2).map(|p| redis::from_redis_value_ref::<u64>(&p[1]).unwrap()).collect()
}

fn channel(prefix: &str, topic: &str) -> String {
    format!("{prefix}:{{{topic}}}:ch")
}

/// Removes a test's keys (best effort).
async fn cleanup(url: &str, prefix: &str) {
    let mut c = redis_conn(url).await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut c).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
    }
}

async fn post_view_event(app: &TestApp, id: &str, customer: &str) {
    let evs = json!([page_view(id, customer, &format!("{customer}-s"), &now_rfc3339(), "product")]);
    let (status, body) = app.post_events(&evs).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn role_all_with_redis_delivers_kpis_and_customer_views_through_redis() {
    let p = prefix();
    let app = spawn_app_with(Db::Sqlite, |s| with_redis(s, REDIS, &p)).await;
    let mut ws = connect(&app).await;
    subscribe(&mut ws, &["kpis", "customer:ra-1"], json!({})).await;

    // Views of the followed customer, numbered in Redis from 1.
    for i in 1..=3u64 {
        post_view_event(&app, &format!("ra-{i}"), "ra-1").await;
        let v = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "customer:ra-1").await;
        assert_eq!(v["seq"], i, "{v}");
        assert_eq!(v["data"]["type"], "view");
        assert_eq!(v["data"]["open_session"]["n_events"], i, "{v}");
    }
    // kpis: gap-free across several ticks.
    let mut last = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await["seq"].as_u64().unwrap();
    for _ in 0..3 {
        let seq = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "kpis seq must be gap-free");
        last = seq;
    }
    // It went through Redis: the seq is Redis's, the history holds the
    // frames, and this app holds one sharded subscription per topic.
    let mut c = redis_conn(REDIS).await;
    let head: u64 = redis::cmd("GET").arg(format!("{p}:{{kpis}}:seq")).query_async(&mut c).await.unwrap();
    assert!(head >= last, "Redis head {head} < seen {last}");
    let n: u64 = redis::cmd("XLEN").arg(format!("{p}:{{customer:ra-1}}:hist")).query_async(&mut c).await.unwrap();
    assert_eq!(n, 3);
    assert_eq!(shard_subscribers(REDIS, &[channel(&p, "kpis"), channel(&p, "customer:ra-1")]).await, vec![1, 1]);
    assert!(app.metric("cartpulse_stream_redis_published_total").await >= 4.0);
    ws.close(None).await.ok();
    cleanup(REDIS, &p).await;
}

#[actix_web::test]
async fn a_restarted_app_recovers_since_from_the_redis_history_or_says_too_old() {
    let p = prefix();
    let adjust = |s: &mut Settings| {
        with_redis(s, REDIS, &p);
        s.stream.customer_history_messages = 4;
    };
    let mut app = spawn_app_with(Db::Sqlite, adjust).await;
    let mut ws = connect(&app).await;
    subscribe(&mut ws, &["customer:rr-1"], json!({})).await;
    for i in 1..=2u64 {
        post_view_event(&app, &format!("rr-{i}"), "rr-1").await;
        let v = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "customer:rr-1").await;
        assert_eq!(v["seq"], i);
    }
    ws.close(None).await.ok();
    drop(ws);
    // Missed while away (the topic lingers, still watched): seq 3 and 4.
    // One view per change of the customer: events committed together make
    // one view, so the second is posted once the first is published.
    let c = tokio::sync::Mutex::new(redis_conn(REDIS).await);
    let seq_key = format!("{p}:{{customer:rr-1}}:seq");
    for (event, seq) in [("rr-3", 3), ("rr-4", 4)] {
        post_view_event(&app, event, "rr-1").await;
        eventually(&format!("seq {seq} is published"), Duration::from_secs(10), || async {
            match redis::cmd("GET").arg(&seq_key).query_async::<Option<u64>>(&mut *c.lock().await).await.unwrap() {
                Some(s) if s == seq => Ok(()),
                other => Err(format!("seq {other:?}")),
            }
        })
        .await;
    }

    // A fresh process: its local history is empty; Redis has it.
    app.stop().await;
    let mut settings = test_settings(&app.database_url);
    adjust(&mut settings);
    let app = start(settings, app.dir.clone(), Some(&app)).await;
    let mut ws = connect(&app).await;
    subscribe(&mut ws, &["customer:rr-1"], json!({"customer:rr-1": 2})).await;
    for expected in [3u64, 4] {
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:rr-1").await;
        assert_eq!(v["seq"], expected, "{v}");
        assert_eq!(v["data"]["open_session"]["n_events"], expected, "{v}");
    }
    // Then live, with no duplicate and no hole.
    post_view_event(&app, "rr-5", "rr-1").await;
    let v = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "customer:rr-1").await;
    assert_eq!(v["seq"], 5, "{v}");
    assert!(app.metric("cartpulse_stream_redis_replayed_total").await >= 2.0);

    // The Redis history keeps 4 (2..=5): since 0 is too old.
    let mut other = connect(&app).await;
    send(&mut other, json!({"type": "subscribe", "topics": ["customer:rr-1"], "since": {"customer:rr-1": 0}})).await;
    let gap = until(&mut other, Duration::from_secs(5), |v| control(v, "gap")).await;
    assert_eq!(gap["data"]["reason"], "too_old");
    assert_eq!(gap["data"]["oldest"], 2, "{gap}");
    assert_eq!(gap["data"]["last"], 5, "{gap}");
    // Live after the gap.
    post_view_event(&app, "rr-6", "rr-1").await;
    let v = until(&mut other, Duration::from_secs(10), |v| v["topic"] == "customer:rr-1").await;
    assert_eq!(v["seq"], 6);
    let v = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "customer:rr-1").await;
    assert_eq!(v["seq"], 6);
    ws.close(None).await.ok();
    other.close(None).await.ok();
    cleanup(REDIS, &p).await;
}

#[actix_web::test]
async fn a_gateway_without_actors_sees_the_same_frames_as_the_publishing_app() {
    let p = prefix();
    let all = spawn_app_with(Db::Postgres, |s| with_redis(s, REDIS, &p)).await;
    let mut settings = test_settings(&all.database_url);
    with_redis(&mut settings, REDIS, &p);
    settings.role = Role::Gateway;
    let gateway = start(settings, all.dir.clone(), Some(&all)).await;

    let mut a = connect(&all).await;
    let mut g = connect(&gateway).await;
    subscribe(&mut a, &["kpis", "customer:rg-1"], json!({})).await;
    subscribe(&mut g, &["kpis", "customer:rg-1"], json!({})).await;
    // An event through the gateway, a view on both.
    post_view_event(&gateway, "rg-1", "rg-1").await;
    let mut frames: [BTreeMap<(String, u64), String>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for (i, ws) in [&mut a, &mut g].into_iter().enumerate() {
            if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                let v: Value = serde_json::from_str(&t).unwrap();
                if let (Some(topic), Some(seq)) = (v["topic"].as_str(), v["seq"].as_u64()) {
                    if seq > 0 {
                        frames[i].insert((topic.to_owned(), seq), t.to_string());
                    }
                }
            }
        }
    }
    let common: Vec<_> = frames[0].keys().filter(|k| frames[1].contains_key(*k)).cloned().collect();
    assert!(common.iter().filter(|(t, _)| t == "kpis").count() >= 2, "{frames:?}");
    assert!(common.contains(&("customer:rg-1".to_owned(), 1)), "{frames:?}");
    for k in &common {
        assert_eq!(frames[0][k], frames[1][k], "the same frame, byte for byte");
    }
    // Each app holds its own one subscription per topic.
    assert_eq!(shard_subscribers(REDIS, &[channel(&p, "kpis")]).await, vec![2]);
    // The gateway publishes nothing (no aggregator, no actors).
    assert_eq!(gateway.metric("cartpulse_stream_redis_published_total").await, 0.0);
    a.close(None).await.ok();
    g.close(None).await.ok();
    cleanup(REDIS, &p).await;
}

#[actix_web::test]
async fn one_sharded_subscription_per_topic_whatever_the_number_of_clients() {
    let p = prefix();
    let app = spawn_app_with(Db::Sqlite, |s| {
        with_redis(s, REDIS, &p);
        s.stream.customer_linger_s = std::time::Duration::from_secs(1);
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut ws = connect(&app).await;
        subscribe(&mut ws, &["kpis", "scores", "customer:rs-1"], json!({})).await;
        clients.push(ws);
    }
    let chans = [channel(&p, "kpis"), channel(&p, "scores"), channel(&p, "customer:rs-1")];
    assert_eq!(shard_subscribers(REDIS, &chans).await, vec![1, 1, 1]);
    // Every client gets the customer's view from that one subscription.
    post_view_event(&app, "rs-1", "rs-1").await;
    for ws in clients.iter_mut() {
        let v = until(ws, Duration::from_secs(10), |v| v["topic"] == "customer:rs-1").await;
        assert_eq!(v["seq"], 1);
    }
    for mut ws in clients.drain(..) {
        ws.close(None).await.ok();
    }
    // The last client gone and the linger over, the customer channel goes;
    // kpis and scores stay.
    eventually("the customer channel is unsubscribed", Duration::from_secs(15), || async {
        match shard_subscribers(REDIS, &chans).await {
            n if n == vec![1, 1, 0] => Ok(()),
            n => Err(format!("subscribers {n:?}")),
        }
    })
    .await;
    cleanup(REDIS, &p).await;
}

/// A private Redis on a free port, killed with the test.
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        PrivateRedis { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut c) = c.get_multiplexed_async_connection().await {
                    if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "private redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[actix_web::test]
async fn clients_stay_through_a_redis_outage_and_miss_nothing_that_survived_it() {
    let mut redis = PrivateRedis::start(free_port());
    redis.ready().await;
    let url = redis.url();
    let app = spawn_app_with(Db::Sqlite, |s| with_redis(s, &url, "cp_private")).await;
    let mut ws = connect(&app).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;
    let mut seen: Vec<u64> = Vec::new();
    seen.push(until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await["seq"].as_u64().unwrap());

    // 1. The subscriber connection drops, the data stays: nothing missed,
    //    the seqs published meanwhile come from the history, in order.
    //    (Its connection killed and SSUBSCRIBE refused for 2.5 s, so that
    //    it is away at two kpis ticks at least and their frames must come
    //    from the history.)
    let mut c = redis_conn(&url).await;
    let acl = |rule: &'static str| redis::cmd("ACL").arg("SETUSER").arg("default").arg(rule).clone();
    let _: () = acl("-ssubscribe").query_async(&mut c).await.unwrap();
    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _: () = acl("+ssubscribe").query_async(&mut c).await.unwrap();
    let target = seen[0] + 6;
    while *seen.last().unwrap() < target {
        let v = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "kpis").await;
        seen.push(v["seq"].as_u64().unwrap());
    }
    for w in seen.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap-free across the subscriber's reconnection: {seen:?}");
    }
    assert!(app.metric("cartpulse_stream_redis_reconnects_total{conn=\"subscriber\"}").await >= 1.0);
    assert!(app.metric("cartpulse_stream_redis_gap_filled_total").await >= 1.0, "no frame came from the history");

    // 2. Redis itself goes away: the client stays connected (and answered).
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    send(&mut ws, json!({"type": "ping"})).await;
    until(&mut ws, Duration::from_secs(5), |v| control(v, "pong")).await;
    // It comes back empty (no persistence): the numbering starts again and
    // the client follows it without reconnecting.
    let _redis = PrivateRedis::start(redis.port);
    _redis.ready().await;
    // How far the new numbering got before the subscriber is back depends on
    // both sides' backoff (and the machine's load): what matters is that the
    // frames resume, consecutive, and are the new Redis's own, i.e. its
    // history holds the very frame under the same seq.
    let v = until(&mut ws, Duration::from_secs(30), |v| v["topic"] == "kpis").await;
    let next = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    assert_eq!(next["seq"].as_u64(), v["seq"].as_u64().map(|s| s + 1));
    let seq = next["seq"].as_u64().unwrap();
    let mut c = redis_conn(&url).await;
    let stored: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("cp_private:{kpis}:hist")
        .arg(format!("{seq}-0"))
        .arg(format!("{seq}-0"))
        .query_async(&mut c)
        .await
        .unwrap();
    let frame: Value = serde_json::from_str(&stored.first().expect("the new Redis keeps the frame").1[0].1).unwrap();
    assert_eq!(frame, next, "the client follows the restarted Redis's numbering");
    let text = app.metrics_text().await;
    assert!(metric_value(&text, "cartpulse_stream_redis_outages_total{conn=\"subscriber\"}") >= 1.0, "{text}");
    ws.close(None).await.ok();
}
