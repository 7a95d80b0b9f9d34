//! The admin web console (issue 6): console users (`cartpulse users`), login
//! sessions carried by an HttpOnly cookie with a per-session CSRF token, a
//! login rate limiter, and the static single-page app in `static/` served at
//! `/` with a strict Content-Security-Policy.
//!
//! The console talks to the same `/v1` API as everyone else: the auth
//! extractors accept its cookie (see [`Console::authorize`]), so what a
//! viewer may not do is refused by the server, not just hidden by the page.

pub mod assets;
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
    pub session_ttl_s: i64,
    /// Failed logins after which a name backs off (exponentially, up to
    /// `login_max_backoff_s`) for browsers that never logged in as it, and
    /// after which a browser that did waits out `login_window_s`.
    pub login_max_failures_per_name: usize,
    /// Failed logins per client address within `login_window_s` after which that address gets 429.
    pub login_max_failures_per_ip: usize,
    /// The rate limiter's window, in seconds.
    pub login_window_s: u64,
    /// Longest back-off of a name, in seconds.
    pub login_max_backoff_s: u64,
    /// Password checks (argon2, ~19 MiB each) run at once.
    pub login_concurrency: usize,
    /// Logins waiting for a password check beyond which logins answer 503.
    pub login_max_waiting: usize,
    /// Lifetime of the device cookie a successful login sets, in seconds.
    pub device_ttl_s: i64,
    /// Directory holding the built console (`index.html`, `assets/`).
    pub static_dir: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: None,
            session_ttl_s: 12 * 3600,
            login_max_failures_per_name: 5,
            login_max_failures_per_ip: 5,
            login_window_s: 60,
            login_max_backoff_s: 3600,
            login_concurrency: 2,
            login_max_waiting: 32,
            device_ttl_s: 30 * 86_400,
            static_dir: "static".into(),
        }
    }
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

/// Bounds the memory and CPU of password checks: argon2 needs ~19 MiB and
/// tens of ms per check, so at most `permits` run and at most `max_waiting`
/// wait; anyone beyond gets 503 at once.
pub struct PasswordChecks {
    permits: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

impl PasswordChecks {
    pub fn new(permits: usize, max_waiting: usize) -> PasswordChecks {
        PasswordChecks {
            permits: tokio::sync::Semaphore::new(permits.max(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A permit to run one check, or `None` when too many already wait.
    pub async fn acquire(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.permits.try_acquire() {
            return Some(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let p = self.permits.acquire().await.ok();
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        p
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
        let window = std::time::Duration::from_secs(settings.login_window_s.max(1));
        Ok(Console {
            limiter: Arc::new(
                ratelimit::LoginLimiter::new(
                    settings.login_max_failures_per_name,
                    settings.login_max_failures_per_ip,
                    window,
                    std::time::Duration::from_secs(settings.login_max_backoff_s),
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
        let c2 = std::sync::Arc::new(super::PasswordChecks::new(1, 1));
        let p = c2.acquire().await.expect("the one permit");
        let waiter = {
            let c2 = c2.clone();
            tokio::spawn(async move { c2.acquire().await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(c2.acquire().await.is_none(), "a second waiter is refused");
        drop(p);
        assert!(waiter.await.unwrap(), "the waiter gets the permit");
    }
}
