//! One dedicated subscriber connection per use (topic fan-out on gateways,
//! watch announcements on processors): a RESP3 multiplexed connection whose
//! pushes carry the sharded messages. It holds exactly the channels asked
//! for (each once, however many clients want it), re-subscribes them after a
//! reconnection (backoff 100 ms → 5 s, logged once per outage, counted in
//! `cartpulse_stream_redis_reconnects_total`), and notices a dead link by a
//! PING every few seconds.
//!
//! On a Redis Cluster the connection is the crate's cluster connection: each
//! SSUBSCRIBE goes to the node owning the channel's slot (one channel per
//! command, as a pipeline cannot span slots).

use super::{backoff, Outage};
use crate::redis_link::{Dedicated, DedicatedOptions, LinkError, RedisLink};
use crate::serving::stream::telemetry::{StreamEvent, StreamMetrics};
use redis::{PushInfo, PushKind, Value};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the subscriber reports.
pub enum SubEvent {
    /// Connected and every held channel subscribed; `reconnect` after an outage
    /// (whatever was published meanwhile is only in the histories).
    Connected { reconnect: bool },
    /// A message on a channel.
    Message { channel: Vec<u8>, payload: Vec<u8> },
}

enum SubCmd {
    Subscribe(String, Option<oneshot::Sender<()>>),
    Unsubscribe(String),
}

/// Handle of a subscriber task; dropping every handle ends it.
#[derive(Clone)]
pub struct Subscriber {
    tx: mpsc::UnboundedSender<SubCmd>,
}

impl Subscriber {
    /// Starts the task on the current runtime. `on_event` runs on that task
    /// and must not block.
    pub fn start(
        link: RedisLink,
        conn: &'static str,
        metrics: StreamMetrics,
        on_event: impl FnMut(SubEvent) + Send + 'static,
    ) -> Subscriber {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(link, conn, metrics, rx, on_event));
        Subscriber { tx }
    }

    /// Holds `channel`; `ready` fires once the server confirmed it (or at once
    /// if it already was), and is dropped if Redis is unreachable.
    pub fn subscribe(&self, channel: String, ready: Option<oneshot::Sender<()>>) {
        let _ = self.tx.send(SubCmd::Subscribe(channel, ready));
    }

    pub fn unsubscribe(&self, channel: String) {
        let _ = self.tx.send(SubCmd::Unsubscribe(channel));
    }
}

const PING_EVERY: Duration = Duration::from_secs(3);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

async fn run(
    link: RedisLink,
    name: &'static str,
    metrics: StreamMetrics,
    mut cmds: mpsc::UnboundedReceiver<SubCmd>,
    mut on_event: impl FnMut(SubEvent) + Send + 'static,
) {
    let mut held: HashSet<String> = HashSet::new();
    let mut outage = Outage::default();
    let mut delays = backoff();
    let mut connected_once = false;
    loop {
        // Commands that came while disconnected only change what is held.
        loop {
            match cmds.try_recv() {
                Ok(SubCmd::Subscribe(c, _)) => {
                    held.insert(c);
                }
                Ok(SubCmd::Unsubscribe(c)) => {
                    held.remove(&c);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        let lost = match connect(&link, &held).await {
            Ok((conn, pushes)) => {
                if let Some(down_for) = outage.up() {
                    metrics.record(StreamEvent::RedisUp { conn: name, down_for, reconnect: connected_once });
                }
                delays = backoff();
                on_event(SubEvent::Connected { reconnect: connected_once });
                connected_once = true;
                match serve(conn, pushes, &mut cmds, &mut held, &mut on_event).await {
                    Some(why) => why,
                    None => return,
                }
            }
            Err(e) => e.to_string(),
        };
        if outage.down() {
            metrics.record(StreamEvent::RedisDown { conn: name, error: &lost });
        }
        let wait = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5)));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                c = cmds.recv() => match c {
                    Some(SubCmd::Subscribe(c, _)) => { held.insert(c); }
                    Some(SubCmd::Unsubscribe(c)) => { held.remove(&c); }
                    None => return,
                },
            }
        }
    }
}

type Pushes = mpsc::UnboundedReceiver<PushInfo>;

async fn connect(link: &RedisLink, held: &HashSet<String>) -> Result<(Dedicated, Pushes), LinkError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = DedicatedOptions { response_timeout: Some(COMMAND_TIMEOUT), pushes: Some(tx), no_retries: false };
    let connecting = tokio::time::timeout(COMMAND_TIMEOUT, link.dedicated(opts));
    let mut conn = connecting.await.map_err(|_| LinkError::TimedOut("connecting the subscriber"))??;
    if held.is_empty() {
        return Ok((conn, rx));
    }
    if link.is_cluster() {
        for c in held {
            conn.ssubscribe(c).await?;
        }
    } else {
        // One channel per command: each is confirmed by one push.
        let mut pipe = redis::pipe();
        for c in held {
            pipe.cmd("SSUBSCRIBE").arg(c).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok((conn, rx))
}

/// Serves one connection; `Some(why)` when it was lost, `None` when every
/// handle is gone.
async fn serve(
    mut conn: Dedicated,
    mut pushes: Pushes,
    cmds: &mut mpsc::UnboundedReceiver<SubCmd>,
    held: &mut HashSet<String>,
    on_event: &mut (impl FnMut(SubEvent) + Send),
) -> Option<String> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            p = pushes.recv() => match p {
                None => return Some("subscriber connection closed".into()),
                Some(PushInfo { kind: PushKind::SMessage, data }) | Some(PushInfo { kind: PushKind::Message, data }) => {
                    let mut it = data.into_iter();
                    if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) = (it.next(), it.next()) {
                        on_event(SubEvent::Message { channel, payload });
                    }
                }
                Some(PushInfo { kind: PushKind::Disconnection, .. }) => return Some("disconnected".into()),
                // Unsubscribed by the server (e.g. a slot moved in a cluster):
                // reconnect, which subscribes everything held again.
                Some(PushInfo { kind: PushKind::SUnsubscribe, data }) => {
                    let channel = match data.first() { Some(Value::BulkString(c)) => String::from_utf8_lossy(c).into_owned(), _ => String::new() };
                    if held.contains(&channel) {
                        return Some(format!("server unsubscribed {channel}"));
                    }
                }
                Some(_) => {}
            },
            c = cmds.recv() => match c {
                None => return None,
                Some(SubCmd::Subscribe(c, ready)) => {
                    if held.insert(c.clone()) {
                        if let Err(e) = conn.ssubscribe(&c).await {
                            return Some(e.to_string());
                        }
                    }
                    if let Some(r) = ready {
                        let _ = r.send(());
                    }
                }
                Some(SubCmd::Unsubscribe(c)) => {
                    if held.remove(&c) {
                        if let Err(e) = conn.sunsubscribe(&c).await {
                            return Some(e.to_string());
                        }
                    }
                }
            },
            _ = ping.tick() => {
                if let Err(e) = redis::cmd("PING").query_async::<()>(&mut conn).await {
                    return Some(e.to_string());
                }
            }
        }
    }
}
