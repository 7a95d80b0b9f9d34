//! Many replicas, each the real binary in its own process, over the real
//! Redis on 127.0.0.1:6379 (a fresh key prefix per test) and a fresh
//! Postgres database: two gateways and a processor serve one stream; a
//! client whose gateway dies recovers on the other; a processor killed in
//! the middle of a replay loses no acknowledged event and counts none twice.
//!
//! Each of those runs twice: on the single Redis node and on the local Redis
//! Cluster (3 primaries, 3 replicas; `CARTPULSE_TEST_REDIS_CLUSTER_URL`,
//! started by `scripts/test.sh`).

use crate::crash::{batch, expected_events, free_port, BIN};
use crate::helpers::eventually;
use crate::helpers::*;
use crate::stream::{control, until, Ws};
use cartpulse::jobs::bench::serve_process::{create_key, ServeCommand, ServeProcess};
use futures::SinkExt;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const REDIS: &str = "redis://127.0.0.1:6379";

/// Which Redis a deployment runs on.
#[derive(Clone, Copy, Debug)]
pub enum Redis {
    Single,
    Cluster,
}

impl Redis {
    pub fn url(self) -> String {
        match self {
            Redis::Single => REDIS.to_owned(),
            Redis::Cluster => cluster_url(),
        }
    }
}

/// The local Redis Cluster; a clear failure (never a skip) when it is not up.
pub fn cluster_url() -> String {
    let url = std::env::var("CARTPULSE_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| "redis://127.0.0.1:7000".to_owned());
    let client = redis::Client::open(url.as_str()).expect("CARTPULSE_TEST_REDIS_CLUSTER_URL");
    let info: Result<String, _> =
        client.get_connection().and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c));
    match info {
        Ok(i) if i.contains("cluster_state:ok") => url,
        other => panic!(
            "no healthy Redis Cluster at {url} ({other:?}); start one with \
             `source scripts/services.sh; ensure_redis_cluster` (scripts/test.sh does)"
        ),
    }
}

/// `#[test]`s of a scenario `async fn name(d: Deployment)` on both kinds of Redis.
macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::*;
            #[actix_web::test]
            async fn single_node() {
                super::$name(Deployment::new(Redis::Single).await).await
            }
            #[actix_web::test]
            async fn cluster() {
                super::$name(Deployment::new(Redis::Cluster).await).await
            }
        }
    )+};
}

on_both!(
    two_gateways_and_a_processor_serve_one_stream,
    a_client_of_a_dead_gateway_recovers_what_it_missed_on_the_other,
    a_processor_killed_mid_replay_loses_nothing_and_counts_nothing_twice,
    a_poison_entry_goes_to_the_dead_letter_stream_and_the_rest_flows,
    two_processors_owning_half_the_partitions_each_publish_one_rollup,
    consumed_entries_are_trimmed_from_the_streams,
);

/// The processor trims what the group is done with (one script per stream:
/// the bound and the trim on the same node at once), and nothing it has not
/// committed: every customer is there after the trim.
async fn consumed_entries_are_trimmed_from_the_streams(d: Deployment) {
    let processor = d.start("processor", None).await;
    let gateway = d.start("gateway", None).await;
    let n = 300;
    for i in 0..n {
        let (status, body) = d.post(&gateway, &batch(i)).await;
        assert_eq!(status, 200, "{body}");
    }
    let sent: usize = (0..n).map(expected_events).sum();
    d.drained(&gateway).await;
    let keys: Vec<String> = (0..8)
        .map(|p| format!("{}:events:{{{}}}", d.prefix, cartpulse::serving::ingest::streams::partition_tag(p, 8)))
        .collect();
    // Trimming runs every 5 s and drops whole stream nodes (`~`).
    eventually("the streams are trimmed", Duration::from_secs(30), || {
        let (keys, d) = (&keys, &d);
        async move {
            let mut conn = d.redis_conn().await;
            let mut left = 0usize;
            for k in keys {
                let len: usize = redis::cmd("XLEN").arg(k).query_async(&mut conn).await.map_err(|e| e.to_string())?;
                left += len;
            }
            if left < sent / 2 {
                Ok(())
            } else {
                Err(format!("{left} of {sent} entries left"))
            }
        }
    })
    .await;
    for i in (0..n).step_by(7) {
        let (status, c) = d.get(&processor, &format!("/v1/customers/k{i}")).await;
        assert_eq!(status, 200, "k{i}: {c}");
    }
    assert_eq!(d.logged_events().await, sent);
}

