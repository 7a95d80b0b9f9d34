//! The admin web console: console users (`cartpulse users`), login
//! sessions carried by an HttpOnly cookie with a per-session CSRF token, a
//! login rate limiter, and the static single-page app in `static/` served at
//! `/` with a strict Content-Security-Policy.
//!
//! The console talks to the same `/v1` API as everyone else: the auth
//! extractors accept its cookie (see [`Console::authorize`]), so what a
//! viewer may not do is refused by the server, not just hidden by the page.

pub mod assets;
pub mod cli;
pub mod device;
pub mod handlers;
pub mod ratelimit;
pub mod session;
pub mod telemetry;
pub mod users;

use crate::keys::Scope;
use serde::Deserialize;
use std::sync::Arc;

pub use users::Role;

/// `console.*` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsoleSettings {
    /// Mark the cookies `Secure`, name them `__Host-…` and send HSTS. Unset:
    /// on unless `listen` is a loopback address (where plain HTTP is normal).
    pub secure_cookies: Option<bool>,
    /// How long a login lasts, in seconds.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub session_ttl_s: std::time::Duration,
    /// Failed logins after which a name backs off (exponentially, up to
    /// `login_max_backoff_s`) for browsers that never logged in as it, and
    /// after which a browser that did waits out `login_window_s`.
    pub login_max_failures_per_name: usize,
    /// Failed logins per client address within `login_window_s` after which that address gets 429.
    pub login_max_failures_per_ip: usize,
    /// The rate limiter's window, in seconds.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub login_window_s: std::time::Duration,
    /// Longest back-off of a name, in seconds.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub login_max_backoff_s: std::time::Duration,
    /// Password checks (argon2, ~19 MiB each) run at once.
    pub login_concurrency: usize,
    /// Logins waiting for a password check beyond which logins answer 503.
    pub login_max_waiting: usize,
    /// Lifetime of the device cookie a successful login sets, in seconds.
    #[serde(deserialize_with = "crate::config::units::secs")]
    pub device_ttl_s: std::time::Duration,
    /// Directory holding the built console (`index.html`, `assets/`).
    pub static_dir: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: None,
            session_ttl_s: std::time::Duration::from_secs(12 * 3600),
            login_max_failures_per_name: 5,
            login_max_failures_per_ip: 5,
            login_window_s: std::time::Duration::from_secs(60),
            login_max_backoff_s: std::time::Duration::from_secs(3600),
            login_concurrency: 2,
            login_max_waiting: 32,
            device_ttl_s: std::time::Duration::from_secs(30 * 86_400),
            static_dir: "static".into(),
        }
    }
}

/// What the console's handlers reach; registered as app data beside the
/// API's state, so the console does not depend on the API module.
#[derive(Clone)]
pub struct ConsoleState {
    pub db: sea_orm::DatabaseConnection,
    pub console: Console,
    /// Trusted proxies (the login limiter counts per client address).
    pub http: crate::serving::web::client::HttpSettings,
    /// The Models page's report images.
    pub models: crate::models::ModelRegistry,
}

/// The console's shared state: settings, the login rate limiter, the
/// password-check permits and the device-cookie signer.
#[derive(Clone)]
pub struct Console {
    pub settings: ConsoleSettings,
    pub limiter: Arc<ratelimit::LoginLimiter>,
    /// Whether cookies are `Secure` (and `__Host-` named, with HSTS).
    secure: bool,
    pub password_checks: Arc<PasswordChecks>,
    pub devices: Arc<device::DeviceSigner>,
    pub metrics: telemetry::ConsoleMetrics,
}

/// Bounds the memory and CPU of password checks. argon2 needs ~19 MiB and
/// tens of ms per check, so checks run on `threads` dedicated threads (each
/// reuses its own allocation, so memory stays at about `threads` × 19 MiB
/// however many logins arrive) and at most `max_waiting` wait; anyone beyond
/// gets 503 at once.
pub struct PasswordChecks {
    jobs: std::sync::mpsc::SyncSender<PasswordJob>,
}

struct PasswordJob {
    password: secrecy::SecretString,
    /// `None`: an unknown user, checked against the dummy hash (made on these
    /// threads too, so its memory is theirs).
    hash: Option<String>,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// Why a password could not be checked.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckRefused {
    /// Too many checks waiting.
    Busy,
    /// The checking threads are gone.
    Stopped,
}

