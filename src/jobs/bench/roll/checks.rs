//! What `bench roll` checks once production is over: the streams drained,
//! the log, the customers' sessions and the topics' newest seqs.

use super::producers::LANES;
use super::{customer_id, RollArgs, RollReport};
use crate::jobs::bench::servers::Replicas;
use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Waits until a gateway reports no event left in the streams (twice: the
/// figure is refreshed every 500 ms).
pub(super) async fn drained(gateway: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut zero = 0;
    loop {
        let ready: serde_json::Value = client.get(format!("{gateway}/readyz")).send().await?.json().await?;
        if ready["stream_backlog_events"] == 0 {
            zero += 1;
            if zero == 2 {
                return Ok(());
            }
        } else {
            zero = 0;
        }
        if Instant::now() > deadline {
            bail!("the processors did not drain the streams within 120 s: {ready}");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// Every acknowledged event in the log, once.
pub(super) async fn check_log(
    replicas: &Replicas,
    acked: &HashMap<String, usize>,
    report: &mut RollReport,
) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(&replicas.database_url).await.context("connecting to the bench database")?;
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT event_id, count(*) AS n FROM events WHERE event_id LIKE 'rr-%' GROUP BY event_id",
        ))
        .await
        .context("reading the event log")?;
    let mut logged: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for r in rows {
        logged.insert(r.try_get("", "event_id")?, r.try_get("", "n")?);
    }
    report.events_lost = acked.keys().filter(|id| !logged.contains_key(*id)).count() as u64;
    report.events_counted_twice += logged.values().map(|n| (*n - 1).max(0) as u64).sum::<u64>();
    Ok(())
}

/// Every customer's session counts exactly the events acknowledged for it
/// (read through a gateway: the stored snapshot, at most 200 ms behind).
pub(super) async fn check_customers(
    gateway: &str,
    key: &SecretString,
    customers: usize,
    acked: &HashMap<String, usize>,
    report: &mut RollReport,
) -> anyhow::Result<()> {
    let mut want = vec![0u64; customers.max(LANES)];
    for c in acked.values() {
        want[*c] += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    for (c, want) in want.iter().enumerate() {
        if *want == 0 {
            continue;
        }
        let id = customer_id(c);
        let r = client.get(format!("{gateway}/v1/customers/{id}")).bearer_auth(key.expose_secret()).send().await?;
        let have = if r.status().is_success() {
            let v: serde_json::Value = r.json().await?;
            let session = format!("{id}-s");
            let sessions = v["open_session"]
                .as_object()
                .into_iter()
                .chain(v["recent_sessions"].as_array().into_iter().flatten().filter_map(|s| s.as_object()));
            sessions
                .filter(|s| s["session_id"] == session.as_str())
                .filter_map(|s| s["n_events"].as_u64())
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        report.customers_checked += 1;
        if have > *want {
            report.events_counted_twice += have - want;
        } else {
            report.events_not_applied += want - have;
        }
    }
    Ok(())
}

/// The newest seq of `kpis` and of every viewed customer's topic.
pub(super) async fn topic_heads(replicas: &Replicas, args: &RollArgs) -> anyhow::Result<HashMap<String, u64>> {
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut topics = vec!["kpis".to_owned()];
    topics.extend((0..args.viewers.min(args.customers)).map(|i| format!("customer:{}", customer_id(i))));
    let mut out = HashMap::new();
    for t in topics {
        let key = format!("{}:{{{t}}}:seq", replicas.prefix);
        let seq: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
        out.insert(t, seq.unwrap_or(0));
    }
    Ok(out)
}
