//! The `Hub` (the Broadcaster of the design): one actor on its own arbiter
//! thread that owns every topic. Per topic it numbers the messages (`seq`,
//! from 1, gap-free), keeps a bounded history (by count and bytes) for
//! `since` recovery, and fans each message out to the subscribed connections'
//! outboxes, which never block it. Being the only owner of the topics, it
//! needs no locks, and a subscription's replay and the live messages that
//! follow it are ordered by construction.
//!
//! Customer topics exist while someone subscribes (the hub then asks the
//! actors to publish that customer's view) and linger for
//! `customer_linger` after the last one leaves, still watched, so a client
//! that reconnects in the meantime recovers what it missed.

pub mod messages;

use super::outbox::{Closing, Outbox, Pushed};
use super::protocol::{now_ms, Frame, Topic};
use super::telemetry::{StreamEvent, StreamMetrics};
use actix::{Actor, AsyncContext, Context, Handler};
use actors::hooks::UpdateBus;
use messages::*;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// History bounds and customer topic lifetime.
#[derive(Clone, Copy, Debug)]
pub struct HubSettings {
    pub history_messages: usize,
    pub history_bytes: usize,
    pub customer_history_messages: usize,
    pub customer_linger: Duration,
    pub max_lingering_topics: usize,
}

struct TopicEntry {
    name: Arc<str>,
    seq: u64,
    history: VecDeque<Frame>,
    history_bytes: usize,
    subscribers: HashMap<u64, Arc<Outbox>>,
    /// When the last subscriber left (customer topics only).
    idle_since: Option<Instant>,
}

impl TopicEntry {
    fn new(name: String) -> Self {
        TopicEntry {
            name: Arc::from(name),
            seq: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            subscribers: HashMap::new(),
            idle_since: None,
        }
    }

    /// Seq of the oldest message still in history (`seq + 1` when empty).
    fn oldest(&self) -> u64 {
        self.history.front().map(|f| f.seq).unwrap_or(self.seq + 1)
    }
}

pub struct Hub {
    settings: HubSettings,
    topics: HashMap<Topic, TopicEntry>,
    connections: HashMap<u64, Arc<Outbox>>,
    bus: UpdateBus,
    metrics: StreamMetrics,
}

impl Hub {
    pub fn new(settings: HubSettings, bus: UpdateBus, metrics: StreamMetrics) -> Hub {
        let mut topics = HashMap::new();
        for t in [Topic::Kpis, Topic::Scores, Topic::Segments] {
            topics.insert(t.clone(), TopicEntry::new(t.name()));
        }
        Hub { settings, topics, connections: HashMap::new(), bus, metrics }
    }

    fn topic(&mut self, t: &Topic) -> &mut TopicEntry {
        if !self.topics.contains_key(t) {
            if let Topic::Customer(c) = t {
                self.bus.watch(c);
            }
        }
        self.topics.entry(t.clone()).or_insert_with(|| TopicEntry::new(t.name()))
    }

    fn remove_subscriber(&mut self, conn: u64, t: &Topic) {
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
                self.topics.remove(&t);
                if let Topic::Customer(c) = &t {
                    self.bus.unwatch(c);
                }
            }
        }
        self.connections.retain(|_, o| !o.is_gone());
    }
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
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        let Subscribe { outbox, topics, since } = msg;
        let names: Vec<String> = topics.iter().map(Topic::name).collect();
        outbox.push(Frame::control(serde_json::json!({ "type": "subscribed", "topics": names })), false);
        for t in topics {
            let state = self.topic(&t);
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
                    let gap = serde_json::json!({
                        "type": "gap", "topic": &*state.name, "reason": "too_old",
                        "oldest": oldest, "last": state.seq,
                    });
                    outbox.push(Frame::control(gap), false);
                }
            }
            state.subscribers.insert(outbox.id, outbox.clone());
        }
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
        let (max_msgs, max_bytes) = match msg.topic {
            Topic::Customer(_) => (self.settings.customer_history_messages, self.settings.history_bytes),
            _ => (self.settings.history_messages, self.settings.history_bytes),
        };
        let coalesce = msg.topic.coalesces();
        let Some(state) = self.topics.get_mut(&msg.topic) else { return };
        state.seq += 1;
        let frame = Frame::data(&state.name, state.seq, now_ms(), &msg.data);
        state.history_bytes += frame.len();
        state.history.push_back(frame.clone());
        while state.history.len() > max_msgs || state.history_bytes > max_bytes {
            match state.history.pop_front() {
                Some(old) => state.history_bytes -= old.len(),
                None => break,
            }
        }
        let (mut dropped, mut coalesced) = (0u64, 0u64);
        for outbox in state.subscribers.values() {
            match outbox.push(frame.clone(), coalesce) {
                Pushed::Queued | Pushed::Closed => {}
                Pushed::Coalesced => coalesced += 1,
                // Slow disconnects are recorded by the connection as it closes.
                Pushed::Dropped | Pushed::Slow => dropped += 1,
            }
        }
        if dropped + coalesced > 0 {
            self.metrics.record(StreamEvent::FannedOut { dropped, coalesced });
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
        n
    }
}

impl Handler<TopicState> for Hub {
    type Result = Option<(u64, u64)>;
    fn handle(&mut self, msg: TopicState, _: &mut Context<Self>) -> Self::Result {
        self.topics.get(&msg.0).map(|s| (s.seq, s.oldest()))
    }
}
