//! Segmentation end to end, on SQLite and Postgres:
//!
//! - `cartpulse segment`: synthetic customers go in over HTTP, the app stops
//!   (flushing every profile), then the job runs against the same database and
//!   must segment exactly the non-guest customers;
//! - offline = online: a slice of Online Retail is replayed, segmented and
//!   activated over HTTP, and every actor must assign the batch's segment,
//!   show it on `GET /v1/customers/{id}` and persist it;
//! - activation made elsewhere (as by `cartpulse segments activate`) reaches a
//!   running server through its watcher; unusable versions are refused.

use crate::helpers::{eventually, purchase, spawn_app, test_settings, Db, TestApp};
use crate::on_both_databases;
use cartpulse::jobs::segment::{run, KChoice, SegmentOptions};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::Value;

const CUSTOMERS: usize = 300;

/// Customer i: a third loyal (8 large recent orders), a third regular
/// (2 mid-sized orders), a third lapsed one-timers (one small old order).
fn events() -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..CUSTOMERS {
        let c = format!("seg-{i:03}");
        let (orders, day0, price) = match i % 3 {
            0 => (8, 200, 120.0 + i as f64),
            1 => (2, 150, 15.0 + (i % 7) as f64),
            _ => (1, 1, 2.0 + (i % 5) as f64),
        };
        for o in 0..orders {
            let day = day0 + o * 20;
            let time = format!("2025-{:02}-{:02}T10:00:00Z", 1 + day / 28 % 12, 1 + day % 28);
            out.push(purchase(&format!("{c}-{o}"), &c, None, &time, &format!("{c}-INV{o}"), 3, price));
        }
    }
    // Guests are counted by the shop but must never be segmented.
    for g in 0..5 {
        out.push(purchase(&format!("guest-{g}"), &format!("guest-{g}"), None, "2025-03-01T10:00:00Z", "G", 1, 9.0));
    }
    out
}

async fn segments_exactly_the_non_guest_customers(db: Db) {
    let mut app = spawn_app(db).await;
    for chunk in events().chunks(500) {
        let (status, body) = app.post_events(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 200, "{body}");
    }
    // Wait until every event is applied, then stop: shutdown flushes the profiles.
    app.wait_metric(
        "cartpulse_events_applied_total",
        (CUSTOMERS / 3 * 11 + 5) as f64,
        std::time::Duration::from_secs(30),
    )
    .await;
    app.stop().await;

    let opts = SegmentOptions {
        settings: test_settings(&app.database_url),
        k: KChoice::Fixed(3),
        export_matrix: Some(app.dir.path().join("matrix.csv")),
        assignments: None,
        report: None,
        seed: 42,
        print_table: false,
        buyers_only: false,
        lake: None,
    };
    let report = run(opts).await.expect("segment");
    assert_eq!(report.k, 3);
    assert_eq!(report.n_customers, CUSTOMERS);
    assert_eq!(report.segments.len(), 3);
    assert_eq!(report.segments.iter().map(|s| s.size).sum::<usize>(), CUSTOMERS);
    // The three groups are obvious, so each is one segment.
    let mut sizes: Vec<usize> = report.segments.iter().map(|s| s.size).collect();
    sizes.sort();
    assert_eq!(sizes, vec![100, 100, 100], "{report:?}");
    assert!(report.segments.iter().any(|s| s.name.contains("one-timers")), "{report:?}");

    // A new version was stored, and the matrix exported (header + one row per customer).
    let conn = cartpulse::db::connect(&test_settings(&app.database_url)).await.expect("connect");
    let stored = entities::prelude::Segmentation::find_by_id(report.version).one(&conn).await.expect("query");
    let stored = stored.expect("segmentation row");
    assert_eq!((stored.k, stored.n_customers, stored.active), (3, CUSTOMERS as i32, false));
    assert_eq!(entities::prelude::Segmentation::find().count(&conn).await.expect("count"), 1);
    let csv = std::fs::read_to_string(app.dir.path().join("matrix.csv")).expect("matrix");
    assert_eq!(csv.lines().count(), CUSTOMERS + 1);
    assert!(!csv.contains("guest-"));
}

on_both_databases!(segments_exactly_the_non_guest_customers);

