//! The HTTP producer used by `cartpulse replay` and `cartpulse bench`: sends
//! sessions to `POST /v1/events` the way the server contract asks of any
//! producer.
//!
//! - Batching ([`plan_batches`]): whole sessions are packed into batches of at
//!   most `batch_size` events; a session is split only when it alone is larger,
//!   and its parts then go strictly one after the other.
//! - Ordering ([`Scheduler`]): at most `concurrency` requests in flight, never
//!   two in-flight batches with a customer in common, and a batch is only sent
//!   once every earlier batch sharing a customer with it has been
//!   acknowledged, so no customer's events are ever reordered.
//! - Retries: a 503 (after its `Retry-After`), 429, any other 5xx and
//!   connection errors resend the same batch with exponential backoff. That is
//!   safe because a batch is atomic on the server and event ids de-duplicate.
//!   After `max_retry_time` without an acknowledgement the run fails.
//! - Pacing to `rate` events/s, acknowledgement latency in an HDR histogram,
//!   and the first 20 rejected events printed to stderr.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::event::{CustomerId, Event, EventId};
use anyhow::{anyhow, bail, Context};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::task::JoinSet;

use super::SessionEvents;

/// Most events the server takes in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;
/// Largest request body the server takes.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Rejected events printed before the rest are only counted.
pub const MAX_REJECTIONS_SHOWN: usize = 20;

/// One request's worth of events, already encoded.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The distinct customers of the batch, in order of first appearance.
    pub customers: Vec<CustomerId>,
    /// Event ids in body order, to name rejected events by their index.
    pub event_ids: Vec<EventId>,
    /// The JSON array sent as the request body.
    pub body: Bytes,
}

impl Batch {
    fn new(events: Vec<Event>) -> anyhow::Result<Self> {
        let body = serde_json::to_vec(&events).context("encoding a batch as JSON")?;
        if body.len() > MAX_BODY_BYTES {
            bail!(
                "a batch of {} events encodes to {} bytes, above the server's {MAX_BODY_BYTES}; use a smaller batch size",
                events.len(),
                body.len()
            );
        }
        let mut seen = HashSet::new();
        let customers = events.iter().filter(|e| seen.insert(&e.customer_id)).map(|e| e.customer_id.clone()).collect();
        Ok(Self { customers, event_ids: events.into_iter().map(|e| e.event_id).collect(), body: Bytes::from(body) })
    }

    pub fn len(&self) -> usize {
        self.event_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }
}

