use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn accepted_duplicates_and_reads(db: Db) {
    let app = spawn_app(db).await;
    let batch = json!([
        page_view("e1", "c1", "s1", "2025-05-03T10:00:00Z", "administrative"),
        page_view("e2", "c1", "s1", "2025-05-03T10:00:10Z", "product"),
        page_view("e3", "c1", "s1", "2025-05-03T10:00:20Z", "product"),
        {"type": "add_to_cart", "event_id": "e4", "customer_id": "c1", "session_id": "s1",
         "time": "2025-05-03T10:00:30Z", "sku": "SKU-1", "quantity": 2, "unit_price": 4.5},
        purchase("e5", "c1", Some("s1"), "2025-05-03T10:01:00Z", "INV-1", 2, 4.5),
        {"type": "session_end", "event_id": "e6", "customer_id": "c1", "session_id": "s1", "time": "2025-05-03T10:01:05Z"}
    ]);
    let (s, body) = app.post_events(&batch).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"accepted": 6, "duplicates": 0, "rejected": []}));

    // Resending is safe: everything is a duplicate, nothing is counted twice.
    let (s, body) = app.post_events(&batch).await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"accepted": 0, "duplicates": 6, "rejected": []}));
    // Duplicates inside one batch too.
    let (s, body) = app
        .post_events(&json!([
            page_view("e7", "c1", "s2", "2025-05-04T09:00:00Z", "informational"),
            page_view("e7", "c1", "s2", "2025-05-04T09:00:00Z", "informational")
        ]))
        .await;
    assert_eq!((s, body["accepted"].clone(), body["duplicates"].clone()), (200, json!(1), json!(1)));

    // Reads see acknowledged events at once.
    let (s, c) = app.get_customer("c1").await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["profile"]["frequency"], 1.0);
    assert_eq!(c["profile"]["monetary"], 9.0);
    assert_eq!(c["profile"]["sessions"], 1.0);
    assert_eq!(c["profile"]["cart_adds"], 1.0);
    assert_eq!(c["open_session"]["session_id"], "s2");
    assert_eq!(c["recent_sessions"][0]["session_id"], "s1");
    assert_eq!(c["recent_sessions"][0]["close_reason"], "session_end");

    let (s, sess) = app.get_session("s1").await;
    assert_eq!(s, 200, "{sess}");
    assert_eq!(sess["status"], "closed");
    assert_eq!(sess["n_events"], 6);
    assert_eq!(sess["purchased"], true);
    let f = &sess["features"];
    assert_eq!(f["Administrative"], 1);
    assert_eq!(f["ProductRelated"], 2);
    assert_eq!(f["ProductRelated_Duration"], 20.0);
    assert_eq!(f["Month"], "May");
    assert_eq!(f["Weekend"], true, "2025-05-03 is a Saturday");
    assert_eq!(f["VisitorType"], "Returning_Visitor");
    let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 17);
    assert_eq!(keys[0], "Administrative", "features follow the file's column order");

    let (s, _) = app.get_customer("nobody").await;
    assert_eq!(s, 404);
    let (s, _) = app.get_session("nothing").await;
    assert_eq!(s, 404);
    let (s, _) = app.get_json("/v1/customers/bad%20id", Some(&app.read_key.clone())).await;
    assert_eq!(s, 400);

    let m = app.metrics_text().await;
    assert_eq!(metric_value(&m, "cartpulse_events_ingested_total"), 7.0);
    assert_eq!(metric_value(&m, "cartpulse_events_duplicate_total"), 7.0);
}
crate::on_both_databases!(accepted_duplicates_and_reads);

async fn ndjson_and_group_commit(db: Db) {
    let app = spawn_app(db).await;
    let before = app.metric("cartpulse_commit_batch_events_count").await;
    // 2,000 events in one request are one transaction, not 2,000.
    let mut lines = String::new();
    for i in 0..2000 {
        let c = format!("c{}", i % 50);
        let s = format!("s{}", i % 50);
        lines.push_str(&page_view(&format!("n{i}"), &c, &s, "2025-06-02T10:00:00Z", "product").to_string());
        lines.push('\n');
    }
    let r = app.post_events_raw(Some(&app.ingest_key), Some("application/x-ndjson"), lines).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["accepted"], 2000);
    let m = app.metrics_text().await;
    assert_eq!(metric_value(&m, "cartpulse_commit_batch_events_count") - before, 1.0);
    assert_eq!(metric_value(&m, "cartpulse_commit_batch_events_sum"), 2000.0);
    app.wait_metric("cartpulse_events_applied_total", 2000.0, Duration::from_secs(20)).await;
    let (_, c) = app.get_customer("c7").await;
    assert_eq!(c["open_session"]["n_events"], 40);
}
crate::on_both_databases!(ndjson_and_group_commit);

