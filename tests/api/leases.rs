//! Elastic processors: processors without `--owns` share the partitions by
//! lease. Real processes on the real Redis (the kill also on the local Redis
//! Cluster) and Postgres: 3 processors share
//! 16 partitions; one is SIGKILLed and the others take its partitions over
//! within the lease; one is stopped gracefully and hands its partitions over
//! at once; one is added and gets a share; one is paused (SIGSTOP) until the
//! other took its partitions over, then woken with batches in hand, whose
//! commits the fence refuses. Each time, producers keep
//! ingesting throughout, and afterwards every acknowledged event is in the
//! log exactly once and in its customer's state exactly once.

use crate::crash::{batch, expected_events};
use crate::helpers::eventually;
use crate::roles::{Deployment, Redis, RedisConn, Replica};
use cartpulse::serving::ingest::streams::partition_tag;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: usize = 16;

/// Producers that keep posting new customers' batches through a gateway,
/// resending on 503 (a resend is de-duplicated), until stopped.
struct Producers {
    acked: Arc<Mutex<Vec<usize>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Producers {
    fn start(d: &Deployment, gateway: &Replica, n: usize) -> Producers {
        let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (client, base, key) = (d.client.clone(), gateway.base(), d.key.clone());
                let (acked, stop, next) = (acked.clone(), stop.clone(), next.clone());
                actix_web::rt::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        loop {
                            let r =
                                client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(i)).send().await;
                            match r.map(|r| r.status().as_u16()) {
                                Ok(200) => break,
                                Ok(503) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                                Ok(other) => panic!("the gateway answered {other} to batch {i}"),
                            }
                        }
                        acked.lock().unwrap().push(i);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Producers { acked, stop, tasks }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn until_acked(&self, n: usize) {
        eventually(&format!("{n} acknowledged batches"), Duration::from_secs(60), || async {
            match self.acked() {
                got if got >= n => Ok(()),
                got => Err(format!("ingest at {got}")),
            }
        })
        .await
    }

    async fn stop(self) -> Vec<usize> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort_unstable();
        acked
    }
}

/// Who holds each partition's lease now: partition → the holder's pid. A
/// read that times out (the test's own connection, on a busy machine) is an
/// error for the caller's next poll, not a failure.
async fn holders(d: &Deployment, c: &mut RedisConn) -> Result<BTreeMap<usize, u32>, String> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("{}:lease:{{{}}}", d.prefix, partition_tag(p, PARTITIONS)))
            .query_async(c)
            .await
            .map_err(|e| format!("reading the lease of partition {p}: {e}"))?;
        // The value is the processor's name: processor-<host>-<pid>-<random>.
        if let Some(pid) = v.as_deref().and_then(|v| v.rsplit('-').nth(1)).and_then(|p| p.parse().ok()) {
            out.insert(p, pid);
        }
    }
    Ok(out)
}

/// Waits until `check` holds for the lease holders; returns how long it took.
async fn until_holders(
    d: &Deployment,
    c: &mut RedisConn,
    within: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<usize, u32>) -> bool,
) -> Duration {
    let started = Instant::now();
    // The closure is called once per poll; the connection is lent to each call.
    let c = tokio::sync::Mutex::new(c);
    eventually(what, within, || async {
        let h = holders(d, *c.lock().await).await?;
        if check(&h) {
            Ok(started.elapsed())
        } else {
            Err(format!("holders {h:?}"))
        }
    })
    .await
}

fn count_of(h: &BTreeMap<usize, u32>, pid: u32) -> usize {
    h.values().filter(|p| **p == pid).count()
}