/// A deployment under test: one database, one Redis prefix, an admin key.
pub struct Deployment {
    redis: String,
    pub db_url: String,
    pub prefix: String,
    pub key: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A test's own Redis connection, either kind.
pub enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// One replica: its process and its base URL.
pub struct Replica {
    server: ServeProcess,
    port: u16,
}

impl Replica {
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// SIGTERM, then waits for the graceful stop to finish.
    pub async fn terminate(&mut self) {
        let status = self.server.terminate(Duration::from_secs(60)).await.expect("SIGTERM");
        assert!(status.success(), "the graceful stop failed: {status}");
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`) to the process.
    pub fn signal(&self, signal: i32) {
        self.server.signal(signal).expect("kill");
    }
}

impl Deployment {
    pub async fn new(redis: Redis) -> Deployment {
        Deployment::with_redis_url(redis.url()).await
    }

    /// A deployment on the Redis at `redis`.
    pub async fn with_redis_url(redis: String) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let db_url = fresh_database(Db::Postgres, dir.path()).await;
        let key = create_key(BIN, &db_url, "roles", "admin").expect("keys create");
        let prefix = format!("cp_t_{}", hex::encode(rand::random::<[u8; 5]>()));
        Deployment { redis, db_url, prefix, key, client: reqwest::Client::new(), _dir: dir }
    }

    /// Starts `cartpulse serve --role ROLE` on `port` (a free one if None) and waits until it is ready.
    pub async fn start(&self, role: &str, port: Option<u16>) -> Replica {
        self.start_owning(role, port, None).await
    }

    /// The same, for a processor owning only the partitions `owns` (`a-b`).
    async fn start_owning(&self, role: &str, port: Option<u16>, owns: Option<&str>) -> Replica {
        self.start_with(role, port, owns, 8, &[]).await
    }

    /// The general case: `partitions` partitions, and extra environment.
    pub async fn start_with(
        &self,
        role: &str,
        port: Option<u16>,
        owns: Option<&str>,
        partitions: usize,
        env: &[(&str, &str)],
    ) -> Replica {
        self.start_logged(role, port, owns, partitions, env, None).await
    }

    /// [`Self::start_with`], the replica's log (stderr) written to `log`.
    pub async fn start_logged(
        &self,
        role: &str,
        port: Option<u16>,
        owns: Option<&str>,
        partitions: usize,
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Replica {
        let owns: Vec<&str> = owns.map(|o| vec!["--owns", o]).unwrap_or_default();
        let mut cmd = ServeCommand::new(BIN).unwrap();
        if let Some(port) = port {
            cmd = cmd.port(port);
        }
        if let Some(log) = log {
            cmd = cmd.log_to(log);
        }
        let server = cmd
            .args(["--role", role, "--database-url", &self.db_url, "--redis-url", &self.redis])
            .args(["--partitions", &partitions.to_string()])
            .args(&owns)
            .envs(env.iter().copied())
            .env("CARTPULSE_REDIS__PREFIX", &self.prefix)
            .env("CARTPULSE_STREAM__TOKEN_SECRET", "roles-test-stream-token-secret-0123456789")
            .env("CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS", "200")
            // Stale entries of a killed processor are reclaimed quickly.
            .env("CARTPULSE_REDIS__CLAIM_IDLE_MS", "1000")
            .start(Duration::from_secs(30))
            .await
            .expect("cartpulse serve");
        Replica { port: server.port, server }
    }

    /// Events in the deployment's log.
    pub async fn logged_events(&self) -> usize {
        let settings = test_settings(&self.db_url);
        let db = cartpulse::db::connect(&settings).await.unwrap();
        use sea_orm::{EntityTrait, PaginatorTrait};
        entities::event::Entity::find().count(&db).await.unwrap() as usize
    }

    /// Events of `customer` in the deployment's log.
    pub async fn logged_events_of(&self, customer: &str) -> usize {
        let settings = test_settings(&self.db_url);
        let db = cartpulse::db::connect(&settings).await.unwrap();
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        entities::event::Entity::find()
            .filter(entities::event::Column::CustomerId.eq(customer))
            .count(&db)
            .await
            .unwrap() as usize
    }

    /// A connection to the deployment's Redis (routed by slot on a cluster).
    pub async fn redis_conn(&self) -> RedisConn {
        if self.redis == REDIS {
            RedisConn::Single(redis::Client::open(REDIS).unwrap().get_multiplexed_async_connection().await.unwrap())
        } else {
            let client = redis::cluster::ClusterClient::new(vec![self.redis.as_str()]).unwrap();
            RedisConn::Cluster(client.get_async_connection().await.unwrap())
        }
    }

    async fn post(&self, r: &Replica, events: &Value) -> (u16, Value) {
        match self.client.post(format!("{}/v1/events", r.base())).bearer_auth(&self.key).json(events).send().await {
            Ok(resp) => json_of(checked("POST", "/v1/events", resp).await),
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn get(&self, r: &Replica, path: &str) -> (u16, Value) {
        let resp = self.client.get(format!("{}{path}", r.base())).bearer_auth(&self.key).send().await.unwrap();
        json_of(checked("GET", path, resp).await)
    }

    /// Waits until the gateways report no event left in the streams.
    pub async fn drained(&self, gateway: &Replica) {
        // The backlog is read every 500 ms: it must stay 0 over more than one reading.
        let empty_since = std::cell::Cell::new(None::<Instant>);
        eventually("the processors drain the streams", Duration::from_secs(60), || async {
            let (_, ready) = self.get(gateway, "/readyz").await;
            if ready["stream_backlog_events"] != 0 {
                empty_since.set(None);
                return Err(ready.to_string());
            }
            let since = empty_since.get().unwrap_or_else(Instant::now);
            empty_since.set(Some(since));
            if since.elapsed() >= Duration::from_millis(700) {
                Ok(())
            } else {
                Err("backlog 0, waiting for a second reading".into())
            }
        })
        .await
    }

    pub async fn ws(&self, r: &Replica) -> Ws {
        let mut req = format!("ws://127.0.0.1:{}/v1/stream", r.port).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {}", self.key).parse().unwrap());
        tokio_tungstenite::connect_async(req).await.expect("WebSocket connect").0
    }
}

pub async fn subscribe(ws: &mut Ws, topics: &[&str], since: Value) {
    ws.send(Message::text(json!({"type": "subscribe", "topics": topics, "since": since}).to_string())).await.unwrap();
    until(ws, Duration::from_secs(5), |v| control(v, "subscribed")).await;
}

/// A purchase of `value` × 2 by a new customer, now.
fn order(id: &str, value: f64) -> Value {
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (c, s) = (format!("{id}-c"), format!("{id}-s"));
    json!([
        page_view(&format!("{id}-p"), &c, &s, &t, "product"),
        purchase(&format!("{id}-buy"), &c, Some(&s), &t, &format!("{id}-o"), 2, value),
    ])
}

/// The kpis messages a client sees until one shows `orders` orders in the last minute.
async fn kpis_until_orders(ws: &mut Ws, orders: f64) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = until(ws, left, |v| v["topic"] == "kpis").await;
        let done = v["data"]["orders_per_min"].as_f64() == Some(orders);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

async fn two_gateways_and_a_processor_serve_one_stream(d: Deployment) {
    let _processor = d.start("processor", None).await;
    let (a, b) = (d.start("gateway", None).await, d.start("gateway", None).await);
    let (mut wa, mut wb) = (d.ws(&a).await, d.ws(&b).await);
    subscribe(&mut wa, &["kpis"], json!({})).await;
    subscribe(&mut wb, &["kpis"], json!({})).await;

    // Ingest through gateway A only.
    let (status, body) = d.post(&a, &order("two", 7.5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    let seen_a = kpis_until_orders(&mut wa, 1.0).await;
    let seen_b = kpis_until_orders(&mut wb, 1.0).await;
    let (last_a, last_b) = (seen_a.last().unwrap(), seen_b.last().unwrap());
    assert_eq!(last_a["data"]["revenue_per_min"], 15.0, "{last_a}");
    // The same message, numbered once for everyone: same seq, same data.
    let by_seq = |seen: &[Value], seq: &Value| seen.iter().find(|v| &v["seq"] == seq).cloned();
    let later = if last_a["seq"].as_u64() >= last_b["seq"].as_u64() { last_a } else { last_b };
    let twin_a = match by_seq(&seen_a, &later["seq"]) {
        Some(v) => v,
        None => until(&mut wa, Duration::from_secs(5), |v| v["seq"] == later["seq"]).await,
    };
    let twin_b = match by_seq(&seen_b, &later["seq"]) {
        Some(v) => v,
        None => until(&mut wb, Duration::from_secs(5), |v| v["seq"] == later["seq"]).await,
    };
    assert_eq!(twin_a, twin_b, "the two gateways delivered different messages under one seq");
    for seen in [&seen_a, &seen_b] {
        for w in seen.windows(2) {
            assert_eq!(w[1]["seq"].as_u64().unwrap(), w[0]["seq"].as_u64().unwrap() + 1, "kpis seq must be gap-free");
        }
    }

    // Gateway B reads the customer the processor built (from its snapshot).
    d.drained(&b).await;
    eventually("gateway B sees the customer", Duration::from_secs(10), || async {
        let (s, c) = d.get(&b, "/v1/customers/two-c").await;
        let sessions = c["recent_sessions"].as_array().is_some_and(|r| !r.is_empty());
        if s == 200 && (sessions || c["open_session"].is_object()) {
            Ok(())
        } else {
            Err(format!("{s} {c}"))
        }
    })
    .await;
    // Every replica sees the others with their roles (System page).
    let (s, sys) = d.get(&a, "/v1/system").await;
    assert_eq!(s, 200, "{sys}");
    let roles: Vec<&str> = sys["replicas"].as_array().unwrap().iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["gateway", "gateway", "processor"], "{sys}");
    assert_eq!(sys["redis"]["status"], "ok");
    assert_eq!(sys["database"], "ok");
    assert_eq!(sys["ingest"]["dead_letters"], 0);
    assert_eq!(sys["stream_clients"], 1, "one client on this gateway: {sys}");
    // A duplicate through the other gateway is acknowledged and not counted again.
    let (status, _) = d.post(&b, &order("two", 7.5)).await;
    assert_eq!(status, 200);
    d.drained(&b).await;
    let more = until(&mut wb, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    assert_eq!(more["data"]["orders_per_min"], 1.0, "a duplicate was counted: {more}");
}

async fn a_client_of_a_dead_gateway_recovers_what_it_missed_on_the_other(d: Deployment) {
    let _processor = d.start("processor", None).await;
    let (mut a, b) = (d.start("gateway", None).await, d.start("gateway", None).await);
    let mut ws = d.ws(&a).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;
    let last = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    let last_seq = last["seq"].as_u64().unwrap();

    a.kill();
    // While the client is away, an order arrives through B.
    assert_eq!(d.post(&b, &order("away", 3.0)).await.0, 200);
    d.drained(&b).await;
    // The frames the client missed must be in the history before it comes
    // back, so that they are recovered from there, not received live.
    let c = tokio::sync::Mutex::new(d.redis_conn().await);
    let seq_key = format!("{}:{{kpis}}:seq", d.prefix);
    eventually("two KPI frames published while the client was away", Duration::from_secs(10), || async {
        let seq: Option<u64> = redis::cmd("GET").arg(&seq_key).query_async(&mut *c.lock().await).await.unwrap();
        match seq {
            Some(seq) if seq >= last_seq + 2 => Ok(()),
            seq => Err(format!("seq {seq:?}, last seen by the client {last_seq}")),
        }
    })
    .await;

    let mut ws = d.ws(&b).await;
    subscribe(&mut ws, &["kpis"], json!({ "kpis": last_seq })).await;
    let mut expect = last_seq + 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = until(&mut ws, deadline.saturating_duration_since(Instant::now()), |v| {
            v["topic"] == "kpis" || control(v, "gap")
        })
        .await;
        assert_ne!(v["topic"], "_control", "recent history must be recoverable: {v}");
        assert_eq!(v["seq"].as_u64().unwrap(), expect, "missed or repeated a message");
        expect += 1;
        if v["data"]["orders_per_min"] == 1.0 {
            break;
        }
    }
}

async fn a_processor_killed_mid_replay_loses_nothing_and_counts_nothing_twice(d: Deployment) {
    let port = free_port();
    let mut processor = d.start("processor", Some(port)).await;
    let gateway = d.start("gateway", None).await;

    const N: usize = 400;
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let base = gateway.base();
    let mut producers = Vec::new();
    for p in 0..4 {
        let (client, base, key, acked, done) =
            (d.client.clone(), base.clone(), d.key.clone(), acked.clone(), done.clone());
        producers.push(actix_web::rt::spawn(async move {
            for i in (p..N).step_by(4) {
                // The gateway keeps acknowledging while the processor is down.
                let r = client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(i)).send().await;
                let r = r.expect("the gateway answers");
                assert_eq!(r.status(), 200, "gateway refused a batch");
                acked.lock().unwrap().push(i);
                // Paced, so the replay is still under way when the kill comes.
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Kill the processor once it has committed part of the replay.
    eventually("the processor commits 50 events", Duration::from_secs(60), || async {
        let text = d.client.get(format!("{}/metrics", processor.base())).send().await.unwrap().text().await.unwrap();
        match metric_value(&text, "cartpulse_events_ingested_total") {
            n if n >= 50.0 => Ok(()),
            n => Err(format!("{n} events")),
        }
    })
    .await;
    processor.kill();
    assert!(done.load(Ordering::SeqCst) < 4, "the kill came too late to test anything");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let processor = d.start("processor", Some(port)).await;
    for p in producers {
        p.await.unwrap();
    }
    assert_eq!(acked.lock().unwrap().len(), N);
    d.drained(&gateway).await;

    // Every customer whole, nothing counted twice, read from the actors.
    for i in 0..N {
        let (s, c) = d.get(&processor, &format!("/v1/customers/k{i}")).await;
        assert_eq!(s, 200, "acknowledged customer k{i} lost");
        assert_eq!(c["profile"]["frequency"], 1.0, "k{i}: {c}");
        assert_eq!(c["profile"]["sessions"], 1.0, "k{i}");
        assert_eq!(c["recent_sessions"][0]["n_events"], expected_events(i), "k{i}");
    }
    let settings = test_settings(&d.db_url);
    let db = cartpulse::db::connect(&settings).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    let logged = entities::event::Entity::find().count(&db).await.unwrap();
    let total: usize = (0..N).map(expected_events).sum();
    assert_eq!(logged as usize, total, "the log must hold every event once");
}

async fn a_poison_entry_goes_to_the_dead_letter_stream_and_the_rest_flows(d: Deployment) {
    let processor = d.start("processor", None).await;
    let gateway = d.start("gateway", None).await;
    // An entry no gateway would write (e.g. from an older version): the
    // processor's edge parser refuses it.
    let mut c = d.redis_conn().await;
    let key = format!("{}:events:{{{}}}", d.prefix, cartpulse::serving::ingest::streams::partition_tag(0, 8));
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("e")
        .arg(r#"{"type":"page_view","event_id":"bad","customer_id":"x"}"#)
        .arg("a")
        .arg("0")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(d.post(&gateway, &order("after", 1.0)).await.0, 200);
    d.drained(&gateway).await;
    let dead: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(format!("{}:events:dead", d.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let text = format!("{dead:?}");
    assert!(text.contains("is required"), "the reason names the problem: {text}");
    let (s, _) = d.get(&processor, "/v1/customers/after-c").await;
    assert_eq!(s, 200);
    let text = d.client.get(format!("{}/metrics", gateway.base())).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric_value(&text, "cartpulse_dead_letter_events"), 1.0);
}

async fn two_processors_owning_half_the_partitions_each_publish_one_rollup(d: Deployment) {
    let _low = d.start_owning("processor", None, Some("0-3")).await;
    let _high = d.start_owning("processor", None, Some("4-7")).await;
    let gateway = d.start("gateway", None).await;
    let mut ws = d.ws(&gateway).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;
    // Three buyers, at least one on each processor.
    let mut sides = [0, 0];
    let mut buyers = Vec::new();
    for i in 0.. {
        let id = format!("half{i}");
        let side = usize::from(actors::data::partition(&format!("{id}-c"), 8) >= 4);
        if sides[side] < 2 && buyers.len() < 3 {
            sides[side] += 1;
            buyers.push(id);
        }
        if buyers.len() == 3 && sides[0] > 0 && sides[1] > 0 {
            break;
        }
    }
    for id in &buyers {
        assert_eq!(d.post(&gateway, &order(id, 10.0)).await.0, 200);
    }
    d.drained(&gateway).await;
    // The deployment's rollup: every order once, from both processors, and
    // never a partial one once all three are in.
    let seen = kpis_until_orders(&mut ws, 3.0).await;
    assert!(seen.iter().all(|v| v["data"]["orders_per_min"].as_f64().unwrap() <= 3.0), "{seen:?}");
    for _ in 0..3 {
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
        assert_eq!(v["data"]["orders_per_min"], 3.0, "a partial rollup was published: {v}");
        assert_eq!(v["data"]["revenue_per_min"], 60.0, "{v}");
    }
}

/// A Redis of the test's own, with an append-only file fsynced on every
/// write in `dir`, so a restart keeps what it acknowledged.
struct DurableRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl DurableRedis {
    async fn start(port: u16, dir: &std::path::Path) -> DurableRedis {
        let mut r = DurableRedis { port, dir: dir.to_owned(), child: None };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually("the private redis-server answers", Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.map(drop).map_err(|e| e.to_string())
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[actix_web::test]
async fn ingest_answers_503_while_redis_is_down_and_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = DurableRedis::start(free_port(), dir.path()).await;
    let url = redis.url();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.redis_url = Some(secrecy::SecretString::from(url));
    })
    .await;
    let (status, body) = app.post_events(&order("before", 4.0)).await;
    assert_eq!(status, 200, "{body}");

    redis.kill();
    let started = Instant::now();
    let (status, body) = app.post_events(&order("during", 4.0)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Redis"), "the error names the cause: {body}");
    assert!(started.elapsed() < Duration::from_secs(10), "503 must come promptly");
    assert_eq!(app.get_text("/readyz").await.0, 503);

    redis.restart().await;
    // The pool replaces its dead connections; the consumer reconnects.
    eventually("ingest recovers after Redis came back", Duration::from_secs(20), || async {
        match app.post_events(&order("after", 4.0)).await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    for id in ["before-c", "after-c"] {
        eventually(&format!("acknowledged customer {id} is committed"), Duration::from_secs(20), || async {
            let (s, c) = app.get_customer(id).await;
            if s == 200 && c["profile"]["frequency"] == 1.0 {
                Ok(())
            } else {
                Err(format!("{s} {c}"))
            }
        })
        .await;
    }
    assert_eq!(app.get_customer("during-c").await.0, 404, "a refused batch must not be stored");
}

#[actix_web::test]
async fn failed_console_logins_count_across_replicas() {
    logins_count_across_replicas(Redis::Single).await
}

#[actix_web::test]
async fn failed_console_logins_count_across_replicas_on_a_cluster() {
    logins_count_across_replicas(Redis::Cluster).await
}

async fn logins_count_across_replicas(redis: Redis) {
    let prefix = format!("cp_t_{}", hex::encode(rand::random::<[u8; 5]>()));
    let url = redis.url();
    let shared = move |s: &mut cartpulse::config::Settings, prefix: &str| {
        s.redis_url = Some(secrecy::SecretString::from(url.clone()));
        s.redis.prefix = prefix.to_owned();
        s.console.login_max_failures_per_name = 3;
        s.console.login_max_failures_per_ip = 100;
    };
    let (p, sa) = (prefix.clone(), shared.clone());
    let a = spawn_app_with(Db::Sqlite, move |s| sa(s, &p)).await;
    let p = prefix.clone();
    let b = spawn_app_with(Db::Sqlite, move |s| shared(s, &p)).await;
    for app in [&a, &b] {
        app.create_console_user("ops", cartpulse::serving::console::Role::Admin, "right-password-1").await;
    }
    // Two failures on A and one on B: the name's budget of 3 is spent everywhere.
    for app in [&a, &a, &b] {
        assert_eq!(app.console_login_raw("ops", "wrong").await.status().as_u16(), 401);
    }
    for app in [&a, &b] {
        let r = app.console_login_raw("ops", "right-password-1").await;
        assert_eq!(r.status().as_u16(), 429, "the limit must hold across replicas");
        assert!(r.headers().get("retry-after").is_some());
    }
    // Another name is not affected.
    b.create_console_user("other", cartpulse::serving::console::Role::Viewer, "right-password-2").await;
    assert_eq!(b.console_login_raw("other", "right-password-2").await.status().as_u16(), 200);
}
