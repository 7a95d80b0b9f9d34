//! Retention of the event log (`retention.*`): archived, checkpointed
//! events received more than `events_days` ago leave the database, nothing
//! before it is archived; a resend of a deleted event is still a duplicate
//! while its id is kept (`dedup_days`), and is new again after. On Postgres
//! each day of receipt has a partition of its own, made ahead by the
//! service, and leaves by a DROP.
//!
//! Retention runs here with a clock moved forward (`retain`'s `now`), so
//! events received seconds ago count as old. The app runs with
//! `events_days = 1`, so its group commit (on SQLite) checks every event at
//! most a day ahead of now against the retired ids, as it would check a
//! resend of an event received more than a day ago.

use crate::helpers::*;
use crate::lake::{archive_settings, database_rows, events, ingest, lake_location, run_archive};
use crate::on_both_databases;
use actors::WriteGate;
use cartpulse::config::Settings;
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{json, Value};
use std::time::Duration;

async fn app(db: Db) -> TestApp {
    spawn_app_with(db, |s| {
        s.actors.checkpoint_interval_ms = Duration::from_millis(100);
        s.retention.events_days = 1;
        s.retention.batch_rows = 40;
    })
    .await
}

/// `n` page views stamped at `at`, ids `ret-{tag}-{i}`.
fn recent(tag: &str, n: usize, at: DateTime<Utc>) -> Vec<Value> {
    let time = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..n)
        .map(|i| {
            page_view(
                &format!("ret-{tag}-{i}"),
                &format!("ret-c{}", i % 7),
                &format!("ret-s{}", i % 7),
                &time,
                "product",
            )
        })
        .collect()
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one(Statement::from_string(db.get_database_backend(), sql.to_owned())).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn event_partitions(db: &DatabaseConnection, table: &str) -> Vec<String> {
    cartpulse::retention::partitions::list(db, table).await.unwrap().into_iter().map(|(_, n)| n).collect()
}

async fn retain(
    conn: &DatabaseConnection,
    settings: &Settings,
    through: i64,
    days_ahead: i64,
) -> cartpulse::retention::RetentionReport {
    let now = Utc::now() + TimeDelta::days(days_ahead);
    cartpulse::retention::retain(conn, &WriteGate::open(), settings, through, now).await.expect("retention run")
}

/// What the resends must not move: the customer's profile and open session's size.
async fn customer(app: &TestApp, id: &str) -> (Value, Value) {
    let (status, c) = app.get_customer(id).await;
    assert_eq!(status, 200, "{c}");
    (c["profile"].clone(), c["open_session"]["n_events"].clone())
}

async fn post(app: &TestApp, events: &[Value]) -> (u64, u64) {
    let (status, body) = app.post_events(&Value::Array(events.to_vec())).await;
    assert_eq!(status, 200, "{body}");
    (body["accepted"].as_u64().unwrap(), body["duplicates"].as_u64().unwrap())
}

