//! Online = offline for session features: UCI rows replayed through the
//! service come back from `GET /v1/sessions/{id}` equal to the rows.

use crate::helpers::*;
use actors::features::session::ShoppersFeatures;
use serde_json::Value;
use std::path::PathBuf;

fn data_file() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_shoppers_intention.csv"))
}

/// A sample CSV: every 37th row of the real file plus every row without
/// pages, or, without the file, rows of our own making.
fn sample_csv() -> (String, &'static str) {
    if let Ok(text) = std::fs::read_to_string(data_file()) {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default().to_owned();
        let mut out = vec![header];
        for (i, l) in lines.enumerate() {
            let zero_pages = l.starts_with("0,0,0,0,0,");
            if i % 37 == 0 || zero_pages {
                out.push(l.to_owned());
            }
        }
        return (out.join("\n") + "\n", "the UCI file");
    }
    let months = ["Feb", "Mar", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let visitors = ["Returning_Visitor", "New_Visitor", "Other"];
    let mut out = vec![ShoppersFeatures::UCI_COLUMNS.join(",") + ",Revenue"];
    for i in 0..200u32 {
        let (a, inf, p) = (i % 4, (i / 4) % 3, (i * 7) % 40);
        out.push(format!(
            "{a},{},{inf},{},{p},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            if a > 0 { (i * 13 % 300) as f64 + 0.5 } else { 0.0 },
            if inf > 0 { (i * 17 % 200) as f64 } else { 0.0 },
            if p > 0 { (i * 31 % 5000) as f64 + 0.25 } else { 0.0 },
            (i % 20) as f64 / 100.0,
            (i % 20) as f64 / 100.0 + 0.01,
            (i % 9) as f64 * 3.3,
            [0.0, 0.2, 0.4, 0.6, 0.8, 1.0][(i % 6) as usize],
            months[(i % 10) as usize],
            1 + i % 8,
            1 + i % 13,
            1 + i % 9,
            1 + i % 20,
            visitors[(i % 3) as usize],
            if i % 4 == 0 { "TRUE" } else { "FALSE" },
            if i % 6 == 0 { "TRUE" } else { "FALSE" },
        ));
    }
    (out.join("\n") + "\n", "generated rows (the UCI file is absent)")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-3)
}

async fn replayed_sessions_equal_their_rows(db: Db) {
    let app = spawn_app(db).await;
    let (csv, source) = sample_csv();
    let path = app.dir.path().join("sample.csv");
    std::fs::write(&path, &csv).unwrap();
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    println!("checked {} sessions from {source}", rows.len());
    assert_eq!(summary.sessions as usize, rows.len());
    assert_eq!(summary.rejected, 0);
    for (k, line) in rows.iter().enumerate() {
        let n = k + 1;
        let fields: Vec<&str> = line.split(',').collect();
        let (expected, revenue) = ShoppersFeatures::from_uci_record(&fields).unwrap();
        let expected = expected.to_uci_json();
        let (status, sess) = app.get_session(&format!("osi-s{n}")).await;
        assert_eq!(status, 200, "osi-s{n}: {sess}");
        assert_eq!(sess["status"], "closed");
        assert_eq!(sess["purchased"], revenue, "osi-s{n}: the session's outcome is the row's Revenue");
        assert_eq!(sess["customer_id"], format!("osi-c{n}"));
        let got = sess["features"].as_object().expect("features");
        for col in ShoppersFeatures::UCI_COLUMNS {
            let (e, g) = (&expected[col], &got[col]);
            let ok = match (e, g) {
                (Value::Number(a), Value::Number(b)) => close(a.as_f64().unwrap(), b.as_f64().unwrap()),
                _ => e == g,
            };
            assert!(ok, "row {n} column {col}: file {e}, service {g}");
        }
    }
}
crate::on_both_databases!(replayed_sessions_equal_their_rows);
