//! A/B analysis end to end: two published versions split the customers
//! (`promote --traffic`), UCI rows none of them trained on are replayed with
//! their purchases, every session is scored at close by its customer's arm,
//! and `GET /v1/models/compare` (and `cartpulse models compare`) must find a
//! deliberately weak model significantly worse than a good one, and no
//! significant difference between two equally good ones.

use crate::helpers::*;
use crate::inference::tiny_model;
use cartpulse::models::artifact::PurchaseModel;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cartpulse");

/// A deliberately weak model: one small net, two epochs, on 1 % of the rows.
fn weak_model() -> PathBuf {
    let mut config = cartpulse::jobs::train::ModelConfig { members: 1, ..Default::default() };
    config.net.hidden = vec![4];
    config.net.max_epochs = 2;
    config.net.patience = 1;
    config.net.swa = 1;
    crate::inference::train_model(&uci_rows(|i| i % 100 == 0), config, 5)
}

fn version_of(dir: &Path) -> String {
    PurchaseModel::load(dir).unwrap().manifest.model_version
}

/// A service whose registry serves `a` and, for a share `traffic_b` of the
/// customers, `b`. Returns the app and the model store's path.
async fn ab_app(a: &Path, b: &Path, traffic_b: f64) -> (TestApp, PathBuf) {
    let store = tempfile::tempdir().unwrap().keep();
    let store_path = store.display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| {
        s.model_store = store_path;
        s.inference.score_debounce_ms = Duration::from_millis(50);
    })
    .await;
    let mut settings = test_settings(&app.database_url);
    settings.model_store = store.display().to_string();
    let conn = cartpulse::db::connect(&settings).await.unwrap();
    let registry = cartpulse::models::ModelRegistry::from_settings(conn, &settings).await.unwrap();
    registry.publish(a).await.unwrap();
    registry.publish(b).await.unwrap();
    let admin = app.admin_key.clone();
    let (status, body) = app.promote_model(&version_of(a), None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.promote_model(&version_of(b), Some(traffic_b), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    eventually("both versions are served", Duration::from_secs(10), || async {
        match app.inference.serving().len() {
            2 => Ok(()),
            n => Err(format!("{n} served")),
        }
    })
    .await;
    (app, store)
}

/// Replays the UCI rows that no test model trained on (tiny models use
/// every 4th row from 0, the weak one every 100th) and waits until every
/// session is closed and scored. Returns how many there are.
async fn replay_unseen_rows(app: &TestApp) -> u64 {
    let csv = uci_rows(|i| i % 4 == 2);
    let rows = (csv.lines().count() - 1) as u64;
    let path = app.dir.path().join("unseen.csv");
    std::fs::write(&path, &csv).unwrap();
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    assert_eq!(summary.sessions, rows);
    let db = cartpulse::db::connect(&test_settings(&app.database_url)).await.unwrap();
    eventually("every replayed session is scored at close", Duration::from_secs(90), || async {
        use entities::session::{Column, Entity};
        let scored = Entity::find()
            .filter(Column::Status.eq("closed"))
            .filter(Column::Score.is_not_null())
            .count(&db)
            .await
            .map_err(|e| e.to_string())?;
        if scored == rows {
            Ok(())
        } else {
            Err(format!("{scored} of {rows} scored"))
        }
    })
    .await;
    rows
}

fn difference<'a>(c: &'a Value, metric: &str) -> &'a Value {
    c["differences"].as_array().unwrap().iter().find(|d| d["metric"] == metric).unwrap()
}

