//! The admin web console (issue 6): console users (`cartpulse users`), login
//! sessions carried by an HttpOnly cookie with a per-session CSRF token, a
//! login rate limiter, and the static single-page app in `static/` served at
//! `/` with a strict Content-Security-Policy.
//!
//! The console talks to the same `/v1` API as everyone else: the auth
//! extractors accept its cookie (see [`Console::authorize`]), so what a
//! viewer may not do is refused by the server, not just hidden by the page.

pub mod assets;
pub mod handlers;
pub mod ratelimit;
pub mod session;
pub mod users;

use crate::keys::Scope;
use serde::Deserialize;
use std::sync::Arc;

pub use session::COOKIE_NAME;
pub use users::Role;

/// `console.*` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsoleSettings {
    /// Mark the session cookie `Secure` (set it when the console is served over TLS).
    pub secure_cookies: bool,
    /// How long a login lasts, in seconds.
    pub session_ttl_s: i64,
    /// Failed logins per name within `login_window_s` after which logins for that name answer 429.
    pub login_max_failures_per_name: usize,
    /// Failed logins per client address within `login_window_s` after which that address gets 429.
    pub login_max_failures_per_ip: usize,
    /// The rate limiter's window, in seconds.
    pub login_window_s: u64,
    /// Directory holding the built console (`index.html`, `assets/`).
    pub static_dir: String,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: false,
            session_ttl_s: 12 * 3600,
            login_max_failures_per_name: 5,
            login_max_failures_per_ip: 5,
            login_window_s: 60,
            static_dir: "static".into(),
        }
    }
}

/// The console's shared state: settings and the login rate limiter.
#[derive(Clone)]
pub struct Console {
    pub settings: ConsoleSettings,
    pub limiter: Arc<ratelimit::LoginLimiter>,
}

impl Console {
    /// `redis`: the failed-login counts are shared by every replica through it.
    pub fn new(settings: &ConsoleSettings, redis: Option<crate::redis_link::RedisLink>) -> Console {
        Console {
            limiter: Arc::new(
                ratelimit::LoginLimiter::new(
                    settings.login_max_failures_per_name,
                    settings.login_max_failures_per_ip,
                    std::time::Duration::from_secs(settings.login_window_s.max(1)),
                )
                .shared(redis),
            ),
            settings: settings.clone(),
        }
    }
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
