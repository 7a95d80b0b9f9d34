//! The model registry and store: publish → promote → list, the A/B split,
//! rollback, corrupt and missing objects refused while the old model keeps
//! serving, and `/v1/models` for admin keys only; on a local directory and on
//! a real S3-compatible server (moto on `CARTPULSE_TEST_S3_ENDPOINT`, default
//! http://127.0.0.1:5055, started by `scripts/test.sh`), with a fresh bucket
//! per test. The S3 tests fail when that server is not there.
//!
//! Models are real: each test trains tiny ones (one small net, a few epochs)
//! on a synthetic UCI-format file through `cartpulse::jobs::train`; the report
//! images are the real `--report` figures.

use crate::helpers::*;
use crate::on_both_databases;
use cartpulse::config::Settings;
use cartpulse::jobs::train::{ModelConfig, TrainOptions};
use cartpulse::models::artifact::PurchaseModel;
use cartpulse::models::manifest::{MANIFEST_FILE, WEIGHTS_FILE};
use cartpulse::models::net::NetConfig;
use cartpulse::models::{ModelRegistry, ModelStore, RegistryError, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Once;

const BIN: &str = env!("CARGO_BIN_EXE_cartpulse");

#[derive(Clone, Copy, Debug)]
enum Store {
    Local,
    S3,
}

fn s3_endpoint() -> String {
    std::env::var("CARTPULSE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5055".into())
}

static AWS_ENV: Once = Once::new();

/// Fixed credentials for the local S3 server; also keeps the SDK away from
/// any real AWS account and from instance metadata.
fn s3_test_env() {
    AWS_ENV.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "cartpulse-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "cartpulse-test");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// The model-store settings of a test: a directory in the test's temp dir,
/// or a fresh bucket on the S3 server.
async fn store_location(store: Store, dir: &Path) -> (String, Option<String>) {
    match store {
        Store::Local => (dir.join("model-store").display().to_string(), None),
        Store::S3 => {
            s3_test_env();
            let endpoint = s3_endpoint();
            let bucket = format!("cp-test-{}", hex::encode(rand::random::<[u8; 6]>()));
            let s3 = cartpulse::models::store::S3Store::connect(&bucket, "", Some(&endpoint)).await.expect("S3 client");
            s3.client().create_bucket().bucket(&bucket).send().await.unwrap_or_else(|e| {
                panic!(
                    "the S3-compatible server must be running at {endpoint} for this test \
                     (scripts/test.sh starts moto; or set CARTPULSE_TEST_S3_ENDPOINT): {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
            (format!("s3://{bucket}/models"), Some(endpoint))
        }
    }
}

/// An app whose model store is `store`, and a registry of our own over the
/// same database and store (as the CLI or another replica would have). The
/// temp dir holds the local store; keep it alive for the test.
async fn app_and_registry(db: Db, store: Store) -> (TestApp, ModelRegistry, Settings, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (location, endpoint) = store_location(store, dir.path()).await;
    let adjust = |s: &mut Settings| {
        s.model_store = location.clone();
        s.model_store_endpoint = endpoint.clone();
    };
    let app = spawn_app_with(db, adjust).await;
    let mut settings = test_settings(&app.database_url);
    adjust(&mut settings);
    let conn = cartpulse::db::connect(&settings).await.expect("connect");
    let registry = ModelRegistry::from_settings(conn, &settings).await.expect("registry");
    (app, registry, settings, dir)
}

/// A small UCI-format file whose label depends mostly on PageValues.
fn synthetic_csv(dir: &Path, rows: usize, seed: u64) -> PathBuf {
    let s = cartpulse::jobs::train::synthetic_shoppers_csv(rows, seed);
    let path = dir.join(format!("shoppers-{seed}.csv"));
    std::fs::write(&path, s).expect("write csv");
    path
}

/// Trains a tiny real model into `<dir>/model-<seed>`; returns the directory and its version.
fn train_tiny(dir: &Path, seed: u64) -> (PathBuf, String) {
    train_tiny_with(dir, seed, false)
}

/// Like [`train_tiny`]; with `report` the figures go to `<dir>/model-<seed>/report`
/// (`train --out X --report X/report`).
fn train_tiny_with(dir: &Path, seed: u64, report: bool) -> (PathBuf, String) {
    let data = synthetic_csv(dir, 240, seed);
    let out = dir.join(format!("model-{seed}"));
    let opts = TrainOptions {
        data: data.into(),
        folds: 2,
        seed,
        out: out.clone(),
        report: report.then(|| out.join("report")),
        config: ModelConfig {
            members: 1,
            net: NetConfig { hidden: vec![8], max_epochs: 4, patience: 2, ..NetConfig::default() },
            ..ModelConfig::default()
        },
        progress: false,
    };
    cartpulse::jobs::train::run(opts).expect("train a tiny model");
    let version = PurchaseModel::load(&out).expect("load the tiny model").manifest.model_version;
    (out, version)
}

/// Trains and publishes `n` models (distinct seeds, so distinct versions).
async fn publish_models(app: &TestApp, registry: &ModelRegistry, seeds: &[u64]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for &seed in seeds {
        let (dir, version) = train_tiny(app.dir.path(), seed);
        let p = registry.publish(&dir).await.expect("publish");
        assert_eq!(p.version, version);
        assert!(!p.already_published);
        out.push((dir, version));
    }
    out
}

/// Replaces an object in the store behind the registry's back.
async fn overwrite_object(registry: &ModelRegistry, version: &str, object: &str, bytes: Option<Vec<u8>>) {
    match registry.store() {
        ModelStore::Local(_) => {
            let path = PathBuf::from(registry.store().object_location(version, object));
            match bytes {
                Some(b) => std::fs::write(&path, b).expect("overwrite object"),
                None => std::fs::remove_file(&path).expect("remove object"),
            }
        }
        ModelStore::S3(s3) => {
            let loc = registry.store().object_location(version, object);
            let (bucket, key) = loc.trim_start_matches("s3://").split_once('/').expect("s3 location");
            match bytes {
                Some(b) => {
                    s3.client()
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(aws_sdk_s3::primitives::ByteStream::from(b))
                        .send()
                        .await
                        .expect("overwrite object");
                }
                None => {
                    s3.client().delete_object().bucket(bucket).key(key).send().await.expect("delete object");
                }
            }
        }
    }
}

fn versions_and_shares(entries: &[cartpulse::models::ServingEntry]) -> Vec<(String, f64)> {
    entries.iter().map(|e| (e.version.clone(), e.traffic_share)).collect()
}

fn model_row<'a>(list: &'a serde_json::Value, version: &str) -> &'a serde_json::Value {
    list["models"]
        .as_array()
        .expect("models array")
        .iter()
        .find(|m| m["version"] == version)
        .unwrap_or_else(|| panic!("{version} not listed in {list}"))
}

async fn publish_promote_list(db: Db, store: Store) {
    let (app, registry, _settings, _store) = app_and_registry(db, store).await;
    let mut changes = registry.changes();
    let before = *changes.borrow_and_update();
    let models = publish_models(&app, &registry, &[1]).await;
    let (dir, a) = &models[0];
    assert!(changes.has_changed().unwrap(), "publish bumps the revision");
    assert!(*changes.borrow_and_update() > before);

    // The objects are in the store under the version, byte for byte.
    for object in [MANIFEST_FILE, WEIGHTS_FILE] {
        let stored = registry.store().get(a, object).await.expect("stored object");
        assert_eq!(stored, std::fs::read(dir.join(object)).unwrap(), "{object}");
    }

    let (status, list) = app.list_models(Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{list}");
    let row = model_row(&list, a);
    assert_eq!(row["status"], "candidate");
    assert_eq!(row["traffic_share"], 0.0);
    assert!(row["metrics"]["accuracy"].as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)), "{row}");
    assert!(row["metrics"]["auc"].is_number(), "{row}");
    let manifest_sha = cartpulse::models::store::sha256_hex(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap());
    assert_eq!(row["sha256"], manifest_sha.as_str());
    assert!(row["store_key"].as_str().unwrap().ends_with(a.as_str()), "{row}");
    assert!(row["promoted_at"].is_null());
    assert!(registry.load_serving().await.unwrap().is_empty(), "a candidate does not serve");

    // Publishing the same directory again changes nothing.
    let again = registry.publish(dir).await.expect("republish");
    assert!(again.already_published);
    assert_eq!(registry.list().await.unwrap().len(), 1);

    let (status, body) = app.promote_model(a, None, Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], serde_json::json!([{ "version": a, "traffic_share": 1.0 }]));
    let (_, list) = app.list_models(Some(&app.admin_key)).await;
    let row = model_row(&list, a);
    assert_eq!(row["status"], "active");
    assert_eq!(row["traffic_share"], 1.0);
    assert!(row["promoted_at"].is_string());

    // What the pool gets: the active model, loaded through the store, scoring
    // exactly as the directory it was published from.
    let serving = registry.load_serving().await.expect("load_serving");
    assert_eq!(versions_and_shares(&serving), vec![(a.clone(), 1.0)]);
    let data = cartpulse::jobs::train::load_csv(&app.dir.path().join("shoppers-1.csv"), true).unwrap();
    let want = PurchaseModel::load(dir).unwrap().predict(&data.features[..50]).unwrap();
    assert_eq!(serving[0].model.predict(&data.features[..50]).unwrap(), want);
    // Cached while active: the same Arc comes back.
    let again = registry.load_serving().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&again[0].model, &serving[0].model));
}

