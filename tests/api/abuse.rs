//! Abuse suite of the security review: every test starts the real `cartpulse`
//! binary in its own process (over a SQLite file in a temp dir; keys and
//! console users made with the binary's own CLI), attacks it as an
//! unauthenticated or under-privileged client could, and proves that
//!
//! 1. request bodies are bounded before they are buffered: a 1.5 GiB declared
//!    or chunked login body gets 413 after at most 4096 bytes, unauthenticated
//!    chunked bodies to admin and ingest routes get 401/413;
//! 2. the console login limiter cannot be raced (40 parallel guesses for one
//!    name: at most 5 reach the password check), argon2 runs behind a few
//!    permits (a spray of 200 names: 401 or 503, memory bounded), and every
//!    verification is counted in `cartpulse_console_password_checks_total`;
//! 3. HTTP metrics never take a client's method name as a label value, and
//!    `/metrics` is open on loopback but needs a key from behind a proxy;
//! 4. a WebSocket subscribe frame full of duplicate topics costs nothing;
//! 5. stream tokens need a strong secret, name their principal, and cannot be
//!    forged with a far expiry;
//! 6. console cookies are `__Host-` + `Secure` with HSTS when asked to be;
//! 7. X-Forwarded-For counts only behind trusted proxies, and a locked name
//!    still admits the device it logged in from before;
//! 8. a revoked key or a console logout closes its WebSockets with 4001;
//! 9. a spray of made-up API keys does not grow the server's memory;
//! 10. a customer cannot take over another customer's session id, neither in
//!     the live answer nor in the stored row served after a restart.
//!
//! The rule shared by every attack: the server's resident memory (VmRSS from
//! /proc, sampled every 50 ms during the attack, the peak counts) grows by
//! less than 64 MiB, and afterwards `/healthz` answers 200 and a normal
//! `POST /v1/events` answers 200 within max(5 × its latency before, 250 ms).
//! A test reports every broken expectation at once (see [`Verdict`]).
//!
//! Run: `cargo test --test api abuse:: -- --test-threads=1` (`TEST_LOG=1`
//! shows the servers' stderr; `CARTPULSE_ABUSE_BIN=/path/to/cartpulse` runs
//! the suite against another build, e.g. an older commit's, to see it fail).

use crate::crash::free_port;
use crate::helpers::{checked, json_of, page_view};
use cartpulse::jobs::bench::serve_process::{ServeCommand, ServeProcess};
use cartpulse::telemetry::scrape::sum as metric_sum;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The binary under test: this build's, unless `CARTPULSE_ABUSE_BIN` names another.
fn bin() -> String {
    std::env::var("CARTPULSE_ABUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cartpulse").to_owned())
}
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Most the server's RSS may grow during one attack.
const RSS_BUDGET_KIB: u64 = 64 * 1024;
/// The login body limit; one byte more must be refused.
const LOGIN_BODY_LIMIT: usize = 4096;
/// How long the server has to answer an oversized or unauthenticated body.
const PROMPT: Duration = Duration::from_secs(5);
const ADMIN_PW: &str = "correct horse battery staple";
const BOB_PW: &str = "bob's long password";
/// A 40-byte stream token secret.
const TOKEN_SECRET: &str = "abuse-suite-secret-0123456789abcdefghijk";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------------------
// Verdicts: every broken expectation of a test, reported together.
// ---------------------------------------------------------------------------

/// Collects a test's failed expectations so that one run reports all of them
/// (a test that stopped at its first failure would hide the others).
struct Verdict {
    test: &'static str,
    failures: Vec<String>,
}

impl Verdict {
    fn new(test: &'static str) -> Verdict {
        Verdict { test, failures: Vec::new() }
    }

    /// Records `what` as a failure unless `ok`; returns `ok`.
    fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        if !ok {
            let what = what.into();
            eprintln!("[{}] FAILED: {what}", self.test);
            self.failures.push(what);
        }
        ok
    }

    fn note(&self, what: impl AsRef<str>) {
        eprintln!("[{}] {}", self.test, what.as_ref());
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{}: {} expectation(s) failed:\n - {}",
            self.test,
            self.failures.len(),
            self.failures.join("\n - ")
        );
    }
}

// ---------------------------------------------------------------------------
// Fixture (database, keys, users via the CLI) and Server (one `serve` process).
// ---------------------------------------------------------------------------

/// The binary with a clean `CARTPULSE_*` environment, run in `dir` (so no
/// `cartpulse.toml` or `./models` of the checkout is picked up).
fn command(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CARTPULSE_") {
            c.env_remove(k);
        }
    }
    c.current_dir(dir).env("CARTPULSE_LOG", "warn").env("CARTPULSE_MODEL_STORE", dir.join("models"));
    c
}

