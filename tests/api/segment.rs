//! `cartpulse segment` end to end: synthetic customers go in over HTTP, the
//! app stops (flushing every profile), then the segmentation job runs against
//! the same database and must segment exactly the non-guest customers.

use crate::helpers::{purchase, spawn_app, test_settings, Db};
use crate::on_both_databases;
use cartpulse::segment::{run, KChoice, SegmentOptions};
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
        seed: 42,
        print_table: false,
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