/// Packs sessions, in order, into batches of at most `batch_size` events
/// (clamped to 1..=[`MAX_EVENTS_PER_REQUEST`]). A session never straddles two
/// batches unless it alone exceeds `batch_size`; it then fills consecutive
/// batches of its own.
pub fn plan_batches(
    sessions: impl IntoIterator<Item = SessionEvents>,
    batch_size: usize,
) -> anyhow::Result<Vec<Batch>> {
    let batch_size = batch_size.clamp(1, MAX_EVENTS_PER_REQUEST);
    let mut batches = Vec::new();
    let mut current: Vec<Event> = Vec::with_capacity(batch_size);
    for session in sessions {
        let events = session.events;
        if events.is_empty() {
            continue;
        }
        if current.len() + events.len() > batch_size && !current.is_empty() {
            batches.push(Batch::new(std::mem::take(&mut current))?);
        }
        if events.len() > batch_size {
            let mut rest = events.into_iter().peekable();
            while rest.peek().is_some() {
                batches.push(Batch::new(rest.by_ref().take(batch_size).collect())?);
            }
        } else {
            current.extend(events);
        }
    }
    if !current.is_empty() {
        batches.push(Batch::new(current)?);
    }
    Ok(batches)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchState {
    Pending,
    InFlight,
    Done,
}

/// Decides which batch may go next; pure bookkeeping, no I/O.
///
/// A batch is ready when none of its customers is in an in-flight batch or in
/// an earlier batch still pending. The second rule is what keeps each
/// customer's batches in plan order while unrelated batches overtake a
/// blocked one.
#[derive(Debug)]
pub struct Scheduler {
    /// Customers of each batch, interned to small integers.
    customers: Vec<Vec<u32>>,
    state: Vec<BatchState>,
    busy: HashSet<u32>,
    /// Every batch before this index is in flight or done.
    first_pending: usize,
    in_flight: usize,
    done: usize,
}

/// How many pending batches [`Scheduler::next_ready`] looks at; bounds the
/// cost of a call when the head of the queue is blocked.
const LOOKAHEAD: usize = 256;

impl Scheduler {
    pub fn new(batches: &[Batch]) -> Self {
        let mut ids: HashMap<&CustomerId, u32> = HashMap::new();
        let customers = batches
            .iter()
            .map(|b| {
                b.customers
                    .iter()
                    .map(|c| {
                        let next = ids.len() as u32;
                        *ids.entry(c).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        Self {
            customers,
            state: vec![BatchState::Pending; batches.len()],
            busy: HashSet::new(),
            first_pending: 0,
            in_flight: 0,
            done: 0,
        }
    }

    /// The next batch that may be sent now, marked in flight; `None` when
    /// every remaining batch must wait for an acknowledgement (or none is left).
    pub fn next_ready(&mut self) -> Option<usize> {
        let mut blocked: HashSet<u32> = HashSet::new();
        let mut looked = 0;
        for i in self.first_pending..self.state.len() {
            if self.state[i] != BatchState::Pending {
                continue;
            }
            looked += 1;
            if looked > LOOKAHEAD {
                break;
            }
            let cs = &self.customers[i];
            if cs.iter().any(|c| self.busy.contains(c) || blocked.contains(c)) {
                blocked.extend(cs.iter().copied());
                continue;
            }
            self.busy.extend(cs.iter().copied());
            self.state[i] = BatchState::InFlight;
            self.in_flight += 1;
            while self.first_pending < self.state.len() && self.state[self.first_pending] != BatchState::Pending {
                self.first_pending += 1;
            }
            return Some(i);
        }
        None
    }

    /// Records the acknowledgement of batch `i` (which must be in flight).
    pub fn complete(&mut self, i: usize) {
        if self.state.get(i) != Some(&BatchState::InFlight) {
            return;
        }
        self.state[i] = BatchState::Done;
        self.in_flight -= 1;
        self.done += 1;
        for c in &self.customers[i] {
            self.busy.remove(c);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// All batches acknowledged.
    pub fn is_finished(&self) -> bool {
        self.done == self.state.len()
    }
}

/// How to send.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Base URL of the server; `v1/events` is resolved against it.
    pub target: url::Url,
    pub api_key: SecretString,
    /// Most requests in flight (at least 1).
    pub concurrency: usize,
    /// Pace to about this many events per second (batches go whole, so the
    /// pace is smooth only when batches are small against the rate).
    pub rate: Option<u32>,
    /// Give up on a batch not acknowledged after this long (retries included).
    pub max_retry_time: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Advanced by the number of events of each acknowledged batch.
    pub progress: Option<ProgressBar>,
}

impl SenderConfig {
    /// Defaults: 4 in flight, no pacing, 120 s retry budget, 60 s per request.
    pub fn new(target: url::Url, api_key: SecretString) -> Self {
        Self {
            target,
            api_key,
            concurrency: 4,
            rate: None,
            max_retry_time: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            progress: None,
        }
    }
}

/// What one [`Sender::send`] achieved.
#[derive(Clone, Debug)]
pub struct SendReport {
    pub batches: u64,
    pub events_sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Retries over all batches.
    pub retries: u64,
    /// Microseconds from a batch's first attempt to its acknowledgement, so
    /// waiting out a 503 counts: that is what a producer experiences.
    pub ack_latency_us: Histogram<u64>,
}

impl SendReport {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            batches: 0,
            events_sent: 0,
            accepted: 0,
            duplicates: 0,
            rejected: 0,
            retries: 0,
            ack_latency_us: latency_histogram()?,
        })
    }

    /// Adds another report's counts and latencies to this one.
    pub fn merge(&mut self, other: &SendReport) -> anyhow::Result<()> {
        self.batches += other.batches;
        self.events_sent += other.events_sent;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.rejected += other.rejected;
        self.retries += other.retries;
        self.ack_latency_us.add(&other.ack_latency_us).map_err(|e| anyhow!("merging latency histograms: {e}"))
    }

    /// Latency quantile (0..=1) in milliseconds; 0 without samples.
    pub fn ack_ms(&self, quantile: f64) -> f64 {
        if self.ack_latency_us.is_empty() {
            return 0.0;
        }
        self.ack_latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn ack_max_ms(&self) -> f64 {
        self.ack_latency_us.max() as f64 / 1000.0
    }
}

/// 1 µs to 1 h at 3 significant digits.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("latency histogram: {e}"))
}

/// A configured HTTP producer; cheap to clone, and clones share the cap on
/// printed rejections.
#[derive(Clone, Debug)]
pub struct Sender {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    endpoint: url::Url,
    config: SenderConfig,
    rejections_shown: AtomicUsize,
}

impl Sender {
    pub fn new(config: SenderConfig) -> anyhow::Result<Self> {
        if config.target.scheme() != "http" {
            bail!("target {} is not http://: this build's HTTP client speaks plain HTTP only", config.target);
        }
        let endpoint = resolve(&config.target, "v1/events")?;
        let client =
            reqwest::Client::builder().timeout(config.request_timeout).build().context("building the HTTP client")?;
        Ok(Self { inner: Arc::new(Inner { client, endpoint, config, rejections_shown: AtomicUsize::new(0) }) })
    }

    /// Sends every batch and returns the summed acknowledgements. Stops at the
    /// first batch that fails for good (a refused key or request, or the retry
    /// budget exhausted); requests still in flight are then abandoned.
    pub async fn send(&self, batches: Vec<Batch>) -> anyhow::Result<SendReport> {
        let cfg = &self.inner.config;
        let concurrency = cfg.concurrency.max(1);
        let mut scheduler = Scheduler::new(&batches);
        let batches: Vec<Arc<Batch>> = batches.into_iter().map(Arc::new).collect();
        let mut report = SendReport::new()?;
        let mut tasks: JoinSet<(usize, Result<Acked, SendError>)> = JoinSet::new();
        let started = tokio::time::Instant::now();
        let mut dispatched_events: u64 = 0;

        loop {
            while scheduler.in_flight() < concurrency {
                let Some(i) = scheduler.next_ready() else {
                    break;
                };
                if let Some(rate) = cfg.rate.filter(|r| *r > 0) {
                    let due = started + Duration::from_secs_f64(dispatched_events as f64 / f64::from(rate));
                    tokio::time::sleep_until(due).await;
                }
                dispatched_events += batches[i].len() as u64;
                let inner = Arc::clone(&self.inner);
                let batch = Arc::clone(&batches[i]);
                tasks.spawn(async move { (i, inner.send_with_retries(&batch).await) });
            }
            let Some(joined) = tasks.join_next().await else {
                if scheduler.is_finished() {
                    break;
                }
                bail!("internal error: batches left but none can be sent");
            };
            let (i, outcome) = joined.context("a send task panicked")?;
            let acked = outcome.map_err(|e| {
                anyhow!(
                    "batch {} of {} ({} events, first {}): {e}",
                    i + 1,
                    batches.len(),
                    batches[i].len(),
                    batches[i].event_ids.first().map(|id| id.as_str()).unwrap_or("-")
                )
            })?;
            scheduler.complete(i);
            self.inner.report_rejections(&batches[i], &acked.ack.rejected);
            report.batches += 1;
            report.events_sent += batches[i].len() as u64;
            report.accepted += acked.ack.accepted;
            report.duplicates += acked.ack.duplicates;
            report.rejected += acked.ack.rejected.len() as u64;
            report.retries += acked.retries;
            report.ack_latency_us.saturating_record(acked.latency.as_micros().try_into().unwrap_or(u64::MAX));
            if let Some(pb) = &cfg.progress {
                pb.inc(batches[i].len() as u64);
            }
        }
        Ok(report)
    }
}

/// `base` joined with a relative `path`, keeping any path prefix of `base`
/// (`http://h/prefix` + `v1/events` = `http://h/prefix/v1/events`).
pub fn resolve(base: &url::Url, path: &str) -> anyhow::Result<url::Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path).with_context(|| format!("cannot resolve {path} against {base}"))
}

/// The server's reply to an ingest request (200, and 422 when all rejected).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Ack {
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub rejected: Vec<Rejection>,
}

