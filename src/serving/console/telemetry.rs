//! The console's login metrics, recorded as typed events: [`ConsoleMetrics::record`]
//! is the one place that logs them and bumps the counters. Passwords never
//! appear in an event; user names do (they are not secrets, and an operator
//! needs them to see who is being guessed).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Something that happened at the console's login.
#[derive(Debug)]
pub enum ConsoleEvent<'a> {
    /// A login succeeded.
    LoggedIn { user: &'a str, role: &'a str },
    /// A wrong name or password.
    Refused { user: &'a str },
    /// Refused before the password was checked: too many failures for this
    /// name, address or device.
    RateLimited { user: &'a str, retry_after_s: u64 },
    /// Refused before the password was checked: too many logins waiting for
    /// a password check.
    Busy,
    /// One password verification ran (argon2).
    PasswordChecked,
}

/// Prometheus metrics of the console login.
#[derive(Clone)]
pub struct ConsoleMetrics {
    logins: IntCounterVec,
    checks: IntCounter,
}

impl ConsoleMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<ConsoleMetrics> {
        let m = ConsoleMetrics {
            logins: IntCounterVec::new(
                Opts::new(
                    "cartpulse_console_logins_total",
                    "Console login attempts, by outcome (ok, wrong, rate_limited, busy)",
                ),
                &["outcome"],
            )?,
            checks: IntCounter::new(
                "cartpulse_console_password_checks_total",
                "Password verifications run (argon2), at most console.login_concurrency at once",
            )?,
        };
        registry.register(Box::new(m.logins.clone()))?;
        registry.register(Box::new(m.checks.clone()))?;
        Ok(m)
    }

    /// Metrics that count but are registered nowhere (tests of the parts).
    pub fn unregistered() -> ConsoleMetrics {
        ConsoleMetrics::register(&Registry::new()).unwrap_or_else(|_| unreachable!("a fresh registry has no names"))
    }

    pub fn record(&self, ev: ConsoleEvent<'_>) {
        match ev {
            ConsoleEvent::LoggedIn { user, role } => {
                tracing::info!(user, role, "console login");
                self.logins.with_label_values(&["ok"]).inc();
            }
            ConsoleEvent::Refused { user } => {
                tracing::info!(user, "console login refused");
                self.logins.with_label_values(&["wrong"]).inc();
            }
            ConsoleEvent::RateLimited { user, retry_after_s } => {
                tracing::warn!(user, retry_after_s, "console login rate-limited");
                self.logins.with_label_values(&["rate_limited"]).inc();
            }
            ConsoleEvent::Busy => {
                tracing::warn!("console login refused: too many password checks waiting");
                self.logins.with_label_values(&["busy"]).inc();
            }
            ConsoleEvent::PasswordChecked => self.checks.inc(),
        }
    }
}
