//! SIGKILL in the middle of a replay: nothing acknowledged is lost, nothing
//! is counted twice. The server is the real binary in its own process.

use crate::helpers::*;
use cartpulse::jobs::bench::serve_process::{create_key, ServeCommand, ServeProcess};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cartpulse");

pub(crate) fn free_port() -> u16 {
    cartpulse::jobs::bench::serve_process::free_port().expect("a free port")
}

/// `cartpulse serve` on `port` over `db_url`, ready.
async fn start_server(db_url: &str, port: u16) -> ServeProcess {
    ServeCommand::new(BIN)
        .unwrap()
        .port(port)
        .args(["--database-url", db_url])
        // Snapshots lag on purpose, so recovery must come from the log.
        .env("CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS", "5000")
        .env("CARTPULSE_ACTORS__SNAPSHOT_EVERY_EVENTS", "100000")
        .start(Duration::from_secs(30))
        .await
        .expect("cartpulse serve")
}

/// Customer i: one session of `3 + i % 5` product pages, a purchase and a
/// session_end, all in one batch.
pub(crate) fn batch(i: usize) -> Value {
    let c = format!("k{i}");
    let s = format!("k{i}-s");
    let mut events: Vec<Value> = (0..3 + i % 5)
        .map(|p| page_view(&format!("k{i}-p{p}"), &c, &s, &format!("2025-10-01T10:{:02}:00Z", p), "product"))
        .collect();
    events.push(purchase(&format!("k{i}-buy"), &c, Some(&s), "2025-10-01T10:30:00Z", &format!("K{i}"), 2, 5.0));
    events.push(json!({"type": "session_end", "event_id": format!("k{i}-end"), "customer_id": c, "session_id": s, "time": "2025-10-01T10:31:00Z"}));
    Value::Array(events)
}

pub(crate) fn expected_events(i: usize) -> usize {
    3 + i % 5 + 2
}

#[actix_web::test]
async fn sigkill_mid_replay_loses_no_acknowledged_event_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("crash.db").display());
    let key = create_key(BIN, &db_url, "crash", "admin").expect("keys create");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = start_server(&db_url, port).await;

    const N: usize = 600;
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let accepted_total = Arc::new(AtomicUsize::new(0));
    // Four producers send customers' batches; the server dies under them.
    let mut producers = Vec::new();
    for p in 0..4 {
        let (client, base, key, acked, accepted_total) =
            (client.clone(), base.clone(), key.clone(), acked.clone(), accepted_total.clone());
        producers.push(actix_web::rt::spawn(async move {
            for i in (p..N).step_by(4) {
                let r = client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(i)).send().await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap();
                        accepted_total.fetch_add(body["accepted"].as_u64().unwrap() as usize, Ordering::SeqCst);
                        acked.lock().unwrap().push(i);
                    }
                    _ => return,
                }
            }
        }));
    }
    eventually("two fifths of the replay acknowledged", Duration::from_secs(60), || async {
        match acked.lock().unwrap().len() {
            n if n >= N * 2 / 5 => Ok(()),
            n => Err(format!("{n} of {N}")),
        }
    })
    .await;
    server.kill();
    for p in producers {
        let _ = p.await;
    }
    let acked_before: Vec<usize> = acked.lock().unwrap().clone();
    assert!(acked_before.len() < N, "the kill came too late to test anything");

    let server = start_server(&db_url, port).await;
    let get = |id: String| {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            let r = client.get(format!("{base}/v1/customers/{id}")).bearer_auth(&key).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Every acknowledged customer is there, whole, before anything is resent.
    for &i in &acked_before {
        let (s, c) = get(format!("k{i}")).await;
        assert_eq!(s, 200, "acknowledged customer k{i} lost");
        assert_eq!(c["recent_sessions"][0]["n_events"], expected_events(i), "k{i}: {c}");
        assert_eq!(c["profile"]["frequency"], 1.0, "k{i}");
    }
    // The replay resumes from the start: acknowledged batches are duplicates.
    let mut accepted_after = 0;
    for i in 0..N {
        let r = client.post(format!("{base}/v1/events")).bearer_auth(&key).json(&batch(i)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if acked_before.contains(&i) {
            assert_eq!(body["accepted"], 0, "k{i} was acknowledged before the crash");
        }
        accepted_after += body["accepted"].as_u64().unwrap() as usize;
    }
    // A batch committed just before the kill but never answered comes back
    // as duplicates, so acceptances can only fall short of the total.
    let total: usize = (0..N).map(expected_events).sum();
    assert!(accepted_total.load(Ordering::SeqCst) + accepted_after <= total, "an event was accepted twice");
    for i in 0..N {
        let (s, c) = get(format!("k{i}")).await;
        assert_eq!(s, 200);
        assert_eq!(c["profile"]["frequency"], 1.0, "k{i} counted twice: {c}");
        assert_eq!(c["profile"]["sessions"], 1.0, "k{i}");
        assert_eq!(c["recent_sessions"][0]["n_events"], expected_events(i), "k{i}");
    }
    drop(server);
    // The log holds every event exactly once.
    let settings = test_settings(&db_url);
    let db = cartpulse::db::connect(&settings).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    let logged = entities::event::Entity::find().count(&db).await.unwrap();
    assert_eq!(logged as usize, total);
}

/// A `serve` that exits before it is ready: the start's error quotes the
/// end of its log, so a failed start in CI says why without `TEST_LOG`.
#[actix_web::test]
async fn a_start_that_fails_quotes_the_end_of_the_log() {
    let err = match ServeCommand::new(BIN)
        .unwrap()
        .log(false)
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
        .start(Duration::from_secs(60))
        .await
    {
        Ok(_) => panic!("a serve without a reachable database became ready"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("exited before it was ready"), "{err}");
    assert!(err.contains("connecting to the database"), "the child's own error is quoted: {err}");
}