async fn overlapping_group_commits_reach_the_actors_in_log_order(db: Db) {
    let app = spawn_app(db).await;
    // 8 senders at once over 10 shared customers: on Postgres group commits
    // overlap. An actor skips an event at or below the last position it
    // applied, so a group handed over before an earlier one would lose
    // events from the customers' counts.
    let (senders, requests, per_request, customers) = (8, 12, 250, 10);
    let send = |sender: usize| {
        let app = &app;
        async move {
            let (mut accepted, mut duplicates) = (0, 0);
            for r in 0..requests {
                let mut batch = Vec::with_capacity(per_request + 50);
                for i in 0..per_request {
                    let k = (sender * requests + r) * per_request + i;
                    let c = format!("c{}", k % customers);
                    batch.push(page_view(&format!("o{k}"), &c, &format!("s{c}"), "2025-06-02T10:00:00Z", "product"));
                }
                // A resend of part of the previous request: duplicates, never counted.
                if r > 0 {
                    for i in 0..50 {
                        let k = (sender * requests + r - 1) * per_request + i;
                        let c = format!("c{}", k % customers);
                        batch.push(page_view(
                            &format!("o{k}"),
                            &c,
                            &format!("s{c}"),
                            "2025-06-02T10:00:00Z",
                            "product",
                        ));
                    }
                }
                let (s, body) = app.post_events(&Value::Array(batch)).await;
                assert_eq!(s, 200, "{body}");
                accepted += body["accepted"].as_u64().unwrap();
                duplicates += body["duplicates"].as_u64().unwrap();
            }
            (accepted, duplicates)
        }
    };
    let results = futures::future::join_all((0..senders).map(send)).await;
    let total = (senders * requests * per_request) as u64;
    assert_eq!(results.iter().map(|r| r.0).sum::<u64>(), total);
    assert_eq!(results.iter().map(|r| r.1).sum::<u64>(), (senders * (requests - 1) * 50) as u64);
    app.wait_metric("cartpulse_events_applied_total", total as f64, Duration::from_secs(60)).await;
    for c in 0..customers {
        let (s, body) = app.get_customer(&format!("c{c}")).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["open_session"]["n_events"], total / customers as u64, "customer c{c}: {body}");
    }
}
crate::on_both_databases!(overlapping_group_commits_reach_the_actors_in_log_order);

#[actix_web::test]
async fn sessions_close_on_gap_new_session_and_end() {
    let app = spawn_app_with(Db::Sqlite, |s| s.actors.session_gap_s = std::time::Duration::from_secs(1800)).await;
    let (s, _) = app
        .post_events(&json!([
            page_view("g1", "cg", "sa", "2025-07-01T10:00:00Z", "product"),
            page_view("g2", "cg", "sb", "2025-07-01T12:00:00Z", "product"),
            page_view("g3", "cg", "sc", "2025-07-01T12:05:00Z", "product"),
            {"type": "session_end", "event_id": "g4", "customer_id": "cg", "session_id": "sc", "time": "2025-07-01T12:06:00Z"}
        ]))
        .await;
    assert_eq!(s, 200);
    let (_, c) = app.get_customer("cg").await;
    let reasons: Vec<(String, String)> = c["recent_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["session_id"].as_str().unwrap().to_owned(), s["close_reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("sc".to_owned(), "session_end".to_owned()),
            ("sb".to_owned(), "new_session".to_owned()),
            ("sa".to_owned(), "inactivity".to_owned())
        ]
    );
    assert!(c["open_session"].is_null());
}

#[actix_web::test]
async fn quiet_sessions_close_on_wall_clock() {
    let app = spawn_app_with(Db::Sqlite, |s| s.actors.session_gap_s = std::time::Duration::from_secs(1)).await;
    let now = chrono::Utc::now().to_rfc3339();
    let (s, _) = app.post_events(&json!([page_view("w1", "cw", "sw", &now, "product")])).await;
    assert_eq!(s, 200);
    // The gap is 1 s and actors look at their timers every 0.5 s.
    let sess = eventually("the quiet session closes", Duration::from_secs(10), || async {
        let (_, sess) = app.get_session("sw").await;
        if sess["status"] == "closed" {
            Ok(sess)
        } else {
            Err(sess.to_string())
        }
    })
    .await;
    assert_eq!(sess["close_reason"], "inactivity");
}

#[actix_web::test]
async fn old_sessions_are_served_from_the_database() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.actors.recent_sessions = 1;
        s.actors.snapshot_max_delay_ms = std::time::Duration::from_millis(50);
    })
    .await;
    let mut events = Vec::new();
    for k in 0..3 {
        let t = format!("2025-08-0{}T10:00:00Z", k + 1);
        let t_end = format!("2025-08-0{}T10:05:00Z", k + 1);
        events.push(page_view(&format!("o{k}a"), "co", &format!("so{k}"), &t, "product"));
        events.push(json!({"type": "session_end", "event_id": format!("o{k}e"), "customer_id": "co", "session_id": format!("so{k}"), "time": t_end}));
    }
    let (s, _) = app.post_events(&Value::Array(events)).await;
    assert_eq!(s, 200);
    // The actor keeps only the newest closed session; the first one must
    // come from its stored row once the snapshot is written.
    app.wait_metric("cartpulse_persisted_rows_total{table=\"sessions\"}", 3.0, Duration::from_secs(10)).await;
    let (s, sess) = app.get_session("so0").await;
    assert_eq!(s, 200, "{sess}");
    assert_eq!(sess["status"], "closed");
    assert_eq!(sess["n_events"], 2);
    assert_eq!(sess["close_reason"], "session_end");
    assert_eq!(sess["features"]["ProductRelated"], 1);
    let (_, c) = app.get_customer("co").await;
    assert_eq!(c["recent_sessions"].as_array().unwrap().len(), 1);
    assert_eq!(c["profile"]["sessions"], 3.0);
}
