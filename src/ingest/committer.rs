//! The group committer: one task that turns many requests' events into a few
//! transactions on the event log. While one transaction commits, the next
//! requests queue; they then commit together, so the cost of a commit (an
//! fsync on SQLite, a round trip on Postgres) is shared by everyone waiting.
//! A request is answered only after its transaction committed, and its new
//! events are handed to the session actors before the answer goes out, so a
//! read that follows an acknowledgement sees the acknowledged events.

use crate::telemetry::{IngestEvent, Metrics};
use actors::event::{Event, LoggedEvent};
use actors::runtime::Runtime;
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// An event ready for the log: validated, with its canonical JSON.
pub struct Prepared {
    pub event: Event,
    pub body: String,
}

/// What happened to one request's events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub accepted: usize,
    pub duplicates: usize,
}

/// Why events were not acknowledged. Nothing of the request was committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("ingest is over capacity; retry shortly")]
    Overloaded,
    #[error("the database is unavailable")]
    Database(String),
    #[error("the service is shutting down")]
    Stopped,
}

struct Job {
    events: Vec<Prepared>,
    reply: oneshot::Sender<Result<Outcome, CommitError>>,
}

/// Limits of the committer.
#[derive(Clone, Copy, Debug)]
pub struct CommitterSettings {
    pub max_events: usize,
    pub max_wait: Duration,
    pub queue_max_events: usize,
}

/// Handle used by request handlers.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
    queued: Arc<AtomicUsize>,
    settings: CommitterSettings,
    runtime: Runtime,
}

/// Rows per INSERT statement (its JSON parameter stays a few MB).
const ROWS_PER_STATEMENT: usize = 10_000;

impl Committer {
    /// Starts the commit loop on the current runtime.
    pub fn start(
        db: DatabaseConnection,
        runtime: Runtime,
        metrics: Metrics,
        settings: CommitterSettings,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(db, runtime.clone(), metrics, settings, rx, queued.clone()));
        (Committer { tx, queued, settings, runtime }, task)
    }

    /// Commits the events; answers once they are durable (or not at all).
    pub async fn submit(&self, events: Vec<Prepared>) -> Result<Outcome, CommitError> {
        let n = events.len();
        // Back-pressure: both the commit queue and the actors' backlog count.
        let backlog = self.queued.load(Ordering::Relaxed) + self.runtime.inflight();
        if backlog + n > self.settings.queue_max_events && backlog > 0 {
            return Err(CommitError::Overloaded);
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Job { events, reply }).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(CommitError::Stopped);
        }
        rx.await.unwrap_or(Err(CommitError::Stopped))
    }
}