impl PasswordChecks {
    pub fn new(threads: usize, max_waiting: usize) -> PasswordChecks {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<PasswordJob>(max_waiting);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("password-check-{i}")).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                use secrecy::ExposeSecret;
                let hash = job.hash.as_deref().unwrap_or_else(|| users::dummy_hash());
                let ok = users::verify_password(job.password.expose_secret(), hash);
                let _ = job.reply.send(ok);
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-check thread");
            }
        }
        PasswordChecks { jobs }
    }

    /// Whether `password` matches `hash` (`None`: an unknown user, never a
    /// match but as slow as one), checked on one of the threads.
    pub async fn verify(&self, password: secrecy::SecretString, hash: Option<String>) -> Result<bool, CheckRefused> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.try_send(PasswordJob { password, hash, reply }).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => CheckRefused::Busy,
            std::sync::mpsc::TrySendError::Disconnected(_) => CheckRefused::Stopped,
        })?;
        answer.await.map_err(|_| CheckRefused::Stopped)
    }
}

impl Console {
    /// `redis`: the failed-login counts are shared by every replica through
    /// it. `listen` decides whether cookies are secure when the settings do
    /// not say; `device_key` signs device cookies.
    pub fn new(
        settings: &ConsoleSettings,
        redis: Option<crate::redis_link::RedisLink>,
        listen: &str,
        device_key: secrecy::SecretSlice<u8>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Console> {
        let window = settings.login_window_s.max(std::time::Duration::from_secs(1));
        Ok(Console {
            limiter: Arc::new(
                ratelimit::LoginLimiter::new(
                    settings.login_max_failures_per_name,
                    settings.login_max_failures_per_ip,
                    window,
                    settings.login_max_backoff_s,
                )
                .shared(redis),
            ),
            secure: settings.secure_cookies.unwrap_or_else(|| !is_loopback_listen(listen)),
            password_checks: Arc::new(PasswordChecks::new(settings.login_concurrency, settings.login_max_waiting)),
            devices: Arc::new(device::DeviceSigner::new(device_key, settings.device_ttl_s)),
            metrics: telemetry::ConsoleMetrics::register(registry)?,
            settings: settings.clone(),
        })
    }

    /// True when cookies are `Secure`, `__Host-` named, and HSTS is sent.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The session cookie's name: `__Host-` makes browsers refuse it unless
    /// it is Secure, host-only and for `/`, so no subdomain can plant one.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            session::SECURE_COOKIE_NAME
        } else {
            session::COOKIE_NAME
        }
    }

    /// The device cookie's name.
    pub fn device_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-cartpulse_device"
        } else {
            "cartpulse_device"
        }
    }
}

/// `127.0.0.1:8080`, `[::1]:80`, `localhost:8080`.
fn is_loopback_listen(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What a console role may do through the `/v1` API: a viewer reads, an
/// admin may do what an admin key may.
pub fn role_scope(role: Role) -> Scope {
    match role {
        Role::Admin => Scope::Admin,
        Role::Viewer => Scope::Read,
    }
}

/// Console routes (`/console/*`) and the static app at `/`. Registered
/// before the API's default service so unknown paths still get JSON 404s.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    cfg.route("/console/login", web::post().to(handlers::login))
        .route("/console/logout", web::post().to(handlers::logout))
        .route("/console/me", web::get().to(handlers::me))
        .route("/console/api/models", web::get().to(handlers::models))
        .route("/", web::get().to(assets::index))
        .route("/index.html", web::get().to(assets::index))
        .route("/assets/{file}", web::get().to(assets::asset))
        .route("/favicon.svg", web::get().to(assets::favicon));
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_listen_addresses() {
        for l in ["127.0.0.1:8080", "[::1]:80", "localhost:1", "127.1.2.3:0"] {
            assert!(super::is_loopback_listen(l), "{l}");
        }
        for l in ["0.0.0.0:8080", "10.0.0.5:80", "[::]:80", "example.com:443"] {
            assert!(!super::is_loopback_listen(l), "{l}");
        }
    }

    #[tokio::test]
    async fn password_checks_refuse_beyond_the_waiting_bound() {
        use secrecy::SecretString;
        let hash = super::users::hash_password(&SecretString::from("a long enough password")).unwrap();
        let c = std::sync::Arc::new(super::PasswordChecks::new(1, 2));
        // (spawned tasks start in order on this current-thread runtime)
        // One thread and two places to wait: of ten at once, two or three
        // (if the thread took one before the queue filled) are checked.
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let (c, hash) = (c.clone(), hash.clone());
                let pw = if i == 0 { "a long enough password" } else { "wrong password here" };
                tokio::spawn(async move { c.verify(SecretString::from(pw), Some(hash)).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let checked = answers.iter().filter(|a| a.is_ok()).count();
        assert!((2..=3).contains(&checked), "{answers:?}");
        assert!(answers.iter().all(|a| a.is_ok() || *a == Err(super::CheckRefused::Busy)), "{answers:?}");
        assert_eq!(answers[0], Ok(true), "the first is always taken, and right");
    }
}