fn server_stderr() -> Stdio {
    if std::env::var("TEST_LOG").is_ok() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// An API key as printed by `cartpulse keys create`: `cp_<id>_<secret>`.
#[derive(Clone, Debug)]
struct ApiKey {
    key: String,
    id: String,
}

impl ApiKey {
    fn parse(key: &str) -> ApiKey {
        let id = key.split('_').nth(1).unwrap_or_default().to_owned();
        assert!(key.starts_with("cp_") && !id.is_empty(), "not an API key: {key:?}");
        ApiKey { key: key.to_owned(), id }
    }
}

/// A database in a temp dir with one key of every scope.
struct Fixture {
    dir: tempfile::TempDir,
    db_url: String,
    ingest: ApiKey,
    read: ApiKey,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("db.sqlite").display());
        let key = |scope: &str| create_key(dir.path(), &db_url, scope);
        let (ingest, read) = (key("ingest"), key("read"));
        Fixture { dir, db_url, ingest, read }
    }

    fn create_key(&self, scope: &str) -> ApiKey {
        create_key(self.dir.path(), &self.db_url, scope)
    }

    /// `CARTPULSE_USER_PASSWORD=… cartpulse users create --name … --role …`.
    fn create_user(&self, name: &str, role: &str, password: &str) {
        let out = command(self.dir.path())
            .args(["users", "create", "--name", name, "--role", role, "--database-url", &self.db_url])
            .env("CARTPULSE_USER_PASSWORD", password)
            .output()
            .expect("cartpulse users create");
        assert!(out.status.success(), "users create {name}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `cartpulse keys revoke <id>` (while the server runs).
    async fn revoke_key(&self, id: &str) {
        let out = tokio::process::Command::from(command(self.dir.path()))
            .args(["keys", "revoke", id, "--database-url", &self.db_url])
            .output()
            .await
            .expect("cartpulse keys revoke");
        assert!(out.status.success(), "keys revoke {id}: {}", String::from_utf8_lossy(&out.stderr));
    }

    async fn serve(&self, env: &[(&str, &str)]) -> Server {
        Server::start(self, env).await
    }
}

fn create_key(dir: &Path, db_url: &str, scope: &str) -> ApiKey {
    let name = format!("abuse-{scope}");
    let out = command(dir)
        .args(["keys", "create", "--name", &name, "--scope", scope, "--database-url", db_url])
        .output()
        .expect("cartpulse keys create");
    assert!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8 key");
    ApiKey::parse(stdout.lines().last().expect("the key on stdout").trim())
}

/// One `cartpulse serve` process; killed when dropped (also on a failed assertion).
struct Server {
    process: ServeProcess,
    pid: u32,
    port: u16,
    base: String,
    client: reqwest::Client,
    ingest: String,
    read: String,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("reqwest client")
}

impl Server {
    /// `cartpulse serve --listen 127.0.0.1:<free port> --database-url …` with
    /// `env` on top; waits for `/readyz`.
    async fn start(f: &Fixture, env: &[(&str, &str)]) -> Server {
        let process = ServeCommand::new(bin())
            .unwrap()
            .without_inherited_config()
            .current_dir(f.dir.path())
            .env("CARTPULSE_MODEL_STORE", f.dir.path().join("models").display().to_string())
            .args(["--database-url", &f.db_url])
            .envs(env.iter().copied())
            .start(Duration::from_secs(90))
            .await
            .expect("cartpulse serve");
        Server {
            pid: process.pid(),
            port: process.port,
            base: process.base.clone(),
            process,
            client: http_client(),
            ingest: f.ingest.key.clone(),
            read: f.read.key.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn watch_rss(&self) -> RssWatch {
        RssWatch::start(self.pid)
    }

    /// `GET /metrics` from loopback without credentials.
    async fn metrics_text(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.expect("GET /metrics");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "GET /metrics from loopback without credentials: {}", &text[..text.len().min(300)]);
        text
    }

    async fn healthz(&self) -> u16 {
        match self.client.get(self.url("/healthz")).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    fn probe(&self) -> IngestProbe {
        IngestProbe { client: self.client.clone(), url: self.url("/v1/events"), key: self.ingest.clone() }
    }

    /// The latency of a normal ingest request before an attack (two warm-ups,
    /// then the median of five).
    async fn normal_latency(&self) -> Duration {
        let p = self.probe();
        for _ in 0..2 {
            p.once().await.expect("warm-up ingest before the attack");
        }
        p.median(5).await.expect("ingest before the attack")
    }

    /// The rule after every attack: `/healthz` is 200 and a normal ingest
    /// request answers 200 within max(5 × `before`, 250 ms).
    async fn check_still_serving(&self, v: &mut Verdict, before: Duration) {
        let health = self.healthz().await;
        v.check(health == 200, format!("after the attack /healthz answered {health} (0: no answer in 10 s)"));
        let bound = (before * 5).max(Duration::from_millis(250));
        match self.probe().median(5).await {
            Ok(after) => {
                v.note(format!("ingest latency before {before:?}, after {after:?} (bound {bound:?})"));
                v.check(
                    after <= bound,
                    format!("ingest after the attack took {after:?} (before {before:?}, bound {bound:?})"),
                );
            }
            Err(e) => {
                v.check(false, format!("a normal ingest request after the attack failed: {e}"));
            }
        }
    }

    /// Graceful stop (SIGTERM, as an orchestrator does): waits until the
    /// process has flushed its state and exited.
    async fn stop(mut self) {
        self.process.terminate(Duration::from_secs(30)).await.expect("the server stops within 30 s of SIGTERM");
    }

    /// `POST /v1/events` with the ingest key; (status, body).
    async fn post_events(&self, events: &Value) -> (u16, Value) {
        let r = self.client.post(self.url("/v1/events")).bearer_auth(&self.ingest).json(events).send().await;
        let r = r.expect("POST /v1/events");
        json_of(checked("POST", "/v1/events", r).await)
    }

    /// `GET path` with the read key; (status, body).
    async fn get_read(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).bearer_auth(&self.read).send().await.expect("GET");
        json_of(checked("GET", path, r).await)
    }

    /// `POST /console/login` (JSON) with an optional `X-Forwarded-For` and `Cookie`.
    async fn login(&self, name: &str, password: &str, xff: Option<&str>, cookie: Option<&str>) -> LoginReply {
        let mut r = self.client.post(self.url("/console/login")).json(&json!({ "name": name, "password": password }));
        if let Some(x) = xff {
            r = r.header("X-Forwarded-For", x);
        }
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        LoginReply::read(r.send().await.expect("POST /console/login")).await
    }

    /// A request with a console cookie and (for state changes) its CSRF token.
    async fn console_request(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
    ) -> reqwest::Response {
        let mut r = self.client.request(method, self.url(path)).header("Cookie", cookie);
        if let Some(t) = csrf {
            r = r.header("X-CSRF-Token", t);
        }
        r.send().await.expect("console request")
    }
}

/// A normal ingest client: one page view with the ingest key.
#[derive(Clone)]
struct IngestProbe {
    client: reqwest::Client,
    url: String,
    key: String,
}

impl IngestProbe {
    async fn once(&self) -> Result<Duration, String> {
        let id = format!("probe-{}", hex::encode(rand::random::<[u8; 8]>()));
        let events = json!([page_view(&id, "probe-c", "probe-s", &now_rfc3339(), "product")]);
        let started = Instant::now();
        let r = self
            .client
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&events)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("POST /v1/events: {e}"))?;
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        let took = started.elapsed();
        if status == 200 {
            Ok(took)
        } else {
            Err(format!("POST /v1/events answered {status}"))
        }
    }

    async fn median(&self, n: usize) -> Result<Duration, String> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.once().await?);
        }
        all.sort();
        Ok(all[n / 2])
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------
// Memory: VmRSS of the server process, sampled during an attack.
// ---------------------------------------------------------------------------

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 50 ms on a thread of its own and keeps the
/// peak, so a spike that is freed again before the attack ends still counts.
struct RssWatch {
    baseline_kib: u64,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: u32,
}

#[derive(Debug, Clone, Copy)]
struct RssReport {
    baseline_kib: u64,
    peak_kib: u64,
}