/// Visitors who only browsed (a year after the orders, as the demo's
/// shoppers sessions are) are segmented by default and left out with
/// `buyers_only`, whose recency is then measured from the buyers' latest
/// activity: the three groups come out as they do without the browsers.
async fn buyers_only_leaves_out_customers_who_never_ordered(db: Db) {
    const BROWSERS: usize = 40;
    let mut app = spawn_app(db).await;
    let mut all = events();
    for b in 0..BROWSERS {
        let (c, s) = (format!("browser-{b}"), format!("browser-{b}-s"));
        all.push(crate::helpers::page_view(&format!("{s}-p"), &c, &s, "2026-06-01T10:00:00Z", "product"));
    }
    for chunk in all.chunks(500) {
        let (status, body) = app.post_events(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 200, "{body}");
    }
    app.wait_metric(
        "cartpulse_events_applied_total",
        (CUSTOMERS / 3 * 11 + 5 + BROWSERS) as f64,
        std::time::Duration::from_secs(30),
    )
    .await;
    app.stop().await;
    let opts = |buyers_only| SegmentOptions {
        settings: test_settings(&app.database_url),
        k: KChoice::Fixed(3),
        export_matrix: None,
        assignments: None,
        report: None,
        seed: 42,
        print_table: false,
        buyers_only,
        lake: None,
    };
    let everyone = run(opts(false)).await.expect("segment");
    assert_eq!(everyone.n_customers, CUSTOMERS + BROWSERS);
    let buyers = run(opts(true)).await.expect("segment buyers");
    assert_eq!(buyers.n_customers, CUSTOMERS);
    // The latest order (a loyal customer's 8th, day 340), not the browsers' June 2026.
    assert!(
        buyers.as_of < "2026-01-01T00:00:00Z".parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
        "{}",
        buyers.as_of
    );
    let mut sizes: Vec<usize> = buyers.segments.iter().map(|s| s.size).collect();
    sizes.sort();
    assert_eq!(sizes, vec![100, 100, 100], "{buyers:?}");
}

on_both_databases!(buyers_only_leaves_out_customers_who_never_ordered);

// ------------------------------------------------------------ live segments

fn retail_file() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_retail.csv"))
}

/// A retail CSV slice: every row of the customers whose id is a multiple of 8
/// (their whole history, so the profiles are real ones), plus the guest
/// invoices of the file's last day, so the latest event may be a guest's,
/// which is exactly where batch and live reference times could part. Without
/// the file: rows of our own making in the same format, the last one a guest's.
fn retail_sample() -> (String, &'static str) {
    if let Ok(file) = std::fs::File::open(retail_file()) {
        let mut r = csv::Reader::from_reader(std::io::BufReader::new(file));
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(r.headers().expect("header")).expect("write");
        for rec in r.records() {
            let rec = rec.expect("record");
            let customer = rec.get(6).unwrap_or("");
            let keep = match customer.split('.').next().and_then(|c| c.parse::<u64>().ok()) {
                Some(id) => id % 8 == 0,
                None => rec.get(4).is_some_and(|t| t.starts_with("2011-12-09")),
            };
            if keep {
                w.write_record(&rec).expect("write");
            }
        }
        return (String::from_utf8(w.into_inner().expect("csv")).expect("utf8"), "the Online Retail file");
    }
    let mut out = vec!["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country".to_owned()];
    let mut inv = 100_000;
    for c in 0..240u32 {
        let orders = 1 + (c * 7) % 9;
        for o in 0..orders {
            inv += 1;
            let day = (c * 13 + o * 37) % 330;
            let date = chrono::NaiveDate::from_ymd_opt(2011, 1, 1).unwrap() + chrono::Duration::days(day as i64);
            let hour = 8 + (c + o) % 10;
            for l in 0..(1 + (c + o) % 6) {
                let qty = 1 + (c * 3 + l) % 24;
                let price = 0.5 + ((c * 17 + l * 5) % 300) as f64 / 10.0;
                out.push(format!(
                    "{inv},SKU{},ITEM {l},{qty},{date} {hour:02}:00:00,{price:.2},{}.0,United Kingdom",
                    (c + l) % 50,
                    13000 + c
                ));
            }
            // Every fifth customer sends a line back now and then.
            if c % 5 == 0 && o == 1 {
                out.push(format!(
                    "C{inv},SKU{},ITEM 0,-1,{date} {:02}:30:00,1.00,{}.0,United Kingdom",
                    c % 50,
                    hour,
                    13000 + c
                ));
            }
        }
    }
    out.push("999999,SKU1,GUEST ITEM,2,2011-12-31 23:00:00,3.00,,United Kingdom".to_owned());
    (out.join("\n") + "\n", "generated rows (the Online Retail file is absent)")
}

/// `customer_id,segment` as the batch wrote it.
fn read_assignments(path: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let mut r = csv::Reader::from_path(path).expect("assignments file");
    assert_eq!(r.headers().expect("header").iter().collect::<Vec<_>>(), ["customer_id", "segment"]);
    r.records()
        .map(|rec| {
            let rec = rec.expect("record");
            (rec[0].to_owned(), rec[1].parse().expect("segment index"))
        })
        .collect()
}

