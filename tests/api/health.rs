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
