use crate::helpers::*;

async fn health_ready_and_metrics(db: Db) {
    let app = spawn_app(db).await;
    let (s, body) = app.get_json("/healthz", None).await;
    assert_eq!(s, 200);
    assert_eq!(body["status"], "ok");
    let (s, body) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["database"], "ok");
    let text = app.metrics_text().await;
    for name in [
        "cartpulse_events_ingested_total",
        "cartpulse_events_rejected_total",
        "cartpulse_events_duplicate_total",
        "cartpulse_commit_batch_events",
        "cartpulse_commit_duration_seconds",
        "cartpulse_actors_active",
        "cartpulse_actor_passivations_total",
        "cartpulse_events_applied_total",
    ] {
        assert!(text.contains(name), "metric {name} missing from /metrics");
    }
    // HTTP latency is recorded by route pattern.
    let text = app.metrics_text().await;
    assert!(
        text.contains("cartpulse_http_request_duration_seconds_count{method=\"GET\",route=\"/readyz\",status=\"200\"}"),
        "{text}"
    );
}
crate::on_both_databases!(health_ready_and_metrics);

/// The metric names of docs/operations.md's `## Metrics` table.
fn documented_metrics() -> std::collections::BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).expect("docs");
    let table = doc.split("## Metrics").nth(1).expect("a ## Metrics section");
    table
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("cartpulse_"))
        .map(str::to_owned)
        .collect()
}

/// Every metric a running server exposes is documented, and every documented
/// metric is registered somewhere in the code (no stale rows).
#[actix_web::test]
async fn every_metric_is_documented_and_every_documented_metric_exists() {
    let app = spawn_app(Db::Sqlite).await;
    // Give the labelled metrics values: an ingest, a refused login, a token, a 404.
    let (s, _) =
        app.post_events(&serde_json::json!([page_view("m1", "c1", "s1", "2026-11-01T10:00:00Z", "product")])).await;
    assert_eq!(s, 200);
    let _ = app.console_login_raw("nobody", "wrong password here").await;
    let _ = app.post_json("/v1/stream/token", None, Some(&app.read_key.clone())).await;
    let _ = app.get_json("/no/such/path", None).await;
    app.wait_metric("cartpulse_events_applied_total", 1.0, std::time::Duration::from_secs(10)).await;
    let documented = documented_metrics();
    assert!(documented.len() > 40, "the table was not parsed: {documented:?}");
    let text = app.metrics_text().await;
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "metrics missing from docs/operations.md: {undocumented:?}");
    let mut source = String::new();
    for dir in ["src", "actors/src"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("source dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    source.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    let stale: Vec<_> = documented.iter().filter(|n| !source.contains(&format!("\"{n}\""))).collect();
    assert!(stale.is_empty(), "documented but registered nowhere: {stale:?}");
}

/// A stop (what SIGTERM starts) turns `/readyz` to 503 at once, while
/// ingest and reads keep being served for `shutdown.drain_s`.
#[actix_web::test]
async fn a_stop_reports_not_ready_and_keeps_serving_through_the_drain() {
    use std::time::{Duration, Instant};
    let mut app = spawn_app_with(Db::Sqlite, |s| s.shutdown.drain_s = std::time::Duration::from_secs(3)).await;
    let (s, _) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200);
    let asked = Instant::now();
    app.stopper.stop();
    let body = eventually("/readyz answers 503 after the stop", Duration::from_secs(1), || async {
        match app.get_json("/readyz", None).await {
            (503, body) => Ok(body),
            (s, body) => Err(format!("{s} {body}")),
        }
    })
    .await;
    assert!(body.to_string().contains("draining"), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    let event = serde_json::json!([page_view("d1", "c-drain", "s-drain", "2026-11-01T10:00:00Z", "product")]);
    let (s, body) = app.post_events(&event).await;
    assert_eq!(s, 200, "ingest is served while draining: {body}");
    let (s, _) = app.get_customer("c-drain").await;
    assert_eq!(s, 200, "reads are served while draining");
    assert!(asked.elapsed() < Duration::from_secs(3), "the checks ran past the drain; the test proves nothing");
    app.stop().await;
}
