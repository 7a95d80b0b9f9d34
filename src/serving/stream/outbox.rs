//! A connection's bounded outgoing queue. The hub pushes into it without ever
//! waiting (a stalled client cannot delay anyone); the connection's task pops
//! from it as fast as its socket takes frames. Bounded by messages and bytes:
//! beyond either limit frames are dropped (and the client is later told the
//! seq range it missed), `kpis` keeps only the newest rollup, and a client
//! that stays behind the limit for `slow_after` is marked for a 4008 close.

use super::frames::{Control, Gap, GapInfo};
use super::protocol::Frame;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Queue limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    /// How long a client may stay at the limit before it is closed as slow.
    pub slow_after: Duration,
}

/// What a push did; the hub sums these and updates the metrics once per
/// publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Replaced an older unsent frame of a coalescing topic.
    Coalesced,
    /// The queue was full: the frame was dropped.
    Dropped,
    /// Dropped, and the client has now been behind for too long: it is to be
    /// closed with 4008 (returned once).
    Slow,
    /// The connection is closing; nothing was queued.
    Closed,
}

/// Why a connection's task must close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    Slow,
    ShuttingDown,
}

#[derive(Default)]
struct Inner {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// The newest unsent frame of the coalescing topic (`kpis`).
    latest: Option<Frame>,
    behind_since: Option<Instant>,
    /// Per topic: the first and last seq dropped while behind.
    missed: HashMap<Arc<str>, (u64, u64)>,
    closing: Option<Closing>,
}

/// Shared between the hub (pushes) and the connection task (pops).
pub struct Outbox {
    pub id: u64,
    limits: Limits,
    inner: Mutex<Inner>,
    notify: Notify,
    /// Set once the task has ended, so the hub can forget it.
    gone: AtomicBool,
}

impl Outbox {
    pub fn new(id: u64, limits: Limits) -> Arc<Outbox> {
        Arc::new(Outbox { id, limits, inner: Mutex::default(), notify: Notify::new(), gone: AtomicBool::new(false) })
    }

    /// Queues a frame; never blocks on the client.
    pub fn push(&self, frame: Frame, coalesce: bool) -> Pushed {
        let res = {
            let Ok(mut q) = self.inner.lock() else { return Pushed::Closed };
            if q.closing.is_some() {
                return Pushed::Closed;
            }
            if coalesce {
                let old = q.latest.replace(frame);
                if old.is_some() {
                    Pushed::Coalesced
                } else {
                    Pushed::Queued
                }
            } else if q.frames.len() >= self.limits.max_messages || q.bytes + frame.len() > self.limits.max_bytes {
                if let Some(t) = &frame.topic {
                    let e = q.missed.entry(t.clone()).or_insert((frame.seq, frame.seq));
                    e.1 = frame.seq;
                }
                let since = *q.behind_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.limits.slow_after {
                    q.closing = Some(Closing::Slow);
                    q.frames.clear();
                    q.bytes = 0;
                    q.latest = None;
                    Pushed::Slow
                } else {
                    Pushed::Dropped
                }
            } else {
                q.bytes += frame.len();
                q.frames.push_back(frame);
                Pushed::Queued
            }
        };
        if res != Pushed::Closed {
            self.notify.notify_one();
        }
        res
    }

