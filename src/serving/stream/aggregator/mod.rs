//! The `Aggregator` actor: reads every update the session actors put on the
//! bus (never the database), keeps the rolling KPIs ([`rollup`]) and
//! publishes to the hub: the rollup on `kpis` every `kpis_interval`,
//! threshold crossings on `scores`, segment moves on `segments`, and watched
//! customers' views on `customer:{id}`: to the local hub (one process) or to
//! Redis ([`Publisher`], many replicas). It runs on the hub's arbiter thread,
//! away from the HTTP workers and the shards.

pub mod messages;
pub mod rollup;

use super::frames::{ScoreData, SegmentMessage};
use super::hub::messages::Publish;
use super::hub::Hub;
use super::protocol::{now_ms, Topic};
use super::relay::publisher::Publisher;
use super::telemetry::{StreamEvent, StreamMetrics};
use crate::telemetry::traces::Step;
use actix::{Actor, Addr, AsyncContext, Context, StreamHandler};
use actors::hooks::Update;
use actors::trace::TraceParent;
use messages::{bus_stream, tick_stream, BusItem, Tick};
use rollup::{Kpis, Rollup};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Where the aggregator's messages go.
#[allow(clippy::large_enum_variant)] // one per process
pub enum PublishTo {
    /// The local hub numbers and fans them out.
    Hub(Addr<Hub>),
    /// Redis numbers, keeps and fans them out to every gateway.
    Redis(Publisher),
    /// Like `Redis`, from a processor that owns only some partitions: its
    /// `kpis` are a share of the deployment's. Every such processor writes
    /// its [`rollup::KpiPart`] to `{prefix}:kpi-parts` each tick; the one
    /// owning partition 0 (the `leader`) adds up the fresh parts and
    /// publishes the deployment's rollup.
    RedisShare { publisher: Publisher, link: crate::redis_link::RedisLink, owner: String, leader: super::Leader },
}

/// Parts older than this many ticks belong to a processor that stopped.
const PART_FRESH_TICKS: u32 = 3;

pub struct Aggregator {
    to: PublishTo,
    rx: Option<broadcast::Receiver<Arc<Update>>>,
    rollup: Rollup,
    interval: Duration,
    /// The start of the rollup's first interval: the grid its ticks keep to.
    started: Instant,
    metrics: StreamMetrics,
    /// Fold spans of traced events waiting for the next `kpis` rollup, and
    /// when each reached the aggregator (bounded: the newest are kept).
    traced: Vec<(TraceParent, Step)>,
}

/// Traced events kept per rollup.
const MAX_TRACED_PER_TICK: usize = 64;

impl Aggregator {
    /// `rx` is subscribed by the caller before the actors start replaying the
    /// log, so nothing they announce is missed.
    pub fn new(
        to: PublishTo,
        rx: broadcast::Receiver<Arc<Update>>,
        interval: Duration,
        session_gap: Duration,
        conversion_window: Duration,
        metrics: StreamMetrics,
    ) -> Aggregator {
        let started = Instant::now();
        Aggregator {
            to,
            rx: Some(rx),
            rollup: Rollup::new(session_gap, conversion_window, started),
            interval,
            started,
            metrics,
            traced: Vec::new(),
        }
    }

    fn publish(&self, topic: Topic, data: String) {
        match &self.to {
            PublishTo::Hub(hub) => {
                if hub.try_send(Publish { topic: topic.clone(), data }).is_err() {
                    self.metrics.record(StreamEvent::PublishDropped { topic: &topic.name() });
                }
            }
            PublishTo::Redis(p) | PublishTo::RedisShare { publisher: p, .. } => p.publish(topic, data),
        }
    }

    /// Writes this processor's share; the leader also merges and publishes.
    fn share_kpis(&self, part: rollup::KpiPart, ctx: &mut Context<Self>) {
        let PublishTo::RedisShare { publisher, link, owner, leader } = &self.to else { return };
        let (publisher, link, owner, leader) = (publisher.clone(), link.clone(), owner.clone(), leader.now());
        let fresh_ms = (self.interval * PART_FRESH_TICKS).as_millis() as i64;
        let fut = async move {
            let key = link.key("kpi-parts");
            let now = now_ms();
            let Ok(json) = serde_json::to_string(&serde_json::json!({ "at_ms": now, "part": &part })) else { return };
            let mut c = match link.conn().await {
                Ok(c) => c,
                Err(e) => return tracing::debug!(error = %e, "kpi share: no Redis"),
            };
            let written: Result<(), _> = redis::cmd("HSET").arg(&key).arg(&owner).arg(json).query_async(&mut c).await;
            if let Err(e) = written {
                return tracing::debug!(error = %e, "kpi share: HSET failed");
            }
            if !leader {
                return;
            }
            let all: std::collections::HashMap<String, String> =
                match redis::cmd("HGETALL").arg(&key).query_async(&mut c).await {
                    Ok(a) => a,
                    Err(e) => return tracing::debug!(error = %e, "kpi share: HGETALL failed"),
                };
            drop(c);
            let mut parts = vec![part];
            for (who, json) in all {
                if who == owner {
                    continue;
                }
                #[derive(serde::Deserialize)]
                struct Stored {
                    at_ms: i64,
                    part: rollup::KpiPart,
                }
                match serde_json::from_str::<Stored>(&json) {
                    Ok(s) if now - s.at_ms <= fresh_ms => parts.push(s.part),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(owner = %who, error = %e, "kpi share: unreadable part; ignored"),
                }
            }
            match serde_json::to_string(&Kpis::merge(&parts)) {
                Ok(data) => publisher.publish(Topic::Kpis, data),
                Err(e) => tracing::error!(error = %e, "cannot encode the KPI rollup"),
            }
        };
        ctx.spawn(actix::fut::wrap_future(fut));
    }