/// Every acknowledged batch is in the log once and its customer whole (read
/// through the gateway, from the snapshots the processors wrote).
async fn nothing_lost_nothing_twice(d: &Deployment, gateway: &Replica, acked: &[usize]) {
    assert_eq!(acked.to_vec(), (0..acked.len()).collect::<Vec<_>>(), "a batch was acknowledged twice or never");
    d.drained(gateway).await;
    let total: usize = acked.iter().map(|&i| expected_events(i)).sum();
    assert_eq!(d.logged_events().await, total, "the log must hold every acknowledged event once");
    let deadline = Instant::now() + Duration::from_secs(20);
    for &i in acked {
        loop {
            let (s, c) = d.get(gateway, &format!("/v1/customers/k{i}")).await;
            let whole = s == 200
                && c["profile"]["frequency"] == 1.0
                && c["recent_sessions"][0]["n_events"] == expected_events(i);
            if whole {
                break;
            }
            // Snapshots land within actors.snapshot_max_delay_ms; anything
            // else (a count of 2, a missing event) is a failure.
            assert!(s != 200 || c["profile"]["frequency"].as_f64().unwrap_or(0.0) <= 1.0, "k{i} counted twice: {c}");
            assert!(Instant::now() < deadline, "acknowledged customer k{i} is not whole: {s} {c}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Two processors (leases of `lease_ms`) sharing the partitions 8 and 8, a
/// gateway, and producers that have had 100 batches acknowledged.
struct TwoShare {
    d: Deployment,
    c: RedisConn,
    a: Replica,
    b: Replica,
    gw: Replica,
    producers: Producers,
}

async fn two_sharing(lease_ms: &str, within: Duration) -> TwoShare {
    let d = Deployment::new(Redis::Single).await;
    let mut c = d.redis_conn().await;
    let a = processor(&d, lease_ms).await;
    let b = processor(&d, lease_ms).await;
    let gw = gateway(&d).await;
    let (pa, pb) = (a.pid(), b.pid());
    until_holders(&d, &mut c, within, "2 processors share the partitions", |h| {
        h.len() == PARTITIONS && count_of(h, pa) == 8 && count_of(h, pb) == 8
    })
    .await;
    let producers = Producers::start(&d, &gw, 4);
    producers.until_acked(100).await;
    TwoShare { d, c, a, b, gw, producers }
}

async fn processor(d: &Deployment, lease_ms: &str) -> Replica {
    d.start_with("processor", None, None, PARTITIONS, &[("CARTPULSE_REDIS__LEASE_MS", lease_ms)]).await
}

async fn gateway(d: &Deployment) -> Replica {
    d.start_with("gateway", None, None, PARTITIONS, &[]).await
}

#[actix_web::test]
async fn a_killed_processors_partitions_are_taken_over_within_the_lease() {
    killed_processor(Redis::Single).await
}

#[actix_web::test]
async fn a_killed_processors_partitions_are_taken_over_within_the_lease_on_a_cluster() {
    killed_processor(Redis::Cluster).await
}

async fn killed_processor(redis: Redis) {
    const LEASE: Duration = Duration::from_millis(2_000);
    let d = Deployment::new(redis).await;
    let mut c = d.redis_conn().await;
    let mut ps = vec![processor(&d, "2000").await, processor(&d, "2000").await, processor(&d, "2000").await];
    let gw = gateway(&d).await;
    let pids: Vec<u32> = ps.iter().map(|p| p.pid()).collect();
    until_holders(&d, &mut c, Duration::from_secs(20), "3 processors share the 16 partitions", |h| {
        h.len() == PARTITIONS && pids.iter().all(|p| (4..=6).contains(&count_of(h, *p)))
    })
    .await;
    let producers = Producers::start(&d, &gw, 4);
    producers.until_acked(100).await;

    let victim = ps.remove(1);
    let victim_pid = victim.pid();
    let mut victim = victim;
    let killed = Instant::now();
    victim.kill();
    let leased = until_holders(&d, &mut c, LEASE * 4, "the survivors take the dead one's leases", |h| {
        h.len() == PARTITIONS && count_of(h, victim_pid) == 0
    })
    .await;
    // Taken over means replayed and consumed again, not only leased.
    let client = reqwest::Client::new();
    let took = eventually("the survivors consume all 16 partitions", LEASE * 4, || async {
        let mut held = 0.0;
        for p in &ps {
            let text = client.get(format!("{}/metrics", p.base())).send().await.map_err(|e| e.to_string())?;
            held += crate::helpers::metric_value(
                &text.text().await.map_err(|e| e.to_string())?,
                "cartpulse_partitions_held",
            );
        }
        if held == PARTITIONS as f64 {
            Ok(killed.elapsed())
        } else {
            Err(format!("the survivors hold {held}"))
        }
    })
    .await;
    eprintln!(
        "leases ({redis:?}): a SIGKILLed processor's partitions were all leased {leased:?} and consumed {took:?} after the kill (lease {LEASE:?})"
    );
    // A lease expires lease_ms after its last renewal, before the kill; the
    // survivors look just after it expires. The rest is room for a busy CI.
    assert!(took <= LEASE + LEASE / 2 + Duration::from_millis(500), "takeover took {took:?}");
    let at = producers.acked();
    producers.until_acked(at + 100).await;
    let acked = producers.stop().await;
    nothing_lost_nothing_twice(&d, &gw, &acked).await;
    // The taker claimed what the dead one left pending and deleted its
    // consumer, so restarts do not pile up consumers in the groups.
    for p in 0..PARTITIONS {
        let key = format!("{}:events:{{{}}}", d.prefix, partition_tag(p, PARTITIONS));
        let consumers: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg(cartpulse::serving::ingest::streams::GROUP)
            .query_async(&mut c)
            .await
            .unwrap();
        let names: Vec<&str> = consumers.consumers.iter().map(|c| c.name.as_str()).collect();
        assert!(
            !names.iter().any(|n| n.rsplit('-').nth(1) == Some(&victim_pid.to_string())),
            "partition {p} still lists the killed processor's consumer: {names:?}"
        );
    }
}

#[actix_web::test]
async fn a_processor_stopped_gracefully_hands_its_partitions_over_at_once() {
    // A long lease: only a hand-over can be this quick.
    let TwoShare { d, mut c, mut a, b, gw, producers } = two_sharing("20000", Duration::from_secs(60)).await;
    let pb = b.pid();
    let started = Instant::now();
    a.terminate().await;
    let stopped_in = started.elapsed();
    let took = until_holders(&d, &mut c, Duration::from_secs(10), "the other processor takes every partition", |h| {
        h.len() == PARTITIONS && count_of(h, pb) == PARTITIONS
    })
    .await;
    eprintln!(
        "leases: graceful stop took {stopped_in:?}; all partitions held by the other {took:?} later (lease 20 s)"
    );
    assert!(took < Duration::from_secs(5), "hand-over took {took:?}, not at once");
    let at = producers.acked();
    producers.until_acked(at + 100).await;
    let acked = producers.stop().await;
    nothing_lost_nothing_twice(&d, &gw, &acked).await;
}

#[actix_web::test]
async fn an_added_processor_gets_a_share_of_the_partitions() {
    let TwoShare { d, mut c, a, b, gw, producers } = two_sharing("2000", Duration::from_secs(20)).await;
    let (pa, pb) = (a.pid(), b.pid());
    let third = processor(&d, "2000").await;
    let pc = third.pid();
    let took = until_holders(&d, &mut c, Duration::from_secs(20), "the partitions rebalance over 3 processors", |h| {
        h.len() == PARTITIONS && [pa, pb, pc].iter().all(|p| (4..=6).contains(&count_of(h, *p)))
    })
    .await;
    eprintln!("leases: an added processor got its share {took:?} after it was ready");
    let at = producers.acked();
    producers.until_acked(at + 100).await;
    let acked = producers.stop().await;
    nothing_lost_nothing_twice(&d, &gw, &acked).await;
}

#[actix_web::test]
async fn a_paused_processor_cannot_commit_after_its_partitions_were_taken_over() {
    const LEASE: Duration = Duration::from_millis(2_000);
    let TwoShare { d, mut c, a, b, gw, producers } = two_sharing("2000", Duration::from_secs(20)).await;
    let (pa, pb) = (a.pid(), b.pid());
    // A freezes (a long GC pause, a VM stall) while its blocking read is
    // still answered by Redis: the entries it is handed stay in its pending
    // list, and B claims them once A's leases expire.
    a.signal(libc::SIGSTOP);
    let took = until_holders(&d, &mut c, LEASE * 4, "B takes the paused processor's partitions", |h| {
        h.len() == PARTITIONS && count_of(h, pb) == PARTITIONS
    })
    .await;
    let at = producers.acked();
    producers.until_acked(at + 100).await;
    // A wakes up with batches in hand and tokens that moved on.
    a.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::Client::new();
    let metric = |name: &'static str| {
        let (client, base) = (client.clone(), a.base());
        async move {
            let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            crate::helpers::metric_value(&text, name)
        }
    };
    // It gives up the partitions it no longer holds, then rebalances with B.
    until_holders(&d, &mut c, Duration::from_secs(20), "the woken processor gets a share again", |h| {
        h.len() == PARTITIONS && count_of(h, pa) == 8 && count_of(h, pb) == 8
    })
    .await;
    let lost = metric("cartpulse_partition_leases_total{outcome=\"lost\"}").await
        + metric("cartpulse_partition_leases_total{outcome=\"fenced\"}").await;
    let fenced = metric("cartpulse_commits_fenced_events_total").await;
    assert!(lost >= 8.0, "the paused processor must have dropped its 8 partitions: {lost}");
    assert!(Instant::now() < deadline);
    eprintln!("leases: paused processor's partitions taken over {took:?} after SIGSTOP; after SIGCONT it dropped {lost} leases and the database refused {fenced} events of its commits");
    let at = producers.acked();
    producers.until_acked(at + 100).await;
    let acked = producers.stop().await;
    nothing_lost_nothing_twice(&d, &gw, &acked).await;
}