    /// Takes up to `max` frames to send (queued frames first, so replayed
    /// history goes out before a newer coalesced rollup), plus `gap` notices
    /// for what was dropped once the client has caught up to half the limit.
    pub fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) {
        let Ok(mut q) = self.inner.lock() else { return };
        while out.len() < max {
            match q.frames.pop_front() {
                Some(f) => {
                    q.bytes -= f.len();
                    out.push(f);
                }
                None => break,
            }
        }
        if q.frames.is_empty() && out.len() < max {
            if let Some(f) = q.latest.take() {
                out.push(f);
            }
        }
        if q.behind_since.is_some()
            && q.frames.len() <= self.limits.max_messages / 2
            && q.bytes <= self.limits.max_bytes / 2
        {
            q.behind_since = None;
            for (topic, (from, to)) in q.missed.drain() {
                out.push(Frame::control(Control::Gap(GapInfo {
                    topic: topic.to_string(),
                    reason: Gap::Dropped { from, to },
                })));
            }
        }
    }

    /// True if the client has been behind for longer than allowed (checked by
    /// the task too, in case no further publication comes to notice it).
    pub fn check_slow(&self) -> bool {
        let Ok(mut q) = self.inner.lock() else { return false };
        if q.closing.is_none() && q.behind_since.map(|s| s.elapsed() >= self.limits.slow_after).unwrap_or(false) {
            q.closing = Some(Closing::Slow);
            q.frames.clear();
            q.bytes = 0;
            q.latest = None;
        }
        q.closing == Some(Closing::Slow)
    }

    pub fn closing(&self) -> Option<Closing> {
        self.inner.lock().ok().and_then(|q| q.closing)
    }

    /// Asks the task to close the connection (shutdown); drops what is queued.
    pub fn close(&self, why: Closing) {
        if let Ok(mut q) = self.inner.lock() {
            if q.closing.is_none() {
                q.closing = Some(why);
            }
            q.frames.clear();
            q.bytes = 0;
            q.latest = None;
        }
        self.notify.notify_one();
    }

    /// Resolves when something was pushed or a close was asked for.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn has_frames(&self) -> bool {
        self.inner.lock().map(|q| !q.frames.is_empty() || q.latest.is_some()).unwrap_or(false)
    }

    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(topic: &Arc<str>, seq: u64, size: usize) -> Frame {
        Frame::data(topic, seq, 0, &format!("\"{}\"", "x".repeat(size)))
    }

    fn limits(slow_ms: u64) -> Limits {
        Limits { max_messages: 4, max_bytes: 10_000, slow_after: Duration::from_millis(slow_ms) }
    }

    #[test]
    fn bounded_by_messages_then_gap_once_caught_up() {
        let t: Arc<str> = Arc::from("scores");
        let o = Outbox::new(1, limits(60_000));
        for seq in 1..=6 {
            let r = o.push(frame(&t, seq, 10), false);
            assert_eq!(r, if seq <= 4 { Pushed::Queued } else { Pushed::Dropped }, "seq {seq}");
        }
        let mut out = Vec::new();
        o.pop_batch(100, &mut out);
        assert_eq!(out.iter().filter(|f| f.seq > 0).map(|f| f.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        let gap: serde_json::Value = serde_json::from_str(&out.last().unwrap().text).unwrap();
        assert_eq!(gap["data"]["type"], "gap");
        assert_eq!((gap["data"]["from"].as_u64(), gap["data"]["to"].as_u64()), (Some(5), Some(6)));
    }

    #[test]
    fn bounded_by_bytes() {
        let t: Arc<str> = Arc::from("scores");
        let o = Outbox::new(1, Limits { max_messages: 100, max_bytes: 300, slow_after: Duration::from_secs(60) });
        assert_eq!(o.push(frame(&t, 1, 200), false), Pushed::Queued);
        assert_eq!(o.push(frame(&t, 2, 200), false), Pushed::Dropped);
    }

    #[test]
    fn kpis_coalesce_to_the_newest() {
        let t: Arc<str> = Arc::from("kpis");
        let o = Outbox::new(1, limits(60_000));
        assert_eq!(o.push(frame(&t, 1, 5), true), Pushed::Queued);
        for seq in 2..=50 {
            assert_eq!(o.push(frame(&t, seq, 5), true), Pushed::Coalesced);
        }
        let mut out = Vec::new();
        o.pop_batch(100, &mut out);
        assert_eq!(out.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![50]);
    }

    #[test]
    fn behind_too_long_is_slow_and_frees_the_queue() {
        let t: Arc<str> = Arc::from("scores");
        let o = Outbox::new(1, limits(30));
        for seq in 1..=5 {
            o.push(frame(&t, seq, 10), false);
        }
        assert!(!o.check_slow());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(o.push(frame(&t, 6, 10), false), Pushed::Slow);
        assert_eq!(o.closing(), Some(Closing::Slow));
        assert!(!o.has_frames());
        assert_eq!(o.push(frame(&t, 7, 10), false), Pushed::Closed);
    }
}
