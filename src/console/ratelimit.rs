//! Login rate limiting: failed logins are counted per user name and per
//! client address over a sliding window; once either reaches its limit,
//! logins for that name / from that address answer 429 *before* the
//! password is checked, so a guesser learns nothing more until the window
//! moves on. Only failures count, so a user who types the password right is
//! not locked out by their own successful logins.
//!
//! With Redis (many replicas) the failures are counted in Redis, shared by
//! every replica, in one sorted set of failure times per key (names and
//! addresses hashed; each set expires with the window). Failures are also
//! counted in memory, and if Redis does not answer the process falls back to
//! its own count, which multiplies the budget by the replica count but still
//! bounds it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most tracked keys; beyond it stale entries are pruned, and if that is not
/// enough the oldest half goes (memory stays bounded under a spray of names).
const MAX_KEYS: usize = 50_000;

pub struct LoginLimiter {
    per_name: usize,
    per_ip: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    redis: Option<crate::redis_link::RedisLink>,
}

impl LoginLimiter {
    pub fn new(per_name: usize, per_ip: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            per_name: per_name.max(1),
            per_ip: per_ip.max(1),
            window,
            failures: Mutex::new(HashMap::new()),
            redis: None,
        }
    }

    /// Counts in Redis too, shared by every replica.
    pub fn shared(mut self, redis: Option<crate::redis_link::RedisLink>) -> LoginLimiter {
        self.redis = redis;
        self
    }

    fn redis_key(link: &crate::redis_link::RedisLink, key: &str) -> String {
        use sha2::Digest;
        link.key(&format!("login:{}", hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])))
    }

    /// Like [`LoginLimiter::check`], over every replica's failures when Redis is set.
    pub async fn check_shared(&self, name: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let local = self.check(name, ip);
        let Some(link) = &self.redis else { return local };
        let now = chrono::Utc::now().timestamp_millis();
        let window_ms = self.window.as_millis() as i64;
        let mut pipe = redis::pipe();
        let keys: Vec<(String, usize)> = Self::keys(name, ip)
            .into_iter()
            .zip([self.per_name, self.per_ip])
            .filter_map(|(k, limit)| k.map(|k| (Self::redis_key(link, &k), limit)))
            .collect();
        for (k, _) in &keys {
            pipe.cmd("ZREMRANGEBYSCORE").arg(k).arg("-inf").arg(now - window_ms).ignore();
            pipe.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES");
        }
        let replies: Result<Vec<Vec<(String, f64)>>, String> = async {
            let mut c = link.conn().await.map_err(|e| e.to_string())?;
            pipe.query_async(&mut *c).await.map_err(|e| e.to_string())
        }
        .await;
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "login limiter: Redis unavailable; counting in this process only");
                return local;
            }
        };
        let mut wait = None::<i64>;
        for ((_, limit), times) in keys.iter().zip(replies) {
            if times.len() >= *limit {
                let oldest = times[times.len() - limit].1 as i64;
                let w = (window_ms - (now - oldest)).max(0);
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        match (wait, local) {
            (Some(w), _) => Err(((w + 999) / 1000).max(1) as u64),
            (None, local) => local,
        }
    }

    /// Like [`LoginLimiter::failed`], also counted in Redis when it is set.
    pub async fn failed_shared(&self, name: &str, ip: Option<IpAddr>) {
        self.failed(name, ip);
        let Some(link) = &self.redis else { return };
        let now = chrono::Utc::now().timestamp_millis();
        let member = format!("{now}-{}", hex::encode(rand::random::<[u8; 4]>()));
        let mut pipe = redis::pipe();
        for k in Self::keys(name, ip).into_iter().flatten() {
            let k = Self::redis_key(link, &k);
            pipe.cmd("ZADD").arg(&k).arg(now).arg(&member).ignore();
            pipe.cmd("PEXPIRE").arg(&k).arg(self.window.as_millis() as u64 + 1000).ignore();
        }
        let done: Result<(), String> = async {
            let mut c = link.conn().await.map_err(|e| e.to_string())?;
            pipe.query_async::<()>(&mut *c).await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "login limiter: Redis unavailable; the failure is counted in this process only");
        }
    }

    fn keys(name: &str, ip: Option<IpAddr>) -> [Option<String>; 2] {
        [Some(format!("n:{name}")), ip.map(|ip| format!("i:{ip}"))]
    }

    /// `Err(seconds until a slot frees)` when this name or address is over its limit.
    pub fn check(&self, name: &str, ip: Option<IpAddr>) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else { return Ok(()) };
        let mut wait = None::<Duration>;
        for (key, limit) in Self::keys(name, ip).into_iter().zip([self.per_name, self.per_ip]) {
            let Some(key) = key else { continue };
            if let Some(q) = map.get_mut(&key) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    q.pop_front();
                }
                if q.len() >= limit {
                    let oldest = q[q.len() - limit];
                    let w = self.window.saturating_sub(now.duration_since(oldest));
                    wait = Some(wait.map_or(w, |x| x.max(w)));
                }
            }
        }
        match wait {
            Some(w) => Err(w.as_secs().max(1)),
            None => Ok(()),
        }
    }

    /// Counts one failed login for this name and address.
    pub fn failed(&self, name: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() >= MAX_KEYS {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                let mut by_age: Vec<(Instant, String)> =
                    map.iter().filter_map(|(k, q)| q.back().map(|t| (*t, k.clone()))).collect();
                by_age.sort();
                for (_, k) in by_age.into_iter().take(MAX_KEYS / 2) {
                    map.remove(&k);
                }
            }
        }
        for key in Self::keys(name, ip).into_iter().flatten() {
            let q = map.entry(key).or_default();
            q.push_back(now);
            // Only the newest `limit` failures matter; keep a few more at most.
            while q.len() > self.per_name.max(self.per_ip) + 1 {
                q.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_name_and_per_address() {
        let l = LoginLimiter::new(3, 5, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check("alice", Some(a)).is_ok());
            l.failed("alice", Some(a));
        }
        // The name is locked from any address …
        assert!(l.check("alice", Some(b)).is_err());
        // … other names from the first address still have 2 of its 5.
        assert!(l.check("bob", Some(a)).is_ok());
        l.failed("bob", Some(a));
        l.failed("carol", Some(a));
        assert!(l.check("dave", Some(a)).is_err(), "the address reached 5 failures");
        assert!(l.check("dave", Some(b)).is_ok());
    }

    #[test]
    fn window_expires() {
        let l = LoginLimiter::new(1, 1, Duration::from_millis(50));
        l.failed("x", None);
        assert!(l.check("x", None).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check("x", None).is_ok());
    }
}
