//! Acknowledged means replicated: with a Redis replica behind the primary, a
//! gateway acknowledges a request only once the replica holds its entries
//! (`WAIT`), so a failover cannot lose it; when the replica does not confirm
//! in time the answer is 503 and the resend is de-duplicated.

use crate::crash::free_port;
use crate::helpers::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private redis-server (no persistence), killed when dropped.
struct Node {
    port: u16,
    child: Child,
    /// Where a full resynchronisation writes its RDB file (never the checkout).
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(replica_of: Option<u16>) -> Node {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.args(["--repl-diskless-sync", "yes", "--dir"]).arg(dir.path());
        if let Some(primary) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = cmd.stdout(Stdio::null()).spawn().expect("redis-server must be installed (.ci/run installs it)");
        let node = Node { port, child, _dir: dir };
        eventually("the private redis-server answers", Duration::from_secs(10), || async {
            node.conn().await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        node
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?.get_multiplexed_async_connection().await
    }

    async fn info_field(&self, field: &str) -> String {
        let mut c = self.conn().await.expect("connect");
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.expect("INFO");
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned())).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary with one replica in sync.
async fn pair() -> (Node, Node) {
    let primary = Node::start(None).await;
    let replica = Node::start(Some(primary.port)).await;
    eventually("the replica synchronises", Duration::from_secs(15), || async {
        let (slaves, link) =
            (primary.info_field("connected_slaves").await, replica.info_field("master_link_status").await);
        if slaves == "1" && link == "up" {
            Ok(())
        } else {
            Err(format!("connected_slaves {slaves}, master_link_status {link}"))
        }
    })
    .await;
    (primary, replica)
}

fn views(tag: &str, n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            page_view(&format!("{tag}-{i}"), &format!("rc-{i}"), &format!("rs-{i}"), "2026-11-01T10:00:00Z", "product")
        })
        .collect();
    json!(events)
}

#[actix_web::test]
async fn a_gateway_acknowledges_only_what_the_replica_holds() {
    let (primary, replica) = pair().await;
    let url = primary.url();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.redis_url = Some(secrecy::SecretString::from(url));
        s.redis.ack_timeout_ms = std::time::Duration::from_millis(300);
    })
    .await;

    let (status, body) = app.post_events(&views("a", 20)).await;
    assert_eq!(status, 200, "{body}");
    // The replica holds the stream entries the answer acknowledged.
    let mut rc = replica.conn().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*events:*").query_async(&mut rc).await.unwrap();
    assert!(!keys.is_empty(), "the replica has the streams");

    // Without the replica, nothing is acknowledged; the error says why.
    drop(replica);
    let started = Instant::now();
    let (status, body) = app.post_events(&views("b", 20)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("replicas"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "503 within the ack timeout, not a hang");
    assert!(app.metric("cartpulse_ingest_not_replicated_total").await >= 1.0);

    // A replica back: the resend is acknowledged, and nothing is counted twice.
    let replica = Node::start(Some(primary.port)).await;
    eventually("ingest recovers with the replica back", Duration::from_secs(20), || async {
        match app.post_events(&views("b", 20)).await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    let applied = app.wait_metric("cartpulse_events_applied_total", 40.0, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.metric("cartpulse_events_applied_total").await, 40.0, "40 distinct events ({applied} seen)");
    drop(replica);
}

#[actix_web::test]
async fn ack_replicas_zero_acknowledges_without_waiting() {
    let (primary, replica) = pair().await;
    let url = primary.url();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.redis_url = Some(secrecy::SecretString::from(url));
        s.redis.ack_replicas = Some(0);
    })
    .await;
    drop(replica);
    let (status, body) = app.post_events(&views("z", 5)).await;
    assert_eq!(status, 200, "{body}");
}