impl RssReport {
    fn growth_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.baseline_kib)
    }
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let baseline_kib = rss_kib(pid).expect("the server process is gone");
        let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch { baseline_kib, peak_kib, stop, thread: Some(thread), pid }
    }

    /// Peak growth so far.
    fn growth_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed).saturating_sub(self.baseline_kib)
    }

    fn finish(mut self) -> RssReport {
        if let Some(kib) = rss_kib(self.pid) {
            self.peak_kib.fetch_max(kib, Ordering::Relaxed);
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        RssReport { baseline_kib: self.baseline_kib, peak_kib: self.peak_kib.load(Ordering::Relaxed) }
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn check_rss(v: &mut Verdict, r: &RssReport, attack: &str) {
    v.note(format!(
        "{attack}: RSS {} MiB before, peak {} MiB (growth {} KiB)",
        r.baseline_kib / 1024,
        r.peak_kib / 1024,
        r.growth_kib()
    ));
    v.check(
        r.growth_kib() < RSS_BUDGET_KIB,
        format!(
            "{attack}: RSS grew by {} MiB (from {} MiB to a peak of {} MiB); the budget is {} MiB",
            r.growth_kib() / 1024,
            r.baseline_kib / 1024,
            r.peak_kib / 1024,
            RSS_BUDGET_KIB / 1024
        ),
    );
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 bodies: a declared length never sent, or a chunked stream.
// ---------------------------------------------------------------------------

/// What the server did with a raw request.
#[derive(Debug, Clone)]
enum Answer {
    /// A status line (and the head, for the report).
    Status { code: u16, head: String },
    /// It closed the connection without answering.
    Closed,
    /// Nothing yet.
    Pending,
}

impl Answer {
    fn code(&self) -> Option<u16> {
        match self {
            Answer::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn short(&self) -> String {
        match self {
            Answer::Status { code, head } => format!("{code} ({:?})", head.lines().next().unwrap_or("")),
            Answer::Closed => "closed without an answer".into(),
            Answer::Pending => "no answer".into(),
        }
    }
}

enum RawBody<'a> {
    /// `Content-Length: n`; not one body byte is sent.
    Declared(u64),
    /// `Transfer-Encoding: chunked` from a generator: `prefix`, then `fill`
    /// bytes, `total` bytes in all. The first chunk is 4097 bytes (one over
    /// the login limit), then the server gets [`PROMPT`] to answer before
    /// the rest streams in 64 KiB chunks.
    Chunked { total: u64, prefix: &'a [u8], fill: u8 },
}

#[derive(Debug)]
struct RawOutcome {
    answer: Answer,
    /// Body bytes the client wrote.
    body_sent: u64,
    /// The answer came within [`PROMPT`] of the headers (declared) or of the
    /// first 4097 body bytes (chunked).
    prompt: bool,
    /// Why the client stopped sending.
    stopped: String,
}

fn chunk_frame(data: &[u8]) -> Vec<u8> {
    let mut f = format!("{:x}\r\n", data.len()).into_bytes();
    f.extend_from_slice(data);
    f.extend_from_slice(b"\r\n");
    f
}

fn parse_status(buf: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(buf.split(|&b| b == b'\n').next()?).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn read_answer(mut r: tokio::net::tcp::OwnedReadHalf) -> Answer {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        match r.read(&mut tmp).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 64 * 1024 {
                    break;
                }
            }
        }
    }
    match parse_status(&buf) {
        Some(code) => Answer::Status { code, head: String::from_utf8_lossy(&buf[..buf.len().min(2048)]).into_owned() },
        None => Answer::Closed,
    }
}

async fn wait_answer(reader: &mut JoinHandle<Answer>, t: Duration) -> Answer {
    match tokio::time::timeout(t, reader).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) => Answer::Closed,
        Err(_) => Answer::Pending,
    }
}

/// Sends an unauthenticated `POST path` with `body` over a raw connection
/// and reports what the server did. Stops streaming early when the server
/// answers, closes, stops reading for 10 s, or its RSS (per `watch`) has
/// grown past the budget (the test then fails without eating the machine).
async fn raw_post(s: &Server, watch: &RssWatch, path: &str, content_type: &str, body: RawBody<'_>) -> RawOutcome {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.expect("connect");
    tcp.set_nodelay(true).ok();
    let (r, mut w) = tcp.into_split();
    let mut reader = tokio::spawn(read_answer(r));
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: {content_type}\r\n", s.port);
    match &body {
        RawBody::Declared(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        RawBody::Chunked { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    let mut out = RawOutcome { answer: Answer::Pending, body_sent: 0, prompt: false, stopped: String::new() };
    if let Err(e) = w.write_all(head.as_bytes()).await {
        out.answer = wait_answer(&mut reader, PROMPT).await;
        out.prompt = !matches!(out.answer, Answer::Pending);
        out.stopped = format!("the headers could not be sent: {e}");
        reader.abort();
        return out;
    }
    match body {
        RawBody::Declared(_) => {
            out.answer = wait_answer(&mut reader, PROMPT).await;
            out.prompt = !matches!(out.answer, Answer::Pending);
            out.stopped = "sent the headers only".into();
        }
        RawBody::Chunked { total, prefix, fill } => {
            let first: Vec<u8> =
                prefix.iter().copied().chain(std::iter::repeat(fill)).take(LOGIN_BODY_LIMIT + 1).collect();
            if w.write_all(&chunk_frame(&first)).await.is_ok() {
                out.body_sent = first.len() as u64;
            }
            out.answer = wait_answer(&mut reader, PROMPT).await;
            out.prompt = !matches!(out.answer, Answer::Pending);
            if out.prompt {
                out.stopped = format!("answered within {PROMPT:?} of the first {} body bytes", out.body_sent);
            } else {
                let piece = chunk_frame(&vec![fill; 64 * 1024]);
                let deadline = Instant::now() + Duration::from_secs(180);
                out.stopped = loop {
                    if out.body_sent >= total {
                        let _ = w.write_all(b"0\r\n\r\n").await;
                        out.answer = wait_answer(&mut reader, Duration::from_secs(30)).await;
                        break format!("sent the whole body ({} bytes)", out.body_sent);
                    }
                    if watch.growth_kib() > RSS_BUDGET_KIB {
                        break format!(
                            "aborted: the server's RSS grew by {} MiB while it read {} MiB of body",
                            watch.growth_kib() / 1024,
                            out.body_sent / MIB
                        );
                    }
                    if Instant::now() > deadline {
                        break format!("gave up after 180 s and {} MiB of body", out.body_sent / MIB);
                    }
                    tokio::select! {
                        biased;
                        a = &mut reader => {
                            out.answer = a.unwrap_or(Answer::Closed);
                            break format!("answered after {} MiB of body", out.body_sent / MIB);
                        }
                        r = tokio::time::timeout(Duration::from_secs(10), w.write_all(&piece)) => match r {
                            Ok(Ok(())) => out.body_sent += 64 * 1024,
                            Ok(Err(e)) => {
                                out.answer = wait_answer(&mut reader, Duration::from_secs(2)).await;
                                break format!("the connection broke after {} MiB of body: {e}", out.body_sent / MIB);
                            }
                            Err(_) => {
                                out.answer = wait_answer(&mut reader, Duration::from_secs(2)).await;
                                break format!("the server stopped reading after {} MiB of body", out.body_sent / MIB);
                            }
                        }
                    }
                };
            }
        }
    }
    reader.abort();
    out
}

/// Attack 1: an unauthenticated chunked body of `total` bytes to `path`;
/// the answer must be one of `allowed` (or a close, if `close_ok`) within
/// [`PROMPT`] of the first 4097 bytes, the RSS stays in budget, and the
/// server keeps serving.
async fn chunked_body_attack(
    test: &'static str,
    path: &str,
    total: u64,
    prefix: &[u8],
    allowed: &[u16],
    close_ok: bool,
) {
    let mut v = Verdict::new(test);
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    let before = s.normal_latency().await;
    let watch = s.watch_rss();
    let out = raw_post(&s, &watch, path, "application/json", RawBody::Chunked { total, prefix, fill: b'a' }).await;
    let rss = watch.finish();
    v.note(format!("{path}: {} ; {}", out.answer.short(), out.stopped));
    let answer_ok = match &out.answer {
        Answer::Status { code, .. } => allowed.contains(code),
        Answer::Closed => close_ok,
        Answer::Pending => false,
    };
    v.check(
        answer_ok && out.prompt,
        format!(
            "unauthenticated chunked {} MiB POST {path}: expected {allowed:?}{} within {PROMPT:?} of the first {} \
             body bytes; got {} ({})",
            total / MIB,
            if close_ok { " or a close" } else { "" },
            LOGIN_BODY_LIMIT + 1,
            out.answer.short(),
            out.stopped
        ),
    );
    check_rss(&mut v, &rss, &format!("chunked POST {path}"));
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

// ---------------------------------------------------------------------------
// Console login replies and cookies.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SetCookie {
    raw: String,
    name: String,
    value: String,
}

impl SetCookie {
    fn parse(raw: &str) -> SetCookie {
        let pair = raw.split(';').next().unwrap_or("").trim();
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        SetCookie { raw: raw.to_owned(), name: name.trim().to_owned(), value: value.trim().to_owned() }
    }

    /// `name=value`, as a `Cookie` header sends it back.
    fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    /// Attribute names (lower case), e.g. `secure`, `path`.
    fn attr(&self, name: &str) -> Option<String> {
        self.raw.split(';').skip(1).map(str::trim).find_map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

#[derive(Debug)]
struct LoginReply {
    status: u16,
    retry_after: Option<u64>,
    cookies: Vec<SetCookie>,
    hsts: Option<String>,
    body: Value,
}

impl LoginReply {
    async fn read(r: reqwest::Response) -> LoginReply {
        let status = r.status().as_u16();
        let h = r.headers();
        let retry_after = h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let cookies = h.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(SetCookie::parse).collect();
        let hsts = hsts_of(h);
        let body = r.json().await.unwrap_or(Value::Null);
        LoginReply { status, retry_after, cookies, hsts, body }
    }

    fn cookie(&self, name: &str) -> Option<&SetCookie> {
        self.cookies.iter().find(|c| c.name == name)
    }

    fn csrf(&self) -> String {
        self.body["csrf_token"].as_str().expect("csrf_token in the login answer").to_owned()
    }
}

fn hsts_of(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("strict-transport-security").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `max-age` of a Strict-Transport-Security value.
fn hsts_max_age(v: &str) -> Option<u64> {
    v.split(';').map(str::trim).find_map(|d| {
        let (k, n) = d.split_once('=')?;
        k.trim().eq_ignore_ascii_case("max-age").then(|| n.trim().trim_matches('"').parse().ok())?
    })
}

fn tally(statuses: impl IntoIterator<Item = u16>) -> BTreeMap<u16, usize> {
    let mut t = BTreeMap::new();
    for s in statuses {
        *t.entry(s).or_insert(0) += 1;
    }
    t
}

// ---------------------------------------------------------------------------
// Metrics text.
// ---------------------------------------------------------------------------

/// The values of `label` over every series whose name starts with `prefix`.
fn label_values(text: &str, prefix: &str, label: &str) -> std::collections::BTreeSet<String> {
    let needle = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let start = l.find(&needle)? + needle.len();
            let end = l[start..].find('"')?;
            Some(l[start..start + end].to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// WebSockets and stream tokens.
// ---------------------------------------------------------------------------

async fn ws_connect(s: &Server, bearer: Option<&str>) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://127.0.0.1:{}/v1/stream", s.port).into_client_request()?;
    if let Some(k) = bearer {
        req.headers_mut().insert("Authorization", format!("Bearer {k}").parse().expect("header value"));
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn ws_send(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).await.expect("WebSocket send");
}

#[derive(Debug)]
enum WsNext {
    Json(Value),
    Closed(Option<u16>),
    Silent,
}

async fn ws_next(ws: &mut Ws, t: Duration) -> WsNext {
    let deadline = tokio::time::Instant::now() + t;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return WsNext::Silent,
            Ok(Some(Ok(Message::Text(t)))) => {
                let text: &str = &t;
                return WsNext::Json(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())));
            }
            Ok(Some(Ok(Message::Close(c)))) => return WsNext::Closed(c.map(|c| u16::from(c.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return WsNext::Closed(None),
        }
    }
}

/// The next JSON frame satisfying `pred` within `t` (others skipped); `Err`
/// says how the wait ended otherwise.
async fn ws_until(ws: &mut Ws, t: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
    let deadline = Instant::now() + t;
    loop {
        match ws_next(ws, deadline.saturating_duration_since(Instant::now())).await {
            WsNext::Json(v) if pred(&v) => return Ok(v),
            WsNext::Json(_) => {}
            WsNext::Closed(code) => return Err(format!("the WebSocket closed with {code:?}")),
            WsNext::Silent => return Err(format!("nothing matching within {t:?}")),
        }
    }
}

/// The close code if the server closed the WebSocket within `t`; `Err` if
/// it was still open.
async fn ws_close_code(ws: &mut Ws, t: Duration) -> Result<Option<u16>, String> {
    let deadline = Instant::now() + t;
    loop {
        match ws_next(ws, deadline.saturating_duration_since(Instant::now())).await {
            WsNext::Json(_) => {}
            WsNext::Closed(code) => return Ok(code),
            WsNext::Silent => return Err(format!("still open after {t:?}")),
        }
    }
}

/// A `_control` frame of this type (or a bare `{"type": kind}`).
fn is_control(v: &Value, kind: &str) -> bool {
    (v["topic"] == "_control" && v["data"]["type"] == kind) || v["type"] == kind
}

/// Authenticates an upgraded WebSocket with a first `auth` message.
async fn ws_auth(ws: &mut Ws, token: &str) -> Result<Value, String> {
    ws_send(ws, &json!({ "type": "auth", "token": token })).await;
    ws_until(ws, Duration::from_secs(5), |v| is_control(v, "authenticated")).await
}

fn token_mac(secret: &[u8], payload: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(payload.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// A stream token as the server makes them: `cpst2.<exp>.<principal>.<nonce
/// 16 hex>.<base64url-no-pad HMAC-SHA256(secret, payload)>`.
fn forge_token(secret: &[u8], exp: i64, principal: &str) -> String {
    let payload = format!("cpst2.{exp}.{principal}.{}", hex::encode(rand::random::<[u8; 8]>()));
    let sig = token_mac(secret, &payload);
    format!("{payload}.{sig}")
}

/// Spawns `cartpulse serve` expected to refuse its configuration: waits up
/// to 10 s for it to exit; returns (exit status if it exited, stderr).
async fn serve_expecting_refusal(
    dir: &Path,
    db_url: &str,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> (Option<std::process::ExitStatus>, String) {
    let port = free_port();
    let mut child = command(dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", db_url])
        .args(extra_args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cartpulse serve");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let collected = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (status, collected.join().unwrap_or_default())
}

fn redis_prefix() -> String {
    format!("cpabuse{}", hex::encode(rand::random::<[u8; 4]>()))
}

// ===========================================================================
// 1. Body limits
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_declared_1_5_gib_body_gets_413_before_the_body_is_read() {
    let mut v = Verdict::new("login_with_a_declared_1_5_gib_body_gets_413_before_the_body_is_read");
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    let before = s.normal_latency().await;
    let watch = s.watch_rss();
    let out = raw_post(&s, &watch, "/console/login", "application/json", RawBody::Declared(3 * GIB / 2)).await;
    let rss = watch.finish();
    v.note(format!("{} ; {}", out.answer.short(), out.stopped));
    v.check(
        out.answer.code() == Some(413),
        format!(
            "POST /console/login with Content-Length: 1.5 GiB and no body byte sent: expected 413 within {PROMPT:?}, \
             got {}",
            out.answer.short()
        ),
    );
    check_rss(&mut v, &rss, "declared 1.5 GiB login body");
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_chunked_1_5_gib_body_is_cut_off_after_4096_bytes() {
    chunked_body_attack(
        "login_with_a_chunked_1_5_gib_body_is_cut_off_after_4096_bytes",
        "/console/login",
        3 * GIB / 2,
        br#"{"name":"admin","password":""#,
        &[413],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_chunked_1_gib_promote_is_refused_without_buffering() {
    chunked_body_attack(
        "unauthenticated_chunked_1_gib_promote_is_refused_without_buffering",
        "/v1/models/x/promote",
        GIB,
        br#"{"traffic":0.5,"pad":""#,
        &[401, 413],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_chunked_1_gib_segment_activate_is_refused_without_buffering() {
    chunked_body_attack(
        "unauthenticated_chunked_1_gib_segment_activate_is_refused_without_buffering",
        "/v1/segments/1/activate",
        GIB,
        br#"{"pad":""#,
        &[401, 413],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_chunked_1_gib_ingest_gets_401_without_buffering() {
    chunked_body_attack(
        "unauthenticated_chunked_1_gib_ingest_gets_401_without_buffering",
        "/v1/events",
        GIB,
        br#"[{"type":"page_view","event_id":""#,
        &[401],
        false,
    )
    .await;
}

// ===========================================================================
// 2. Login limiter race and argon2 permits
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_parallel_wrong_guesses_for_one_name_get_at_most_five_401s() {
    let mut v = Verdict::new("forty_parallel_wrong_guesses_for_one_name_get_at_most_five_401s");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    let s = f.serve(&[]).await;
    let before = s.normal_latency().await;
    let watch = s.watch_rss();
    let guesses: Vec<String> = (0..40).map(|i| format!("wrong guess number {i}")).collect();
    let replies = futures::future::join_all(guesses.iter().map(|pw| s.login("admin", pw, None, None))).await;
    let rss = watch.finish();
    let counts = tally(replies.iter().map(|r| r.status));
    v.note(format!("40 parallel guesses: {counts:?}"));
    let n401 = counts.get(&401).copied().unwrap_or(0);
    v.check(n401 <= 5, format!("{n401} of 40 parallel wrong guesses reached the password check (401); at most 5 may"));
    let others_ok = replies.iter().filter(|r| r.status != 401).all(|r| matches!(r.status, 429 | 503));
    v.check(others_ok, format!("answers other than 401 must be 429 or 503; got {counts:?}"));
    let missing_retry =
        replies.iter().filter(|r| matches!(r.status, 429 | 503) && r.retry_after.is_none_or(|s| s < 1)).count();
    v.check(missing_retry == 0, format!("{missing_retry} answers 429/503 lack a Retry-After >= 1"));
    check_rss(&mut v, &rss, "40 parallel logins");
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_guesses_for_random_names_are_bounded_by_the_argon2_permits_and_counted() {
    let mut v =
        Verdict::new("two_hundred_parallel_guesses_for_random_names_are_bounded_by_the_argon2_permits_and_counted");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    // First with the defaults, then restarted with the limits out of the way:
    // what bounds the spray now is the argon2 permits and the waiting room.
    drop(f.serve(&[]).await);
    let s = f
        .serve(&[
            ("CARTPULSE_CONSOLE__LOGIN_MAX_FAILURES_PER_NAME", "100000"),
            ("CARTPULSE_CONSOLE__LOGIN_MAX_FAILURES_PER_IP", "100000"),
        ])
        .await;
    let before = s.normal_latency().await;
    let checks_before = metric_sum(&s.metrics_text().await, "cartpulse_console_password_checks_total");
    let names: Vec<String> = (0..200).map(|_| format!("spray-{}", hex::encode(rand::random::<[u8; 6]>()))).collect();
    let watch = s.watch_rss();
    let started = Instant::now();
    let replies = futures::future::join_all(names.iter().map(|n| s.login(n, "not the password", None, None))).await;
    let took = started.elapsed();
    let rss = watch.finish();
    let counts = tally(replies.iter().map(|r| r.status));
    v.note(format!("200 parallel guesses in {took:?}: {counts:?}"));
    v.check(counts.keys().all(|c| matches!(c, 401 | 503)), format!("answers must be 401 or 503 only; got {counts:?}"));
    let missing_retry = replies.iter().filter(|r| r.status == 503 && r.retry_after.is_none_or(|s| s < 1)).count();
    v.check(missing_retry == 0, format!("{missing_retry} answers 503 lack a Retry-After >= 1"));
    check_rss(&mut v, &rss, "200 parallel logins for random names");
    let n401 = counts.get(&401).copied().unwrap_or(0) as f64;
    let checks = metric_sum(&s.metrics_text().await, "cartpulse_console_password_checks_total");
    match checks {
        Some(after) => {
            let counted = after - checks_before.unwrap_or(0.0);
            v.check(
                counted == n401,
                format!("cartpulse_console_password_checks_total rose by {counted}, but {n401} answers were 401"),
            );
        }
        None => {
            v.check(false, "/metrics has no cartpulse_console_password_checks_total");
        }
    }
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

// ===========================================================================
// 3. Metrics cardinality and access
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_http_methods_are_counted_as_method_other_and_metrics_stay_small() {
    let mut v = Verdict::new("random_http_methods_are_counted_as_method_other_and_metrics_stay_small");
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    let before = s.normal_latency().await;
    let size_before = s.metrics_text().await.len() as u64;
    let watch = s.watch_rss();
    let real_routes = ["/v1/events", "/healthz", "/console/login", "/v1/customers/x"];
    let client = s.client.clone();
    let base = s.base.clone();
    let outcomes: Vec<Result<u16, String>> = futures::stream::iter(0..20_000u32)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            let method = format!("XQ{}", hex::encode_upper(rand::random::<[u8; 3]>()));
            let path = if i % 4 == 0 {
                real_routes[(i / 4) as usize % real_routes.len()].to_owned()
            } else {
                format!("/{}/{}", hex::encode(rand::random::<[u8; 4]>()), hex::encode(rand::random::<[u8; 4]>()))
            };
            async move {
                let m = reqwest::Method::from_bytes(method.as_bytes()).expect("extension method");
                match client.request(m, format!("{base}{path}")).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let _ = r.bytes().await;
                        Ok(status)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let rss = watch.finish();
    let errors = outcomes.iter().filter(|o| o.is_err()).count();
    let counts = tally(outcomes.iter().filter_map(|o| o.as_ref().ok().copied()));
    v.note(format!("20000 requests with random methods: {counts:?}, {errors} transport errors"));
    let text = s.metrics_text().await;
    let size_after = text.len() as u64;
    let methods = label_values(&text, "cartpulse_http_", "method");
    let ours: Vec<&String> = methods.iter().filter(|m| m.starts_with("XQ")).collect();
    v.note(format!("/metrics {size_before} -> {size_after} bytes; {} distinct method labels", methods.len()));
    v.check(
        ours.is_empty(),
        format!(
            "{} HTTP metric series carry a client's made-up method as their label (e.g. {:?}); expected method=\"other\"",
            ours.len(),
            ours.iter().take(3).collect::<Vec<_>>()
        ),
    );
    v.check(
        methods.contains("other"),
        format!(
            "no HTTP series has method=\"other\"; method labels: {:?}",
            methods.iter().take(10).collect::<Vec<_>>()
        ),
    );
    v.check(!text.contains("XQ"), "a made-up method name appears somewhere in /metrics");
    v.check(
        size_after.saturating_sub(size_before) < 64 * KIB,
        format!(
            "/metrics grew by {} KiB ({size_before} -> {size_after} bytes); budget 64 KiB",
            (size_after.saturating_sub(size_before)) / KIB
        ),
    );
    check_rss(&mut v, &rss, "20000 random-method requests");
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_on_loopback_but_need_a_key_when_forwarded_by_a_proxy() {
    let mut v = Verdict::new("metrics_are_open_on_loopback_but_need_a_key_when_forwarded_by_a_proxy");
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    let get = |xff: Option<&str>, key: Option<&str>| {
        let mut r = s.client.get(s.url("/metrics"));
        if let Some(x) = xff {
            r = r.header("X-Forwarded-For", x);
        }
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        async move { r.send().await.expect("GET /metrics").status().as_u16() }
    };
    let plain = get(None, None).await;
    v.check(
        plain == 200,
        format!("unauthenticated GET /metrics from loopback without X-Forwarded-For: {plain}, expected 200"),
    );
    let proxied = get(Some("203.0.113.9"), None).await;
    v.check(
        proxied == 401,
        format!("unauthenticated GET /metrics with X-Forwarded-For: 203.0.113.9: {proxied}, expected 401"),
    );
    let keyed = get(None, Some(&f.read.key)).await;
    v.check(keyed == 200, format!("GET /metrics with a read key: {keyed}, expected 200"));
    let keyed_proxied = get(Some("203.0.113.9"), Some(&f.read.key)).await;
    v.note(format!("with a read key and X-Forwarded-For: {keyed_proxied}"));
    v.finish();
}

// ===========================================================================
// 4. Duplicate topics in one subscribe frame
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_frame_repeating_two_topics_5000_times_lists_each_once_and_does_not_stall_ingest() {
    let mut v =
        Verdict::new("a_subscribe_frame_repeating_two_topics_5000_times_lists_each_once_and_does_not_stall_ingest");
    let f = Fixture::new();
    // The frame is ~105 KB (10,000 quoted names), over the 64 KiB default.
    let s = f.serve(&[("CARTPULSE_STREAM__MAX_FRAME_BYTES", "262144")]).await;
    let before = s.normal_latency().await;
    let mut ws = ws_connect(&s, Some(&s.read)).await.expect("WebSocket with a read key");
    let topics: Vec<&str> = (0..5000).flat_map(|_| ["kpis", "customer:c1"]).collect();
    let frame = json!({ "type": "subscribe", "topics": topics }).to_string();
    v.note(format!("subscribe frame: {} bytes", frame.len()));

    let watch = s.watch_rss();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Arc<Mutex<Vec<Result<Duration, String>>>> = Arc::default();
    let prober = {
        let (probe, stop, latencies) = (s.probe(), stop.clone(), latencies.clone());
        tokio::spawn(async move {
            loop {
                let r = probe.once().await;
                let n = {
                    let mut l = latencies.lock().unwrap();
                    l.push(r);
                    l.len()
                };
                if stop.load(Ordering::Relaxed) && n >= 3 {
                    break;
                }
            }
        })
    };
    for _ in 0..4 {
        ws.send(Message::text(frame.clone())).await.expect("send the subscribe frame");
    }
    let mut answers = Vec::new();
    for i in 0..4 {
        match ws_until(&mut ws, Duration::from_secs(20), |v| is_control(v, "subscribed") || v["topic"] == "_error")
            .await
        {
            Ok(a) => answers.push(a),
            Err(e) => {
                v.check(false, format!("subscribe frame {}: no `subscribed` answer: {e}", i + 1));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(30), prober).await;
    let rss = watch.finish();

    for (i, a) in answers.iter().enumerate() {
        if !v.check(is_control(a, "subscribed"), format!("subscribe frame {}: answered {a}", i + 1)) {
            continue;
        }
        let listed = a["data"]["topics"].as_array().or_else(|| a["topics"].as_array()).cloned().unwrap_or_default();
        let mut names: Vec<String> = listed.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        v.check(
            n == 2 && names == ["customer:c1", "kpis"],
            format!("subscribe frame {}: `subscribed` lists {n} topics ({} distinct: {:?}); expected kpis and customer:c1 once each", i + 1, names.len(), names),
        );
    }
    let bound = (before * 5).max(Duration::from_millis(250));
    let lat = latencies.lock().unwrap().clone();
    let failed: Vec<&String> = lat.iter().filter_map(|r| r.as_ref().err()).collect();
    let times: Vec<Duration> = lat.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let worst = times.iter().max().copied().unwrap_or_default();
    v.note(format!("{} concurrent ingest requests, worst {worst:?} (bound {bound:?})", times.len()));
    v.check(failed.is_empty(), format!("concurrent ingest requests failed: {failed:?}"));
    v.check(
        worst <= bound,
        format!("a concurrent POST /v1/events took {worst:?} (before {before:?}, bound {bound:?}); all: {times:?}"),
    );
    check_rss(&mut v, &rss, "four duplicate-topic subscribe frames");
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

// ===========================================================================
// 5. Stream tokens
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_refuses_to_start_without_a_strong_stream_token_secret() {
    let mut v = Verdict::new("a_gateway_refuses_to_start_without_a_strong_stream_token_secret");
    let f = Fixture::new();
    let prefix = redis_prefix();
    let gateway = ["--role", "gateway", "--redis-url", "redis://127.0.0.1:6379"];
    let cases: [(&str, Option<&str>); 3] = [
        ("no secret", None),
        ("a 31-byte secret", Some("0123456789012345678901234567890")),
        ("an empty secret", Some("")),
    ];
    for (what, secret) in cases {
        let mut env = vec![("CARTPULSE_REDIS__PREFIX", prefix.as_str())];
        if let Some(sec) = secret {
            env.push(("CARTPULSE_STREAM__TOKEN_SECRET", sec));
        }
        let (status, stderr) = serve_expecting_refusal(f.dir.path(), &f.db_url, &gateway, &env).await;
        v.note(format!("gateway with {what}: {status:?}"));
        v.check(
            status.is_some_and(|s| !s.success()),
            format!("gateway with {what}: expected a non-zero exit within 10 s, got {status:?} (None: still running)"),
        );
        v.check(
            stderr.contains("token_secret"),
            format!("gateway with {what}: stderr does not mention token_secret: {:?}", tail(&stderr)),
        );
    }
    // Control: with a 40-byte secret the same gateway starts (so the refusals
    // above were about the secret, and Redis is there).
    let port = free_port();
    let mut child = command(f.dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &f.db_url])
        .args(gateway)
        .env("CARTPULSE_REDIS__PREFIX", &prefix)
        .env("CARTPULSE_STREAM__TOKEN_SECRET", TOKEN_SECRET)
        .stdout(Stdio::null())
        .stderr(server_stderr())
        .spawn()
        .expect("spawn gateway");
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        if child.try_wait().ok().flatten().is_some() {
            break false;
        }
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await {
            if r.status() == 200 {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    v.check(ready, "control: a gateway with a 40-byte secret did not become ready (is Redis up on 127.0.0.1:6379?)");
    v.finish();
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(600);
    let start = (start..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    &s[start..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_all_refuses_to_start_with_a_10_byte_stream_token_secret() {
    let mut v = Verdict::new("role_all_refuses_to_start_with_a_10_byte_stream_token_secret");
    let f = Fixture::new();
    let (status, stderr) =
        serve_expecting_refusal(f.dir.path(), &f.db_url, &[], &[("CARTPULSE_STREAM__TOKEN_SECRET", "0123456789")])
            .await;
    v.check(
        status.is_some_and(|s| !s.success()),
        format!("role all with a 10-byte secret: expected a non-zero exit within 10 s, got {status:?} (None: still running)"),
    );
    v.check(stderr.contains("token_secret"), format!("stderr does not mention token_secret: {:?}", tail(&stderr)));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_forged_with_a_far_expiry_is_refused_with_4001_and_a_valid_one_accepted() {
    let mut v = Verdict::new("a_stream_token_forged_with_a_far_expiry_is_refused_with_4001_and_a_valid_one_accepted");
    let f = Fixture::new();
    let s = f.serve(&[("CARTPULSE_STREAM__TOKEN_SECRET", TOKEN_SECRET)]).await;
    let secret = TOKEN_SECRET.as_bytes();
    assert_eq!(secret.len(), 40);
    let principal = format!("k-{}", f.read.id);

    // The server's own token has the documented shape and verifies with our MAC.
    let r =
        s.client.post(s.url("/v1/stream/token")).bearer_auth(&f.read.key).send().await.expect("POST /v1/stream/token");
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if v.check(status == 200, format!("POST /v1/stream/token with a read key: {status} {body}")) {
        let issued = body["token"].as_str().unwrap_or_default();
        let (payload, sig) = issued.rsplit_once('.').unwrap_or(("", ""));
        let parts: Vec<&str> = payload.split('.').collect();
        let shape_ok = parts.len() == 4
            && parts[0] == "cpst2"
            && parts[2] == principal
            && parts[3].len() == 16
            && parts[3].bytes().all(|b| b.is_ascii_hexdigit());
        v.check(shape_ok, format!("issued token {payload:?} is not cpst2.<exp>.{principal}.<16 hex>"));
        v.check(
            token_mac(secret, payload) == sig,
            "the issued token's signature is not base64url-no-pad(HMAC-SHA256(secret, payload))",
        );
    }

    let now = chrono::Utc::now().timestamp();
    // Valid expiry: accepted (this checks the forging code).
    let mut ws = ws_connect(&s, None).await.expect("upgrade without credentials");
    let valid = forge_token(secret, now + 100, &principal);
    match ws_auth(&mut ws, &valid).await {
        Ok(_) => v.note("a token forged with exp = now + 100 was accepted"),
        Err(e) => {
            v.check(
                false,
                format!("a correctly signed token with exp = now + 100 for {principal} was not accepted: {e}"),
            );
        }
    }
    let _ = ws.close(None).await;

    // A year ahead: beyond token_ttl_s + 60, refused with 4001.
    let mut ws = ws_connect(&s, None).await.expect("upgrade without credentials");
    let far = forge_token(secret, now + 365 * 86_400, &principal);
    ws_send(&mut ws, &json!({ "type": "auth", "token": far })).await;
    let code = ws_close_code(&mut ws, Duration::from_secs(5)).await;
    v.check(
        code == Ok(Some(4001)),
        format!("a correctly signed token expiring in a year: expected close 4001, got {code:?}"),
    );
    v.finish();
}

// ===========================================================================
// 6. Console cookies
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_cookie_on_a_loopback_listener_is_plain_by_default() {
    let mut v = Verdict::new("the_console_cookie_on_a_loopback_listener_is_plain_by_default");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    let s = f.serve(&[]).await;
    let r = s.login("admin", ADMIN_PW, None, None).await;
    v.check(r.status == 200, format!("login: {}", r.status));
    match r.cookie("cartpulse_console") {
        Some(c) => {
            v.check(c.attr("secure").is_none(), format!("the loopback cookie is Secure by default: {}", c.raw));
        }
        None => {
            v.check(false, format!("no cartpulse_console cookie; Set-Cookie: {:?}", r.cookies));
        }
    }
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_use_the_host_prefix_and_responses_carry_hsts() {
    let mut v = Verdict::new("secure_cookies_use_the_host_prefix_and_responses_carry_hsts");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    let s = f.serve(&[("CARTPULSE_CONSOLE__SECURE_COOKIES", "true")]).await;
    let r = s.login("admin", ADMIN_PW, None, None).await;
    v.check(r.status == 200, format!("login: {}", r.status));
    let host_cookie = |name: &str, v: &mut Verdict| -> Option<SetCookie> {
        match r.cookie(&format!("__Host-{name}")) {
            Some(c) => {
                v.check(c.attr("secure").is_some(), format!("__Host-{name} is not Secure: {}", c.raw));
                v.check(c.attr("path").as_deref() == Some("/"), format!("__Host-{name} lacks Path=/: {}", c.raw));
                v.check(c.attr("domain").is_none(), format!("__Host-{name} has a Domain: {}", c.raw));
                Some(c.clone())
            }
            None => {
                v.check(false, format!("no __Host-{name} cookie; Set-Cookie: {:?}", r.cookies));
                None
            }
        }
    };
    let session = host_cookie("cartpulse_console", &mut v);
    // The device cookie (see the lockout test) follows the same rule.
    host_cookie("cartpulse_device", &mut v);
    v.check(
        r.cookie("cartpulse_console").is_none() && r.cookie("cartpulse_device").is_none(),
        format!("an unprefixed cookie is set in secure mode: {:?}", r.cookies),
    );
    let long_hsts = |h: &Option<String>| h.as_deref().and_then(hsts_max_age).is_some_and(|a| a >= 31_536_000);
    v.check(
        long_hsts(&r.hsts),
        format!("the login answer's Strict-Transport-Security is {:?}; want max-age >= 31536000", r.hsts),
    );
    if let Some(c) = session {
        let me = s.console_request(reqwest::Method::GET, "/console/me", &c.pair(), None).await;
        let status = me.status().as_u16();
        let hsts = hsts_of(me.headers());
        v.check(status == 200, format!("GET /console/me with the __Host- cookie: {status}"));
        v.check(
            long_hsts(&hsts),
            format!("GET /console/me's Strict-Transport-Security is {hsts:?}; want max-age >= 31536000"),
        );
    }
    v.finish();
}

// ===========================================================================
// 7. Client addresses behind a proxy, per-name lockout vs a known device
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_ignored_without_trusted_proxies() {
    let mut v = Verdict::new("x_forwarded_for_is_ignored_without_trusted_proxies");
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    for i in 1..=5 {
        let r = s.login(&format!("ghost-{i}"), "wrong password", Some(&format!("203.0.113.{i}")), None).await;
        v.check(r.status == 401, format!("failure {i} (XFF 203.0.113.{i}): {} , expected 401", r.status));
    }
    let r = s.login("ghost-6", "wrong password", Some("203.0.113.6"), None).await;
    v.check(
        r.status == 429,
        format!("6th attempt from the same peer with yet another X-Forwarded-For: {}, expected 429 (per-address limit of 127.0.0.1)", r.status),
    );
    v.finish();
}

const TRUSTED: (&str, &str) = ("CARTPULSE_HTTP__TRUSTED_PROXIES", "127.0.0.1/32");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_limit_applies_per_forwarded_client() {
    let mut v = Verdict::new("behind_a_trusted_proxy_the_limit_applies_per_forwarded_client");
    let f = Fixture::new();
    f.create_user("bob", "viewer", BOB_PW);
    let s = f.serve(&[TRUSTED]).await;
    for i in 1..=5 {
        let r = s.login(&format!("ghost-{i}"), "wrong password", Some("198.51.100.1"), None).await;
        v.check(r.status == 401, format!("failure {i} from 198.51.100.1: {}, expected 401", r.status));
    }
    let r = s.login("ghost-6", "wrong password", Some("198.51.100.1"), None).await;
    v.check(r.status == 429, format!("6th attempt from 198.51.100.1: {}, expected 429", r.status));
    let r = s.login("bob", BOB_PW, Some("198.51.100.2"), None).await;
    v.check(r.status == 200, format!("bob from 198.51.100.2 with the right password: {}, expected 200", r.status));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_locked_by_an_attacker_still_admits_its_known_device() {
    let mut v = Verdict::new("a_name_locked_by_an_attacker_still_admits_its_known_device");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    let s = f.serve(&[TRUSTED]).await;
    // The real admin logged in before, from 198.51.100.10: the server set a device cookie.
    let first = s.login("admin", ADMIN_PW, Some("198.51.100.10"), None).await;
    v.check(first.status == 200, format!("admin's earlier login: {}", first.status));
    let device = first.cookie("cartpulse_device").map(SetCookie::pair);
    v.check(device.is_some(), format!("the successful login set no cartpulse_device cookie: {:?}", first.cookies));
    // An attacker exceeds the name's limit from five addresses.
    for i in 1..=5 {
        let r = s.login("admin", "attacker guess", Some(&format!("198.51.100.{}", 20 + i)), None).await;
        v.check(r.status == 401, format!("attacker failure {i}: {}, expected 401", r.status));
    }
    let r = s.login("admin", "attacker guess", Some("198.51.100.26"), None).await;
    v.check(
        r.status == 429,
        format!("attacker's 6th guess for admin: {}, expected 429 (the name is locked)", r.status),
    );
    // (ii) Without the device cookie, even the right password waits.
    let r = s.login("admin", ADMIN_PW, Some("198.51.100.30"), None).await;
    v.check(
        r.status == 429 && r.retry_after.is_some_and(|s| s >= 1),
        format!(
            "right password without the device cookie: {} with Retry-After {:?}, expected 429 and >= 1",
            r.status, r.retry_after
        ),
    );
    // (i) With it, the right password gets in.
    if let Some(cookie) = &device {
        let r = s.login("admin", ADMIN_PW, Some("198.51.100.10"), Some(cookie)).await;
        v.check(r.status == 200, format!("right password with the device cookie: {}, expected 200", r.status));
    }
    v.finish();
}

// ===========================================================================
// 8. Revocation closes WebSockets
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_closes_its_websocket_with_4001() {
    let mut v = Verdict::new("revoking_a_key_closes_its_websocket_with_4001");
    let f = Fixture::new();
    let key = f.create_key("read");
    let s = f.serve(&[("CARTPULSE_STREAM__RECHECK_MS", "1000")]).await;
    let mut ws = ws_connect(&s, Some(&key.key)).await.expect("WebSocket with a read key");
    ws_send(&mut ws, &json!({ "type": "subscribe", "topics": ["kpis"] })).await;
    ws_until(&mut ws, Duration::from_secs(5), |v| is_control(v, "subscribed")).await.expect("subscribed");
    // Still open a recheck period later.
    let early = ws_close_code(&mut ws, Duration::from_millis(2500)).await;
    v.check(early.is_err(), format!("the WebSocket of a valid key closed before the revocation: {early:?}"));
    f.revoke_key(&key.id).await;
    let started = Instant::now();
    let code = ws_close_code(&mut ws, Duration::from_secs(20)).await;
    v.note(format!("after the revocation: {code:?} in {:?}", started.elapsed()));
    v.check(code == Ok(Some(4001)), format!("after `keys revoke`: expected close 4001 within 20 s, got {code:?}"));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_logout_closes_the_websocket_opened_with_its_stream_token() {
    let mut v = Verdict::new("a_console_logout_closes_the_websocket_opened_with_its_stream_token");
    let f = Fixture::new();
    f.create_user("admin", "admin", ADMIN_PW);
    // Item 8's setting, as for the key revocation (the default re-check is 30 s).
    let s = f.serve(&[("CARTPULSE_STREAM__RECHECK_MS", "1000")]).await;
    let login = s.login("admin", ADMIN_PW, None, None).await;
    assert_eq!(login.status, 200, "console login");
    let cookie = login.cookie("cartpulse_console").expect("session cookie").pair();
    let csrf = login.csrf();
    let r = s.console_request(reqwest::Method::POST, "/v1/stream/token", &cookie, Some(&csrf)).await;
    assert_eq!(r.status().as_u16(), 200, "POST /v1/stream/token with the console cookie");
    let token = r.json::<Value>().await.expect("token JSON")["token"].as_str().expect("token").to_owned();

    let mut ws = ws_connect(&s, None).await.expect("upgrade without credentials");
    ws_auth(&mut ws, &token).await.expect("authenticated with the console's stream token");
    ws_send(&mut ws, &json!({ "type": "subscribe", "topics": ["kpis"] })).await;
    ws_until(&mut ws, Duration::from_secs(5), |v| is_control(v, "subscribed")).await.expect("subscribed");

    let r = s.console_request(reqwest::Method::POST, "/console/logout", &cookie, Some(&csrf)).await;
    let status = r.status().as_u16();
    v.check(status == 204 || status == 200, format!("logout: {status}"));
    let code = ws_close_code(&mut ws, Duration::from_secs(5)).await;
    v.check(code == Ok(Some(4001)), format!("after the logout: expected close 4001 within 5 s, got {code:?}"));
    v.finish();
}

// ===========================================================================
// 9. Key cache under a spray of made-up keys
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_of_20000_random_well_formed_keys_is_refused_without_growing_memory() {
    let mut v = Verdict::new("a_spray_of_20000_random_well_formed_keys_is_refused_without_growing_memory");
    let f = Fixture::new();
    let s = f.serve(&[]).await;
    let before = s.normal_latency().await;
    let srv = &s;
    let read_get = move || async move {
        let started = Instant::now();
        let r = srv.client.get(srv.url("/v1/customers/x")).bearer_auth(&srv.read).send().await.expect("GET");
        (r.status().as_u16(), started.elapsed())
    };
    let mut read_before = Vec::new();
    for _ in 0..5 {
        read_before.push(read_get().await);
    }
    let read_before_latency = {
        let mut t: Vec<Duration> = read_before.iter().map(|r| r.1).collect();
        t.sort();
        t[2]
    };
    let read_status = read_before[0].0;

    let watch = s.watch_rss();
    let started = Instant::now();
    let client = s.client.clone();
    let url = s.url("/v1/customers/x");
    let statuses: Vec<u16> = futures::stream::iter(0..20_000)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            let key =
                format!("cp_{}_{}", hex::encode(rand::random::<[u8; 6]>()), hex::encode(rand::random::<[u8; 16]>()));
            async move {
                match client.get(url).bearer_auth(key).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let rss = watch.finish();
    let counts = tally(statuses.iter().copied());
    v.note(format!("20000 random keys in {:?}: {counts:?}", started.elapsed()));
    v.check(
        counts.len() == 1 && counts.contains_key(&401),
        format!("every made-up key must get 401; got {counts:?} (0: no answer)"),
    );
    check_rss(&mut v, &rss, "20000 random keys");

    let mut read_after = Vec::new();
    for _ in 0..5 {
        read_after.push(read_get().await);
    }
    let mut t: Vec<Duration> = read_after.iter().map(|r| r.1).collect();
    t.sort();
    let bound = (read_before_latency * 5).max(Duration::from_millis(250));
    v.check(
        read_after.iter().all(|r| r.0 == read_status) && read_status != 401,
        format!(
            "the valid read key answered {read_status} before and {:?} after",
            read_after.iter().map(|r| r.0).collect::<Vec<_>>()
        ),
    );
    v.check(
        t[2] <= bound,
        format!("the valid read key took {:?} after the spray (before {read_before_latency:?}, bound {bound:?})", t[2]),
    );
    s.check_still_serving(&mut v, before).await;
    v.finish();
}

// ===========================================================================
// 10. Session ownership
// ===========================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_customer_cannot_take_over_another_customers_session_id() {
    let mut v = Verdict::new("a_second_customer_cannot_take_over_another_customers_session_id");
    let f = Fixture::new();
    // Snapshots soon after each change, so the session rows are written.
    let fast_snapshots = [("CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS", "100")];
    let s = f.serve(&fast_snapshots).await;
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(30);
    let at = |s: i64| (t0 + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let (status, body) = s.post_events(&json!([page_view("own-a-1", "cust-a", "s-shared", &at(0), "product")])).await;
    assert_eq!(status, 200, "customer A's page view: {body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, sess) = s.get_read("/v1/sessions/s-shared").await;
        if st == 200 && sess["customer_id"] == "cust-a" {
            break;
        }
        assert!(Instant::now() < deadline, "A's session never showed up: {st} {sess}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (b_status, b_body) =
        s.post_events(&json!([page_view("own-b-1", "cust-b", "s-shared", &at(1), "product")])).await;
    v.note(format!("customer B's page view in s-shared: {b_status} {b_body}"));
    // B's event is processed when B shows up, or when it was refused at ingest.
    let refused = b_status != 200 || b_body["accepted"] == 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    if !refused {
        loop {
            let (st, _) = s.get_read("/v1/customers/cust-b").await;
            let applied = metric_sum(&s.metrics_text().await, "cartpulse_events_applied_total").unwrap_or(0.0);
            if st == 200 || applied >= 2.0 || Instant::now() > deadline {
                v.note(format!("B processed: customer B {st}, events applied {applied}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Let both customers' snapshots (the session rows) be written.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (st, sess) = s.get_read("/v1/sessions/s-shared").await;
    v.check(
        st == 200 && sess["customer_id"] == "cust-a",
        format!(
            "GET /v1/sessions/s-shared after B's event: {st}, customer_id {} (expected cust-a)",
            sess["customer_id"]
        ),
    );
    // After a restart the answer comes from the stored session row.
    s.stop().await;
    let s = f.serve(&fast_snapshots).await;
    let (st, sess) = s.get_read("/v1/sessions/s-shared").await;
    v.check(
        st == 200 && sess["customer_id"] == "cust-a",
        format!(
            "after a restart, GET /v1/sessions/s-shared: {st}, customer_id {} (expected cust-a; the stored row was \
             taken over)",
            sess["customer_id"]
        ),
    );
    v.finish();
}