/// One rejected event: its index in the batch, the field and why.
#[derive(Clone, Debug, Deserialize)]
pub struct Rejection {
    pub index: usize,
    #[serde(default)]
    pub field: Option<String>,
    pub reason: String,
}

struct Acked {
    ack: Ack,
    latency: Duration,
    retries: u64,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("connection error: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("server unavailable ({status}): {message}")]
    Unavailable { status: StatusCode, retry_after: Option<Duration>, message: String },
    #[error("{0}")]
    Fatal(String),
}

impl SendError {
    fn is_retryable(&self) -> bool {
        !matches!(self, SendError::Fatal(_))
    }
}

impl Inner {
    async fn send_with_retries(&self, batch: &Batch) -> Result<Acked, SendError> {
        let first_attempt = Instant::now();
        let budget = self.config.max_retry_time;
        let mut attempts: u64 = 0;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times();
        let result = (|| {
            attempts += 1;
            self.send_once(batch)
        })
        .retry(backoff)
        .when(SendError::is_retryable)
        .adjust(|err, backoff_delay| {
            let left = budget.checked_sub(first_attempt.elapsed())?;
            let delay = match err {
                // Up to a quarter more than asked, so that producers told the
                // same Retry-After do not all come back in the same instant.
                SendError::Unavailable { retry_after: Some(d), .. } => d.mul_f64(1.0 + 0.25 * rand::random::<f64>()),
                _ => backoff_delay?,
            };
            // Never sleep past the budget; the final attempt still gets made.
            Some(delay.min(left))
        })
        .await;
        match result {
            Ok(ack) => Ok(Acked { ack, latency: first_attempt.elapsed(), retries: attempts.saturating_sub(1) }),
            Err(e) if e.is_retryable() => Err(SendError::Fatal(format!(
                "gave up after {:.0} s and {attempts} attempts; last error: {e}",
                first_attempt.elapsed().as_secs_f64()
            ))),
            Err(e) => Err(e),
        }
    }

