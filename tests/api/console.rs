//! The admin console's server side: login (hardened cookie, only a hash of
//! the session id stored), CSRF on every state change, roles mapped onto the
//! `/v1` scopes (viewers refused changes by the server), login rate limits,
//! API keys unaffected, and the static app's security headers.

use crate::helpers::*;
use crate::on_both_databases;
use cartpulse::serving::console::Role;
use reqwest::Method;
use sha2::{Digest, Sha256};

const ADMIN_PW: &str = "correct horse battery";
const VIEWER_PW: &str = "viewer password 1";

async fn app_with_users(db: Db) -> TestApp {
    let app = spawn_app(db).await;
    app.create_console_user("alice", Role::Admin, ADMIN_PW).await;
    app.create_console_user("victor", Role::Viewer, VIEWER_PW).await;
    app
}

async fn login_sets_a_hardened_cookie_and_stores_only_its_hash(db: Db) {
    let app = app_with_users(db).await;

    let wrong = app.console_login_raw("alice", "not the password").await;
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(wrong.headers().get("set-cookie").is_none(), "a failed login sets no cookie");
    let unknown = app.console_login_raw("nobody", ADMIN_PW).await;
    assert_eq!(unknown.status().as_u16(), 401);
    let unknown_body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(unknown_body["error"], "wrong name or password", "unknown names are not revealed");

    // A cross-site form can post text/plain that parses as JSON: refused (login CSRF).
    let form = app
        .client
        .post(format!("{}/console/login", app.address))
        .header("Content-Type", "text/plain")
        .body(format!("{{\"name\":\"alice\",\"password\":\"{ADMIN_PW}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status().as_u16(), 415);
    assert!(form.headers().get("set-cookie").is_none());

    let login = app.console_login("alice", ADMIN_PW).await;
    let attrs = login.set_cookie.to_ascii_lowercase();
    assert!(login.cookie.starts_with("cartpulse_console="), "{}", login.set_cookie);
    assert!(attrs.contains("httponly"), "{}", login.set_cookie);
    assert!(attrs.contains("samesite=strict"), "{}", login.set_cookie);
    assert!(attrs.contains("path=/"), "{}", login.set_cookie);
    assert!(!attrs.contains("secure"), "Secure only when console.secure_cookies is set: {}", login.set_cookie);
    assert_eq!(login.csrf.len(), 64);

    // The database holds the SHA-256 of the session id, never the id itself.
    let id = login.cookie.split_once('=').unwrap().1;
    let s = test_settings(&app.database_url);
    let conn = cartpulse::db::connect(&s).await.unwrap();
    use sea_orm::EntityTrait;
    let rows = entities::console_session::Entity::find().all(&conn).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id_hash, hex::encode(Sha256::digest(id.as_bytes())));
    assert_ne!(rows[0].id_hash, id);
    let users = entities::user::Entity::find().all(&conn).await.unwrap();
    assert!(users.iter().all(|u| u.password_hash.starts_with("$argon2id$") && !u.password_hash.contains(ADMIN_PW)));

    let (status, me) = app.console_request(Method::GET, "/console/me", Some(&login.cookie), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["csrf_token"], login.csrf.as_str());
    let (status, _) = app.console_request(Method::GET, "/console/me", None, None, None).await;
    assert_eq!(status, 401);
    let (status, _) =
        app.console_request(Method::GET, "/console/me", Some("cartpulse_console=forged"), None, None).await;
    assert_eq!(status, 401);

    // Logout is a state change: it needs the CSRF token, then the cookie is dead.
    let (status, _) = app.console_request(Method::POST, "/console/logout", Some(&login.cookie), None, None).await;
    assert_eq!(status, 403);
    let (status, _) =
        app.console_request(Method::POST, "/console/logout", Some(&login.cookie), Some(&login.csrf), None).await;
    assert_eq!(status, 204);
    let (status, _) = app.console_request(Method::GET, "/console/me", Some(&login.cookie), None, None).await;
    assert_eq!(status, 401, "the session ended with the logout");
    let (status, _) = app.console_request(Method::GET, "/v1/segments", Some(&login.cookie), None, None).await;
    assert_eq!(status, 401);
}
on_both_databases!(login_sets_a_hardened_cookie_and_stores_only_its_hash);

#[actix_web::test]
async fn secure_cookies_setting_marks_the_cookie_secure() {
    let app = spawn_app_with(Db::Sqlite, |s| s.console.secure_cookies = Some(true)).await;
    app.create_console_user("alice", Role::Admin, ADMIN_PW).await;
    let login = app.console_login("alice", ADMIN_PW).await;
    assert!(login.set_cookie.to_ascii_lowercase().contains("secure"), "{}", login.set_cookie);
    assert!(login.cookie.starts_with("__Host-cartpulse_console="), "{}", login.set_cookie);
}

#[actix_web::test]
async fn cookie_state_changes_need_the_sessions_csrf_token() {
    let app = app_with_users(Db::Sqlite).await;
    let admin = app.console_login("alice", ADMIN_PW).await;
    let other = app.console_login("victor", VIEWER_PW).await;

    // Reads need no token.
    let (status, _) = app.console_request(Method::GET, "/v1/models", Some(&admin.cookie), None, None).await;
    assert_eq!(status, 200);
    // A change without the token, with a wrong one, or with another session's is refused.
    for csrf in [None, Some("0".repeat(64)), Some(other.csrf.clone())] {
        let (status, body) =
            app.console_request(Method::POST, "/v1/models/rollback", Some(&admin.cookie), csrf.as_deref(), None).await;
        assert_eq!(status, 403, "csrf {csrf:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("X-CSRF-Token"), "{body}");
    }
    // With the right token the request reaches the handler (nothing to roll back yet).
    let (status, body) =
        app.console_request(Method::POST, "/v1/models/rollback", Some(&admin.cookie), Some(&admin.csrf), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = app
        .console_request(Method::POST, "/v1/models/no-such/promote", Some(&admin.cookie), Some(&admin.csrf), None)
        .await;
    assert_eq!(status, 404, "an admin session reaches the promote handler: {body}");
}

#[actix_web::test]
async fn viewers_read_everything_and_change_nothing() {
    let app = app_with_users(Db::Sqlite).await;
    let v = app.console_login("victor", VIEWER_PW).await;
    let c = Some(v.cookie.as_str());

    let (status, _) = app.console_request(Method::GET, "/v1/segments", c, None, None).await;
    assert_eq!(status, 200);
    let (status, _) = app.console_request(Method::GET, "/v1/customers/nobody", c, None, None).await;
    assert_eq!(status, 404, "read scope passes; the customer does not exist");
    let (status, body) = app.console_request(Method::GET, "/console/api/models", c, None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["models"].is_array());
    // The console's stream token (a POST: CSRF applies).
    let (status, _) = app.console_request(Method::POST, "/v1/stream/token", c, None, None).await;
    assert_eq!(status, 403);
    let (status, body) = app.console_request(Method::POST, "/v1/stream/token", c, Some(&v.csrf), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));

    // Changes, and the admin-only listing, are refused even with a valid CSRF token.
    for (method, path) in [
        (Method::POST, "/v1/models/rollback"),
        (Method::POST, "/v1/models/v1/promote"),
        (Method::POST, "/v1/segments/1/activate"),
        (Method::GET, "/v1/models"),
    ] {
        let (status, body) = app.console_request(method, path, c, Some(&v.csrf), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Console cookies never grant ingest to a viewer.
    let (status, _) =
        app.console_request(Method::POST, "/v1/events", c, Some(&v.csrf), Some(&serde_json::json!([]))).await;
    assert_eq!(status, 403);
}

#[actix_web::test]
async fn api_keys_work_exactly_as_before_with_or_without_a_cookie() {
    let app = app_with_users(Db::Sqlite).await;
    let admin = app.console_login("alice", ADMIN_PW).await;
    // A key wins over a cookie: a read key with an admin cookie is still only read.
    let r = app
        .client
        .post(format!("{}/v1/models/rollback", app.address))
        .bearer_auth(&app.read_key)
        .header("Cookie", &admin.cookie)
        .header("X-CSRF-Token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Keys need no CSRF token and no cookie.
    let (status, _) = app.rollback_models(Some(&app.admin_key.clone())).await;
    assert_eq!(status, 400, "admin key reaches the handler");
    let (status, _) = app.get_json("/v1/segments", Some(&app.read_key.clone())).await;
    assert_eq!(status, 200);
    let (status, _) = app.get_json("/v1/segments", Some("cp_bad_key")).await;
    assert_eq!(status, 401);
    let (status, _) = app.get_json("/v1/segments", None).await;
    assert_eq!(status, 401);
    // An invalid key is refused even with a valid cookie beside it.
    let r = app
        .client
        .get(format!("{}/v1/segments", app.address))
        .bearer_auth("cp_bad_key")
        .header("Cookie", &admin.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[actix_web::test]
async fn failed_logins_are_rate_limited_per_name() {
    let app = spawn_app_with(Db::Sqlite, |s| s.console.login_max_failures_per_ip = 100).await;
    app.create_console_user("alice", Role::Admin, ADMIN_PW).await;
    app.create_console_user("bob", Role::Viewer, VIEWER_PW).await;
    for i in 0..5 {
        let r = app.console_login_raw("alice", "guess").await;
        assert_eq!(r.status().as_u16(), 401, "attempt {i}");
    }
    // Over the limit the password is not even checked: the right one is refused too.
    let r = app.console_login_raw("alice", ADMIN_PW).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // Another name is not affected.
    app.console_login("bob", VIEWER_PW).await;
}

#[actix_web::test]
async fn failed_logins_are_rate_limited_per_address() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.console.login_max_failures_per_name = 100;
        s.console.login_max_failures_per_ip = 3;
    })
    .await;
    app.create_console_user("alice", Role::Admin, ADMIN_PW).await;
    for name in ["a1", "a2", "a3"] {
        assert_eq!(app.console_login_raw(name, "guess").await.status().as_u16(), 401);
    }
    // Spraying names from one address: the address is locked, whatever the name.
    assert_eq!(app.console_login_raw("alice", ADMIN_PW).await.status().as_u16(), 429);
}

#[actix_web::test]
async fn the_console_is_served_with_a_strict_csp() {
    let web = tempfile::tempdir().unwrap();
    std::fs::create_dir(web.path().join("assets")).unwrap();
    std::fs::write(web.path().join("index.html"), "<!doctype html><title>console</title>").unwrap();
    std::fs::write(web.path().join("assets/app-1.js"), "console.log(1)").unwrap();
    let dir = web.path().display().to_string();
    let app = spawn_app_with(Db::Sqlite, move |s| s.console.static_dir = dir).await;

    let r = app.client.get(format!("{}/", app.address)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(r.text().await.unwrap().contains("<title>console</title>"));

    let r = app.client.get(format!("{}/assets/app-1.js", app.address)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    for bad in ["/assets/..%2Findex.html", "/assets/.hidden", "/assets/nope.js"] {
        let r = app.client.get(format!("{}{bad}", app.address)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{bad}");
    }
    // The API's unknown paths still answer JSON.
    let (status, body) = app.get_json("/v1/nope", Some(&app.read_key.clone())).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[actix_web::test]
async fn users_need_a_real_password_and_a_unique_name() {
    let app = spawn_app(Db::Sqlite).await;
    let s = test_settings(&app.database_url);
    let db = cartpulse::db::connect(&s).await.unwrap();
    let pw = |p: &str| secrecy::SecretString::from(p.to_owned());
    use cartpulse::serving::console::users::create;
    assert!(create(&db, "carol", Role::Viewer, &pw("short")).await.is_err());
    assert!(create(&db, "bad name", Role::Viewer, &pw("long enough pw")).await.is_err());
    create(&db, "carol", Role::Viewer, &pw("long enough pw")).await.unwrap();
    assert!(create(&db, "carol", Role::Admin, &pw("long enough pw")).await.is_err());
    let r = app.console_login_raw("carol", "long enough pw").await;
    assert_eq!(r.status().as_u16(), 200);
}
