//! Nothing acknowledged is lost when a Redis Cluster primary dies: a private
//! cluster (3 primaries, 3 replicas, real `redis-server` processes on
//! loopback) under a gateway and a processor; mid-ingest the primary owning
//! a partition's slot is killed with SIGKILL, its replica takes over, and
//! then every acknowledged event is in the log exactly once, the processor
//! goes on with the new primary, and a WebSocket client catches up with
//! `since`.

use crate::crash::{batch, expected_events, free_port};
use crate::helpers::{eventually, metric_value};
use crate::roles::{subscribe, Deployment, Replica};
use crate::stream::{control, until};
use cartpulse::serving::ingest::streams::partition_tag;
use cartpulse::serving::ingest::streams::GROUP;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One node of the private cluster.
struct ClusterNode {
    port: u16,
    bus: u16,
    dir: std::path::PathBuf,
    child: Child,
}

fn spawn_node(port: u16, bus: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"])
        .args(["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test.sh installs it)")
}

/// A private Redis Cluster, its processes killed when dropped.
struct LocalCluster {
    nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl LocalCluster {
    /// Six nodes, three of them replicas, with a short node timeout so the
    /// failover comes within a few seconds.
    async fn start() -> LocalCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = spawn_node(port, bus, &node_dir);
            nodes.push(ClusterNode { port, bus, dir: node_dir, child });
        }
        let cluster = LocalCluster { nodes, _dir: dir };
        for n in &cluster.nodes {
            eventually(&format!("node {} answers", n.port), Duration::from_secs(10), || async {
                match redis_cli(n.port, &["ping"]) {
                    pong if pong.trim() == "PONG" => Ok(()),
                    other => Err(other),
                }
            })
            .await;
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    /// Waits for `cluster_state:ok` on every live node and every replica linked up.
    async fn wait_healthy(&self, within: Duration) {
        eventually("the cluster is healthy", within, || async {
            let ok = self.nodes.iter().all(|n| redis_cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"));
            let linked = self.nodes.iter().all(|n| {
                let info = redis_cli(n.port, &["info", "replication"]);
                !info.contains("role:slave") || info.contains("master_link_status:up")
            });
            if ok && linked {
                Ok(())
            } else {
                Err(format!("cluster_state ok on all: {ok}, replicas linked: {linked}"))
            }
        })
        .await
    }

    /// The port of the primary owning `key`'s slot, as node `via` sees it.
    fn primary_of(&self, key: &str, via: u16) -> Option<u16> {
        let slot: u16 = redis_cli(via, &["cluster", "keyslot", key]).trim().parse().ok()?;
        let nodes = redis_cli(via, &["cluster", "nodes"]);
        let owner = nodes.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|f| {
            f.len() > 8
                && f[2].contains("master")
                && f[8..].iter().any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => r.parse::<u16>() == Ok(slot),
                })
        })?;
        owner[1].split(['@', ':']).nth(1)?.parse().ok()
    }

    /// SIGKILLs the primary owning `key`'s slot; its index.
    fn kill_primary_of(&mut self, key: &str) -> usize {
        let port = self.primary_of(key, self.nodes[0].port).expect("a primary owns the slot");
        let i = self.nodes.iter().position(|n| n.port == port).expect("one of ours");
        self.nodes[i].child.kill().expect("SIGKILL");
        self.nodes[i].child.wait().unwrap();
        i
    }

    /// Starts node `i` again on its port and directory: its `nodes.conf`
    /// makes it rejoin, as a replica of the node promoted in its place (as
    /// ElastiCache replaces a failed node).
    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.child = spawn_node(n.port, n.bus, &n.dir);
    }
}