async fn publish_promote_list_local(db: Db) {
    publish_promote_list(db, Store::Local).await
}
on_both_databases!(publish_promote_list_local);

async fn publish_promote_list_s3(db: Db) {
    publish_promote_list(db, Store::S3).await
}
on_both_databases!(publish_promote_list_s3);

async fn corrupt_objects_are_refused(db: Db, store: Store) {
    let (app, registry, settings, _store) = app_and_registry(db, store).await;
    let models = publish_models(&app, &registry, &[1, 2, 3]).await;
    let (a, b, c) = (&models[0].1, &models[1].1, &models[2].1);
    registry.promote(a, None).await.expect("promote a");

    // b's weights are altered in the store: its promotion is refused, naming
    // the version and the object, and a keeps serving.
    let mut w = std::fs::read(models[1].0.join(WEIGHTS_FILE)).unwrap();
    let last = w.len() - 1;
    w[last] ^= 0x55;
    overwrite_object(&registry, b, WEIGHTS_FILE, Some(w)).await;
    let err = registry.promote(b, None).await.expect_err("corrupt weights refused");
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Corrupt { version, object, .. }) if version == b && object == WEIGHTS_FILE),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(b.as_str()) && msg.contains(WEIGHTS_FILE) && msg.contains("corrupt"), "{msg}");
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);
    // The same over HTTP: 400 with the reason, nothing changed.
    let (status, body) = app.promote_model(b, Some(0.5), Some(&app.admin_key)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains(WEIGHTS_FILE), "{body}");
    assert_eq!(registry.get(b).await.unwrap().status, "candidate");

    // c's manifest is gone: refused as missing.
    overwrite_object(&registry, c, MANIFEST_FILE, None).await;
    let err = registry.promote(c, Some(0.5)).await.expect_err("missing manifest refused");
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Missing { version, object, .. }) if version == c && object == MANIFEST_FILE),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);

    // An object is immutable: different bytes under a published key are refused.
    let err = registry.store().put(a, MANIFEST_FILE, b"{}".to_vec()).await.expect_err("overwrite refused");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    // So is a different model under a published version.
    let tampered = app.dir.path().join("tampered");
    std::fs::create_dir_all(&tampered).unwrap();
    std::fs::copy(models[0].0.join(WEIGHTS_FILE), tampered.join(WEIGHTS_FILE)).unwrap();
    let manifest = std::fs::read_to_string(models[0].0.join(MANIFEST_FILE)).unwrap();
    std::fs::write(tampered.join(MANIFEST_FILE), manifest.replacen("\"seconds\"", "\"seconds\" ", 1)).unwrap();
    let err = registry.publish(&tampered).await.expect_err("different model under the same version");
    assert!(matches!(err, RegistryError::AlreadyPublished { .. }), "{err:?}");

    // a's manifest is corrupted after it went live: this registry keeps the
    // model it verified; a fresh one (another replica) refuses to load it.
    overwrite_object(&registry, a, MANIFEST_FILE, Some(b"{\"not\": \"the manifest\"}".to_vec())).await;
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);
    let other =
        ModelRegistry::from_settings(cartpulse::db::connect(&settings).await.unwrap(), &settings).await.unwrap();
    let err = match other.load_serving().await {
        Ok(_) => panic!("a corrupt active model was loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(a.as_str()) && err.contains(MANIFEST_FILE), "{err}");
}

async fn corrupt_objects_are_refused_local(db: Db) {
    corrupt_objects_are_refused(db, Store::Local).await
}
on_both_databases!(corrupt_objects_are_refused_local);

#[actix_web::test]
async fn corrupt_objects_are_refused_s3() {
    corrupt_objects_are_refused(Db::Sqlite, Store::S3).await
}

async fn ab_split(db: Db) {
    let (app, registry, _, _store) = app_and_registry(db, Store::Local).await;
    let models = publish_models(&app, &registry, &[1, 2, 3]).await;
    let (a, b, c) = (&models[0].1, &models[1].1, &models[2].1);

    let err = registry.promote(b, Some(0.5)).await.expect_err("nothing active to split with");
    assert!(matches!(err, RegistryError::Refused(_)), "{err:?}");
    registry.promote(a, None).await.unwrap();
    for p in [0.0, 1.0, 1.5, -0.25, f64::NAN] {
        let err = registry.promote(b, Some(p)).await.expect_err("traffic out of range");
        assert!(matches!(err, RegistryError::TrafficOutOfRange(_)), "{p}: {err:?}");
    }
    let (status, body) = app.promote_model(b, Some(1.5), Some(&app.admin_key)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("between 0 and 1"), "{body}");

    let (status, body) = app.promote_model(b, Some(0.25), Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{body}");
    let serving = registry.load_serving().await.unwrap();
    assert_eq!(versions_and_shares(&serving), vec![(a.clone(), 0.75), (b.clone(), 0.25)]);
    assert!((serving.iter().map(|e| e.traffic_share).sum::<f64>() - 1.0).abs() < 1e-12);
    assert_ne!(serving[0].model.manifest.model_version, serving[1].model.manifest.model_version);
    let (_, list) = app.list_models(Some(&app.admin_key)).await;
    assert_eq!(model_row(&list, a)["status"], "active");
    assert_eq!(model_row(&list, b)["status"], "active");
    assert_eq!(model_row(&list, c)["status"], "candidate");

    // At most two active.
    let err = registry.promote(c, Some(0.1)).await.expect_err("a third active version");
    assert!(matches!(err, RegistryError::Refused(_)), "{err:?}");
    // Re-weighting the split keeps two.
    registry.promote(b, Some(0.5)).await.unwrap();
    let mut serving = versions_and_shares(&registry.load_serving().await.unwrap());
    serving.sort_by(|x, y| x.0.cmp(&y.0));
    let mut want = vec![(a.clone(), 0.5), (b.clone(), 0.5)];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(serving, want);
    // A full promotion ends the split.
    let change = registry.promote(b, None).await.unwrap();
    assert_eq!(change.retired, vec![a.clone()]);
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(b.clone(), 1.0)]);
    assert_eq!(registry.get(a).await.unwrap().status, "retired");
    assert!(registry.get(a).await.unwrap().retired_at.is_some());
}
on_both_databases!(ab_split);