    fn on_update(&mut self, u: &Update) {
        let now = Instant::now();
        match u {
            Update::Applied { customer, events, orders, revenue, acked_at_ms, open_session, segment, trace } => {
                if let Some(t) = trace {
                    if self.traced.len() == MAX_TRACED_PER_TICK {
                        self.traced.remove(0);
                    }
                    self.traced.push((*t, Step::start()));
                }
                // Restart-safe: a session restored from a snapshot is counted
                // from the customer's first update after the restart.
                if let Some(session) = open_session {
                    self.rollup.session_opened(customer, session, now);
                }
                if let Some(s) = segment {
                    self.rollup.segment_changed(customer, s.version, s.segment, &s.name);
                }
                self.rollup.applied(customer, *events, *orders, *revenue, acked_at_ms.is_some(), now);
                if let Some(acked) = acked_at_ms {
                    let seconds = (now_ms() - acked) as f64 / 1000.0;
                    self.rollup.latency(seconds);
                    self.metrics.record(StreamEvent::Latency { seconds });
                }
            }
            Update::SessionClosed { customer, session } => {
                self.rollup.session_closed(customer, &session.session_id, session.purchased, now)
            }
            Update::Scored { customer, session, score, crossed, final_score } => {
                self.rollup.scored(customer, session, score.probability, *final_score);
                if *crossed {
                    let data = ScoreData {
                        customer_id: customer,
                        session_id: session,
                        score: score.probability,
                        model_version: &score.model_version,
                        final_score: *final_score,
                    };
                    match serde_json::to_string(&data) {
                        Ok(data) => self.publish(Topic::Scores, data),
                        Err(e) => tracing::error!(error = %e, "cannot encode a score message"),
                    }
                }
            }
            Update::SegmentChanged { customer, version, from, to, name } => {
                self.rollup.segment_changed(customer, *version, *to, name);
                let data =
                    SegmentMessage::Changed { customer_id: customer, version: *version, from: *from, to: *to, name };
                match serde_json::to_string(&data) {
                    Ok(data) => self.publish(Topic::Segments, data),
                    Err(e) => tracing::error!(error = %e, "cannot encode a segment message"),
                }
            }
            // One encoding pass: the view's object with `"type":"view"` put first.
            Update::Customer { view, trace } => match serde_json::to_string(&**view) {
                Ok(json) if json.starts_with('{') && json.len() > 2 => {
                    let publishing = Step::start();
                    let data = match trace {
                        Some(t) => format!("{{\"type\":\"view\",\"trace_id\":\"{}\",{}", t.trace_id_hex(), &json[1..]),
                        None => format!("{{\"type\":\"view\",{}", &json[1..]),
                    };
                    self.publish(Topic::Customer(view.customer_id.clone()), data);
                    publishing.finish("stream.publish", trace.as_ref(), vec![("cartpulse.customer_view", 1)]);
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot encode a customer view"),
            },
        }
    }
}

impl Actor for Aggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(rx) = self.rx.take() {
            ctx.add_stream(bus_stream(rx));
        }
        ctx.add_stream(tick_stream(self.started, self.interval));
    }
}

impl StreamHandler<Tick> for Aggregator {
    fn handle(&mut self, tick: Tick, ctx: &mut Context<Self>) {
        let traced = std::mem::take(&mut self.traced);
        let trace_id = traced.last().map(|(t, _)| t.trace_id_hex());
        let publishing = Step::start();
        if matches!(self.to, PublishTo::RedisShare { .. }) {
            let part = rollup::KpiPart { trace_id, ..self.rollup.part(tick.at) };
            self.share_kpis(part, ctx);
        } else {
            let kpis = Kpis { trace_id, ..self.rollup.tick(tick.at) };
            match serde_json::to_string(&kpis) {
                Ok(data) => self.publish(Topic::Kpis, data),
                Err(e) => tracing::error!(error = %e, "cannot encode the KPI rollup"),
            }
        }
        trace_rollup(&traced, publishing);
    }
}

/// Records, per traced event of a rollup, `stream.aggregate` (from its
/// update reaching the aggregator to the rollup) and below it
/// `stream.publish` (the rollup handed to the hub or Redis).
fn trace_rollup(traced: &[(TraceParent, Step)], publishing: Step) {
    for (fold, received) in traced {
        let aggregate = crate::telemetry::traces::record(actors::trace::FinishedSpan {
            name: "stream.aggregate",
            parent: fold,
            start: received.time(),
            end: publishing.time(),
            attributes: vec![],
        });
        publishing.finish("stream.publish", Some(&aggregate), vec![("cartpulse.kpis", 1)]);
    }
}

impl StreamHandler<BusItem> for Aggregator {
    fn handle(&mut self, item: BusItem, _: &mut Context<Self>) {
        match item {
            BusItem::Update(u) => self.on_update(&u),
            BusItem::Lagged(n) => self.metrics.record(StreamEvent::Lagged { n }),
        }
    }

    /// The bus closes only when the application is going away.
    fn finished(&mut self, _: &mut Context<Self>) {
        tracing::debug!("update bus closed");
    }
}
