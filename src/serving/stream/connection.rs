//! One WebSocket client: a task on the HTTP worker that accepted it. It
//! authenticates the client (already done from the upgrade's header or token,
//! or from its first message), turns its messages into hub subscriptions,
//! pings it, and writes its outbox to the socket.
//!
//! The task never waits on the client: frames go to the socket only when the
//! session's channel has room (`poll_ready` inside the select), so a stalled
//! socket leaves the task free to read, ping, notice it is idle or slow, and
//! close it. Close codes are in [`close`].

use super::credentials::{Admitted, Credentials};
use super::frames::Control;
use super::hub::messages::{Join, Leave, Subscribe, Unsubscribe};
use super::outbox::{Closing, Outbox};
use super::protocol::{close, parse_client, ClientError, ClientMsg, Frame, Topic};
use super::telemetry::StreamEvent;
use super::Stream;
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use futures::{FutureExt, Sink, StreamExt};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the client is (or is to be) authenticated.
pub enum Auth {
    /// From the upgrade request (`header` or `query`).
    Done { how: &'static str, admitted: Admitted, credentials: Arc<Credentials> },
    /// The upgrade carried a token that is invalid or expired: close with 4001
    /// (browsers cannot read the status of a refused upgrade, but they can
    /// read a close code).
    Refused { how: &'static str, reason: String },
    /// No credentials: the first message must be `auth`, within the timeout.
    Pending(Arc<Credentials>, super::UnauthenticatedSlot),
}

/// Frames written per wake-up at most, so one busy client cannot monopolise
/// its worker thread.
const BATCH: usize = 64;

/// Counts the live connection for metrics and for shutdown.
struct Live<'a> {
    stream: &'a Stream,
    code: Option<u16>,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.stream.metrics.record(StreamEvent::Disconnected { code: self.code });
        self.stream.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn reason(code: u16, text: &str) -> CloseReason {
    CloseReason { code: CloseCode::Other(code), description: Some(text.to_owned()) }
}

/// Runs the connection to its end.
pub async fn run(stream: Stream, mut session: Session, mut msgs: MessageStream, auth: Auth) {
    let (how, admitted, credentials) = match auth {
        Auth::Done { how, admitted, credentials } => (how, admitted, credentials),
        Auth::Refused { how, reason: why } => {
            stream.metrics.record(StreamEvent::AuthRefused { how, reason: &why });
            let _ = tokio::time::timeout(Duration::from_secs(2), session.close(Some(reason(close::AUTH, &why)))).await;
            return;
        }
        // Boxed: the task keeps its future for the connection's whole life,
        // and the credential check (a database lookup) is large and done
        // once; inline it would cost every connection a few KiB.
        Auth::Pending(credentials, slot) => {
            let admitted = Box::pin(authenticate_first_message(&stream, &mut session, &mut msgs, &credentials)).await;
            drop(slot);
            match admitted {
                Some(admitted) => ("message", admitted, credentials),
                None => return,
            }
        }
    };
    let recheck = Recheck { credentials, admitted };
    stream.live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stream.metrics.record(StreamEvent::Connected { how });
    let mut live = Live { stream: &stream, code: None };
    let outbox = Outbox::new(stream.next_connection_id(), stream.limits());
    stream.hub.do_send(Join { outbox: outbox.clone() });
    if how == "message" {
        outbox.push(Frame::control(Control::Authenticated), false);
    }
    let mut topics: HashSet<Topic> = HashSet::new();
    let code = serve(&stream, &mut session, &mut msgs, &outbox, &mut topics, &recheck).await;
    stream.hub.do_send(Leave { conn: outbox.id, topics: topics.into_iter().collect() });
    outbox.mark_gone();
    live.code = code.map(|(c, _)| c);
    if let Some((c, why)) = code {
        // A slow client gets its close frame only once it reads what is
        // already buffered; give it a while, then let go.
        let floor = Duration::from_secs(2);
        let grace = if c == close::SLOW { stream.settings.slow_after_ms.max(floor) } else { floor };
        let _ = tokio::time::timeout(grace, session.close(Some(reason(c, why)))).await;
    }
}

/// Waits for `{"type":"auth","token":…}` as the first message.
async fn authenticate_first_message(
    stream: &Stream,
    session: &mut Session,
    msgs: &mut MessageStream,
    credentials: &Credentials,
) -> Option<Admitted> {
    let deadline = tokio::time::sleep(stream.settings.auth_timeout_ms);
    tokio::pin!(deadline);
    let refusal = loop {
        tokio::select! {
            _ = &mut deadline => break "no auth message within the timeout".to_owned(),
            m = msgs.next() => match m {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Ping(p))) => { let _ = session.pong(&p).await; }
                Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(r))) => { let _ = session.clone().close(r).await; return None; }
                Some(Ok(Message::Text(t))) => match parse_client(&t) {
                    Ok(ClientMsg::Auth { token }) => match credentials.admit(&token).await {
                        Ok(admitted) => return Some(admitted),
                        Err(why) => break why.to_string(),
                    },
                    _ => break "the first message must be {\"type\":\"auth\",\"token\":…}".to_owned(),
                },
                Some(Ok(_)) => break "the first message must be {\"type\":\"auth\",\"token\":…}".to_owned(),
            }
        }
    };
    stream.metrics.record(StreamEvent::AuthRefused { how: "message", reason: &refusal });
    let _ =
        tokio::time::timeout(Duration::from_secs(2), session.clone().close(Some(reason(close::AUTH, &refusal)))).await;
    None
}