async fn rollback(db: Db) {
    let (app, registry, _, _store) = app_and_registry(db, Store::Local).await;
    let err = registry.rollback().await.expect_err("nothing promoted yet");
    assert!(matches!(err, RegistryError::NothingToRollBack(_)), "{err:?}");
    let models = publish_models(&app, &registry, &[1, 2]).await;
    let (a, b) = (&models[0].1, &models[1].1);

    let err = registry.promote("pi-no-such-version", None).await.expect_err("unknown version");
    assert!(matches!(err, RegistryError::UnknownVersion(_)), "{err:?}");
    let (status, body) = app.promote_model("pi-no-such-version", None, Some(&app.admin_key)).await;
    assert_eq!(status, 404, "{body}");

    registry.promote(a, None).await.unwrap();
    let err = registry.rollback().await.expect_err("nothing before the first promotion");
    assert!(err.to_string().contains("nothing to roll back to"), "{err}");
    let (status, body) = app.rollback_models(Some(&app.admin_key)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nothing to roll back to"), "{body}");

    // b replaces a; rollback brings a back and retires b.
    registry.promote(b, None).await.unwrap();
    assert_eq!(registry.get(a).await.unwrap().status, "retired");
    let mut changes = registry.changes();
    changes.borrow_and_update();
    let (status, body) = app.rollback_models(Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"], serde_json::json!([{ "version": a, "traffic_share": 1.0 }]));
    assert_eq!(body["retired"], serde_json::json!([b]));
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);
    assert_eq!(registry.get(b).await.unwrap().status, "retired");
    // The rollback went through the app's registry, not this one.
    assert!(!changes.has_changed().unwrap());

    // Rollbacks walk back through the promotions: A/B split, then full.
    registry.promote(b, Some(0.3)).await.unwrap();
    registry.promote(b, None).await.unwrap();
    registry.rollback().await.unwrap();
    assert!(changes.has_changed().unwrap(), "this registry's rollback bumps the revision");
    let serving = versions_and_shares(&registry.load_serving().await.unwrap());
    assert_eq!(serving.len(), 2);
    assert_eq!(serving[0].0, *a);
    assert!((serving[0].1 - 0.7).abs() < 1e-12 && (serving[1].1 - 0.3).abs() < 1e-12, "{serving:?}");
    registry.rollback().await.unwrap();
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);
    let err = registry.rollback().await.expect_err("back at the first promotion");
    assert!(matches!(err, RegistryError::NothingToRollBack(_)), "{err:?}");
}
on_both_databases!(rollback);

