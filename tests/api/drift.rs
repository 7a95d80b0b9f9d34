//! Drift end to end: a served model trained on a quarter of the UCI rows;
//! replaying other rows of the same file must flag nothing, and replaying
//! only the November rows (a shifted population) must flag the month, with
//! the PSI the endpoint reports equal to one computed here from the file,
//! and the same figure on `/metrics`.

use crate::helpers::*;
use crate::inference::tiny_model;
use cartpulse::models::artifact::PurchaseModel;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The data rows (counted from 0) that `keep` keeps, split into fields.
fn rows(keep: impl Fn(usize, &[&str]) -> bool) -> (String, Vec<Vec<String>>) {
    let text = uci_text();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_owned();
    let kept: Vec<Vec<String>> = lines
        .enumerate()
        .map(|(i, l)| (i, l.split(',').collect::<Vec<_>>()))
        .filter(|(i, f)| keep(*i, f))
        .map(|(_, f)| f.into_iter().map(str::to_owned).collect())
        .collect();
    (header, kept)
}

const MONTH: usize = 10;

/// Serves the tiny model (trained on rows 0, 4, 8, …), replays `replayed`
/// and waits until every session is closed and scored.
async fn replay_through_tiny_model(replayed: &[Vec<String>], header: &str) -> (TestApp, String) {
    let dir = tiny_model(1);
    let version = PurchaseModel::load(&dir).unwrap().manifest.model_version;
    let model_dir = dir.display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.inference.model_dir = Some(model_dir);
        s.inference.score_debounce_ms = Duration::from_millis(50);
        s.inference.evaluate_every_s = Duration::from_secs(1);
    })
    .await;
    let csv = std::iter::once(header.to_owned()).chain(replayed.iter().map(|r| r.join(","))).collect::<Vec<_>>();
    let path = app.dir.path().join("replayed.csv");
    std::fs::write(&path, csv.join("\n") + "\n").unwrap();
    app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    let want = replayed.len() as u64;
    eventually("every replayed session is scored", Duration::from_secs(90), || async {
        let (status, e) = app.get_json(&format!("/v1/models/{version}/evaluation"), Some(&app.read_key)).await;
        match e["overall"]["sessions"].as_u64() {
            Some(n) if status == 200 && n == want => Ok(()),
            _ => Err(format!("{status} {}", e["overall"]["sessions"])),
        }
    })
    .await;
    (app, version)
}

fn feature<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["features"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap()
}

#[actix_web::test]
async fn rows_like_the_training_rows_flag_no_drift() {
    let (header, replayed) = rows(|i, _| i % 4 == 2);
    let (app, version) = replay_through_tiny_model(&replayed, &header).await;
    let (status, d) = app.get_json(&format!("/v1/models/{version}/drift"), Some(&app.read_key)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["sessions"], replayed.len());
    assert_eq!(d["scored_sessions"], replayed.len());
    assert_eq!(d["unreadable"], 0);
    assert_eq!(d["flagged"], serde_json::json!([]), "{d:#}");
    for f in d["features"].as_array().unwrap() {
        assert!(f["psi"].as_f64().unwrap() < 0.1, "stable: {f}");
    }
    assert!(d["score"]["psi"].as_f64().unwrap() < 0.1, "{}", d["score"]);
}

#[actix_web::test]
async fn november_rows_alone_flag_the_month() {
    let (header, training) = rows(|i, _| i % 4 == 0);
    let (_, replayed) = rows(|i, f| i % 4 != 0 && f[MONTH] == "Nov");
    let (app, version) = replay_through_tiny_model(&replayed, &header).await;
    let (status, d) = app.get_json(&format!("/v1/models/{version}/drift"), Some(&app.read_key)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["sessions"], replayed.len());
    let month = feature(&d, "Month");
    assert_eq!(month["flagged"], true, "{d:#}");
    assert!(d["flagged"].as_array().unwrap().contains(&Value::from("Month")), "{d:#}");

    // The month's PSI by hand: training shares per month against all-November.
    let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &training {
        *shares.entry(r[MONTH].as_str()).or_default() += 1.0 / training.len() as f64;
    }
    let floor = |x: f64| x.max(1e-4);
    let want: f64 = shares
        .iter()
        .map(|(m, e)| {
            let a = if *m == "Nov" { 1.0 } else { 0.0 };
            (floor(a) - floor(*e)) * (floor(a) / floor(*e)).ln()
        })
        .sum();
    let got = month["psi"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "Month PSI: service {got}, here {want}");
    // Every flagged figure is above the threshold, every other one is not.
    for f in d["features"].as_array().unwrap().iter().chain(std::iter::once(&d["score"])) {
        let psi = f["psi"].as_f64().unwrap();
        assert_eq!(f["flagged"].as_bool().unwrap(), psi > 0.2, "{f}");
    }

    // The same figure on /metrics once the evaluator's next round ran.
    let series = format!("cartpulse_model_feature_psi{{feature=\"Month\",version=\"{version}\"}}");
    let on_metrics = eventually("the month's PSI reaches /metrics", Duration::from_secs(20), || async {
        let text = app.metrics_text().await;
        cartpulse::telemetry::scrape::sample(&text, &series).ok_or_else(|| "absent".to_owned())
    })
    .await;
    assert!((on_metrics - got).abs() < 1e-9, "{on_metrics} vs {got}");

    for (query, status) in [("?window_s=0", 400), ("?window_s=99999999", 400), ("?window=5", 400)] {
        let (got, body) = app.get_json(&format!("/v1/models/{version}/drift{query}"), Some(&app.read_key)).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (status, body) = app.get_json("/v1/models/no-such/drift", Some(&app.read_key)).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app.get_json(&format!("/v1/models/{version}/drift"), None).await;
    assert_eq!(status, 401);
}
