//! Serving the purchase-intent model: `POST /v1/predict`, the scores the
//! session actors keep (online = offline against `PurchaseModel::predict`),
//! a panicking worker, and hot swaps under load.

use crate::helpers::*;
use actors::features::ShoppersFeatures;
use cartpulse::models::artifact::PurchaseModel;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

fn data_file() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_shoppers_intention.csv"))
}

/// Every `step`-th row of the UCI file (header kept).
fn sample_rows(step: usize) -> Vec<String> {
    let text = std::fs::read_to_string(data_file()).expect("the UCI file ../shared/data/online_shoppers_intention.csv");
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_owned()];
    out.extend(lines.enumerate().filter(|(i, _)| i % step == 0).map(|(_, l)| l.to_owned()));
    out
}

fn features(line: &str) -> ShoppersFeatures {
    ShoppersFeatures::from_uci_record(&line.split(',').collect::<Vec<_>>()).unwrap().0
}

static MODELS: Mutex<Option<HashMap<u64, PathBuf>>> = Mutex::new(None);

/// A small model trained on a sample with `seed` (once per test run and seed):
/// real training code, real artifact, seconds instead of a minute.
pub fn tiny_model(seed: u64) -> PathBuf {
    let mut guard = MODELS.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&seed) {
        return p.clone();
    }
    let mut config = cartpulse::jobs::train::ModelConfig { members: 2, ..Default::default() };
    config.net.hidden = vec![16];
    config.net.max_epochs = 6;
    config.net.patience = 3;
    config.net.swa = 1;
    let out = train_model(&(sample_rows(4).join("\n") + "\n"), config, seed);
    map.insert(seed, out.clone());
    out
}

/// A model directory trained (2 folds) on the UCI-format `csv` with `config`.
pub fn train_model(csv: &str, config: cartpulse::jobs::train::ModelConfig, seed: u64) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let data = dir.join("train.csv");
    std::fs::write(&data, csv).unwrap();
    let out = dir.join("model");
    cartpulse::jobs::train::run(cartpulse::jobs::train::TrainOptions {
        data: data.into(),
        folds: 2,
        seed,
        out: out.clone(),
        report: None,
        config,
        progress: false,
    })
    .expect("training a test model");
    out
}

async fn spawn_with_model(db: Db, model: &std::path::Path) -> TestApp {
    let model = model.display().to_string();
    spawn_app_with(db, move |s| {
        s.inference.model_dir = Some(model);
        s.inference.score_debounce_ms = std::time::Duration::from_millis(50);
    })
    .await
}

#[actix_web::test]
async fn predict_scores_exactly_like_the_model_directory() {
    let dir = tiny_model(1);
    let model = PurchaseModel::load(&dir).unwrap();
    let app = spawn_with_model(Db::Sqlite, &dir).await;
    let lines = sample_rows(97);
    let rows: Vec<ShoppersFeatures> = lines[1..].iter().map(|l| features(l)).collect();
    let offline = model.predict(&rows).unwrap();
    let body = json!({ "rows": rows.iter().map(|r| Value::Object(r.to_uci_json())).collect::<Vec<_>>() });
    let (status, got) = app.predict(&body).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["model_version"], model.manifest.model_version.as_str());
    let scores = got["scores"].as_array().unwrap();
    assert_eq!(scores.len(), rows.len());
    for (i, (s, want)) in scores.iter().zip(&offline).enumerate() {
        let p = s["probability"].as_f64().unwrap();
        assert!((p - f64::from(*want)).abs() < 1e-5, "row {i}: service {p}, offline {want}");
        assert_eq!(s["buys"].as_bool().unwrap(), *want >= model.manifest.threshold);
    }
    // One object, as GET /v1/sessions shows features.
    let (status, one) = app.predict(&json!({ "features": rows[0].to_uci_json() })).await;
    assert_eq!(status, 200, "{one}");
    assert!((one["scores"][0]["probability"].as_f64().unwrap() - f64::from(offline[0])).abs() < 1e-5);
}

