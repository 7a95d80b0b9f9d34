//! The `Hub` (the Broadcaster of the design): one actor on its own arbiter
//! thread that owns every topic. Per topic it keeps a bounded history (by
//! count and bytes) for `since` recovery and fans each message out to the
//! subscribed connections' outboxes, which never block it. Being the only
//! owner of the topics, it needs no locks, and a subscription's replay and
//! the live messages that follow it are ordered by construction.
//!
//! Two modes:
//! - **local** (one process): the hub numbers the messages itself (`seq`
//!   from 1, gap-free) as the aggregator publishes them;
//! - **remote** (Redis, [`Remote`]): the messages were numbered and kept in
//!   Redis by whichever process published them; the hub holds one sharded
//!   subscription per topic that has local subscribers, takes the seq from
//!   each frame, and keeps its history as a cache. A frame whose seq skips
//!   ahead is held back until the gap is read from the Redis history
//!   (XRANGE), so every topic is delivered in order; a `since` the local
//!   history does not reach is recovered from the Redis history, merged by
//!   seq with what arrives meanwhile (each subscriber skips frames at or
//!   below the seq it already got).
//!
//! Customer topics exist while someone subscribes (the hub then asks the
//! actors, here or through Redis, to publish that customer's view) and
//! linger for `customer_linger` after the last one leaves, still watched, so
//! a client that reconnects in the meantime recovers what it missed.

pub mod messages;

use super::frames::{Control, Gap, GapInfo};
use super::outbox::{Closing, Outbox, Pushed};
use super::protocol::{now_ms, Frame, Topic};
use super::relay::history;
use super::relay::subscriber::Subscriber;
use super::relay::watch::Announcer;
use super::relay::TopicKeys;
use super::telemetry::{StreamEvent, StreamMetrics};
use crate::redis_link::RedisLink;
use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use actors::hooks::UpdateBus;
use messages::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// History bounds and customer topic lifetime.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    pub history_messages: usize,
    pub history_bytes: usize,
    pub customer_history_messages: usize,
    pub customer_linger: Duration,
    pub max_lingering_topics: usize,
}

/// The Redis side of a hub in remote mode.
pub struct Remote {
    pub link: RedisLink,
    /// Holds the topics' sharded subscriptions.
    pub subscriber: Subscriber,
    /// Tells the processors which customers are followed here.
    pub announcer: Announcer,
}

/// Longest a subscription waits for its Redis subscription and watch
/// announcement to be in place before it is confirmed anyway.
const SETUP_TIMEOUT: Duration = Duration::from_secs(3);

struct Sub {
    outbox: Arc<Outbox>,
    /// Frames at or below this seq already reached it (from a replay).
    after: u64,
}

struct TopicEntry {
    name: Arc<str>,
    /// Newest seq delivered (0: none yet; in remote mode the first frame
    /// received sets it, whatever its seq).
    seq: u64,
    history: VecDeque<Frame>,
    history_bytes: usize,
    subscribers: HashMap<u64, Sub>,
    /// When the last subscriber left (customer topics only).
    idle_since: Option<Instant>,
    /// Remote: the topic's keys.
    keys: Option<TopicKeys>,
    /// Remote: frames held back behind a gap being read from the history.
    pending: BTreeMap<u64, Frame>,
    filling: bool,
}

impl TopicEntry {
    fn new(name: String, keys: Option<TopicKeys>) -> Self {
        TopicEntry {
            name: Arc::from(name),
            seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            subscribers: HashMap::new(),
            idle_since: None,
            keys,
            pending: BTreeMap::new(),
            filling: false,
        }
    }

    /// Seq of the oldest message still in history (`seq + 1` when empty).
    fn oldest(&self) -> u64 {
        self.history.front().map(|f| f.seq).unwrap_or(self.seq + 1)
    }

    /// Keeps the frame in history and hands it to every subscriber.
    fn deliver(&mut self, frame: Frame, max_msgs: usize, max_bytes: usize, coalesce: bool, metrics: &StreamMetrics) {
        self.seq = frame.seq;
        self.history_bytes += frame.len();
        self.history.push_back(frame.clone());
        while self.history.len() > max_msgs || self.history_bytes > max_bytes {
            match self.history.pop_front() {
                Some(old) => self.history_bytes -= old.len(),
                None => break,
            }
        }
        let (mut dropped, mut coalesced) = (0u64, 0u64);
        for sub in self.subscribers.values() {
            if frame.seq <= sub.after {
                continue;
            }
            match sub.outbox.push(frame.clone(), coalesce) {
                Pushed::Queued | Pushed::Closed => {}
                Pushed::Coalesced => coalesced += 1,
                // Slow disconnects are recorded by the connection as it closes.
                Pushed::Dropped | Pushed::Slow => dropped += 1,
            }
        }
        if dropped + coalesced > 0 {
            metrics.record(StreamEvent::FannedOut { dropped, coalesced });
        }
    }