/// What the connection re-checks while it lives.
struct Recheck {
    credentials: Arc<Credentials>,
    admitted: Admitted,
}

impl Recheck {
    /// When to check first: after the interval, or when the token expires if
    /// that comes sooner.
    fn first_at(&self, every: Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let by_token = self.admitted.token_expires_at.map(|exp| {
            let left = (exp - chrono::Utc::now().timestamp()).max(0) as u64;
            now + Duration::from_secs(left)
        });
        by_token.map_or(now + every, |t| t.min(now + every))
    }
}

/// The main loop; returns the close code to send (none when the client
/// closed or vanished).
async fn serve(
    stream: &Stream,
    session: &mut Session,
    msgs: &mut MessageStream,
    outbox: &Arc<Outbox>,
    topics: &mut HashSet<Topic>,
    recheck: &Recheck,
) -> Option<(u16, &'static str)> {
    let settings = &stream.settings;
    let recheck_every = settings.recheck_ms.max(Duration::from_millis(100));
    let recheck_at = tokio::time::sleep_until(recheck.first_at(recheck_every));
    tokio::pin!(recheck_at);
    let idle_timeout = settings.idle_timeout_ms;
    let every = settings.heartbeat_interval_ms.max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut batch: Vec<Frame> = Vec::new();
    let mut next = 0usize;
    loop {
        match outbox.closing() {
            Some(Closing::Slow) => {
                stream.metrics.record(StreamEvent::SlowDisconnect);
                return Some((close::SLOW, "slow consumer: stayed behind the queue limit"));
            }
            Some(Closing::ShuttingDown) => return Some((close::GOING_AWAY, "server shutting down")),
            None => {}
        }
        if next >= batch.len() {
            batch.clear();
            next = 0;
            outbox.pop_batch(BATCH, &mut batch);
        }
        let pending = next < batch.len();
        tokio::select! {
            m = msgs.next() => {
                last_seen = Instant::now();
                match m {
                    None => return None,
                    Some(Err(actix_ws::ProtocolError::Overflow)) => return Some((close::TOO_BIG, "frame too large")),
                    Some(Err(_)) => return Some((1002, "protocol error")),
                    Some(Ok(Message::Close(_))) => return Some((1000, "bye")),
                    Some(Ok(Message::Ping(p))) => try_send(session, Message::Pong(p)),
                    Some(Ok(Message::Pong(_))) => {}
                    // Boxed: rare, and its hub round trip would otherwise
                    // enlarge every connection's future.
                    Some(Ok(Message::Text(t))) => Box::pin(on_text(stream, outbox, topics, &t)).await,
                    Some(Ok(_)) => reply_error(stream, outbox, &ClientError::BadMessage("send JSON text frames".into())),
                }
            }
            ready = futures::future::poll_fn(|cx| Pin::new(&mut *session).poll_ready(cx)), if pending => {
                if ready.is_err() {
                    return None;
                }
                let mut sent = 0u64;
                // The first slot is reserved; take whatever else is free now.
                loop {
                    let frame = std::mem::replace(&mut batch[next].text, bytestring::ByteString::new());
                    next += 1;
                    if Pin::new(&mut *session).start_send(Message::Text(frame)).is_err() {
                        return None;
                    }
                    sent += 1;
                    if next >= batch.len() {
                        break;
                    }
                    match futures::future::poll_fn(|cx| Pin::new(&mut *session).poll_ready(cx)).now_or_never() {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return None,
                        None => break,
                    }
                }
                stream.metrics.record(StreamEvent::Sent { n: sent });
            }
            // Also while a frame waits for the socket: a close (slow, shutdown)
            // must not wait for the client to read.
            _ = outbox.notified() => {}
            _ = &mut recheck_at => {
                // Boxed: rare, and a database round trip.
                if !Box::pin(recheck.credentials.still_valid(&recheck.admitted.principal)).await {
                    stream.metrics.record(StreamEvent::AuthRefused { how: "recheck", reason: "revoked or logged out" });
                    return Some((close::AUTH, "credentials revoked or console session ended"));
                }
                recheck_at.as_mut().reset(tokio::time::Instant::now() + recheck_every);
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= idle_timeout {
                    return Some((close::IDLE, "idle: no pong or message within the heartbeat timeout"));
                }
                if outbox.check_slow() {
                    continue;
                }
                try_send(session, Message::Ping(actix_web::web::Bytes::new()));
            }
        }
    }
}