    async fn send_once(&self, batch: &Batch) -> Result<Ack, SendError> {
        let response = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(self.config.api_key.expose_secret())
            .header(CONTENT_TYPE, "application/json")
            .body(batch.body.clone())
            .send()
            .await
            .map_err(SendError::Transport)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(SendError::Transport)?;
        match status {
            StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY => serde_json::from_slice::<Ack>(&body).map_err(|e| {
                SendError::Fatal(format!("server replied {status} with an unexpected body ({e}): {}", snippet(&body)))
            }),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                Err(SendError::Unavailable { status, retry_after, message: error_message(&body) })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(SendError::Fatal(format!(
                "the server refused the API key ({status}): {}; it needs a key with ingest scope",
                error_message(&body)
            ))),
            s if s.is_server_error() => {
                Err(SendError::Unavailable { status, retry_after, message: error_message(&body) })
            }
            StatusCode::PAYLOAD_TOO_LARGE => Err(SendError::Fatal(format!(
                "the server refused the request as too large ({status}): {}; use a smaller batch size",
                error_message(&body)
            ))),
            _ => Err(SendError::Fatal(format!("the server refused the request ({status}): {}", error_message(&body)))),
        }
    }

    fn report_rejections(&self, batch: &Batch, rejected: &[Rejection]) {
        for r in rejected {
            let n = self.rejections_shown.fetch_add(1, Ordering::Relaxed);
            if n >= MAX_REJECTIONS_SHOWN {
                if n == MAX_REJECTIONS_SHOWN {
                    self.print("rejected: further rejected events are counted but not shown");
                }
                return;
            }
            let id = batch.event_ids.get(r.index).map(|id| id.as_str()).unwrap_or("?");
            let field = r.field.as_deref().filter(|f| !f.is_empty()).unwrap_or("-");
            self.print(&format!("rejected: #{} → {id}: field {field}: {}", r.index, r.reason));
        }
    }