/// GETs `path` with `key`; returns (status, content type, body bytes).
async fn get_bytes(app: &TestApp, path: &str, key: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut r = app.client.get(format!("{}{}", app.address, path));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let (status, headers, body) = checked("GET", path, r.send().await.expect("GET")).await;
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status.as_u16(), ct, body.to_vec())
}

const REPORT: [&str; 3] = ["calibration.png", "confusion.png", "roc.png"];

/// The report images of `train --report` are published with the version
/// (from `<dir>/report`), listed by `GET /v1/models`, served byte for byte as
/// PNG to read keys, 404 for an unknown or malformed name, 401 without a key;
/// published images are immutable and checked against their sha256.
async fn report_images(db: Db, store: Store) {
    let (app, registry, _settings, _store) = app_and_registry(db, store).await;
    let (dir, a) = train_tiny_with(app.dir.path(), 1, true);
    let p = registry.publish(&dir).await.expect("publish with a report");
    assert_eq!(p.report, REPORT);
    // A version published without a report has none.
    let (plain, b) = train_tiny(app.dir.path(), 2);
    assert!(registry.publish(&plain).await.expect("publish without a report").report.is_empty());

    let (status, list) = app.list_models(Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{list}");
    let row = model_row(&list, &a);
    let listed: Vec<&str> = row["report"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(listed, REPORT, "{row}");
    assert_eq!(model_row(&list, &b)["report"], serde_json::json!([]));

    for image in row["report"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        let url = image["url"].as_str().unwrap();
        assert_eq!(url, format!("/v1/models/{a}/report/{name}"));
        let want = std::fs::read(dir.join("report").join(name)).unwrap();
        assert_eq!(image["sha256"], cartpulse::models::store::sha256_hex(&want).as_str());
        assert_eq!(image["bytes"], want.len());
        let (status, ct, body) = get_bytes(&app, url, Some(&app.read_key)).await;
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(ct, "image/png");
        assert!(body == want, "{name}: the served bytes differ from the published file");
    }

    // Unknown images, malformed names and unknown versions: 404 with a reason.
    let (status, body) = app.get_json(&format!("/v1/models/{a}/report/lift.png"), Some(&app.read_key)).await;
    assert_eq!(status, 404, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("lift.png") && msg.contains("roc.png") && msg.contains(a.as_str()), "{msg}");
    for name in ["ROC.png", "roc.PNG", "roc", "manifest.json", "model.safetensors", "%2E%2E%2Fmanifest.json", ".png"] {
        let (status, body) = app.get_json(&format!("/v1/models/{a}/report/{name}"), Some(&app.read_key)).await;
        assert_eq!(status, 404, "{name}: {body}");
        assert!(body["error"].as_str().unwrap().contains("no report image"), "{name}: {body}");
    }
    let (status, body) = app.get_json(&format!("/v1/models/{b}/report/roc.png"), Some(&app.read_key)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no report images"), "{body}");
    let (status, body) = app.get_json("/v1/models/pi-no-such-version/report/roc.png", Some(&app.read_key)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown model version"), "{body}");

    // Keys: none is 401, an ingest key 403, read and admin keys see it.
    let url = format!("/v1/models/{a}/report/roc.png");
    assert_eq!(get_bytes(&app, &url, None).await.0, 401);
    assert_eq!(get_bytes(&app, &url, Some("cp_not_a_key")).await.0, 401);
    assert_eq!(get_bytes(&app, &url, Some(&app.ingest_key)).await.0, 403);
    assert_eq!(get_bytes(&app, &url, Some(&app.admin_key)).await.0, 200);

    // Republishing the same directory changes nothing; other images under the
    // same version are refused (published versions are immutable).
    assert!(registry.publish(&dir).await.expect("republish").already_published);
    let fewer = app.dir.path().join("fewer-images");
    std::fs::create_dir_all(&fewer).unwrap();
    for name in ["calibration.png", "roc.png"] {
        std::fs::copy(dir.join("report").join(name), fewer.join(name)).unwrap();
    }
    let err = registry.publish_with_report(&dir, Some(&fewer)).await.expect_err("other report images");
    assert!(matches!(err, RegistryError::ReportDiffers { .. }), "{err:?}");
    assert!(err.to_string().contains("immutable"), "{err}");
    // A report image is checked like the other objects: PNG bytes, valid names.
    let bad = app.dir.path().join("bad-report");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("roc.png"), b"not a png").unwrap();
    let err = registry.publish_with_report(&plain, Some(&bad)).await.expect_err("not a PNG");
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("not a PNG"), "{err}");
    std::fs::write(bad.join("roc.png"), std::fs::read(dir.join("report/roc.png")).unwrap()).unwrap();
    std::fs::write(bad.join("My Plot.png"), std::fs::read(dir.join("report/roc.png")).unwrap()).unwrap();
    let err = registry.publish_with_report(&plain, Some(&bad)).await.expect_err("bad name");
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("My Plot.png"), "{err}");
    assert!(registry.get(&b).await.unwrap().report.is_empty(), "refused publications changed nothing");

    // An image altered in the store is not served.
    overwrite_object(&registry, &a, "report-roc.png", Some(b"\x89PNG\r\n\x1a\nbut not this one".to_vec())).await;
    let (status, _, _) = get_bytes(&app, &url, Some(&app.read_key)).await;
    assert_eq!(status, 500);
    let err = registry.report_image(&a, "roc.png").await.expect_err("corrupt image");
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Corrupt { object, .. }) if object == "report-roc.png"),
        "{err:?}"
    );
}

