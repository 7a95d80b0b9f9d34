//! Login rate limiting. Every attempt is recorded as a failure *before* the
//! password is checked (and taken back if it succeeds), so parallel guesses
//! cannot all slip through between a check and the count.
//!
//! What counts, per attempt:
//! - the client address (`i:`): at most `per_ip` failures in a sliding window;
//! - a browser that logged in as this user before (a signed device cookie,
//!   `d:`): at most `per_name` failures in the window, and it is *not* held
//!   to the name's back-off, so an attacker guessing `admin` from many
//!   addresses does not lock the real admin out;
//! - otherwise the user name (`n:`): after `per_name` failures the name backs
//!   off exponentially: locked for one window after the last failure, two
//!   after the next, and so on up to `max_backoff`.
//!
//! With Redis (many replicas) the same records live in Redis, one sorted set
//! of attempt times per key (names, addresses and devices hashed), written
//! and read back in one transaction. They are kept in memory too, and if
//! Redis does not answer the process falls back to its own records, which
//! multiplies the budget by the replica count but still bounds it.

use crate::redis_link::LinkError;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Most tracked keys in memory; beyond it the stalest go.
const MAX_KEYS: usize = 50_000;

/// How one key limits.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// At most `limit` failures in the last `window_ms`.
    Window { limit: usize, window_ms: i64 },
    /// After `limit` failures, locked `window_ms * 2^(failures - limit)`
    /// after the last one, at most `max_ms`; failures are remembered `max_ms`.
    Backoff { limit: usize, window_ms: i64, max_ms: i64 },
}

impl Rule {
    fn horizon_ms(self) -> i64 {
        match self {
            Rule::Window { window_ms, .. } => window_ms,
            Rule::Backoff { window_ms, max_ms, .. } => max_ms.max(window_ms),
        }
    }

    /// Milliseconds until an attempt is allowed, given earlier attempt times
    /// (ascending, the attempt itself excluded); `None` when allowed now.
    fn wait_ms(self, times: &[i64], now: i64) -> Option<i64> {
        let recent: Vec<i64> = times.iter().copied().filter(|t| *t > now - self.horizon_ms()).collect();
        let wait = match self {
            Rule::Window { limit, window_ms } => {
                let n = recent.len();
                (n >= limit).then(|| window_ms - (now - recent[n - limit]))
            }
            Rule::Backoff { limit, window_ms, max_ms } => {
                let n = recent.len();
                (n >= limit).then(|| {
                    let doublings = (n - limit).min(30) as u32;
                    let lock = window_ms.saturating_mul(1i64 << doublings).min(max_ms);
                    recent[n - 1] + lock - now
                })
            }
        };
        wait.filter(|w| *w > 0)
    }
}

/// An attempt recorded as a failure until [`LoginLimiter::succeeded`] or
/// [`LoginLimiter::cancel`] takes it back.
#[must_use = "an attempt stays a failure unless it is taken back"]
pub struct Attempt {
    keys: Vec<(String, Rule)>,
    member: String,
}

pub struct LoginLimiter {
    per_name: usize,
    per_ip: usize,
    window: Duration,
    max_backoff: Duration,
    attempts: Mutex<HashMap<String, Vec<(i64, String)>>>,
    redis: Option<crate::redis_link::RedisLink>,
}

impl LoginLimiter {
    pub fn new(per_name: usize, per_ip: usize, window: Duration, max_backoff: Duration) -> LoginLimiter {
        LoginLimiter {
            per_name: per_name.max(1),
            per_ip: per_ip.max(1),
            window,
            max_backoff: max_backoff.max(window),
            attempts: Mutex::new(HashMap::new()),
            redis: None,
        }
    }

    /// Counts in Redis too, shared by every replica.
    pub fn shared(mut self, redis: Option<crate::redis_link::RedisLink>) -> LoginLimiter {
        self.redis = redis;
        self
    }

    fn keys(&self, name: &str, ip: Option<IpAddr>, device: Option<&str>) -> Vec<(String, Rule)> {
        let window_ms = self.window.as_millis() as i64;
        let mut keys = Vec::with_capacity(2);
        match device {
            Some(d) => keys.push((format!("d:{d}"), Rule::Window { limit: self.per_name, window_ms })),
            None => keys.push((
                format!("n:{name}"),
                Rule::Backoff { limit: self.per_name, window_ms, max_ms: self.max_backoff.as_millis() as i64 },
            )),
        }
        if let Some(ip) = ip {
            keys.push((format!("i:{ip}"), Rule::Window { limit: self.per_ip, window_ms }));
        }
        keys
    }