/// Every customer's `segment` from `GET /v1/customers/{id}` (`None` when unassigned).
async fn live_segments(app: &TestApp, ids: &[String]) -> Vec<Option<(i64, u64, String)>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let (status, body) = app.get_customer(id).await;
        assert_eq!(status, 200, "{id}: {body}");
        let s = &body["segment"];
        out.push(if s.is_null() {
            None
        } else {
            Some((
                s["version"].as_i64().expect("version"),
                s["segment"].as_u64().expect("segment"),
                s["name"].as_str().expect("name").to_owned(),
            ))
        });
    }
    out
}

/// Offline = online on real data: replay a slice of Online Retail, flush,
/// segment, activate over HTTP; every actor must then put its customer in the
/// very segment the batch put it in, show it on `GET /v1/customers/{id}`, and
/// persist it in `customers.segment_version` / `segment`.
async fn live_segments_equal_the_batch(db: Db) {
    let mut app = spawn_app(db).await;
    let (csv_text, source) = retail_sample();
    let path = app.dir.path().join("retail-sample.csv");
    std::fs::write(&path, &csv_text).expect("write sample");
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Retail, path).await;
    assert_eq!(summary.rejected, 0, "{summary:?}");
    app.wait_metric("cartpulse_events_applied_total", summary.accepted as f64, std::time::Duration::from_secs(60))
        .await;
    // Flush every profile to its snapshot, then segment what was stored.
    app.stop().await;
    let dir = app.dir.path().to_owned();
    let report = run(SegmentOptions {
        settings: test_settings(&app.database_url),
        k: KChoice::Fixed(4),
        export_matrix: None,
        assignments: Some(dir.join("assignments.csv")),
        report: Some(dir.join("report")),
        seed: 42,
        print_table: false,
        buyers_only: false,
        lake: None,
    })
    .await
    .expect("segment");
    let batch = read_assignments(&dir.join("assignments.csv"));
    println!("{} customers from {source}, {} segments", batch.len(), report.k);
    assert_eq!(batch.len(), report.n_customers);
    assert!(batch.len() >= 200, "the sample holds only {} customers", batch.len());
    assert!(batch.keys().all(|id| id.starts_with("rc-")), "guests must not be segmented");
    let mut sizes = vec![0usize; report.k];
    for &s in batch.values() {
        sizes[s as usize] += 1;
    }
    assert_eq!(sizes, report.segments.iter().map(|s| s.size).collect::<Vec<_>>());
    for png in ["sizes.png", "profiles.png"] {
        let bytes = std::fs::read(dir.join("report").join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }

    let app = app.restart().await;
    let ids: Vec<String> = batch.keys().cloned().collect();
    // Nothing is active yet: the version is listed, no customer has a segment.
    let (status, list) = app.get_json("/v1/segments", Some(&app.read_key)).await;
    assert_eq!(status, 200, "{list}");
    assert!(list["active"].is_null(), "{list}");
    let listed = &list["segmentations"][0];
    assert_eq!(listed["version"], report.version);
    assert_eq!(listed["k"], report.k);
    assert_eq!(listed["segments"].as_array().expect("segments").len(), report.k);
    assert!(listed["segments"][0]["centroid"]["monetary"].is_number(), "{listed}");
    assert!(live_segments(&app, &ids).await.iter().all(Option::is_none));

    // Activation: admin only, unknown versions are 404.
    let path = format!("/v1/segments/{}/activate", report.version);
    assert_eq!(app.post_json(&path, None, Some(&app.read_key)).await.0, 403);
    assert_eq!(app.post_json("/v1/segments/9999/activate", None, Some(&app.admin_key)).await.0, 404);
    assert_eq!(app.post_json("/v1/segments/x/activate", None, Some(&app.admin_key)).await.0, 404);
    let (status, body) = app.post_json(&path, None, Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], report.version);

    // The actors loaded above reassign on their next tick (500 ms).
    let live = eventually("every customer has a live segment", std::time::Duration::from_secs(15), || async {
        let live = live_segments(&app, &ids).await;
        match live.iter().filter(|s| s.is_none()).count() {
            0 => Ok(live),
            n => Err(format!("{n} customers without one")),
        }
    })
    .await;
    let names: Vec<&str> = report.segments.iter().map(|s| s.name.as_str()).collect();
    let mut different = Vec::new();
    for ((id, &want), got) in batch.iter().zip(&live) {
        match got {
            Some((v, s, name)) if *v == report.version as i64 && *s == want && name == names[want as usize] => {}
            other => different.push(format!("{id}: batch {want}, live {other:?}")),
        }
    }
    assert!(
        different.is_empty(),
        "{} of {} differ: {:?}",
        different.len(),
        ids.len(),
        &different[..different.len().min(10)]
    );

    // Persisted: after a flush the customer rows carry the same segments, and
    // the listing counts them as live sizes.
    let mut app = app.restart().await;
    let conn = cartpulse::db::connect(&test_settings(&app.database_url)).await.expect("connect");
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    let rows: Vec<(String, Option<i32>, Option<i32>)> = entities::customer::Entity::find()
        .select_only()
        .column(entities::customer::Column::CustomerId)
        .column(entities::customer::Column::SegmentVersion)
        .column(entities::customer::Column::Segment)
        .filter(entities::customer::Column::CustomerId.like("rc-%"))
        .into_tuple()
        .all(&conn)
        .await
        .expect("customer rows");
    assert_eq!(rows.len(), batch.len());
    for (id, v, s) in &rows {
        assert_eq!((*v, *s), (Some(report.version), Some(batch[id] as i32)), "{id}");
    }
    let (_, list) = app.get_json("/v1/segments", Some(&app.read_key)).await;
    assert_eq!(list["active"], report.version);
    let live_sizes: Vec<u64> = list["segmentations"][0]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .map(|s| s["live_size"].as_u64().expect("live_size"))
        .collect();
    assert_eq!(live_sizes, sizes.iter().map(|&n| n as u64).collect::<Vec<_>>());
    app.stop().await;
}