async fn report_images_local(db: Db) {
    report_images(db, Store::Local).await
}
on_both_databases!(report_images_local);

#[actix_web::test]
async fn report_images_s3() {
    report_images(Db::Sqlite, Store::S3).await
}

/// The console's session cookie works for the images as for the other
/// `/v1` reads (a viewer is a read key), and `/console/api/models` lists them.
#[actix_web::test]
async fn report_images_with_a_console_viewer() {
    let (app, registry, _, _store) = app_and_registry(Db::Sqlite, Store::Local).await;
    let (dir, a) = train_tiny_with(app.dir.path(), 3, true);
    registry.publish(&dir).await.expect("publish");
    app.create_console_user("vera", cartpulse::serving::console::Role::Viewer, "a long enough password").await;
    let login = app.console_login("vera", "a long enough password").await;
    let r = app
        .client
        .get(format!("{}/console/api/models", app.address))
        .header("Cookie", &login.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let list: serde_json::Value = r.json().await.unwrap();
    let url = model_row(&list, &a)["report"][0]["url"].as_str().unwrap().to_owned();
    let r = app.client.get(format!("{}{url}", app.address)).header("Cookie", &login.cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));
}

#[actix_web::test]
async fn models_endpoints_need_an_admin_key() {
    let (app, registry, _, _store) = app_and_registry(Db::Sqlite, Store::Local).await;
    let models = publish_models(&app, &registry, &[1]).await;
    let a = &models[0].1;
    for key in [&app.read_key, &app.ingest_key] {
        assert_eq!(app.list_models(Some(key)).await.0, 403);
        assert_eq!(app.promote_model(a, None, Some(key)).await.0, 403);
        assert_eq!(app.rollback_models(Some(key)).await.0, 403);
    }
    assert_eq!(app.list_models(None).await.0, 401);
    assert_eq!(app.promote_model(a, None, None).await.0, 401);
    assert_eq!(registry.get(a).await.unwrap().status, "candidate", "refused requests changed nothing");
    let (status, body) = app.list_models(Some(&app.admin_key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["models"].as_array().unwrap().len(), 1);
    assert_eq!(app.promote_model(a, None, Some(&app.admin_key)).await.0, 200);
    // A malformed body is refused with a reason.
    let (status, body) = app
        .post_json(&format!("/v1/models/{a}/promote"), Some(&serde_json::json!({"trafic": 0.5})), Some(&app.admin_key))
        .await;
    assert_eq!(status, 400, "{body}");
}

/// The real binary: `models publish | list | promote | rollback` with the
/// global `--database-url` and `--model-store`, and its errors.
#[actix_web::test]
async fn models_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("cli.db").display());
    let store = dir.path().join("store");
    let (model_dir, version) = train_tiny_with(dir.path(), 5, true);
    // The report named with --report instead of the default <dir>/report.
    let report = dir.path().join("figures");
    std::fs::rename(model_dir.join("report"), &report).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["--database-url", &db_url, "--model-store", store.to_str().unwrap()])
            .args(args)
            .env_remove("CARTPULSE_MODEL_STORE")
            .output()
            .expect("run cartpulse");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&[
        "models",
        "publish",
        model_dir.to_str().unwrap(),
        "--report",
        dir.path().join("nowhere").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("report directory"), "{err}");
    let (ok, out, err) = run(&["models", "publish", model_dir.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&version), "{out}");
    assert!(err.contains("report images: calibration.png, confusion.png, roc.png"), "{err}");
    assert!(store.join(&version).join(WEIGHTS_FILE).exists());
    assert_eq!(
        std::fs::read(store.join(&version).join("report-roc.png")).unwrap(),
        std::fs::read(report.join("roc.png")).unwrap()
    );
    let (ok, out, err) = run(&["models", "list"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with(&version)).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("candidate"), "{out}");
    let (ok, _, err) = run(&["models", "promote", &version, "--traffic", "1.2"]);
    assert!(!ok && err.contains("out of range"), "{err}");
    let (ok, _, err) = run(&["models", "promote", "pi-unknown"]);
    assert!(!ok && err.contains("unknown model version"), "{err}");
    let (ok, _, err) = run(&["models", "promote", &version]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["models", "list"]);
    assert!(
        ok && out.lines().any(|l| l.starts_with(&version) && l.contains("active") && l.contains("100.0%")),
        "{out}"
    );
    let (ok, _, err) = run(&["models", "rollback"]);
    assert!(!ok && err.contains("nothing to roll back to"), "{err}");
    // Shadow: an active version is refused, an unknown one too; unshadow with nothing in shadow is fine.
    let (ok, _, err) = run(&["models", "shadow", &version]);
    assert!(!ok && err.contains("is active"), "{err}");
    let (ok, _, err) = run(&["models", "shadow", "pi-unknown"]);
    assert!(!ok && err.contains("unknown model version"), "{err}");
    let (ok, _, err) = run(&["models", "unshadow"]);
    assert!(ok && err.contains("no version is in shadow"), "{err}");
}