    /// Frames `from..=to` are lost for good: subscribers are told, and the
    /// history restarts (it must stay contiguous for `since` replays).
    fn lost(&mut self, from: u64, to: u64, metrics: &StreamMetrics) {
        metrics.record(StreamEvent::RedisLost { topic: &self.name, n: to + 1 - from });
        let gap =
            Frame::control(Control::Gap(GapInfo { topic: self.name.to_string(), reason: Gap::Lost { from, to } }));
        for sub in self.subscribers.values() {
            sub.outbox.push(gap.clone(), false);
        }
        self.history.clear();
        self.history_bytes = 0;
    }
}

pub struct Hub {
    settings: HubSettings,
    topics: HashMap<Topic, TopicEntry>,
    connections: HashMap<u64, Arc<Outbox>>,
    bus: UpdateBus,
    metrics: StreamMetrics,
    remote: Option<Remote>,
    /// Remote `since` recoveries in flight, by connection and topic.
    recovering: HashMap<(u64, Topic), u64>,
    next_recovery: u64,
}

impl Hub {
    pub fn new(settings: HubSettings, bus: UpdateBus, metrics: StreamMetrics, remote: Option<Remote>) -> Hub {
        let mut hub = Hub {
            settings,
            topics: HashMap::new(),
            connections: HashMap::new(),
            bus,
            metrics,
            remote,
            recovering: HashMap::new(),
            next_recovery: 1,
        };
        for t in [Topic::Kpis, Topic::Scores, Topic::Segments] {
            let keys = hub.remote.as_ref().map(|r| TopicKeys::new(&r.link, &t));
            if let (Some(r), Some(k)) = (&hub.remote, &keys) {
                r.subscriber.subscribe(k.channel.clone(), None);
            }
            hub.topics.insert(t.clone(), TopicEntry::new(t.name(), keys));
        }
        hub
    }

    fn limits(&self, t: &Topic) -> (usize, usize) {
        match t {
            Topic::Customer(_) => (self.settings.customer_history_messages, self.settings.history_bytes),
            _ => (self.settings.history_messages, self.settings.history_bytes),
        }
    }