on_both_databases!(live_segments_equal_the_batch);

/// An activation made by another process (the CLI, another replica) reaches
/// a running server through its watcher; a version this build cannot use is
/// refused and changes nothing.
async fn activation_elsewhere_reaches_running_servers(db: Db) {
    let mut app = spawn_app(db).await;
    let evs: Vec<Value> = events().into_iter().take(120).collect();
    let (status, body) = app.post_events(&Value::Array(evs.clone())).await;
    assert_eq!(status, 200, "{body}");
    app.wait_metric("cartpulse_events_applied_total", evs.len() as f64, std::time::Duration::from_secs(30)).await;
    app.stop().await;
    let opts = |k| SegmentOptions {
        settings: test_settings(&app.database_url),
        k: KChoice::Fixed(k),
        export_matrix: None,
        assignments: None,
        report: None,
        seed: 42,
        print_table: false,
        buyers_only: false,
        lake: None,
    };
    let v2 = run(opts(2)).await.expect("segment k=2").version;
    let v3 = run(opts(3)).await.expect("segment k=3").version;
    let app = app.restart().await;
    let conn = cartpulse::db::connect(&test_settings(&app.database_url)).await.expect("connect");

    let wait_for = |version: i32| {
        let app = &app;
        async move {
            eventually(
                &format!("seg-000 in version {version}"),
                3 * cartpulse::segments::assign::WATCH_EVERY,
                || async {
                    let (status, c) = app.get_customer("seg-000").await;
                    assert_eq!(status, 200, "{c}");
                    if c["segment"]["version"] == version {
                        Ok(c["segment"].clone())
                    } else {
                        Err(c["segment"].to_string())
                    }
                },
            )
            .await
        }
    };
    cartpulse::segments::assign::activate(&conn, v2).await.expect("activate v2");
    let s = wait_for(v2).await;
    assert!(s["segment"].as_u64().expect("segment") < 2, "{s}");
    cartpulse::segments::assign::activate(&conn, v3).await.expect("activate v3");
    wait_for(v3).await;
    let active: Vec<i32> = entities::prelude::Segmentation::find()
        .all(&conn)
        .await
        .expect("versions")
        .into_iter()
        .filter(|r| r.active)
        .map(|r| r.version)
        .collect();
    assert_eq!(active, vec![v3], "exactly one version is active");

    // A version over other features (made by another build) is refused, over HTTP too.
    use sea_orm::{ActiveModelTrait, IntoActiveModel, Set};
    let bad = entities::prelude::Segmentation::find_by_id(v2).one(&conn).await.expect("query").expect("row");
    let mut bad = bad.into_active_model();
    bad.feature_names = Set("[\"recency_days\"]".into());
    bad.update(&conn).await.expect("tamper");
    let err = cartpulse::segments::assign::activate(&conn, v2).await.expect_err("unusable version");
    assert!(err.to_string().contains("other features"), "{err}");
    let (status, body) = app.post_json(&format!("/v1/segments/{v2}/activate"), None, Some(&app.admin_key)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(cartpulse::segments::assign::active_version(&conn).await.expect("active"), Some(v3));
}

on_both_databases!(activation_elsewhere_reaches_running_servers);