async fn old_archived_events_leave_the_database(db: Db) {
    let postgres = matches!(db, Db::Postgres);
    let app = app(db).await;
    let lake = lake_location(false, app.dir.path()).await;
    let mut settings = archive_settings(&app.database_url, &lake);
    settings.retention = cartpulse::config::RetentionSettings { events_days: 1, batch_rows: 40, ..Default::default() };
    let conn = cartpulse::db::connect(&settings).await.unwrap();
    // Where the ids of deleted events are kept.
    let ids_sql = if postgres { "SELECT count(*) FROM event_ids" } else { "SELECT count(*) FROM retired_event_ids" };

    if postgres {
        let today = Utc::now().date_naive();
        let parts = event_partitions(&conn, "events").await;
        for k in [-1, 0, 1, 2] {
            let name = cartpulse::retention::partitions::name("events", today + TimeDelta::days(k));
            assert!(parts.contains(&name), "the service made {name} ahead: {parts:?}");
        }
    }

    // 270 events of late November (replayed history) and 130 of the last
    // minutes: 8 whole blocks, all received today.
    let old: Vec<Value> = events(0, 300).into_iter().filter(|e| e["type"] != "remove_from_cart").collect();
    assert_eq!(old.len(), 270);
    // One instant for every live event, so they share a day partition.
    let at = Utc::now() - TimeDelta::minutes(10);
    let live = recent("a", 130, at);
    ingest(&app, &old).await;
    ingest(&app, &live).await;
    if postgres {
        let today = cartpulse::retention::partitions::name("events", Utc::now().date_naive());
        assert_eq!(count(&conn, &format!("SELECT count(*) FROM {today}")).await, 400, "all in the day of receipt");
        assert_eq!(count(&conn, "SELECT count(*) FROM events_default").await, 0);
    }

    // Nothing leaves before it is archived.
    let r = retain(&conn, &settings, 0, 2).await;
    assert_eq!(r.deleted_events, 0, "{r:?}");
    assert_eq!(count(&conn, "SELECT count(*) FROM events").await, 400);

    let a = run_archive(&settings).await;
    assert_eq!(a.archived_through, 400, "{a:?}");
    // 20 more, not archived (their block is not full).
    let tail = recent("b", 20, at);
    ingest(&app, &tail).await;
    let before = database_rows(&conn).await;

    // Nothing leaves before it is old enough: received seconds ago.
    let r = retain(&conn, &settings, a.archived_through, 0).await;
    assert_eq!(r.deleted_events, 0, "{r:?}");

    let r = retain(&conn, &settings, a.archived_through, 2).await;
    let left = database_rows(&conn).await;
    if postgres {
        // The day's partition also holds the 20 unarchived events: it stays whole.
        assert_eq!(r.deleted_events, 0, "{r:?}");
        assert_eq!(left.len(), 420);
        assert!(r.kept.iter().any(|k| k.contains("not archived")), "{r:?}");
    } else {
        // SQLite deletes the archived prefix of the log.
        assert_eq!(r.deleted_events, 400, "{r:?}");
        assert_eq!(left.len(), 20);
        assert!(left.keys().all(|s| *s > 400), "only the unarchived events stay");
    }
    assert!(left.iter().all(|(s, row)| before.get(s) == Some(row)), "what stays is untouched");
    assert_eq!(count(&conn, ids_sql).await, if postgres { 420 } else { 400 }, "every id is still known");

    // The next block fills; everything archived and old goes.
    ingest(&app, &recent("c", 30, at)).await;
    let a = run_archive(&settings).await;
    assert_eq!(a.archived_through, 450, "{a:?}");
    let r = retain(&conn, &settings, a.archived_through, 2).await;
    assert_eq!(count(&conn, "SELECT count(*) FROM events").await, 0, "{r:?}");
    assert_eq!(count(&conn, ids_sql).await, 450);
    if postgres {
        let today = cartpulse::retention::partitions::name("events", Utc::now().date_naive());
        assert!(r.dropped_partitions.contains(&today), "the day left by a DROP: {r:?}");
        assert!(!event_partitions(&conn, "events").await.contains(&today));
    }

    // Resends of deleted events, history and live: all duplicates, and the
    // customers the API shows are unchanged.
    let customer_before = customer(&app, "ret-c3").await;
    let resend: Vec<Value> = old.iter().step_by(7).chain(live.iter().step_by(5)).chain(tail.iter()).cloned().collect();
    let (accepted, duplicates) = post(&app, &resend).await;
    assert_eq!((accepted, duplicates), (0, resend.len() as u64), "a resend of a deleted event is a duplicate");
    assert_eq!(count(&conn, "SELECT count(*) FROM events").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(customer(&app, "ret-c3").await, customer_before, "the customer's state did not move");

    // After `dedup_days` the ids are forgotten: the same resend is new.
    let r = retain(&conn, &settings, a.archived_through, 92).await;
    assert_eq!(r.expired_ids, 450, "{r:?}");
    assert_eq!(count(&conn, ids_sql).await, 0);
    let (accepted, _) = post(&app, &resend[..5]).await;
    assert_eq!(accepted, 5, "ids older than dedup_days are not recognised any more (the documented window)");
}
on_both_databases!(old_archived_events_leave_the_database);

/// The partitioning migration over a log that already holds events: every
/// row keeps its position, the log's sequence carries on after them, and a
/// resend of an old event is still a duplicate.
#[actix_web::test]
async fn the_partitioning_migration_keeps_the_log() {
    use migration::MigratorTrait;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let conn = cartpulse::db::connect(&test_settings(&url)).await.unwrap();
    // Up to the partitioning migration, not through it.
    let before_partitioning = migration::Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261205_000001_partition_events")
        .expect("the partitioning migration") as u32;
    migration::Migrator::up(&conn, Some(before_partitioning)).await.unwrap();
    conn.execute_unprepared(
        "INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) VALUES \
         ('m1', 'c', NULL, 'session_end', now() - interval '3 days', now(), '{\"type\":\"session_end\"}'), \
         ('m2', 'c', NULL, 'session_end', now(), now(), '{\"type\":\"session_end\"}'), \
         ('m3', 'c', NULL, 'session_end', now() + interval '1 hour', now(), '{\"type\":\"session_end\"}')",
    )
    .await
    .unwrap();
    let before = database_rows(&conn).await;
    migration::Migrator::up(&conn, None).await.unwrap();
    assert_eq!(database_rows(&conn).await, before, "the same rows at the same positions");
    assert_eq!(count(&conn, "SELECT count(*) FROM events_default").await, 3, "all in the default partition at first");
    assert_eq!(count(&conn, "SELECT count(*) FROM event_ids").await, 3, "their ids known");

    // The service starts: today's partition takes its rows over from the default one.
    let app = start(test_settings(&url), std::sync::Arc::new(dir), None).await;
    assert_eq!(database_rows(&conn).await, before);
    assert_eq!(count(&conn, "SELECT count(*) FROM events_default").await, 0, "moved into the day of receipt");
    let today = cartpulse::retention::partitions::name("events", Utc::now().date_naive());
    assert_eq!(count(&conn, &format!("SELECT count(*) FROM {today}")).await, 3);
    // A resend of a copied event is a duplicate, even with another time
    // (a producer that stamps its retries anew).
    let row = conn
        .query_one(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT event_time FROM events WHERE event_id = 'm1'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let time: chrono::DateTime<Utc> = row.try_get("", "event_time").unwrap();
    let resend = serde_json::json!({"type": "session_end", "event_id": "m1", "customer_id": "c", "session_id": "s",
        "time": (time + TimeDelta::seconds(5)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)});
    assert_eq!(post(&app, &[resend]).await, (0, 1));
    let next = recent("mig", 1, Utc::now());
    assert_eq!(post(&app, &next).await, (1, 0));
    // (The duplicate drew a position it did not use, as any conflict does.)
    let after = database_rows(&conn).await;
    assert_eq!(after.len(), 4);
    assert!(
        after.keys().max().copied() > before.keys().max().copied(),
        "the sequence carries on after the copied rows"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_cartpulse");

/// Runs `cartpulse bench retention ARGS` (on SQLite, or on a fresh Postgres
/// database) and answers its JSON report.
async fn bench_retention(db: Db, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    if matches!(db, Db::Postgres) {
        cmd.arg("--database-url").arg(fresh_database(db, dir.path()).await);
    }
    let out = cmd.args(["bench", "retention"]).args(args).current_dir(dir.path()).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench retention failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a report")).expect("the JSON report")
}

/// The compressed simulation: the database stays bounded (events and
/// retired ids), the lake holds every event, each day's count in the lake
/// equals what was sent.
async fn bench_retention_simulates_days(db: Db) {
    let r = bench_retention(
        db,
        &["--simulate-days", "5", "--day-events", "3000", "--events-days", "1", "--dedup-days", "2"],
    )
    .await;
    assert_eq!(r["sent"], 15_000, "{r}");
    assert_eq!(
        (r["bounded"].clone(), r["archive_complete"].clone(), r["days_equal"].clone()),
        (json!(true), json!(true), json!(true)),
        "{r}"
    );
    // Judged, not skipped: days 4 and 5 follow the first expiry.
    assert!(r["steady_bytes_growth"].as_f64().is_some_and(|g| g <= 1.10), "{r}");
    let days = r["days"].as_array().unwrap();
    assert_eq!(days.len(), 5);
    // One day is kept: from the second day on, each day deletes the one
    // before it. Ids stay two days: SQLite keeps the deleted day's, Postgres
    // every id of both days.
    assert_eq!(days[0]["deleted"], 0, "{r}");
    assert!(days[1..].iter().all(|d| d["deleted"] == 3000 && d["rows_in_database"] == 3000), "{r}");
    let ids = if matches!(db, Db::Postgres) { 6000 } else { 3000 };
    assert!(days[1..].iter().all(|d| d["retired_ids"] == ids), "{r}");
}
on_both_databases!(bench_retention_simulates_days);

/// A day deleted while `serve` takes live events: all of it goes, no
/// request fails, and both phases have acknowledgements to compare (the
/// p99 floor itself is for the release build on a quiet machine).
#[actix_web::test]
async fn bench_retention_deletes_a_day_under_load() {
    let r = bench_retention(Db::Sqlite, &["--day-events", "4000", "--rate", "400", "--steady-s", "6"]).await;
    assert_eq!(r["deleted_events"], 4000, "{r}");
    assert_eq!(r["failed_requests"], 0, "{r}");
    assert!(r["steady_requests"].as_u64().unwrap() > 20 && r["steady_p99_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["p99_ratio"].as_f64().is_some(), "{r}");
}