    /// Creates the topic if needed (watching the customer); answers what to
    /// wait for before the subscription is in place (remote mode).
    fn ensure_topic(&mut self, t: &Topic) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::new();
        if self.topics.contains_key(t) {
            return waits;
        }
        let keys = self.remote.as_ref().map(|r| TopicKeys::new(&r.link, t));
        if let Topic::Customer(c) = t {
            match (&self.remote, &keys) {
                (Some(r), Some(k)) => {
                    let (sub_tx, sub_rx) = oneshot::channel();
                    r.subscriber.subscribe(k.channel.clone(), Some(sub_tx));
                    let (watch_tx, watch_rx) = oneshot::channel();
                    r.announcer.watch(c, Some(watch_tx));
                    waits.push(sub_rx);
                    waits.push(watch_rx);
                }
                _ => self.bus.watch(c),
            }
        }
        self.topics.insert(t.clone(), TopicEntry::new(t.name(), keys));
        waits
    }

    fn drop_topic(&mut self, t: &Topic) {
        let Some(state) = self.topics.remove(t) else { return };
        if let Topic::Customer(c) = t {
            match (&self.remote, &state.keys) {
                (Some(r), Some(k)) => {
                    r.subscriber.unsubscribe(k.channel.clone());
                    r.announcer.unwatch(c);
                }
                _ => self.bus.unwatch(c),
            }
        }
    }

    fn remove_subscriber(&mut self, conn: u64, t: &Topic) {
        self.recovering.remove(&(conn, t.clone()));
        if let Some(state) = self.topics.get_mut(t) {
            state.subscribers.remove(&conn);
            if state.subscribers.is_empty() && matches!(t, Topic::Customer(_)) {
                state.idle_since = Some(Instant::now());
            }
        }
    }

    /// Forgets customer topics idle for longer than the linger time, and the
    /// oldest idle ones beyond the cap, so memory stays bounded.
    fn sweep(&mut self) {
        let linger = self.settings.customer_linger;
        let mut idle: Vec<(Instant, Topic)> =
            self.topics.iter().filter_map(|(t, s)| s.idle_since.map(|at| (at, t.clone()))).collect();
        idle.sort_by_key(|(at, _)| *at);
        let excess = idle.len().saturating_sub(self.settings.max_lingering_topics);
        for (i, (at, t)) in idle.into_iter().enumerate() {
            if i < excess || at.elapsed() >= linger {
                self.drop_topic(&t);
            }
        }
        self.connections.retain(|_, o| !o.is_gone());
    }

    /// Local mode: the whole subscription at once.
    fn subscribe_local(&mut self, msg: Subscribe) {
        let Subscribe { outbox, topics, since } = msg;
        let names: Vec<String> = topics.iter().map(Topic::name).collect();
        outbox.push(Frame::control(Control::Subscribed { topics: names }), false);
        for t in topics {
            self.ensure_topic(&t);
            let Some(state) = self.topics.get_mut(&t) else { continue };
            state.idle_since = None;
            if let Some(&last_seen) = since.get(&t) {
                let oldest = state.oldest();
                if last_seen + 1 >= oldest && last_seen <= state.seq {
                    for f in state.history.iter().filter(|f| f.seq > last_seen) {
                        // Replayed history is never coalesced: the client asked for it.
                        outbox.push(f.clone(), false);
                    }
                } else {
                    // Older than the history reaches, or from before a restart
                    // of this topic's numbering (seq ahead of ours).
                    outbox.push(too_old(&state.name, oldest, state.seq), false);
                }
            }
            state.subscribers.insert(outbox.id, Sub { outbox: outbox.clone(), after: 0 });
        }
    }

    /// Remote mode, once the topics' subscriptions are in place: `starts`
    /// has each topic's seq when the subscription began.
    fn subscribe_remote(
        &mut self,
        outbox: Arc<Outbox>,
        starts: Vec<(Topic, u64)>,
        since: HashMap<Topic, u64>,
        ctx: &mut Context<Self>,
    ) {
        if outbox.is_gone() {
            return;
        }
        let names: Vec<String> = starts.iter().map(|(t, _)| t.name()).collect();
        outbox.push(Frame::control(Control::Subscribed { topics: names }), false);
        for (t, seq0) in starts {
            let Some(state) = self.topics.get_mut(&t) else { continue };
            state.idle_since = None;
            match since.get(&t) {
                None => {
                    // What arrived while the subscription was being set up.
                    for f in state.history.iter().filter(|f| f.seq > seq0) {
                        outbox.push(f.clone(), false);
                    }
                    let after = state.seq;
                    state.subscribers.insert(outbox.id, Sub { outbox: outbox.clone(), after });
                }
                Some(&s) if state.seq > 0 && s + 1 >= state.oldest() && s <= state.seq => {
                    for f in state.history.iter().filter(|f| f.seq > s) {
                        outbox.push(f.clone(), false);
                    }
                    let after = state.seq;
                    state.subscribers.insert(outbox.id, Sub { outbox: outbox.clone(), after });
                }
                Some(&s) => self.start_recovery(outbox.clone(), t, s, ctx),
            }
        }
    }

    /// Reads what a client missed from the Redis history; it joins the topic
    /// when the read is back.
    fn start_recovery(&mut self, outbox: Arc<Outbox>, t: Topic, since: u64, ctx: &mut Context<Self>) {
        let (Some(r), Some(state)) = (&self.remote, self.topics.get(&t)) else { return };
        let Some(keys) = state.keys.clone() else { return };
        let (link, name) = (r.link.clone(), state.name.clone());
        let count = self.settings.history_messages.max(self.settings.customer_history_messages) * 2 + 100;
        let token = self.next_recovery;
        self.next_recovery += 1;
        self.recovering.insert((outbox.id, t.clone()), token);
        let read = async move { history::recover(&link, &keys, &name, since, count).await };
        ctx.spawn(read.into_actor(self).map(move |res, hub, _| hub.finish_recovery(outbox, t, since, token, res)));
    }

    fn finish_recovery(
        &mut self,
        outbox: Arc<Outbox>,
        t: Topic,
        since: u64,
        token: u64,
        res: Result<history::Recovery, crate::redis_link::LinkError>,
    ) {
        if self.recovering.get(&(outbox.id, t.clone())) != Some(&token) {
            return; // unsubscribed (or subscribed again) meanwhile
        }
        self.recovering.remove(&(outbox.id, t.clone()));
        if outbox.is_gone() {
            return;
        }
        let metrics = self.metrics.clone();
        let Some(state) = self.topics.get_mut(&t) else { return };
        let mut last = since;
        match res {
            Ok(r) if since > r.head && since > state.seq => {
                // Ahead of the numbering: the topic's keys were lost (expired
                // after its last subscriber, or a flushed Redis).
                let oldest = r.oldest.unwrap_or(r.head + 1);
                outbox.push(too_old(&state.name, oldest, r.head.max(state.seq)), false);
                last = state.seq;
            }
            Ok(r) if r.frames.first().map(|f| f.seq == since + 1).unwrap_or(since >= r.head) => {
                metrics.record(StreamEvent::RedisReplayed { n: r.frames.len() as u64 });
                for f in r.frames {
                    last = f.seq;
                    outbox.push(f, false);
                }
                // Then what this hub has that the read did not.
                if state.seq > last {
                    if state.oldest() > last + 1 {
                        let gap = GapInfo {
                            topic: state.name.to_string(),
                            reason: Gap::Lost { from: last + 1, to: state.oldest() - 1 },
                        };
                        outbox.push(Frame::control(Control::Gap(gap)), false);
                    }
                    for f in state.history.iter().filter(|f| f.seq > last) {
                        outbox.push(f.clone(), false);
                    }
                    last = state.seq;
                }
            }
            Ok(r) => {
                let oldest = r.oldest.unwrap_or(r.head + 1);
                outbox.push(too_old(&state.name, oldest, r.head.max(state.seq)), false);
                last = state.seq;
            }
            Err(e) => {
                metrics.record(StreamEvent::RedisReadFailed { error: &e.to_string() });
                outbox.push(too_old(&state.name, state.oldest(), state.seq), false);
                last = state.seq;
            }
        }
        state.subscribers.insert(outbox.id, Sub { outbox, after: last });
    }

    /// Remote: a frame from the topic's channel (or a history read).
    fn on_received(&mut self, t: Topic, seq: u64, text: bytestring::ByteString, ctx: &mut Context<Self>) {
        let (max_msgs, max_bytes) = self.limits(&t);
        let coalesce = t.coalesces();
        let metrics = self.metrics.clone();
        let Some(state) = self.topics.get_mut(&t) else { return };
        let frame = Frame { topic: Some(state.name.clone()), seq, text };
        if state.filling {
            if seq > state.seq {
                state.pending.insert(seq, frame);
            }
            return;
        }
        if state.seq == 0 || seq == state.seq + 1 {
            state.deliver(frame, max_msgs, max_bytes, coalesce, &metrics);
        } else if seq <= state.seq {
            let oldest = state.oldest();
            let known = seq >= oldest
                && state.history.get((seq - oldest) as usize).map(|f| f.text == frame.text).unwrap_or(false);
            if !known {
                // Not a frame already delivered (a gap fill can read a frame
                // before its channel copy arrives): the numbering started
                // again (the topic's keys were lost); follow it from here.
                tracing::info!(topic = %state.name, seq, was = state.seq, "stream topic numbering restarted in Redis");
                state.history.clear();
                state.history_bytes = 0;
                state.deliver(frame, max_msgs, max_bytes, coalesce, &metrics);
            }
        } else {
            state.pending.insert(seq, frame);
            let from = state.seq + 1;
            self.start_fill(t, from, ctx);
        }
    }

    /// Reads the topic's history from `from` on; frames that arrive meanwhile
    /// wait in `pending`.
    fn start_fill(&mut self, t: Topic, from: u64, ctx: &mut Context<Self>) {
        let (Some(r), Some(state)) = (&self.remote, self.topics.get_mut(&t)) else { return };
        let Some(keys) = state.keys.clone() else { return };
        state.filling = true;
        let (link, name) = (r.link.clone(), state.name.clone());
        let count = self.settings.history_messages.max(self.settings.customer_history_messages) * 2 + 100;
        let read = async move { history::range(&link, &keys, &name, from, count).await };
        ctx.spawn(read.into_actor(self).map(move |res, hub, _| hub.finish_fill(t, res)));
    }

    fn finish_fill(&mut self, t: Topic, res: Result<Vec<Frame>, crate::redis_link::LinkError>) {
        let (max_msgs, max_bytes) = self.limits(&t);
        // Filled frames are recovery, like a `since` replay: every one goes
        // out, even on `kpis`, whose live frames keep only the newest
        // unsent (they arrive here all at once and would collapse into one).
        let coalesce = false;
        let metrics = self.metrics.clone();
        let Some(state) = self.topics.get_mut(&t) else { return };
        state.filling = false;
        match res {
            Ok(frames) => {
                let before = state.pending.len();
                for f in frames {
                    if f.seq > state.seq {
                        state.pending.entry(f.seq).or_insert(f);
                    }
                }
                let filled = state.pending.len() - before;
                if filled > 0 {
                    metrics.record(StreamEvent::RedisGapFilled { n: filled as u64 });
                }
            }
            Err(e) => metrics.record(StreamEvent::RedisReadFailed { error: &e.to_string() }),
        }
        while let Some((seq, frame)) = state.pending.pop_first() {
            if seq <= state.seq {
                continue;
            }
            if state.seq > 0 && seq > state.seq + 1 {
                let from = state.seq + 1;
                state.lost(from, seq - 1, &metrics);
            }
            state.deliver(frame, max_msgs, max_bytes, coalesce, &metrics);
        }
    }
}

