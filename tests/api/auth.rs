use crate::helpers::*;
use serde_json::json;

#[actix_web::test]
async fn every_v1_endpoint_needs_a_key_of_the_right_scope() {
    let app = spawn_app(Db::Sqlite).await;
    let ev = json!([page_view("a1", "c1", "s1", "2025-05-01T10:00:00Z", "product")]).to_string();
    // Missing, malformed and unknown keys: 401.
    assert_eq!(app.post_events_raw(None, Some("application/json"), ev.clone()).await.status(), 401);
    assert_eq!(app.post_events_raw(Some("nope"), Some("application/json"), ev.clone()).await.status(), 401);
    let forged = format!("{}x", &app.ingest_key[..app.ingest_key.len() - 1]);
    assert_eq!(app.post_events_raw(Some(&forged), Some("application/json"), ev.clone()).await.status(), 401);
    // A read key cannot write; an ingest key cannot read.
    assert_eq!(app.post_events_raw(Some(&app.read_key), Some("application/json"), ev.clone()).await.status(), 403);
    let (s, _) = app.get_json("/v1/customers/c1", Some(&app.ingest_key.clone())).await;
    assert_eq!(s, 403);
    let (s, _) = app.get_json("/v1/customers/c1", None).await;
    assert_eq!(s, 401);
    let (s, _) = app.get_json("/v1/sessions/s1", None).await;
    assert_eq!(s, 401);
    // The right keys work; admin may do both.
    assert_eq!(app.post_events_raw(Some(&app.ingest_key), Some("application/json"), ev.clone()).await.status(), 200);
    assert_eq!(app.post_events_raw(Some(&app.admin_key), Some("application/json"), ev).await.status(), 200);
    let (s, _) = app.get_json("/v1/customers/c1", Some(&app.admin_key.clone())).await;
    assert_eq!(s, 200);
}

#[actix_web::test]
async fn revoked_keys_stop_working() {
    let app = spawn_app(Db::Sqlite).await;
    let s = test_settings(&app.database_url);
    let db = cartpulse::db::connect(&s).await.unwrap();
    let k = cartpulse::keys::create(&db, "temp", cartpulse::keys::Scope::Read).await.unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&k.key).to_owned();
    assert!(cartpulse::keys::revoke(&db, &k.id).await.unwrap());
    // Never used before, so not cached: refused at once.
    let (s, _) = app.get_json("/v1/customers/c1", Some(&key)).await;
    assert_eq!(s, 401);
    // Keys are stored as hashes only.
    let rows = cartpulse::keys::list(&db).await.unwrap();
    assert!(rows.iter().all(|r| !key.contains(&r.secret_hash) && r.secret_hash.len() == 64));
}
