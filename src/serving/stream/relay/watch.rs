//! Customer watches across processes. A gateway whose client subscribes to
//! `customer:{id}` must make the processes running the actors publish that
//! customer's view (`UpdateBus::watch` in one process).
//!
//! - Gateways ([`Announcer`]) announce `{"gw", "ttl_ms", "watch": [..],
//!   "unwatch": [..]}` on the sharded channel `{prefix}:watch` when a
//!   customer topic appears or goes, and re-announce everything they hold
//!   every `refresh`; each watch is also kept in the sorted set
//!   `{prefix}:watches` (member `<gateway id> <customer>`, score = expiry in
//!   Unix ms) so a processor that starts (or reconnects) learns the current
//!   watches at once.
//! - Processors ([`start_follower`]) keep, per customer, the gateways
//!   watching it with an expiry; the first one makes it `bus.watch`, the last
//!   one to go (unwatched or expired: a gateway that died) `bus.unwatch`.

use super::subscriber::{SubEvent, Subscriber};
use super::Outage;
use crate::redis_link::{LinkError, RedisLink};
use crate::serving::stream::telemetry::{StreamEvent, StreamMetrics};
use actors::event::CustomerId;
use actors::hooks::UpdateBus;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Serialize, Deserialize, Debug, Default)]
struct Announcement {
    gw: String,
    ttl_ms: u64,
    #[serde(default)]
    watch: Vec<String>,
    #[serde(default)]
    unwatch: Vec<String>,
}

enum WatchCmd {
    Watch(CustomerId, Option<oneshot::Sender<()>>),
    Unwatch(CustomerId),
}

/// A gateway's announcer; cheap to clone.
#[derive(Clone)]
pub struct Announcer {
    tx: mpsc::UnboundedSender<WatchCmd>,
}

impl Announcer {
    /// Starts the announcing task on the current runtime.
    pub fn start(link: RedisLink, refresh: Duration, metrics: StreamMetrics) -> Announcer {
        let (tx, rx) = mpsc::unbounded_channel();
        let gw = hex::encode(rand::random::<[u8; 8]>());
        tokio::spawn(announce_loop(link, gw, refresh.max(Duration::from_millis(100)), metrics, rx));
        Announcer { tx }
    }

    /// `ready` fires once the announcement went out (dropped if it failed).
    pub fn watch(&self, c: &CustomerId, ready: Option<oneshot::Sender<()>>) {
        let _ = self.tx.send(WatchCmd::Watch(c.clone(), ready));
    }

    pub fn unwatch(&self, c: &CustomerId) {
        let _ = self.tx.send(WatchCmd::Unwatch(c.clone()));
    }
}

/// Announcements carry at most this many customers.
const CHUNK: usize = 1_000;

async fn announce_loop(
    link: RedisLink,
    gw: String,
    refresh: Duration,
    metrics: StreamMetrics,
    mut rx: mpsc::UnboundedReceiver<WatchCmd>,
) {
    let ttl = refresh * 3;
    let mut held: HashSet<CustomerId> = HashSet::new();
    let mut outage = Outage::default();
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let (mut watch, mut unwatch, mut ready) = (Vec::new(), Vec::new(), Vec::new());
        tokio::select! {
            c = rx.recv() => {
                let Some(first) = c else { return };
                let mut next = Some(first);
                while let Some(cmd) = next.take() {
                    match cmd {
                        WatchCmd::Watch(c, r) => {
                            held.insert(c.clone());
                            unwatch.retain(|u: &String| u != c.as_str());
                            watch.push(c.as_str().to_owned());
                            ready.extend(r);
                        }
                        WatchCmd::Unwatch(c) => {
                            held.remove(&c);
                            watch.retain(|w: &String| w != c.as_str());
                            unwatch.push(c.as_str().to_owned());
                        }
                    }
                    next = rx.try_recv().ok();
                }
            }
            _ = tick.tick() => {
                watch = held.iter().map(|c| c.as_str().to_owned()).collect();
            }
        }
        match announce(&link, &gw, ttl, watch, unwatch).await {
            Ok(()) => {
                for r in ready {
                    let _ = r.send(());
                }
                if let Some(down_for) = outage.up() {
                    metrics.record(StreamEvent::RedisUp { conn: "watch_announcer", down_for, reconnect: true });
                    // Re-announce at once what was held during the outage.
                    tick.reset_immediately();
                }
            }
            Err(e) => {
                if outage.down() {
                    metrics.record(StreamEvent::RedisDown { conn: "watch_announcer", error: &e.to_string() });
                }
            }
        }
    }
}

/// The sorted set of watches; shares its hash tag with [`watch_channel`], so
/// one pipeline updates both on a cluster too.
fn watches_key(link: &RedisLink) -> String {
    link.key("{watch}:set")
}

/// The sharded channel the announcements go out on.
fn watch_channel(link: &RedisLink) -> String {
    link.key("{watch}:ch")
}