    /// Records an attempt for `name` from `ip` (with the device id of a valid
    /// device cookie for this name, if any), or `Err(seconds to wait)`
    /// without recording anything.
    pub async fn begin(&self, name: &str, ip: Option<IpAddr>, device: Option<&str>) -> Result<Attempt, u64> {
        let now = chrono::Utc::now().timestamp_millis();
        let attempt = Attempt {
            keys: self.keys(name, ip, device),
            member: format!("{now}-{}", hex::encode(rand::random::<[u8; 6]>())),
        };
        let local = self.begin_local(&attempt, now);
        let shared = match (&self.redis, local) {
            (Some(link), None) => self.begin_redis(link, &attempt, now).await,
            _ => None,
        };
        match local.or(shared) {
            None => Ok(attempt),
            Some(wait_ms) => {
                if local.is_none() {
                    self.forget_local(&attempt);
                }
                Err(((wait_ms + 999) / 1000).max(1) as u64)
            }
        }
    }

    /// The attempt succeeded: it is no failure, and the name's back-off (or
    /// the device's count) starts over.
    pub async fn succeeded(&self, attempt: Attempt) {
        self.forget_local(&attempt);
        if let Ok(mut map) = self.attempts.lock() {
            for (k, _) in &attempt.keys {
                if !k.starts_with("i:") {
                    map.remove(k);
                }
            }
        }
        if let Some(link) = &self.redis {
            let mut pipe = redis::pipe();
            for (k, _) in &attempt.keys {
                let key = Self::redis_key(link, k);
                if k.starts_with("i:") {
                    pipe.cmd("ZREM").arg(&key).arg(&attempt.member).ignore();
                } else {
                    pipe.cmd("DEL").arg(&key).ignore();
                }
            }
            Self::run(link, pipe).await;
        }
    }

    /// The attempt never reached a password check (busy, error): not a failure.
    pub async fn cancel(&self, attempt: Attempt) {
        self.forget_local(&attempt);
        if let Some(link) = &self.redis {
            Self::forget_redis(link, &attempt).await;
        }
    }

    /// Checks and records in memory, atomically; `Some(wait)` when refused.
    fn begin_local(&self, attempt: &Attempt, now: i64) -> Option<i64> {
        let Ok(mut map) = self.attempts.lock() else { return None };
        if map.len() >= MAX_KEYS {
            let horizon = self.max_backoff.as_millis() as i64;
            map.retain(|_, v| v.last().is_some_and(|(t, _)| *t > now - horizon));
            if map.len() >= MAX_KEYS {
                let mut by_age: Vec<(i64, String)> =
                    map.iter().filter_map(|(k, v)| v.last().map(|(t, _)| (*t, k.clone()))).collect();
                by_age.sort();
                for (_, k) in by_age.into_iter().take(MAX_KEYS / 2) {
                    map.remove(&k);
                }
            }
        }
        let mut wait = None::<i64>;
        for (key, rule) in &attempt.keys {
            if let Some(v) = map.get_mut(key) {
                v.retain(|(t, _)| *t > now - rule.horizon_ms());
                let times: Vec<i64> = v.iter().map(|(t, _)| *t).collect();
                if let Some(w) = rule.wait_ms(&times, now) {
                    wait = Some(wait.map_or(w, |x| x.max(w)));
                }
            }
        }
        if wait.is_none() {
            for (key, _) in &attempt.keys {
                map.entry(key.clone()).or_default().push((now, attempt.member.clone()));
            }
        }
        wait
    }

    fn forget_local(&self, attempt: &Attempt) {
        if let Ok(mut map) = self.attempts.lock() {
            for (k, _) in &attempt.keys {
                if let Some(v) = map.get_mut(k) {
                    v.retain(|(_, m)| *m != attempt.member);
                }
            }
        }
    }