/// Sends a control frame if the session has room now; a client too far
/// behind for that is handled by the slow/idle rules instead.
fn try_send(session: &mut Session, msg: Message) {
    if let Some(Ok(())) = futures::future::poll_fn(|cx| Pin::new(&mut *session).poll_ready(cx)).now_or_never() {
        let _ = Pin::new(&mut *session).start_send(msg);
    }
}

fn reply_error(stream: &Stream, outbox: &Outbox, e: &ClientError) {
    stream.metrics.record(StreamEvent::ClientError { code: e.code().as_str() });
    outbox.push(Frame::error(e.code(), &e.to_string()), false);
}

async fn on_text(stream: &Stream, outbox: &Arc<Outbox>, topics: &mut HashSet<Topic>, text: &str) {
    let msg = match parse_client(text) {
        Ok(m) => m,
        Err(e) => return reply_error(stream, outbox, &e),
    };
    match msg {
        ClientMsg::Ping => {
            outbox.push(Frame::control(Control::Pong), false);
        }
        ClientMsg::Auth { .. } => reply_error(stream, outbox, &ClientError::AlreadyAuthenticated),
        ClientMsg::Subscribe { topics: wanted, since } => {
            let max = stream.settings.max_topics_per_connection;
            let new = wanted.iter().filter(|t| !topics.contains(t)).collect::<HashSet<_>>().len();
            if topics.len() + new > max {
                return reply_error(stream, outbox, &ClientError::TooManyTopics(max));
            }
            topics.extend(wanted.iter().cloned());
            // Awaited, so a client cannot queue subscriptions without bound.
            let _ = stream.hub.send(Subscribe { outbox: outbox.clone(), topics: wanted, since }).await;
        }
        ClientMsg::Unsubscribe { topics: gone } => {
            for t in &gone {
                topics.remove(t);
            }
            let names: Vec<String> = gone.iter().map(Topic::name).collect();
            let _ = stream.hub.send(Unsubscribe { conn: outbox.id, topics: gone }).await;
            outbox.push(Frame::control(Control::Unsubscribed { topics: names }), false);
        }
    }
}

#[cfg(test)]
mod tests {
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection holds its task's future for its whole life: rare,
    /// large steps (the credential check, subscriptions) stay boxed.
    #[test]
    fn the_connection_future_stays_small() {
        let size = future_size(super::run);
        assert!(size <= 2048, "connection future is {size} bytes");
    }
}