    /// Prints to stderr without tearing the progress bar.
    fn print(&self, line: &str) {
        match &self.config.progress {
            Some(pb) => pb.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// `Retry-After` in seconds (the only form the server sends).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let s = headers.get(RETRY_AFTER)?.to_str().ok()?;
    s.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The `error` of a `{"error": …}` body, or the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => snippet(body),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    if s.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::event::{EventKind, SessionId};
    use chrono::{TimeDelta, Utc};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn session(customer: &str, session: &str, n: usize) -> SessionEvents {
        let t0 = Utc::now();
        let customer = CustomerId::new_unchecked(customer);
        let session = SessionId::new_unchecked(session);
        let events = (0..n)
            .map(|k| Event {
                event_id: EventId::new_unchecked(format!("{session}-{k}")),
                customer_id: customer.clone(),
                session_id: Some(session.clone()),
                time: t0 + TimeDelta::seconds(k as i64),
                kind: EventKind::SessionEnd,
            })
            .collect();
        SessionEvents { customer, session, events }
    }

    fn ids(b: &Batch) -> Vec<&str> {
        b.event_ids.iter().map(|i| i.as_str()).collect()
    }

    #[test]
    fn sessions_are_packed_whole_and_big_ones_split_in_order() {
        let sessions = vec![
            session("a", "s1", 3),
            session("b", "s2", 4),
            session("c", "s3", 12), // larger than a batch
            session("d", "s4", 2),
            session("e", "s5", 0),
            session("a", "s6", 5),
        ];
        let batches = plan_batches(sessions, 5).unwrap();
        let got: Vec<Vec<&str>> = batches.iter().map(ids).collect();
        assert_eq!(
            got,
            vec![
                vec!["s1-0", "s1-1", "s1-2"],
                vec!["s2-0", "s2-1", "s2-2", "s2-3"],
                vec!["s3-0", "s3-1", "s3-2", "s3-3", "s3-4"],
                vec!["s3-5", "s3-6", "s3-7", "s3-8", "s3-9"],
                vec!["s3-10", "s3-11"],
                vec!["s4-0", "s4-1"],
                vec!["s6-0", "s6-1", "s6-2", "s6-3", "s6-4"],
            ]
        );
        assert_eq!(batches[0].customers, vec![CustomerId::new_unchecked("a")]);
        let body: Vec<serde_json::Value> = serde_json::from_slice(&batches[5].body).unwrap();
        assert_eq!(body.len(), 2);
        assert_eq!(body[0]["event_id"], "s4-0");
        assert_eq!(body[0]["type"], "session_end");
    }

    #[test]
    fn small_sessions_share_batches() {
        let sessions = vec![session("a", "s1", 2), session("b", "s2", 2), session("c", "s3", 2)];
        let batches = plan_batches(sessions, 4).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].customers.len(), 2);
    }