async fn announce(
    link: &RedisLink,
    gw: &str,
    ttl: Duration,
    watch: Vec<String>,
    unwatch: Vec<String>,
) -> Result<(), LinkError> {
    if watch.is_empty() && unwatch.is_empty() {
        return Ok(());
    }
    let mut conn = link.conn().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let expiry = now + ttl.as_millis() as i64;
    let (set, channel) = (watches_key(link), watch_channel(link));
    let mut pipe = redis::pipe();
    pipe.cmd("ZREMRANGEBYSCORE").arg(&set).arg("-inf").arg(now).ignore();
    for chunk in watch.chunks(CHUNK) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&set);
        for c in chunk {
            zadd.arg(expiry).arg(format!("{gw} {c}"));
        }
        pipe.add_command(zadd).ignore();
    }
    for chunk in unwatch.chunks(CHUNK) {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&set);
        for c in chunk {
            zrem.arg(format!("{gw} {c}"));
        }
        pipe.add_command(zrem).ignore();
    }
    let ttl_ms = ttl.as_millis() as u64;
    for chunk in watch.chunks(CHUNK) {
        let a = Announcement { gw: gw.to_owned(), ttl_ms, watch: chunk.to_vec(), unwatch: vec![] };
        pipe.cmd("SPUBLISH").arg(&channel).arg(serde_json::to_string(&a).unwrap_or_default()).ignore();
    }
    for chunk in unwatch.chunks(CHUNK) {
        let a = Announcement { gw: gw.to_owned(), ttl_ms, watch: vec![], unwatch: chunk.to_vec() };
        pipe.cmd("SPUBLISH").arg(&channel).arg(serde_json::to_string(&a).unwrap_or_default()).ignore();
    }
    Ok(pipe.query_async::<()>(&mut conn).await?)
}

/// Starts a processor's follower on the current runtime: it applies the
/// gateways' watches to `bus` until the process ends.
pub fn start_follower(link: RedisLink, bus: UpdateBus, metrics: StreamMetrics) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = Subscriber::start(link.clone(), "watch_follower", metrics, move |ev| {
        let _ = tx.send(ev);
    });
    sub.subscribe(watch_channel(&link), None);
    tokio::spawn(follow(link, bus, sub, rx));
}

/// Per customer: watching gateways and when each watch expires.
#[derive(Default)]
struct Watches {
    by_customer: HashMap<CustomerId, HashMap<String, Instant>>,
}

impl Watches {
    fn watch(&mut self, bus: &UpdateBus, gw: &str, c: &str, expires: Instant) {
        let Ok(c) = CustomerId::parse(c) else { return };
        let gws = self.by_customer.entry(c.clone()).or_default();
        if gws.is_empty() {
            bus.watch(&c);
        }
        let e = gws.entry(gw.to_owned()).or_insert(expires);
        *e = (*e).max(expires);
    }

    fn unwatch(&mut self, bus: &UpdateBus, gw: &str, c: &str) {
        let Ok(c) = CustomerId::parse(c) else { return };
        if let Some(gws) = self.by_customer.get_mut(&c) {
            gws.remove(gw);
            if gws.is_empty() {
                self.by_customer.remove(&c);
                bus.unwatch(&c);
            }
        }
    }

    fn expire(&mut self, bus: &UpdateBus, now: Instant) {
        self.by_customer.retain(|c, gws| {
            gws.retain(|_, at| *at > now);
            if gws.is_empty() {
                bus.unwatch(c);
            }
            !gws.is_empty()
        });
    }
}

async fn follow(link: RedisLink, bus: UpdateBus, _sub: Subscriber, mut rx: mpsc::UnboundedReceiver<SubEvent>) {
    let mut w = Watches::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                None => return,
                Some(SubEvent::Connected { .. }) => {
                    // What gateways hold now (announcements made while we
                    // were away are only there).
                    if let Ok(mut conn) = link.conn().await {
                        let now = chrono::Utc::now().timestamp_millis();
                        let held: Result<Vec<(String, f64)>, _> = redis::cmd("ZRANGEBYSCORE")
                            .arg(watches_key(&link)).arg(now).arg("+inf").arg("WITHSCORES")
                            .query_async(&mut conn).await;
                        for (member, score) in held.unwrap_or_default() {
                            if let Some((gw, c)) = member.split_once(' ') {
                                let left = Duration::from_millis((score as i64 - now).max(0) as u64);
                                w.watch(&bus, gw, c, Instant::now() + left);
                            }
                        }
                    }
                }
                Some(SubEvent::Message { payload, .. }) => {
                    let Ok(a) = serde_json::from_slice::<Announcement>(&payload) else { continue };
                    let expires = Instant::now() + Duration::from_millis(a.ttl_ms);
                    for c in &a.watch {
                        w.watch(&bus, &a.gw, c, expires);
                    }
                    for c in &a.unwatch {
                        w.unwatch(&bus, &a.gw, c);
                    }
                }
            },
            _ = tick.tick() => w.expire(&bus, Instant::now()),
        }
    }
}