#[actix_web::test]
async fn predict_refuses_bad_input_and_missing_credentials() {
    let dir = tiny_model(1);
    let app = spawn_with_model(Db::Sqlite, &dir).await;
    let row = features(&sample_rows(97)[1]).to_uci_json();
    let (status, _) = app.post_json("/v1/predict", Some(&json!({ "features": row })), None).await;
    assert_eq!(status, 401);
    let mut no_month = row.clone();
    no_month.remove("Month");
    let (status, body) = app.predict(&json!({ "features": no_month })).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Month"), "{body}");
    let mut bad = row.clone();
    bad.insert("BounceRates".into(), json!(7.5));
    let (status, body) = app.predict(&json!({ "rows": [row.clone(), bad] })).await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("row 1") && msg.contains("BounceRates"), "{body}");
    let (status, body) = app.predict(&json!({ "rows": [] })).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.predict(&json!({ "features": row, "colour": "red" })).await;
    assert_eq!(status, 400, "{body}");
}

#[actix_web::test]
async fn predict_without_an_active_model_is_unavailable() {
    let app = spawn_app(Db::Sqlite).await;
    let row = features(&sample_rows(97)[1]).to_uci_json();
    let (status, body) = app.predict(&json!({ "features": row })).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no model"), "{body}");
}

async fn replayed_sessions_score_like_offline_predict(db: Db) {
    let dir = tiny_model(1);
    let model = PurchaseModel::load(&dir).unwrap();
    let app = spawn_with_model(db, &dir).await;
    let lines = sample_rows(41);
    let path = app.dir.path().join("sample.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let summary = app.replay_file(cartpulse::jobs::replay::ReplayFormat::Shoppers, path).await;
    assert_eq!(summary.rejected, 0);
    let rows: Vec<ShoppersFeatures> = lines[1..].iter().map(|l| features(l)).collect();
    let offline = model.predict(&rows).unwrap();
    let version = model.manifest.model_version.as_str();
    for (k, want) in offline.iter().enumerate() {
        let n = k + 1;
        // The final score is asked for when the session closes; it arrives shortly after.
        let sess = eventually(&format!("osi-s{n} is scored"), Duration::from_secs(30), || async {
            let (status, sess) = app.get_session(&format!("osi-s{n}")).await;
            assert_eq!(status, 200, "osi-s{n}: {sess}");
            if sess["score"].is_number() {
                Ok(sess)
            } else {
                Err(sess.to_string())
            }
        })
        .await;
        assert_eq!(sess["status"], "closed");
        let got = sess["score"].as_f64().unwrap();
        assert!((got - f64::from(*want)).abs() < 1e-5, "osi-s{n}: online {got}, offline {want}");
        assert_eq!(sess["model_version"], version, "osi-s{n}");
    }
    // The customer shows the session's score and folds it into its profile.
    let (status, c) = app.get_customer("osi-c1").await;
    assert_eq!(status, 200);
    let s = c["recent_sessions"][0]["score"].as_f64().unwrap();
    assert!((s - f64::from(offline[0])).abs() < 1e-5);
    assert!((c["profile"]["mean_predicted_intent"].as_f64().unwrap() - s).abs() < 1e-9, "{c}");
    // And the score reached the sessions table.
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains(&format!("cartpulse_predictions_total{{version=\"{version}\"}}")), "per-version counts");
}
crate::on_both_databases!(replayed_sessions_score_like_offline_predict);