async fn run(
    db: DatabaseConnection,
    runtime: Runtime,
    metrics: Metrics,
    settings: CommitterSettings,
    mut rx: mpsc::UnboundedReceiver<Job>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(first) = rx.recv().await {
        let mut n = first.events.len();
        let mut jobs = vec![first];
        let deadline = Instant::now() + settings.max_wait;
        loop {
            while n < settings.max_events {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.events.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            if n >= settings.max_events || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        queued.fetch_sub(n, Ordering::Relaxed);
        metrics.queue_events.set(queued.load(Ordering::Relaxed) as i64);
        commit_group(&db, &runtime, &metrics, jobs).await;
    }
}

async fn commit_group(db: &DatabaseConnection, runtime: &Runtime, metrics: &Metrics, jobs: Vec<Job>) {
    let started = Instant::now();
    // First occurrence of each id in the group is the one that may be new.
    let mut first: HashMap<&str, (usize, usize)> = HashMap::new();
    for (j, job) in jobs.iter().enumerate() {
        for (i, p) in job.events.iter().enumerate() {
            first.entry(p.event.event_id.as_str()).or_insert((j, i));
        }
    }
    let mut unique: Vec<(usize, usize)> = first.values().copied().collect();
    unique.sort_unstable();
    drop(first);

    match write(db, &jobs, &unique).await {
        Ok(seqs) => {
            let total: usize = jobs.iter().map(|j| j.events.len()).sum();
            let mut logged = Vec::with_capacity(seqs.len());
            let mut outcomes = Vec::with_capacity(jobs.len());
            let mut replies = Vec::with_capacity(jobs.len());
            for (j, job) in jobs.into_iter().enumerate() {
                let mut o = Outcome::default();
                for (i, p) in job.events.into_iter().enumerate() {
                    match seqs.get(&(j, i)) {
                        Some(seq) => {
                            o.accepted += 1;
                            logged.push(LoggedEvent { seq: *seq, event: p.event });
                        }
                        None => o.duplicates += 1,
                    }
                }
                outcomes.push(o);
                replies.push(job.reply);
            }
            let accepted = logged.len();
            metrics.record(IngestEvent::Committed {
                events: total,
                accepted,
                duplicates: total - accepted,
                seconds: started.elapsed().as_secs_f64(),
            });
            logged.sort_by_key(|l| l.seq);
            runtime.deliver(logged);
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        Err(e) => {
            let error = e.to_string();
            metrics.record(IngestEvent::CommitFailed { error: error.clone(), requests: jobs.len() });
            for job in jobs {
                let _ = job.reply.send(Err(CommitError::Database(error.clone())));
            }
        }
    }
}

/// Inserts the group's distinct events in one transaction; returns the log
/// position of every event that was new, keyed by (job, index).
///
/// The rows travel as one JSON parameter that the database expands itself
/// (`json_each` on SQLite, `json_to_recordset` on Postgres): binding seven
/// values per event costs far more than the insert.
async fn write(db: &DatabaseConnection, jobs: &[Job], unique: &[(usize, usize)]) -> Result<HashMap<(usize, usize), i64>, DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let txn = db.begin().await?;
    let mut seq_of: HashMap<(usize, usize), i64> = HashMap::with_capacity(unique.len());
    let mut by_id: HashMap<&str, (usize, usize)> = HashMap::with_capacity(unique.len());
    for &(j, i) in unique {
        by_id.insert(jobs[j].events[i].event.event_id.as_str(), (j, i));
    }
    let events_sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) \
             SELECT x.e, x.c, x.s, x.t, x.ts, $2, x.b::text \
             FROM json_to_recordset($1::json) AS x(e text, c text, s text, t text, ts timestamptz, b json) \
             ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id"
        }
        _ => {
            // `WHERE true` resolves SQLite's parsing ambiguity of INSERT … SELECT … ON CONFLICT.
            "INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) \
             SELECT j.value->>'e', j.value->>'c', j.value->>'s', j.value->>'t', j.value->>'ts', ?2, \
                    CAST(substr(?3, j.value->>'o', j.value->>'l') AS TEXT) \
             FROM json_each(?1) AS j WHERE true \
             ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id"
        }
    };
    let received: sea_orm::Value = if backend == DbBackend::Postgres { now.into() } else { now.to_rfc3339().into() };
    let sqlite = backend != DbBackend::Postgres;
    for chunk in unique.chunks(ROWS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(chunk.len() * if sqlite { 160 } else { 512 });
        // On SQLite the bodies travel in one blob, sliced by offset: handing
        // json_each a row object with the body inside makes it re-render every
        // body as text, which cost more than the insert itself.
        let mut bodies: Vec<u8> = Vec::new();
        rows.push(b'[');
        for (k, &(j, i)) in chunk.iter().enumerate() {
            let p = &jobs[j].events[i];
            let e = &p.event;
            if k > 0 {
                rows.push(b',');
            }
            rows.extend_from_slice(b"{\"e\":");
            json_str(&mut rows, e.event_id.as_str());
            rows.extend_from_slice(b",\"c\":");
            json_str(&mut rows, e.customer_id.as_str());
            rows.extend_from_slice(b",\"s\":");
            match &e.session_id {
                Some(s) => json_str(&mut rows, s.as_str()),
                None => rows.extend_from_slice(b"null"),
            }
            rows.extend_from_slice(b",\"t\":");
            json_str(&mut rows, e.kind.name());
            rows.extend_from_slice(b",\"ts\":");
            json_str(&mut rows, &e.time.to_rfc3339());
            if sqlite {
                let _ = write!(rows, ",\"o\":{},\"l\":{}}}", bodies.len() + 1, p.body.len());
                bodies.extend_from_slice(p.body.as_bytes());
            } else {
                // The body is already JSON; it is embedded as is.
                rows.extend_from_slice(b",\"b\":");
                rows.extend_from_slice(p.body.as_bytes());
                rows.push(b'}');
            }
        }
        rows.push(b']');
        let rows = String::from_utf8(rows).map_err(|e| DbErr::Custom(e.to_string()))?;
        let stmt = if sqlite {
            Statement::from_sql_and_values(backend, events_sql, [rows.into(), received.clone(), bodies.into()])
        } else {
            Statement::from_sql_and_values(backend, events_sql, [rows.into(), received.clone()])
        };
        for row in txn.query_all(stmt).await? {
            let seq: i64 = row.try_get("", "seq")?;
            let id: String = row.try_get("", "event_id")?;
            if let Some(pos) = by_id.get(id.as_str()) {
                seq_of.insert(*pos, seq);
            }
        }
    }
    // Register new sessions so they can be found by id before their actor's
    // first snapshot.
    let mut seen = HashSet::new();
    let sessions: Vec<(&str, &str)> = seq_of
        .keys()
        .filter_map(|&(j, i)| {
            let e = &jobs[j].events[i].event;
            e.session_id.as_ref().map(|s| (s.as_str(), e.customer_id.as_str()))
        })
        .filter(|(s, _)| seen.insert(*s))
        .collect();
    if !sessions.is_empty() {
        let sql = match backend {
            DbBackend::Postgres => {
                "INSERT INTO sessions (session_id, customer_id, status, n_events, purchased, updated_at) \
                 SELECT x.s, x.c, 'open', 0, false, $2 FROM json_to_recordset($1::json) AS x(s text, c text) \
                 ON CONFLICT (session_id) DO NOTHING"
            }
            _ => {
                "INSERT INTO sessions (session_id, customer_id, status, n_events, purchased, updated_at) \
                 SELECT j.value->>'s', j.value->>'c', 'open', 0, false, ?2 FROM json_each(?1) AS j WHERE true \
                 ON CONFLICT (session_id) DO NOTHING"
            }
        };
        let mut rows = Vec::with_capacity(sessions.len() * 64);
        rows.push(b'[');
        for (k, (s, c)) in sessions.iter().enumerate() {
            if k > 0 {
                rows.push(b',');
            }
            rows.extend_from_slice(b"{\"s\":");
            json_str(&mut rows, s);
            rows.extend_from_slice(b",\"c\":");
            json_str(&mut rows, c);
            rows.push(b'}');
        }
        rows.push(b']');
        let rows = String::from_utf8(rows).map_err(|e| DbErr::Custom(e.to_string()))?;
        txn.execute(Statement::from_sql_and_values(backend, sql, [rows.into(), received])).await?;
    }
    txn.commit().await?;
    Ok(seq_of)
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
