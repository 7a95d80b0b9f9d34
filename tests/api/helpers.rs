//! `TestApp`: a real server on port 0 over a fresh database (a SQLite file in
//! a temp dir, or a new database on the Postgres at 127.0.0.1:5432), with keys
//! of every scope and a method per endpoint. Logs only when `TEST_LOG` is set.
//! Every response read through these methods (and through [`checked`], which
//! other tests' request helpers use too) is checked against the API contract
//! ([`super::contract`]); a request a test sends through `client` itself and
//! reads itself is not.

use cartpulse::config::{Overrides, Settings};
use cartpulse::startup::Application;
use serde_json::Value;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

static LOGGING: Once = Once::new();

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn pg_admin_url() -> String {
    std::env::var("CARTPULSE_TEST_PG_ADMIN_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_owned())
}

/// A fresh, empty database; returns its URL.
pub async fn fresh_database(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
        Db::Postgres => {
            use sea_orm::{ConnectionTrait, Database};
            let name = format!("cp_test_{}", hex::encode(rand::random::<[u8; 6]>()));
            let admin = Database::connect(pg_admin_url()).await.unwrap_or_else(|e| {
                panic!("Postgres must be running on 127.0.0.1:5432 for this test (.ci/run starts it): {e}")
            });
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
            let base = pg_admin_url();
            let (prefix, _) = base.rsplit_once('/').expect("admin URL has a database part");
            format!("{prefix}/{name}")
        }
    }
}

/// Settings for tests: port 0, small timers.
/// The UCI Online Shoppers file beside the repository (`../shared/data`).
pub fn uci_text() -> String {
    let path =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/online_shoppers_intention.csv"));
    std::fs::read_to_string(&path).expect("the UCI file ../shared/data/online_shoppers_intention.csv")
}

/// The UCI file's header and the data rows (counted from 0) that `keep` keeps.
pub fn uci_rows(keep: impl Fn(usize) -> bool) -> String {
    let text = uci_text();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_owned()];
    out.extend(lines.enumerate().filter(|(i, _)| keep(*i)).map(|(_, l)| l.to_owned()));
    out.join("\n") + "\n"
}

pub fn test_settings(database_url: &str) -> Settings {
    let overrides =
        Overrides { listen: Some("127.0.0.1:0".into()), database_url: Some(database_url.into()), ..Default::default() };
    let mut s = Settings::load(None, &overrides).expect("test settings");
    s.actors.shards = 2;
    s.actors.snapshot_max_delay_ms = std::time::Duration::from_millis(100);
    s.database.sqlite_synchronous = cartpulse::config::SqliteSync::Normal;
    // Required with Redis; the same for every app of a test, as on replicas.
    s.stream.token_secret = Some(secrecy::SecretString::from("test-stream-token-secret-of-at-least-32-bytes"));
    s
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    pub client: reqwest::Client,
    pub admin_key: String,
    pub ingest_key: String,
    pub read_key: String,
    pub handle: actix_web::dev::ServerHandle,
    /// Starts the stop as SIGTERM does (not ready, drain, close).
    pub stopper: cartpulse::startup::Stopper,
    pub stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    pub dir: std::sync::Arc<tempfile::TempDir>,
    pub inference: cartpulse::serving::inference::InferenceHandle,
    /// Shared by the apps over the same database (a restart, a gateway
    /// beside it): the last one to go ends the connections left to it.
    pub database_guard: std::sync::Arc<DatabaseGuard>,
}

/// Ends the connections still open to a test's Postgres database when the
/// last app over it is dropped. An app a test drops without `stop()` leaves
/// its pool's connections open until the test binary exits: a few per test,
/// enough over a full run to reach Postgres' `max_connections` (100 here)
/// and fail later tests with pool timeouts.
pub struct DatabaseGuard(Option<String>);