#[actix_web::test]
async fn a_panicking_worker_fails_its_requests_and_is_replaced() {
    let dir = tiny_model(1);
    let app = spawn_with_model(Db::Sqlite, &dir).await;
    let row = json!({ "features": features(&sample_rows(97)[1]).to_uci_json() });
    let (status, _) = app.predict(&row).await;
    assert_eq!(status, 200);
    app.inference.inject_worker_fault();
    let (status, body) = app.predict(&row).await;
    assert_eq!(status, 500, "the request of the failed batch is failed explicitly: {body}");
    assert_eq!(body["error"], "internal error", "no internals leak: {body}");
    // The worker was replaced: every later request is served.
    for _ in 0..20 {
        let (status, body) = app.predict(&row).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(metrics.contains("cartpulse_inference_worker_failures_total{kind=\"panic\"} 1"), "{metrics}");
}

#[actix_web::test]
async fn swapping_models_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (a, b) = (tiny_model(1), tiny_model(2));
    let (ma, mb) = (PurchaseModel::load(&a).unwrap(), PurchaseModel::load(&b).unwrap());
    let (old_version, new_version) = (ma.manifest.model_version.clone(), mb.manifest.model_version.clone());
    assert_ne!(old_version, new_version);
    let app = spawn_with_model(Db::Sqlite, &a).await;
    let row = json!({ "features": features(&sample_rows(97)[1]).to_uci_json() });
    // Clients send one request after another until told to stop; each keeps
    // the versions it was answered with, in order.
    let stop = Arc::new(AtomicBool::new(false));
    let (old_seen, new_seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, url, key, body) =
            (app.client.clone(), format!("{}/v1/predict", app.address), app.read_key.clone(), row.to_string());
        let (stop, old_seen, new_seen) = (stop.clone(), old_seen.clone(), new_seen.clone());
        let (old_version, new_version) = (old_version.clone(), new_version.clone());
        clients.push(actix_web::rt::spawn(async move {
            let mut answers: Vec<Result<String, String>> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        let version = v["model_version"].as_str().unwrap_or_default().to_owned();
                        if version == old_version {
                            old_seen.fetch_add(1, Ordering::SeqCst);
                        } else if version == new_version {
                            new_seen.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(version)
                    }
                    Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(e.to_string()),
                };
                answers.push(answer);
            }
            answers
        }));
    }
    let wait_for = |counter: Arc<AtomicUsize>, what: &'static str| async move {
        eventually(&format!("50 answers from the {what} model"), Duration::from_secs(20), || async {
            let n = counter.load(Ordering::SeqCst);
            if n >= 50 {
                Ok(())
            } else {
                Err(format!("{n} answers"))
            }
        })
        .await
    };
    wait_for(old_seen.clone(), "old").await;
    app.inference.set_models(cartpulse::serving::inference::ServingSet::single(mb));
    wait_for(new_seen.clone(), "new").await;
    stop.store(true, Ordering::SeqCst);
    let mut clients_that_saw_both = 0;
    for c in clients {
        let answers = c.await.unwrap();
        let mut switched = false;
        for a in &answers {
            let version = a.as_ref().unwrap_or_else(|e| panic!("a request failed during the swap: {e}"));
            if *version == new_version {
                switched = true;
            } else {
                assert_eq!(*version, old_version, "an unknown version answered");
                assert!(!switched, "a client got the old model after the new one had answered it");
            }
        }
        let saw_old = answers.iter().any(|a| a.as_deref() == Ok(old_version.as_str()));
        if saw_old && switched {
            clients_that_saw_both += 1;
        }
    }
    // The swap happened while requests were flowing: clients were answered
    // by the old model, then by the new one, none failed.
    assert!(clients_that_saw_both > 0, "no client was answered by both models: the swap was not mid-flight");
    let (_, after) = app.predict(&row).await;
    assert_eq!(after["model_version"], new_version.as_str(), "the new model serves after the swap");
}