    /// Every limiter key shares the hash tag `{login}`, so one transaction
    /// covers an attempt's keys on a Redis Cluster too (login traffic is
    /// light: one slot carries it).
    fn redis_key(link: &crate::redis_link::RedisLink, key: &str) -> String {
        use sha2::Digest;
        link.key(&format!("{{login}}:{}", hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])))
    }

    /// Adds the attempt and reads every key back in one transaction, so each
    /// attempt sees exactly those recorded before it; `Some(wait)` when
    /// refused (the attempt is then removed again). `None` also when Redis
    /// does not answer: the memory records decided alone.
    async fn begin_redis(&self, link: &crate::redis_link::RedisLink, attempt: &Attempt, now: i64) -> Option<i64> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, rule) in &attempt.keys {
            let key = Self::redis_key(link, k);
            pipe.cmd("ZREMRANGEBYSCORE").arg(&key).arg("-inf").arg(now - rule.horizon_ms()).ignore();
            pipe.cmd("ZADD").arg(&key).arg(now).arg(&attempt.member).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(rule.horizon_ms() + 1000).ignore();
            pipe.cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES");
        }
        let replies: Result<Vec<Vec<(String, f64)>>, LinkError> = async {
            let mut c = link.conn().await?;
            Ok(pipe.query_async(&mut c).await?)
        }
        .await;
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "login limiter: Redis unavailable; counting in this process only");
                return None;
            }
        };
        let mut wait = None::<i64>;
        for ((_, rule), entries) in attempt.keys.iter().zip(replies) {
            // Attempts recorded before this one (same millisecond: by member).
            let mut times: Vec<i64> = entries
                .iter()
                .filter(|(m, s)| {
                    *m != attempt.member && ((*s as i64) < now || (*s as i64 == now && *m < attempt.member))
                })
                .map(|(_, s)| *s as i64)
                .collect();
            times.sort_unstable();
            if let Some(w) = rule.wait_ms(&times, now) {
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        if wait.is_some() {
            Self::forget_redis(link, attempt).await;
        }
        wait
    }

    async fn forget_redis(link: &crate::redis_link::RedisLink, attempt: &Attempt) {
        let mut pipe = redis::pipe();
        for (k, _) in &attempt.keys {
            pipe.cmd("ZREM").arg(Self::redis_key(link, k)).arg(&attempt.member).ignore();
        }
        Self::run(link, pipe).await;
    }

    async fn run(link: &crate::redis_link::RedisLink, pipe: redis::Pipeline) {
        let done: Result<(), LinkError> = async {
            let mut c = link.conn().await?;
            Ok(pipe.query_async::<()>(&mut c).await?)
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "login limiter: Redis unavailable; this process's records still count");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_name: usize, per_ip: usize, window_ms: u64) -> LoginLimiter {
        LoginLimiter::new(per_name, per_ip, Duration::from_millis(window_ms), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn limits_per_name_and_per_address() {
        let l = limiter(3, 5, 60_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            let _failed = l.begin("alice", Some(a), None).await.expect("under the limit");
        }
        // The name is locked from any address …
        assert!(l.begin("alice", Some(b), None).await.is_err());
        // … other names from the first address still have 2 of its 5.
        let _ = l.begin("bob", Some(a), None).await.unwrap();
        let _ = l.begin("carol", Some(a), None).await.unwrap();
        assert!(l.begin("dave", Some(a), None).await.is_err(), "the address reached 5 failures");
        assert!(l.begin("dave", Some(b), None).await.is_ok());
    }

    #[tokio::test]
    async fn parallel_attempts_cannot_pass_the_limit() {
        let l = std::sync::Arc::new(limiter(5, 1000, 60_000));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.begin("admin", None, None).await.is_ok() })
            })
            .collect();
        let mut passed = 0;
        for t in tasks {
            passed += t.await.unwrap() as usize;
        }
        assert_eq!(passed, 5);
    }

    #[tokio::test]
    async fn a_device_that_logged_in_before_is_not_held_to_the_names_lock() {
        let l = limiter(2, 100, 60_000);
        for _ in 0..2 {
            let _ = l.begin("admin", None, None).await.unwrap();
        }
        assert!(l.begin("admin", None, None).await.is_err(), "the name is locked for unknown clients");
        let ok = l.begin("admin", None, Some("dev1")).await.expect("the known device may try");
        l.succeeded(ok).await;
        // A device has its own budget.
        for _ in 0..2 {
            let _ = l.begin("admin", None, Some("dev2")).await.unwrap();
        }
        assert!(l.begin("admin", None, Some("dev2")).await.is_err());
    }

    #[test]
    fn the_name_backs_off_exponentially() {
        let rule = Rule::Backoff { limit: 2, window_ms: 1_000, max_ms: 10_000 };
        assert_eq!(rule.wait_ms(&[0], 10), None);
        assert_eq!(rule.wait_ms(&[0, 100], 100), Some(1_000));
        assert_eq!(rule.wait_ms(&[0, 100, 1_200], 1_200), Some(2_000));
        assert_eq!(rule.wait_ms(&[0, 100, 1_200, 3_300], 3_300), Some(4_000));
        assert_eq!(rule.wait_ms(&[0, 100, 1_200, 3_300, 7_400, 9_000], 9_000), Some(10_000), "capped");
        // Failures older than the cap are forgotten.
        assert_eq!(rule.wait_ms(&[0, 100], 20_000), None);
    }

    #[tokio::test]
    async fn success_and_cancel_take_the_attempt_back() {
        let l = limiter(1, 100, 60_000);
        let a = l.begin("x", None, None).await.unwrap();
        l.cancel(a).await;
        let a = l.begin("x", None, None).await.unwrap();
        l.succeeded(a).await;
        let _failed = l.begin("x", None, None).await.unwrap();
        assert!(l.begin("x", None, None).await.is_err());
    }

    #[tokio::test]
    async fn window_expires() {
        let l = limiter(1, 1, 50);
        let _ = l.begin("x", None, None).await.unwrap();
        assert!(l.begin("x", None, None).await.is_err());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(l.begin("x", None, None).await.is_ok());
    }
}