fn too_old(name: &str, oldest: u64, last: u64) -> Frame {
    Frame::control(Control::Gap(GapInfo { topic: name.to_owned(), reason: Gap::TooOld { oldest, last } }))
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Publications are offered with `try_send`; beyond this many waiting,
        // they are dropped and counted rather than queued without bound.
        ctx.set_mailbox_capacity(16_384);
        ctx.run_interval(Duration::from_secs(5), |hub, _| hub.sweep());
    }
}

impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        self.connections.insert(msg.outbox.id, msg.outbox);
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        if self.remote.is_none() {
            self.subscribe_local(msg);
            return Box::pin(actix::fut::ready(()));
        }
        let Subscribe { outbox, topics, since } = msg;
        let mut waits = Vec::new();
        let mut starts = Vec::new();
        for t in topics {
            waits.extend(self.ensure_topic(&t));
            self.recovering.remove(&(outbox.id, t.clone()));
            if let Some(state) = self.topics.get_mut(&t) {
                state.idle_since = None;
                // Subscribing again: the replay decides what it gets next.
                state.subscribers.remove(&outbox.id);
                starts.push((t, state.seq));
            }
        }
        let setup = async move {
            let _ = tokio::time::timeout(SETUP_TIMEOUT, futures::future::join_all(waits)).await;
        };
        Box::pin(setup.into_actor(self).map(move |_, hub, ctx| hub.subscribe_remote(outbox, starts, since, ctx)))
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        for t in &msg.topics {
            self.remove_subscriber(msg.conn, t);
        }
    }
}

