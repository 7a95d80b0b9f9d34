//! Passivation, restarts, crashes and database outages.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn customer_batch(c: &str) -> Value {
    json!([
        page_view(&format!("{c}-1"), c, &format!("{c}-s1"), "2025-09-01T10:00:00Z", "product"),
        page_view(&format!("{c}-2"), c, &format!("{c}-s1"), "2025-09-01T10:00:30Z", "informational"),
        purchase(&format!("{c}-3"), c, Some(&format!("{c}-s1")), "2025-09-01T10:01:00Z", &format!("{c}-inv"), 3, 2.5),
        {"type": "session_end", "event_id": format!("{c}-4"), "customer_id": c, "session_id": format!("{c}-s1"), "time": "2025-09-01T10:02:00Z"},
        page_view(&format!("{c}-5"), c, &format!("{c}-s2"), "2025-09-02T08:00:00Z", "administrative")
    ])
}

async fn idle_actors_passivate_and_come_back_identical(db: Db) {
    let app = spawn_app_with(db, |s| s.actors.passivate_after_s = std::time::Duration::from_secs(1)).await;
    let (s, _) = app.post_events(&customer_batch("cp")).await;
    assert_eq!(s, 200);
    let (_, before) = app.get_customer("cp").await;
    app.wait_metric("cartpulse_actor_passivations_total", 1.0, Duration::from_secs(15)).await;
    assert_eq!(app.metric("cartpulse_actors_active").await, 0.0);
    let (s, after) = app.get_customer("cp").await;
    assert_eq!(s, 200);
    assert_eq!(before, after, "state after passivation differs");
    assert_eq!(app.metric("cartpulse_actor_activations_total").await, 2.0);
    // And it carries on from there.
    let (s, _) = app.post_events(&json!([page_view("cp-6", "cp", "cp-s2", "2025-09-02T08:00:10Z", "product")])).await;
    assert_eq!(s, 200);
    let (_, c) = app.get_customer("cp").await;
    assert_eq!(c["open_session"]["n_events"], 2);
    assert_eq!(c["profile"]["frequency"], 1.0);
}
crate::on_both_databases!(idle_actors_passivate_and_come_back_identical);

async fn state_survives_a_restart(db: Db) {
    let app = spawn_app(db).await;
    for c in ["r1", "r2", "r3"] {
        let (s, _) = app.post_events(&customer_batch(c)).await;
        assert_eq!(s, 200);
    }
    let (_, before) = app.get_customer("r2").await;
    let (_, sess_before) = app.get_session("r2-s1").await;
    let app = app.restart().await;
    let (s, after) = app.get_customer("r2").await;
    assert_eq!(s, 200);
    assert_eq!(before, after);
    let (_, sess_after) = app.get_session("r2-s1").await;
    assert_eq!(sess_before, sess_after);
    // Nothing is counted twice after the restart.
    let (_, body) = app.post_events(&customer_batch("r2")).await;
    assert_eq!(body["duplicates"], 5);
    let (_, c) = app.get_customer("r2").await;
    assert_eq!(c["profile"]["frequency"], 1.0);
}
crate::on_both_databases!(state_survives_a_restart);

/// Postgres goes away (connections refused and killed): ingest answers 503
/// with Retry-After and acknowledges nothing; when it is back, the same batch
/// is accepted as new.
#[actix_web::test]
async fn database_outage_gives_503_and_acknowledges_nothing() {
    use sea_orm::{ConnectionTrait, Database};
    let app = spawn_app(Db::Postgres).await;
    let dbname = app.database_url.rsplit('/').next().unwrap().to_owned();
    let admin = Database::connect(PG_ADMIN_URL).await.expect("admin connection");
    let (s, _) = app.post_events(&customer_batch("o0")).await;
    assert_eq!(s, 200);

    admin.execute_unprepared(&format!("ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    let r =
        app.post_events_raw(Some(&app.ingest_key), Some("application/json"), customer_batch("o1").to_string()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let (s, _) = app.get_json("/readyz", None).await;
    assert_eq!(s, 503);

    admin.execute_unprepared(&format!("ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")).await.unwrap();
    let mut accepted = Value::Null;
    for _ in 0..50 {
        let (s, body) = app.post_events(&customer_batch("o1")).await;
        if s == 200 {
            accepted = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted["accepted"], 5, "the batch refused during the outage was not stored: {accepted}");
    let (s, c) = app.get_customer("o1").await;
    assert_eq!(s, 200);
    assert_eq!(c["profile"]["frequency"], 1.0);
}

/// Memory stays bounded: past `max_active_per_shard` the least recently used
/// actors passivate, and come back with their state when needed.
#[actix_web::test]
async fn actor_count_is_capped_per_shard() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.actors.shards = 2;
        s.actors.max_active_per_shard = 5;
    })
    .await;
    for i in 0..40 {
        let (s, _) = app.post_events(&customer_batch(&format!("m{i}"))).await;
        assert_eq!(s, 200);
    }
    app.wait_metric("cartpulse_actor_passivations_total", 25.0, Duration::from_secs(15)).await;
    let active = app.metric("cartpulse_actors_active").await;
    assert!(active <= 10.0, "{active} actors alive with a cap of 2 x 5");
    for i in [0, 13, 39] {
        let (s, c) = app.get_customer(&format!("m{i}")).await;
        assert_eq!(s, 200);
        assert_eq!(c["profile"]["frequency"], 1.0);
        assert_eq!(c["open_session"]["n_events"], 1);
    }
}