#[actix_web::test]
async fn the_analysis_finds_a_weak_model_significantly_worse() {
    let (good, weak) = (tiny_model(1), weak_model());
    let (vg, vw) = (version_of(&good), version_of(&weak));
    let (app, store) = ab_app(&good, &weak, 0.4).await;
    let rows = replay_unseen_rows(&app).await;

    // Without a and b: the two active versions, the larger share as A.
    let (status, c) = app.compare_models("").await;
    assert_eq!(status, 200, "{c}");
    assert_eq!((c["a"]["version"].as_str(), c["b"]["version"].as_str()), (Some(vg.as_str()), Some(vw.as_str())));
    let (na, nb) = (c["a"]["sessions"].as_u64().unwrap(), c["b"]["sessions"].as_u64().unwrap());
    assert_eq!(na + nb, rows, "every session is on one arm");
    assert!((0.3..0.5).contains(&(nb as f64 / rows as f64)), "{nb} of {rows} sessions on the 40 % arm");

    // Each arm's figures are its version's live evaluation.
    for (arm, version) in [("a", &vg), ("b", &vw)] {
        let (status, e) = app.get_json(&format!("/v1/models/{version}/evaluation"), Some(&app.read_key)).await;
        assert_eq!(status, 200, "{e}");
        let o = &e["overall"];
        assert_eq!(c[arm]["sessions"], o["sessions"]);
        assert_eq!(c[arm]["purchases"], o["positives"]);
        for (mine, theirs) in
            [("conversion", "positive_rate"), ("accuracy", "accuracy"), ("auc", "auc"), ("brier", "brier")]
        {
            let (x, y) = (c[arm][mine].as_f64().unwrap(), o[theirs].as_f64().unwrap());
            assert!((x - y).abs() < 1e-12, "{arm} {mine}: {x} vs {y}");
        }
    }

    let auc = difference(&c, "auc");
    assert_eq!(auc["significant"], true, "{c:#}");
    assert_eq!(auc["ahead"], vg.as_str(), "{c:#}");
    assert!(auc["ci_high"].as_f64().unwrap() < 0.0, "B (weak) − A (good) is below 0: {auc}");
    assert!(auc["p_value"].as_f64().unwrap() < 0.05, "{auc}");
    let want = format!("{vg} ranks sessions significantly better than {vw}");
    assert!(c["verdict"].as_str().unwrap().starts_with(&want), "{}", c["verdict"]);
    assert_eq!(difference(&c, "brier")["ahead"], vg.as_str(), "the good model's Brier score is lower: {c:#}");

    // The command line reads the same sessions and prints the same analysis.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["--database-url", &app.database_url, "--model-store", store.to_str().unwrap()])
            .args(["models", "compare"])
            .args(args)
            .env_remove("CARTPULSE_MODEL_STORE")
            .output()
            .expect("run cartpulse");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let cli: Value = serde_json::from_str(&run(&[&vg, &vw, "--json"])).unwrap();
    assert_eq!(cli, c, "models compare --json prints what the endpoint answers");
    let table = run(&[]);
    assert!(table.contains(c["verdict"].as_str().unwrap()), "{table}");
    assert!(table.lines().any(|l| l.starts_with("auc") && l.contains("yes")), "{table}");

    // Bad requests name the problem.
    for (query, status) in [
        (format!("?a={vg}"), 400),
        (format!("?a={vg}&b={vg}"), 400),
        (format!("?a=no-such&b={vg}"), 404),
        ("?c=1".to_owned(), 400),
    ] {
        let (got, body) = app.compare_models(&query).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{query}: {body}");
    }
    let (status, _) = app.get_json("/v1/models/compare", None).await;
    assert_eq!(status, 401);
}

#[actix_web::test]
async fn two_equally_good_models_are_not_told_apart() {
    let (a, b) = (tiny_model(1), tiny_model(2));
    let (va, vb) = (version_of(&a), version_of(&b));
    let (app, _store) = ab_app(&a, &b, 0.5).await;
    replay_unseen_rows(&app).await;
    let (status, c) = app.compare_models(&format!("?a={va}&b={vb}")).await;
    assert_eq!(status, 200, "{c}");
    let auc = difference(&c, "auc");
    assert_eq!(auc["significant"], false, "{c:#}");
    let (lo, hi) = (auc["ci_low"].as_f64().unwrap(), auc["ci_high"].as_f64().unwrap());
    assert!(lo < 0.0 && hi > 0.0, "the interval covers no difference: [{lo}, {hi}]");
    assert!(c["verdict"].as_str().unwrap().contains("not significantly"), "{}", c["verdict"]);
}