impl DatabaseGuard {
    fn for_url(database_url: &str) -> DatabaseGuard {
        let name = database_url
            .starts_with("postgres")
            .then(|| database_url.rsplit('/').next().unwrap_or_default().to_owned())
            .filter(|name| name.starts_with("cp_test_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        DatabaseGuard(name)
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        let Some(name) = self.0.take() else { return };
        let database = name.clone();
        // A thread and runtime of its own: a drop may run inside a runtime,
        // which cannot block on another future.
        let ended = std::thread::spawn(move || {
            use sea_orm::ConnectionTrait;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let admin = sea_orm::Database::connect(pg_admin_url()).await.map_err(|e| e.to_string())?;
                admin
                    .execute_unprepared(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = ended {
            eprintln!("could not end the connections left to test database {name}: {e}");
        }
    }
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// Starts an app over a fresh database, letting the test adjust settings.
pub async fn spawn_app_with(db: Db, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let url = fresh_database(db, dir.path()).await;
    let mut settings = test_settings(&url);
    adjust(&mut settings);
    start(settings, dir, None).await
}

/// Starts an app with these settings; reuses the keys of `keys_from` if given
/// (a restart over the same database).
pub async fn start(settings: Settings, dir: std::sync::Arc<tempfile::TempDir>, keys_from: Option<&TestApp>) -> TestApp {
    LOGGING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            cartpulse::telemetry::init_logging("info", false);
        }
    });
    let database_url = secrecy::ExposeSecret::expose_secret(&settings.database_url).to_owned();
    let app = Application::build(settings).await.expect("build app");
    let port = app.port();
    let handle = app.handle();
    let stopper = app.stopper();
    let inference = app.inference();
    let (tx, rx) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        if let Err(e) = app.run_until_stopped().await {
            eprintln!("app stopped with error: {e:#}");
        }
        let _ = tx.send(());
    });
    let database_guard = match keys_from {
        Some(a) => a.database_guard.clone(),
        None => std::sync::Arc::new(DatabaseGuard::for_url(&database_url)),
    };
    let (admin_key, ingest_key, read_key) = match keys_from {
        Some(a) => (a.admin_key.clone(), a.ingest_key.clone(), a.read_key.clone()),
        None => {
            let s = test_settings(&database_url);
            let db = cartpulse::db::connect(&s).await.expect("connect for keys");
            let k = |scope| {
                let db = db.clone();
                async move {
                    let key = cartpulse::keys::create(&db, "test", scope).await.expect("create key");
                    secrecy::ExposeSecret::expose_secret(&key.key).to_owned()
                }
            };
            use cartpulse::keys::Scope;
            (k(Scope::Admin).await, k(Scope::Ingest).await, k(Scope::Read).await)
        }
    };
    TestApp {
        address: format!("http://127.0.0.1:{port}"),

        database_url,
        client: reqwest::Client::new(),
        admin_key,
        ingest_key,
        read_key,
        handle,
        stopper,
        stopped: Some(rx),
        dir,
        inference,
        database_guard,
    }
}

impl TestApp {
    /// Graceful stop: waits until the app has drained and flushed.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(rx) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }

    /// Stops and starts a new app over the same database and keys.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let settings = test_settings(&self.database_url);
        start(settings, self.dir.clone(), Some(&self)).await
    }