async fn promotions_reach_the_pool_and_split_customers(db: Db) {
    let (a, b) = (tiny_model(1), tiny_model(2));
    let va = PurchaseModel::load(&a).unwrap().manifest.model_version;
    let vb = PurchaseModel::load(&b).unwrap().manifest.model_version;
    let store = tempfile::tempdir().unwrap().keep();
    let store_path = store.display().to_string();
    let app = spawn_app_with(db, move |s| s.model_store = store_path).await;
    let row = features(&sample_rows(97)[1]).to_uci_json();
    let (status, _) = app.predict(&json!({ "features": row })).await;
    assert_eq!(status, 503, "nothing promoted yet");
    // Publish both through the registry the service reads.
    let settings = test_settings(&app.database_url);
    let mut settings = settings;
    settings.model_store = store.display().to_string();
    let conn = cartpulse::db::connect(&settings).await.unwrap();
    let registry = cartpulse::models::ModelRegistry::from_settings(conn, &settings).await.unwrap();
    registry.publish(&a).await.unwrap();
    registry.publish(&b).await.unwrap();

    let (status, body) = app.promote_model(&va, None, Some(&app.admin_key.clone())).await;
    assert_eq!(status, 200, "{body}");
    // The pool reloads from the registry when this process promotes; it is
    // asynchronous, so wait briefly for the swap.
    let got = eventually("the promotion reaches the pool", Duration::from_secs(10), || async {
        let (status, got) = app.predict(&json!({ "features": row })).await;
        if status == 200 {
            Ok(got)
        } else {
            Err(format!("{status} {got}"))
        }
    })
    .await;
    assert_eq!(got["model_version"], va.as_str());

    // A/B: half the customers on b, each customer always on the same arm.
    let (status, body) = app.promote_model(&vb, Some(0.5), Some(&app.admin_key.clone())).await;
    assert_eq!(status, 200, "{body}");
    eventually("both versions are served", Duration::from_secs(10), || async {
        let serving = app.inference.serving();
        if serving.len() == 2 {
            Ok(())
        } else {
            Err(format!("{serving:?}"))
        }
    })
    .await;
    let mut arms: HashMap<String, String> = HashMap::new();
    for round in 0..2 {
        for c in 0..60 {
            let id = format!("ab-{c}");
            let (status, got) = app.predict(&json!({ "customer_id": id, "features": row })).await;
            assert_eq!(status, 200, "{got}");
            let v = got["model_version"].as_str().unwrap().to_owned();
            if round == 0 {
                arms.insert(id, v);
            } else {
                assert_eq!(arms[&id], v, "{id} changed arm");
            }
        }
    }
    let on_b = arms.values().filter(|v| **v == vb).count();
    assert!((15..=45).contains(&on_b), "{on_b} of 60 customers on the 50% arm");
    assert!(arms.values().all(|v| *v == va || *v == vb));
    let (_, metrics) = app.get_text("/metrics").await;
    for v in [&va, &vb] {
        assert!(metrics.contains(&format!("cartpulse_predictions_total{{version=\"{v}\"}}")), "{v} counted");
    }
}
crate::on_both_databases!(promotions_reach_the_pool_and_split_customers);