/// `probe` until it answers Ok, for at most `limit`; its last error otherwise.
async fn within<T, F, Fut>(limit: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Where customer `k{i}` was lost: its events in the log, its partition's
/// stream and group on every node, and the processor's log about leases,
/// reads and trims.
async fn lost_report(d: &Deployment, cluster: &LocalCluster, i: usize, log: &std::path::Path) -> String {
    let customer = format!("k{i}");
    let p = actors::data::partition(&customer, 8);
    let key = format!("{}:events:{{{}}}", d.prefix, partition_tag(p, 8));
    let logged = d.logged_events_of(&customer).await;
    let mut out = format!("{logged} of its events in the log; partition {p}, stream {key}\n");
    for n in &cluster.nodes {
        let role = redis_cli(n.port, &["role"]).lines().next().unwrap_or("").to_owned();
        let groups = redis_cli(n.port, &["xinfo", "groups", &key]).replace('\n', " ");
        let pending = redis_cli(n.port, &["xpending", &key, GROUP]).replace('\n', " ");
        let len = redis_cli(n.port, &["xlen", &key]);
        let all = redis_cli(n.port, &["xrange", &key, "-", "+"]);
        let first = all.lines().next().unwrap_or("").to_owned();
        let has = all.contains(&format!("\"customer_id\":\"{customer}\""));
        out += &format!(
            "node {} ({role}): xlen {} first {first}; holds {customer}: {has}; groups: {groups}; pending: {pending}\n",
            n.port,
            len.trim()
        );
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let wanted = ["lease", "partition", "retry", "trim", "claim", "WARN", "ERROR"];
    let lines: Vec<&str> = text.lines().filter(|l| wanted.iter().any(|w| l.contains(w))).collect();
    out += &format!("processor log ({} of {} lines):\n", lines.len().min(200), text.lines().count());
    for l in lines.iter().rev().take(200).rev() {
        out += l;
        out.push('\n');
    }
    out
}

/// Producers sending customers `k0..` through a gateway: a batch counts once
/// it got 200; a 503 (not replicated, Redis failing over) or a lost
/// connection is resent as it is (`event_id` de-duplicates).
struct Producers {
    acked: Arc<Mutex<Vec<usize>>>,
    next: Arc<Mutex<usize>>,
    refused: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<actix_web::rt::task::JoinHandle<()>>,
}

impl Producers {
    fn start(d: &Deployment, gateway: &Replica, n: usize) -> Producers {
        let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(0usize));
        let next = Arc::new(Mutex::new(0usize));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (client, base, key) = (d.client.clone(), gateway.base(), d.key.clone());
            let (acked, stop, refused, next) = (acked.clone(), stop.clone(), refused.clone(), next.clone());
            tasks.push(actix_web::rt::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let i = {
                        let mut n = next.lock().unwrap();
                        *n += 1;
                        *n - 1
                    };
                    loop {
                        let r = client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(i)).send().await;
                        match r.map(|r| r.status().as_u16()) {
                            Ok(200) => {
                                acked.lock().unwrap().push(i);
                                break;
                            }
                            Ok(503) | Err(_) => {
                                *refused.lock().unwrap() += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(other) => panic!("the gateway answered {other} to batch {i}"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Producers { acked, next, refused, stop, tasks }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// The batches taken so far: every later one is sent after this call.
    fn taken(&self) -> usize {
        *self.next.lock().unwrap()
    }

    /// The batches acknowledged so far, in the order they were.
    fn acked_list(&self) -> Vec<usize> {
        self.acked.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) {
        eventually(&format!("{n} batches acknowledged"), Duration::from_secs(60), || async {
            match self.acked() {
                a if a >= n => Ok(()),
                a => Err(format!("{a} batches")),
            }
        })
        .await;
    }

    /// Stops after the batches under way are acknowledged: those, and how
    /// many answers were refusals that were resent.
    async fn stop(self) -> (Vec<usize>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let refused = *self.refused.lock().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        (acked, refused)
    }
}

/// Nothing went to the dead-letter stream (an entry delivered too often
/// without a commit would); if something did, why, and what the processor
/// logged around it.
async fn assert_no_dead_letters(d: &Deployment, gateway: &Replica, cluster: &LocalCluster, log: &std::path::Path) {
    let (status, sys) = d.get(gateway, "/v1/system").await;
    assert_eq!(status, 200, "{sys}");
    if sys["ingest"]["dead_letters"] != 0 {
        let key = format!("{}:events:dead", d.prefix);
        let reasons: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| redis_cli(n.port, &["xrange", &key, "-", "+"]))
            .flat_map(|out| {
                let lines: Vec<String> = out.lines().map(str::to_owned).collect();
                lines.windows(2).filter(|w| w[0] == "reason").map(|w| w[1].clone()).collect::<Vec<_>>()
            })
            .collect();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let logged: Vec<&str> =
            text.lines().filter(|l| ["dead", "retry", "WARN"].iter().any(|w| l.contains(w))).take(60).collect();
        panic!("{sys}\ndead-letter reasons: {reasons:?}\nprocessor log:\n{}", logged.join("\n"));
    }
}

/// Every acknowledged customer whole, nothing counted twice (the actors),
/// and the log holds every acknowledged event once.
async fn assert_every_acknowledged_event_applied_once(
    d: &Deployment,
    processor: &Replica,
    cluster: &LocalCluster,
    acked: &[usize],
    log: &std::path::Path,
) {
    for &i in acked {
        // A backlog of 0 means every entry was delivered, not yet applied:
        // a processor slowed down by a busy machine may still be committing
        // the last batch it read. Lost means it never shows up.
        let found = within(Duration::from_secs(15), || async {
            match d.get(processor, &format!("/v1/customers/k{i}")).await {
                (200, c) => Ok(c),
                (s, c) => Err(format!("{s} {c}")),
            }
        })
        .await;
        let c = match found {
            Ok(c) => c,
            Err(last) => {
                let report = lost_report(d, cluster, i, log).await;
                panic!("acknowledged customer k{i} is not there ({last}):\n{report}");
            }
        };
        assert_eq!(c["profile"]["frequency"], 1.0, "k{i}: {c}");
        assert_eq!(c["recent_sessions"][0]["n_events"], expected_events(i), "k{i}");
    }
    // Every batch a producer took was resent until acknowledged: the log
    // holds exactly their events.
    let mut sorted = acked.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..acked.len()).collect::<Vec<_>>(), "a batch was acknowledged twice or never");
    let logged = d.logged_events().await;
    let total: usize = acked.iter().map(|&i| expected_events(i)).sum();
    assert_eq!(logged, total, "the log must hold every acknowledged event once");
}

#[actix_web::test]
async fn killing_a_cluster_primary_mid_ingest_loses_no_acknowledged_event() {
    let mut cluster = LocalCluster::start().await;
    let d = Deployment::with_redis_url(cluster.url()).await;
    // Checkpoints every 100 ms: the leases lost in the failover then race
    // with checkpoint writes (a checkpoint must never cover a partition whose
    // actors were evicted meanwhile).
    let env = [("CARTPULSE_ACTORS__CHECKPOINT_INTERVAL_MS", "100"), ("CARTPULSE_LOG", "info")];
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("processor.log");
    let processor = d.start_logged("processor", None, None, 8, &env, Some(&log)).await;
    let gateway = d.start("gateway", None).await;
    let mut ws = d.ws(&gateway).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;
    let first = until(&mut ws, Duration::from_secs(10), |v| v["topic"] == "kpis").await;
    let mut last_seq = first["seq"].as_u64().unwrap();

    let producers = Producers::start(&d, &gateway, 4);
    // Kill the primary of partition 0 once ingest is well under way.
    producers.wait_for(150).await;
    let killed = cluster.kill_primary_of(&format!("{}:events:{{{}}}", d.prefix, partition_tag(0, 8)));
    let acked_at_kill = producers.acked();
    // The replica is promoted after the node timeout (1 s) and an election.
    // Until the dead node is replaced the promoted one has no replica, so
    // WAIT cannot confirm: its partitions answer 503 (nothing acknowledged
    // that a second failure could lose). Then the node comes back as its
    // replica and ingest resumes.
    let live = |c: &LocalCluster| {
        c.nodes.iter().enumerate().filter(|(i, _)| *i != killed).map(|(_, n)| n.port).collect::<Vec<_>>()
    };
    // Failed over means every live node names another primary for the slot
    // and is back to `cluster_state:ok`. (Right after the kill the state is
    // still ok: nobody has noticed yet. A node restarted before its replica
    // took over comes back an empty primary, and its replica then copies
    // that empty data set: Redis loses what it had acknowledged, which is
    // why a primary without persistence must never come back as itself.)
    let dead_port = cluster.nodes[killed].port;
    let stream = format!("{}:events:{{{}}}", d.prefix, partition_tag(0, 8));
    eventually("the cluster fails over", Duration::from_secs(30), || async {
        let waiting: Vec<String> = live(&cluster)
            .into_iter()
            .filter_map(|p| {
                let ok = redis_cli(p, &["cluster", "info"]).contains("cluster_state:ok");
                let owner = cluster.primary_of(&stream, p);
                (!ok || owner.is_none() || owner == Some(dead_port))
                    .then(|| format!("node {p}: state ok {ok}, primary {owner:?}"))
            })
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join("; "))
        }
    })
    .await;
    let failed_over_after = producers.acked() - acked_at_kill;
    cluster.restart(killed);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    producers.wait_for(acked_at_kill + 300).await;
    let (acked, refused) = producers.stop().await;
    d.drained(&gateway).await;
    eprintln!(
        "failover: killed node {killed}; {} batches acknowledged ({acked_at_kill} before the kill, {failed_over_after} between the kill and the promotion), {refused} refused and resent",
        acked.len(),
    );

    assert_no_dead_letters(&d, &gateway, &cluster, &log).await;
    assert_every_acknowledged_event_applied_once(&d, &processor, &cluster, &acked, &log).await;

    // A client catches up with `since` across the failover, gap-free.
    drop(ws);
    let mut ws = d.ws(&gateway).await;
    subscribe(&mut ws, &["kpis"], json!({ "kpis": last_seq })).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut caught_up = 0;
    while caught_up < 3 {
        let v = until(&mut ws, deadline.saturating_duration_since(Instant::now()), |v| {
            v["topic"] == "kpis" || control(v, "gap")
        })
        .await;
        assert_ne!(v["topic"], "_control", "the history must cover the failover: {v}");
        assert_eq!(v["seq"].as_u64().unwrap(), last_seq + 1, "missed or repeated a message");
        last_seq += 1;
        caught_up += 1;
    }
}

/// A node that refuses reads for seconds (its ACL takes XREADGROUP away, as
/// a node stuck in a failover or a broken proxy would fail them) holds up
/// only the partitions whose slots it serves: the processor goes on with
/// the others meanwhile, and afterwards nothing is lost or dead-lettered
/// (the re-reads of a failing partition count as deliveries, so they must
/// not touch other partitions' entries).
#[actix_web::test]
async fn a_node_refusing_reads_holds_up_only_its_partitions_and_dead_letters_nothing() {
    let cluster = LocalCluster::start().await;
    let d = Deployment::with_redis_url(cluster.url()).await;
    let env = [("CARTPULSE_LOG", "info")];
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("processor.log");
    let processor = d.start_logged("processor", None, None, 8, &env, Some(&log)).await;
    let gateway = d.start("gateway", None).await;
    let producers = Producers::start(&d, &gateway, 4);
    producers.wait_for(100).await;

    let via = cluster.nodes[0].port;
    let stream_of = |p: usize| format!("{}:events:{{{}}}", d.prefix, partition_tag(p, 8));
    let refusing = cluster.primary_of(&stream_of(0), via).expect("a primary serves partition 0");
    let held: Vec<usize> = (0..8).filter(|&p| cluster.primary_of(&stream_of(p), via) == Some(refusing)).collect();
    let partition_of = |i: usize| actors::data::partition(&format!("k{i}"), 8);
    assert!(redis_cli(refusing, &["acl", "setuser", "default", "-xreadgroup"]).contains("OK"));
    let refused_at = Instant::now();
    let from = producers.taken();

    // Meanwhile customers of the other partitions are applied...
    eventually("customers of the other partitions are applied", Duration::from_secs(4), || async {
        let mut newer = producers.acked_list().into_iter().filter(|&i| i >= from && !held.contains(&partition_of(i)));
        let Some(i) = newer.next() else { return Err("no batch acknowledged yet".to_owned()) };
        match d.get(&processor, &format!("/v1/customers/k{i}")).await {
            (200, _) => Ok(()),
            (s, c) => Err(format!("k{i}: {s} {c}")),
        }
    })
    .await;
    let other_applied_after = refused_at.elapsed();
    // ... and those of the refusing node's partitions wait.
    let waiting = within(Duration::from_secs(4), || async {
        let mut held_batches =
            producers.acked_list().into_iter().filter(|&i| i >= from && held.contains(&partition_of(i)));
        held_batches.next().ok_or_else(|| "no batch of the refusing node's partitions acknowledged".to_owned())
    })
    .await
    .unwrap();
    let (status, _) = d.get(&processor, &format!("/v1/customers/k{waiting}")).await;
    assert_eq!(status, 404, "k{waiting} was applied though its partition's node refused reads");
    // Longer than the re-reads of five failures in a row (0.1 + 0.2 + 0.4 +
    // 0.8 + 1.6 s) would take to push entries past `max_attempts` (5).
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(refused_at.elapsed())).await;
    assert!(redis_cli(refusing, &["acl", "setuser", "default", "+xreadgroup"]).contains("OK"));
    let restored = producers.acked();
    producers.wait_for(restored + 100).await;
    let (acked, refused) = producers.stop().await;
    d.drained(&gateway).await;
    eprintln!(
        "read outage: partitions {held:?} refused for 6 s; the others applied after {other_applied_after:?}; {} batches acknowledged, {refused} refused and resent",
        acked.len()
    );
    let text = d.client.get(format!("{}/metrics", processor.base())).send().await.unwrap().text().await.unwrap();
    let retries = metric_value(&text, "cartpulse_stream_consumer_retries_total{step=\"read\"}");
    assert!(retries >= 1.0, "the processor's reads never failed: the test tested nothing");
    assert_no_dead_letters(&d, &gateway, &cluster, &log).await;
    assert_every_acknowledged_event_applied_once(&d, &processor, &cluster, &acked, &log).await;
}