    pub async fn post_events_raw(
        &self,
        key: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut r = self.client.post(format!("{}/v1/events", self.address)).body(body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(ct) = content_type {
            r = r.header("Content-Type", ct);
        }
        let r = r.send().await.expect("POST /v1/events");
        // Checked, then handed back whole (status, headers, body) for the test to read.
        let (status, headers, body) = checked("POST", "/v1/events", r).await;
        let mut back = http::Response::new(body);
        *back.status_mut() = status;
        *back.headers_mut() = headers;
        reqwest::Response::from(back)
    }

    /// Posts events as a JSON array with the ingest key; returns (status, body).
    pub async fn post_events(&self, events: &Value) -> (u16, Value) {
        let r = self.post_events_raw(Some(&self.ingest_key), Some("application/json"), events.to_string()).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/customers/{id}`. A 503 (the actors too busy to answer in
    /// time, `Retry-After: 1`) is retried for up to 10 s, as a client would.
    pub async fn get_customer(&self, id: &str) -> (u16, Value) {
        self.get_retrying_503(&format!("/v1/customers/{id}")).await
    }

    /// `GET /v1/sessions/{id}`, retried on 503 like [`Self::get_customer`].
    pub async fn get_session(&self, id: &str) -> (u16, Value) {
        self.get_retrying_503(&format!("/v1/sessions/{id}")).await
    }

    async fn get_retrying_503(&self, path: &str) -> (u16, Value) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.get_json(path, Some(&self.read_key)).await;
            if status != 503 || std::time::Instant::now() >= deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn get_json(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut r = self.client.get(format!("{}{}", self.address, path));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().await.expect("GET");
        json_of(checked("GET", path, r).await)
    }

    /// POSTs `body` (none: empty body) to `path` with `key`; returns (status, body).
    pub async fn post_json(&self, path: &str, body: Option<&Value>, key: Option<&str>) -> (u16, Value) {
        let mut r = self.client.post(format!("{}{}", self.address, path));
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_string());
        }
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().await.expect("POST");
        json_of(checked("POST", path, r).await)
    }

    /// GETs `path` without credentials; returns (status, text).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{}", self.address, path)).send().await.expect("GET");
        let (status, _, body) = checked("GET", path, r).await;
        (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
    }

    /// Replays `file` (as fast as possible) into this app with its ingest key.
    pub async fn replay_file(
        &self,
        format: cartpulse::jobs::replay::ReplayFormat,
        file: std::path::PathBuf,
    ) -> cartpulse::jobs::replay::ReplaySummary {
        cartpulse::jobs::replay::run(cartpulse::jobs::replay::ReplayOptions {
            format,
            file: Some(file),
            synthetic: None,
            target: self.address.parse().expect("url"),
            api_key: secrecy::SecretString::from(self.ingest_key.clone()),
            rate: None,
            speedup: None,
            batch_size: 500,
            concurrency: 4,
            seed: 1,
            progress: false,
        })
        .await
        .expect("replay")
    }

    /// `POST /v1/predict` with the read key.
    pub async fn predict(&self, body: &Value) -> (u16, Value) {
        self.post_json("/v1/predict", Some(body), Some(&self.read_key.clone())).await
    }

    /// `GET /v1/models`.
    pub async fn list_models(&self, key: Option<&str>) -> (u16, Value) {
        self.get_json("/v1/models", key).await
    }

    /// `GET /v1/models/compare` with the read key; `query` is `""` (the two
    /// active versions) or `?a=…&b=…`.
    pub async fn compare_models(&self, query: &str) -> (u16, Value) {
        self.get_json(&format!("/v1/models/compare{query}"), Some(&self.read_key)).await
    }

    /// `POST /v1/models/{version}/promote`, with `{"traffic": P}` when given.
    pub async fn promote_model(&self, version: &str, traffic: Option<f64>, key: Option<&str>) -> (u16, Value) {
        let body = traffic.map(|p| serde_json::json!({ "traffic": p }));
        self.post_json(&format!("/v1/models/{version}/promote"), body.as_ref(), key).await
    }

    /// `POST /v1/models/rollback`.
    pub async fn rollback_models(&self, key: Option<&str>) -> (u16, Value) {
        self.post_json("/v1/models/rollback", None, key).await
    }

    pub async fn metrics_text(&self) -> String {
        self.client.get(format!("{}/metrics", self.address)).send().await.expect("metrics").text().await.expect("text")
    }

    /// Value of a counter/gauge without labels (0 if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics_text().await, name)
    }

    /// Waits until `name` reaches at least `at_least`.
    pub async fn wait_metric(&self, name: &str, at_least: f64, timeout: Duration) -> f64 {
        eventually(&format!("{name} >= {at_least}"), timeout, || async {
            let v = self.metric(name).await;
            if v >= at_least {
                Ok(v)
            } else {
                Err(format!("{name} is {v}"))
            }
        })
        .await
    }
}

/// Polls `check` every 20 ms until it answers `Ok`, for at most `within`;
/// past it the test fails naming `what` and the last `Err` (the state seen).
/// Tests wait for conditions with this, never with a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => assert!(Instant::now() < deadline, "{what}: not within {within:?}; last seen: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the series written exactly `name` (labels included), 0 if absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    cartpulse::telemetry::scrape::sample(text, name).unwrap_or(0.0)
}

/// Builds a page-view event.
pub fn page_view(event_id: &str, customer: &str, session: &str, time: &str, kind: &str) -> Value {
    serde_json::json!({
        "type": "page_view", "event_id": event_id, "customer_id": customer, "session_id": session, "time": time,
        "page_kind": kind, "duration_s": 10.0, "bounce_rate": 0.02, "exit_rate": 0.05, "page_value": 1.5,
        "os": 2, "browser": 2, "region": 1, "traffic_type": 3, "visitor_type": "returning"
    })
}

/// Builds a purchase event.
pub fn purchase(
    event_id: &str,
    customer: &str,
    session: Option<&str>,
    time: &str,
    invoice: &str,
    qty: i64,
    price: f64,
) -> Value {
    let mut v = serde_json::json!({
        "type": "purchase", "event_id": event_id, "customer_id": customer, "time": time, "invoice": invoice,
        "country": "United Kingdom", "lines": [{"sku": "SKU-1", "quantity": qty, "unit_price": price}]
    });
    if let Some(s) = session {
        v["session_id"] = Value::String(s.into());
    }
    v
}

/// Runs the test body on SQLite and on Postgres as two tests.
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[actix_web::test]
            async fn sqlite() {
                $name(Db::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                $name(Db::Postgres).await
            }
        }
    };
}

/// An admin console login: the session cookie (`name=value`) and the CSRF token.
pub struct ConsoleLogin {
    pub cookie: String,
    pub set_cookie: String,
    pub csrf: String,
}

impl TestApp {
    /// Creates a console user directly in the database.
    pub async fn create_console_user(&self, name: &str, role: cartpulse::serving::console::Role, password: &str) {
        let s = test_settings(&self.database_url);
        let db = cartpulse::db::connect(&s).await.expect("connect for users");
        cartpulse::serving::console::users::create(&db, name, role, &secrecy::SecretString::from(password.to_owned()))
            .await
            .expect("create console user");
    }

    /// `POST /console/login`; returns the raw response.
    pub async fn console_login_raw(&self, name: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/console/login", self.address))
            .json(&serde_json::json!({ "name": name, "password": password }))
            .send()
            .await
            .expect("POST /console/login")
    }

    /// Logs in and returns the cookie and CSRF token (panics unless 200).
    pub async fn console_login(&self, name: &str, password: &str) -> ConsoleLogin {
        let r = self.console_login_raw(name, password).await;
        assert_eq!(r.status().as_u16(), 200, "console login of {name}");
        // The session cookie (a device cookie comes with it).
        let set_cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.contains("cartpulse_console="))
            .expect("login sets the session cookie")
            .to_owned();
        let cookie = set_cookie.split(';').next().expect("cookie pair").trim().to_owned();
        let body: Value = r.json().await.expect("login body");
        let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
        ConsoleLogin { cookie, set_cookie, csrf }
    }

    /// A request with a console cookie (and `X-CSRF-Token` when given); returns (status, body).
    pub async fn console_request(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method.clone(), format!("{}{}", self.address, path));
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        if let Some(t) = csrf {
            r = r.header("X-CSRF-Token", t);
        }
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_string());
        }
        let r = r.send().await.expect("console request");
        json_of(checked(method.as_str(), path, r).await)
    }
}

/// Reads a response whole and checks it against the API contract (panics
/// naming the request if it does not conform).
pub async fn checked(
    method: &str,
    path: &str,
    r: reqwest::Response,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, bytes::Bytes) {
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
    super::contract::check_response(method, path, status.as_u16(), &headers, &body);
    (status, headers, body)
}

/// (status, JSON body or `null`), as the request methods answer.
pub fn json_of((status, _, body): (reqwest::StatusCode, reqwest::header::HeaderMap, bytes::Bytes)) -> (u16, Value) {
    (status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}