/// The registry's shadow status: at most one shadow, a shadow whose objects
/// are corrupt is refused like a promotion, and one that goes bad after it
/// was shadowed is skipped by a fresh loader while the active versions load;
/// the console's admin cookie (with its CSRF token) shadows like it promotes.
async fn shadow_status(db: Db) {
    let (app, registry, settings, _store) = app_and_registry(db, Store::Local).await;
    let models = publish_models(&app, &registry, &[1, 2, 3]).await;
    let (a, b, c) = (&models[0].1, &models[1].1, &models[2].1);
    registry.promote(a, None).await.unwrap();
    let err = registry.shadow(a).await.expect_err("an active version");
    assert!(matches!(err, RegistryError::WrongState(_)), "{err:?}");
    let err = registry.shadow("pi-no-such-version").await.expect_err("unknown");
    assert!(matches!(err, RegistryError::UnknownVersion(_)), "{err:?}");

    let change = registry.shadow(b).await.unwrap();
    assert!(change.changed && change.shadow.as_deref() == Some(b.as_str()) && change.released.is_none());
    let again = registry.shadow(b).await.unwrap();
    assert!(!again.changed, "already the shadow");
    let loaded = registry.load_serving_and_shadow().await.unwrap();
    assert_eq!(versions_and_shares(&loaded.active), vec![(a.clone(), 1.0)]);
    assert_eq!(loaded.shadow.as_ref().map(|e| e.version.as_str()), Some(b.as_str()));
    assert_eq!(versions_and_shares(&registry.load_serving().await.unwrap()), vec![(a.clone(), 1.0)]);
    let (_, list) = app.list_models(Some(&app.admin_key)).await;
    assert_eq!(model_row(&list, b)["status"], "shadow");
    assert_eq!(model_row(&list, b)["traffic_share"], 0.0);

    // c's weights are corrupt: shadowing it is refused (400 naming the object); b stays.
    let mut w = std::fs::read(models[2].0.join(WEIGHTS_FILE)).unwrap();
    let last = w.len() - 1;
    w[last] ^= 0x55;
    overwrite_object(&registry, c, WEIGHTS_FILE, Some(w)).await;
    let (status, body) = app.post_json(&format!("/v1/models/{c}/shadow"), None, Some(&app.admin_key)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains(WEIGHTS_FILE), "{body}");
    assert_eq!(registry.get(b).await.unwrap().status, "shadow");

    // b goes bad in the store after it was shadowed: a fresh loader (another
    // replica) still loads the active version and reports the shadow.
    overwrite_object(&registry, b, MANIFEST_FILE, Some(b"{}".to_vec())).await;
    let other =
        ModelRegistry::from_settings(cartpulse::db::connect(&settings).await.unwrap(), &settings).await.unwrap();
    let loaded = other.load_serving_and_shadow().await.expect("the active versions still load");
    assert_eq!(versions_and_shares(&loaded.active), vec![(a.clone(), 1.0)]);
    assert!(loaded.shadow.is_none());
    let (version, error) = loaded.shadow_error.expect("the shadow failure is reported");
    assert!(version == *b && error.contains(MANIFEST_FILE), "{version}: {error}");

    // The console: an admin's cookie needs its CSRF token, as for promote.
    app.create_console_user("ada", cartpulse::serving::console::Role::Admin, "a long enough password").await;
    let login = app.console_login("ada", "a long enough password").await;
    let (status, _) =
        app.console_request(reqwest::Method::POST, "/v1/models/shadow/clear", Some(&login.cookie), None, None).await;
    assert_eq!(status, 403, "no CSRF token");
    assert_eq!(registry.get(b).await.unwrap().status, "shadow");
    let (status, body) = app
        .console_request(reqwest::Method::POST, "/v1/models/shadow/clear", Some(&login.cookie), Some(&login.csrf), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], serde_json::json!({ "version": b, "status": "candidate" }));
    assert_eq!(registry.get(b).await.unwrap().status, "candidate");
}
on_both_databases!(shadow_status);