    /// Drives the scheduler with acknowledgements in random order and checks
    /// the two promises: no customer in two in-flight batches, and each
    /// customer's batches sent in plan order, each after the previous was
    /// acknowledged.
    #[test]
    fn scheduler_never_overlaps_or_reorders_a_customer() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let sessions: Vec<SessionEvents> = (0..400)
                .map(|s| {
                    let c = rng.random_range(0..30);
                    let n = rng.random_range(1..12);
                    session(&format!("c{c}"), &format!("s{s}"), n)
                })
                .collect();
            let batches = plan_batches(sessions, 16).unwrap();
            let mut sched = Scheduler::new(&batches);
            let concurrency = 1 + (seed as usize % 6);
            let mut in_flight: Vec<usize> = Vec::new();
            let mut last_sent: HashMap<&CustomerId, usize> = HashMap::new();
            let mut acked: HashSet<usize> = HashSet::new();
            let mut order = Vec::new();
            let mut max_in_flight = 0;
            loop {
                while in_flight.len() < concurrency {
                    let Some(i) = sched.next_ready() else { break };
                    for c in &batches[i].customers {
                        for &j in &in_flight {
                            assert!(!batches[j].customers.contains(c), "customer {c} in batches {i} and {j}");
                        }
                        if let Some(&prev) = last_sent.get(c) {
                            assert!(prev < i, "customer {c}: batch {i} after {prev}");
                            assert!(acked.contains(&prev), "customer {c}: batch {i} before {prev} was acked");
                        }
                        last_sent.insert(c, i);
                    }
                    // Every earlier batch of these customers was already sent.
                    for j in 0..i {
                        if batches[j].customers.iter().any(|c| batches[i].customers.contains(c)) {
                            assert!(acked.contains(&j), "batch {i} overtook batch {j}");
                        }
                    }
                    in_flight.push(i);
                    order.push(i);
                    max_in_flight = max_in_flight.max(in_flight.len());
                }
                if in_flight.is_empty() {
                    break;
                }
                let k = rng.random_range(0..in_flight.len());
                let i = in_flight.swap_remove(k);
                sched.complete(i);
                acked.insert(i);
            }
            assert!(sched.is_finished(), "seed {seed}: every batch sent");
            assert_eq!(order.len(), batches.len());
            if concurrency > 1 {
                assert!(max_in_flight > 1, "seed {seed}: the scheduler never sent in parallel");
            }
        }
    }

    #[test]
    fn unrelated_batches_overtake_a_blocked_one() {
        let sessions = vec![session("a", "s1", 4), session("a", "s2", 4), session("b", "s3", 4)];
        let batches = plan_batches(sessions, 4).unwrap();
        let mut sched = Scheduler::new(&batches);
        assert_eq!(sched.next_ready(), Some(0));
        // Batch 1 is customer a again: it waits, batch 2 (customer b) goes.
        assert_eq!(sched.next_ready(), Some(2));
        assert_eq!(sched.next_ready(), None);
        sched.complete(0);
        assert_eq!(sched.next_ready(), Some(1));
        sched.complete(1);
        sched.complete(2);
        assert!(sched.is_finished());
    }

    #[test]
    fn endpoint_keeps_a_path_prefix() {
        let u = url::Url::parse("http://h:1/prefix").unwrap();
        assert_eq!(resolve(&u, "v1/events").unwrap().as_str(), "http://h:1/prefix/v1/events");
        let u = url::Url::parse("http://h:1").unwrap();
        assert_eq!(resolve(&u, "v1/events").unwrap().as_str(), "http://h:1/v1/events");
    }

    #[test]
    fn retry_after_and_error_bodies() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        assert_eq!(error_message(br#"{"error":"bad json"}"#), "bad json");
        assert_eq!(error_message(b""), "(empty body)");
    }

    /// A one-connection-per-request HTTP server answering with `replies` in
    /// turn; records each request's head and body.
    async fn mock(
        replies: Vec<(u16, &'static str, &'static str)>,
    ) -> (url::Url, Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            for (status, extra_header, body) in replies {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                log.lock().unwrap().push((head, buf[head_end..].to_vec()));
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_header}\r\n{body}",
                    body.len()
                );
                sock.write_all(response.as_bytes()).await.unwrap();
                sock.shutdown().await.ok();
            }
        });
        (url::Url::parse(&format!("http://{addr}")).unwrap(), seen)
    }

    fn sender(target: url::Url, budget: Duration) -> Sender {
        let mut cfg = SenderConfig::new(target, SecretString::from("k-123"));
        cfg.max_retry_time = budget;
        Sender::new(cfg).unwrap()
    }

    #[tokio::test]
    async fn resends_after_503_and_sums_the_ack() {
        let (url, seen) = mock(vec![
            (503, "Retry-After: 0\r\n", r#"{"error":"busy"}"#),
            (500, "", "oops"),
            (
                200,
                "",
                r#"{"accepted":1,"duplicates":1,"rejected":[{"index":2,"field":"time","reason":"too far ahead"}]}"#,
            ),
        ])
        .await;
        let batches = plan_batches(vec![session("a", "s1", 3)], 10).unwrap();
        let report = sender(url, Duration::from_secs(30)).send(batches).await.unwrap();
        assert_eq!((report.accepted, report.duplicates, report.rejected), (1, 1, 1));
        assert_eq!((report.batches, report.events_sent, report.retries), (1, 3, 2));
        assert_eq!(report.ack_latency_us.len(), 1);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen[0].0.starts_with("POST /v1/events "), "{}", seen[0].0);
        assert!(seen[0].0.to_ascii_lowercase().contains("authorization: bearer k-123"));
        assert!(seen.iter().all(|(_, body)| body == &seen[0].1), "the same batch is resent");
    }

    #[tokio::test]
    async fn refused_key_is_fatal_and_clear() {
        let (url, seen) = mock(vec![(401, "", r#"{"error":"unknown key"}"#)]).await;
        let batches = plan_batches(vec![session("a", "s1", 1)], 10).unwrap();
        let err = sender(url, Duration::from_secs(30)).send(batches).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("API key") && msg.contains("unknown key"), "{msg}");
        assert_eq!(seen.lock().unwrap().len(), 1, "no retry on 401");
    }

    #[tokio::test]
    async fn unreachable_server_gives_up_after_the_budget() {
        // Bind then drop: nothing listens on the port afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let batches = plan_batches(vec![session("a", "s1", 1)], 10).unwrap();
        let t = Instant::now();
        let err = sender(url, Duration::from_millis(600)).send(batches).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("gave up") && msg.contains("connection error"), "{msg}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
