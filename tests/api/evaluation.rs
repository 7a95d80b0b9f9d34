//! Live evaluation of the served model: UCI rows replayed through the
//! service (with their purchases) are scored at close; the service's
//! evaluation must equal one computed here, independently, from the same
//! sessions' stored scores and outcomes.

use crate::helpers::*;
use crate::inference::tiny_model;
use cartpulse::models::artifact::PurchaseModel;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn sample_csv(step: usize) -> String {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_shoppers_intention.csv"));
    let text = std::fs::read_to_string(&path).expect("the UCI file ../shared/data/online_shoppers_intention.csv");
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_owned()];
    out.extend(lines.enumerate().filter(|(i, _)| i % step == 0).map(|(_, l)| l.to_owned()));
    out.join("\n") + "\n"
}

/// AUC by its definition: the share of (purchase, no purchase) pairs whose
/// scores are in the right order, ties counting half.
fn pairwise_auc(s: &[(f64, bool)]) -> f64 {
    let (mut good, mut pairs) = (0.0, 0.0);
    for (p, _) in s.iter().filter(|(_, y)| *y) {
        for (q, _) in s.iter().filter(|(_, y)| !*y) {
            pairs += 1.0;
            good += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    good / pairs
}

fn assert_close(what: &str, got: &Value, want: f64) {
    let g = got.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!((g - want).abs() <= 1e-9, "{what}: service {g}, here {want}");
}

#[actix_web::test]
async fn the_live_evaluation_equals_one_computed_from_the_same_sessions() {
    let dir = tiny_model(1);
    let model = PurchaseModel::load(&dir).unwrap();
    let version = model.manifest.model_version.clone();
    let threshold = f64::from(model.manifest.threshold);
    let model_dir = dir.display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.inference.model_dir = Some(model_dir);
        s.inference.score_debounce_ms = Duration::from_millis(50);
        s.inference.evaluate_every_s = Duration::from_secs(1);
    })
    .await;
    let csv = sample_csv(10);
    let rows = csv.lines().count() - 1;
    let path = app.dir.path().join("sample.csv");
    std::fs::write(&path, &csv).unwrap();
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    assert_eq!(summary.sessions as usize, rows);

    // Every replayed session closes at its session_end and is scored then.
    let db = cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap();
    let sessions: Vec<(f64, bool, chrono::NaiveDate)> =
        eventually("every session has its final score", Duration::from_secs(60), || async {
            use entities::session::{Column, Entity};
            let got: Vec<(Option<f64>, bool, Option<chrono::DateTime<chrono::Utc>>)> = Entity::find()
                .select_only()
                .columns([Column::Score, Column::Purchased, Column::EndedAt])
                .filter(Column::Status.eq("closed"))
                .filter(Column::ModelVersion.eq(version.as_str()))
                .into_tuple()
                .all(&db)
                .await
                .map_err(|e| e.to_string())?;
            let scored: Vec<_> = got.into_iter().filter_map(|(s, y, e)| Some((s?, y, e?.date_naive()))).collect();
            if scored.len() == rows {
                Ok(scored)
            } else {
                Err(format!("{} of {rows} scored", scored.len()))
            }
        })
        .await;

    let (status, e) = app.get_json(&format!("/v1/models/{version}/evaluation"), Some(&app.read_key)).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["version"], version.as_str());
    assert_close("threshold", &e["threshold"], threshold);
    let pairs: Vec<(f64, bool)> = sessions.iter().map(|(s, y, _)| (*s, *y)).collect();
    let overall = &e["overall"];
    let n = pairs.len() as f64;
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    assert_eq!(overall["sessions"], rows);
    assert_eq!(overall["positives"], positives);
    assert!(positives > 100, "the sample has purchases: {positives}");
    assert_close("positive rate", &overall["positive_rate"], positives as f64 / n);
    let correct = pairs.iter().filter(|(p, y)| (*p >= threshold) == *y).count();
    assert_close("accuracy", &overall["accuracy"], correct as f64 / n);
    assert_close("auc", &overall["auc"], pairwise_auc(&pairs));
    let brier = pairs.iter().map(|(p, y)| (p - if *y { 1.0 } else { 0.0 }).powi(2)).sum::<f64>() / n;
    assert_close("brier", &overall["brier"], brier);
    let bins = overall["calibration"].as_array().unwrap();
    assert_eq!(bins.len(), 10);
    for (i, b) in bins.iter().enumerate() {
        let (lo, hi) = (i as f64 / 10.0, (i + 1) as f64 / 10.0);
        let inside: Vec<&(f64, bool)> =
            pairs.iter().filter(|(p, _)| (*p >= lo && *p < hi) || (i == 9 && *p >= 1.0)).collect();
        assert_eq!(b["sessions"], inside.len(), "bin {i}");
        if !inside.is_empty() {
            let mean = inside.iter().map(|(p, _)| p).sum::<f64>() / inside.len() as f64;
            assert_close(&format!("bin {i} mean score"), &b["mean_score"], mean);
        }
    }

    // Per day: the days partition the sessions, each with its own figures.
    let days = e["days"].as_array().unwrap();
    assert_eq!(days.iter().map(|d| d["sessions"].as_u64().unwrap()).sum::<u64>() as usize, rows);
    for d in days {
        let date: chrono::NaiveDate = d["date"].as_str().unwrap().parse().unwrap();
        let of_day: Vec<(f64, bool)> = sessions.iter().filter(|s| s.2 == date).map(|s| (s.0, s.1)).collect();
        assert_eq!(d["sessions"], of_day.len(), "{date}");
        if of_day.iter().any(|s| s.1) && of_day.iter().any(|s| !s.1) {
            assert_close(&format!("auc of {date}"), &d["auc"], pairwise_auc(&of_day));
        } else {
            assert!(d["auc"].is_null(), "{d}");
        }
    }

    // The same figures on /metrics, once the evaluator's next round ran.
    let series = |name: &str| format!("{name}{{version=\"{version}\"}}");
    eventually("the live evaluation reaches /metrics", Duration::from_secs(20), || async {
        let text = app.metrics_text().await;
        match cartpulse::telemetry::scrape::sample(&text, &series("cartpulse_model_live_sessions")) {
            Some(n) if n as usize == rows => Ok(()),
            other => Err(format!("live sessions {other:?}")),
        }
    })
    .await;
    let text = app.metrics_text().await;
    for (name, field) in [("auc", "auc"), ("accuracy", "accuracy"), ("brier", "brier")] {
        let got = cartpulse::telemetry::scrape::sample(&text, &series(&format!("cartpulse_model_live_{name}")));
        let want = overall[field].as_f64().unwrap();
        assert!(got.is_some_and(|g| (g - want).abs() <= 1e-9 * want.abs().max(1.0)), "{name}: {got:?} vs {want}");
    }

    let (status, _) = app.get_json(&format!("/v1/models/{version}/evaluation"), None).await;
    assert_eq!(status, 401);
    let (status, body) = app.get_json("/v1/models/no-such-version/evaluation", Some(&app.read_key)).await;
    assert_eq!(status, 404, "{body}");
}