/// Shadow deployment end to end: a version put in shadow over HTTP is loaded
/// by the serving process and scores every predicted row (counted in
/// `/metrics`), while `/v1/predict` still answers with the active version and
/// exactly its scores; unknown and active versions are refused; clearing the
/// shadow stops the counting; promoting the shadow makes it active.
async fn shadow_scores_are_counted_but_never_served(db: Db) {
    let (a, b, c) = (tiny_model(1), tiny_model(2), tiny_model(3));
    let model_a = PurchaseModel::load(&a).unwrap();
    let va = model_a.manifest.model_version.clone();
    let vb = PurchaseModel::load(&b).unwrap().manifest.model_version;
    let vc = PurchaseModel::load(&c).unwrap().manifest.model_version;
    let store = tempfile::tempdir().unwrap().keep();
    let store_path = store.display().to_string();
    let app = spawn_app_with(db, move |s| s.model_store = store_path).await;
    let mut settings = test_settings(&app.database_url);
    settings.model_store = store.display().to_string();
    let conn = cartpulse::db::connect(&settings).await.unwrap();
    let registry = cartpulse::models::ModelRegistry::from_settings(conn.clone(), &settings).await.unwrap();
    for dir in [&a, &b, &c] {
        registry.publish(dir).await.unwrap();
    }
    let admin = app.admin_key.clone();
    let (status, body) = app.promote_model(&va, None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");

    // Errors: unknown version 404, the active version 409, not an admin 403.
    let (status, body) = app.post_json("/v1/models/pi-no-such-version/shadow", None, Some(&admin)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.post_json(&format!("/v1/models/{va}/shadow"), None, Some(&admin)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("is active"), "{body}");
    let (status, _) = app.post_json(&format!("/v1/models/{vb}/shadow"), None, Some(&app.read_key.clone())).await;
    assert_eq!(status, 403);
    let (status, body) = app.post_json("/v1/models/shadow/clear", None, Some(&admin)).await;
    assert_eq!((status, &body["changed"]), (200, &json!(false)), "nothing in shadow yet: {body}");

    let (status, body) = app.post_json(&format!("/v1/models/{vb}/shadow"), None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shadow"], vb.as_str());
    assert_eq!(body["changed"], true);
    let (_, list) = app.list_models(Some(&admin)).await;
    let status_of = |list: &Value, v: &str| {
        list["models"].as_array().unwrap().iter().find(|m| m["version"] == v).unwrap()["status"].clone()
    };
    assert_eq!(status_of(&list, &vb), "shadow");
    assert_eq!(status_of(&list, &va), "active");
    eventually("the shadow reaches the pool", Duration::from_secs(10), || async {
        match app.inference.shadow() {
            Some(v) if v == vb => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Predictions: the active version's answers, exactly; the shadow counts every row.
    let rows: Vec<ShoppersFeatures> = sample_rows(97)[1..41].iter().map(|l| features(l)).collect();
    let want = model_a.predict(&rows).unwrap();
    let rows_sample = format!("cartpulse_shadow_rows_total{{version=\"{vb}\"}}");
    let before = metric_value(&app.metrics_text().await, &rows_sample);
    let body = json!({ "rows": rows.iter().map(|r| Value::Object(r.to_uci_json())).collect::<Vec<_>>() });
    let (status, got) = app.predict(&body).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["model_version"], va.as_str());
    for (s, w) in got["scores"].as_array().unwrap().iter().zip(&want) {
        assert!((s["probability"].as_f64().unwrap() - f64::from(*w)).abs() < 1e-5, "{s} vs {w}");
    }
    for (i, r) in rows.iter().take(10).enumerate() {
        let (status, got) = app.predict(&json!({ "customer_id": format!("s-{i}"), "features": r.to_uci_json() })).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["model_version"], va.as_str(), "the shadow never answers");
        assert!((got["scores"][0]["probability"].as_f64().unwrap() - f64::from(want[i])).abs() < 1e-5);
        assert!(got.get("shadow").is_none(), "{got}");
    }
    let metrics = eventually("the shadow scores the 50 rows", Duration::from_secs(10), || async {
        let m = app.metrics_text().await;
        match metric_value(&m, &rows_sample) {
            n if n >= before + 50.0 => Ok(m),
            n => Err(format!("{n} shadow rows")),
        }
    })
    .await;
    assert_eq!(metric_value(&metrics, &rows_sample), before + 50.0, "every predicted row shadow-scored once");
    let diff_count = format!("cartpulse_shadow_score_abs_diff_count{{version=\"{vb}\"}}");
    assert_eq!(metric_value(&metrics, &diff_count), before + 50.0, "{metrics}");
    assert!(metrics.contains(&format!("cartpulse_models_shadow{{version=\"{vb}\"}} 1")), "{metrics}");
    assert!(!metrics.contains(&format!("cartpulse_shadow_rows_total{{version=\"{va}\"}}")));
    assert!(metrics.contains("# TYPE cartpulse_shadow_disagreements_total counter"));
    assert_eq!(metric_value(&metrics, &format!("cartpulse_shadow_failures_total{{version=\"{vb}\"}}")), 0.0);

    // A new shadow replaces the old, which goes back to candidate; recorded like promotions.
    let (status, body) = app.post_json(&format!("/v1/models/{vc}/shadow"), None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], json!({ "version": vb, "status": "candidate" }));
    assert_eq!(registry.get(&vb).await.unwrap().status, "candidate");
    assert_eq!(registry.get(&vc).await.unwrap().status, "shadow");
    use sea_orm::{EntityTrait, QueryOrder};
    let history: Vec<(String, String)> = entities::model_promotion::Entity::find()
        .order_by_asc(entities::model_promotion::Column::Id)
        .all(&conn)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.kind, p.version))
        .collect();
    assert_eq!(
        history,
        vec![("promote".into(), va.clone()), ("shadow".into(), vb.clone()), ("shadow".into(), vc.clone())]
    );

    // Cleared: the pool drops the shadow and nothing more is counted.
    let (status, body) = app.post_json("/v1/models/shadow/clear", None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["before"].as_str(), body["changed"].as_bool()), (Some(vc.as_str()), Some(true)));
    assert_eq!(registry.get(&vc).await.unwrap().status, "candidate");
    eventually("the cleared shadow leaves the pool", Duration::from_secs(10), || async {
        match app.inference.shadow() {
            None => Ok(()),
            Some(v) => Err(v),
        }
    })
    .await;
    let m = app.metrics_text().await;
    let counted: Vec<f64> = [&vb, &vc]
        .iter()
        .map(|v| metric_value(&m, &format!("cartpulse_shadow_rows_total{{version=\"{v}\"}}")))
        .collect();
    let predicted = |m: &str| cartpulse::telemetry::scrape::sum(m, "cartpulse_predictions_total").unwrap_or(0.0);
    let before = predicted(&app.metrics_text().await);
    let (status, _) = app.predict(&body_of(&rows[..5])).await;
    assert_eq!(status, 200);
    // A batch carries the shadow model the pool had when it was dispatched
    // (none now); once its rows are counted, any shadow rows of it would
    // have been offered already.
    let m = eventually("the 5 rows are counted", Duration::from_secs(10), || async {
        let m = app.metrics_text().await;
        if predicted(&m) >= before + 5.0 {
            Ok(m)
        } else {
            Err(format!("{} predictions", predicted(&m)))
        }
    })
    .await;
    for (v, n) in [&vb, &vc].iter().zip(&counted) {
        assert_eq!(metric_value(&m, &format!("cartpulse_shadow_rows_total{{version=\"{v}\"}}")), *n, "{v}");
    }
    assert!(!m.contains("cartpulse_models_shadow{"), "no shadow version left in the gauge");

    // Promoting the shadow version makes it active as usual (and no longer shadow).
    let (status, _) = app.post_json(&format!("/v1/models/{vb}/shadow"), None, Some(&admin)).await;
    assert_eq!(status, 200);
    let (status, body) = app.promote_model(&vb, None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(registry.get(&vb).await.unwrap().status, "active");
    assert_eq!(registry.get(&va).await.unwrap().status, "retired");
    eventually("the promoted shadow serves", Duration::from_secs(10), || async {
        let (status, got) = app.predict(&body_of(&rows[..1])).await;
        if status == 200 && got["model_version"] == vb.as_str() && app.inference.shadow().is_none() {
            Ok(())
        } else {
            Err(format!("{status} {got}"))
        }
    })
    .await;
    // A retired version may be shadowed; released, it is retired again.
    let (status, _) = app.post_json(&format!("/v1/models/{va}/shadow"), None, Some(&admin)).await;
    assert_eq!(status, 200);
    let (status, body) = app.post_json("/v1/models/shadow/clear", None, Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], json!({ "version": va, "status": "retired" }));
}
crate::on_both_databases!(shadow_scores_are_counted_but_never_served);

fn body_of(rows: &[ShoppersFeatures]) -> Value {
    json!({ "rows": rows.iter().map(|r| Value::Object(r.to_uci_json())).collect::<Vec<_>>() })
}