impl Handler<Leave> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        for t in &msg.topics {
            self.remove_subscriber(msg.conn, t);
        }
        self.connections.remove(&msg.conn);
    }
}

impl Handler<Publish> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let (max_msgs, max_bytes) = self.limits(&msg.topic);
        let coalesce = msg.topic.coalesces();
        let metrics = self.metrics.clone();
        let Some(state) = self.topics.get_mut(&msg.topic) else { return };
        let frame = Frame::data(&state.name, state.seq + 1, now_ms(), &msg.data);
        state.deliver(frame, max_msgs, max_bytes, coalesce, &metrics);
    }
}

impl Handler<Received> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Received, ctx: &mut Context<Self>) {
        self.on_received(msg.topic, msg.seq, msg.text, ctx);
    }
}

impl Handler<Resync> for Hub {
    type Result = ();
    fn handle(&mut self, _: Resync, ctx: &mut Context<Self>) {
        let topics: Vec<(Topic, u64)> =
            self.topics.iter().filter(|(_, s)| s.seq > 0 && !s.filling).map(|(t, s)| (t.clone(), s.seq + 1)).collect();
        for (t, from) in topics {
            self.start_fill(t, from, ctx);
        }
    }
}

impl Handler<Shutdown> for Hub {
    type Result = usize;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> usize {
        let n = self.connections.len();
        for o in self.connections.values() {
            o.close(Closing::ShuttingDown);
        }
        for state in self.topics.values_mut() {
            state.subscribers.clear();
        }
        self.recovering.clear();
        n
    }
}

impl Handler<TopicState> for Hub {
    type Result = Option<(u64, u64)>;
    fn handle(&mut self, msg: TopicState, _: &mut Context<Self>) -> Self::Result {
        self.topics.get(&msg.0).map(|s| (s.seq, s.oldest()))
    }
}
