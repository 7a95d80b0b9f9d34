//! The group committer: one task that turns many requests' events into a few
//! transactions on the event log. While one transaction commits, the next
//! requests queue; they then commit together, so the cost of a commit (an
//! fsync on SQLite, a round trip on Postgres) is shared by everyone waiting.
//! A request is answered only after its transaction committed, and its new
//! events are handed to the session actors before the answer goes out, so a
//! read that follows an acknowledgement sees the acknowledged events.
//!
//! On Postgres two groups overlap ([`pipeline_depth`]): the next group opens
//! its transaction, checks its fences and encodes its rows while the previous
//! one inserts and commits. It inserts only once the previous insert is done,
//! so log positions follow group order, and commits only once the previous
//! group committed and handed its events to the actors, so the log becomes
//! visible, and the actors see it, in log order. SQLite has one writer: there
//! a group commits before the next begins.

use crate::telemetry::traces::Step;
use crate::telemetry::{IngestEvent, Metrics};
use actors::event::{Event, LoggedEvent};
use actors::runtime::Runtime;
use actors::trace::TraceParent;
use actors::WriteGate;
use chrono::DateTime;
use chrono::Utc;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// An event ready for the log: validated, with the JSON of its payload (the
/// ids and the time are columns of their own, so they are not repeated).
#[derive(Clone)]
pub struct Prepared {
    pub event: Event,
    pub body: String,
    /// When the event was acknowledged, if earlier than its commit (a
    /// gateway acknowledges once Redis holds it); the commit time otherwise.
    pub acked_at_ms: Option<i64>,
    /// The sampled trace it belongs to: its commit is recorded there.
    pub trace: Option<TraceParent>,
}

impl Prepared {
    /// The event with its payload encoded for the log.
    pub fn new(event: Event, acked_at_ms: Option<i64>) -> Result<Prepared, serde_json::Error> {
        let body = serde_json::to_string(&event.kind)?;
        Ok(Prepared { event, body, acked_at_ms, trace: None })
    }
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
    #[error("the event queue is unavailable")]
    Queue(#[source] crate::redis_link::LinkError),
    /// An event could not be encoded for storage (a bug, not bad input:
    /// input was validated at the edge).
    #[error("an event could not be encoded")]
    Encoding(#[source] serde_json::Error),
    /// Redis holds the entries but fewer replicas than required confirmed
    /// them in time: not acknowledged (a resend is de-duplicated).
    #[error("the event queue's replicas did not confirm in time")]
    NotReplicated { wanted: u32, got: u32 },
    /// Another processor took these partitions over (their fencing token
    /// moved on): nothing of the request was committed.
    #[error("partitions {0:?} belong to another processor now")]
    Fenced(Vec<usize>),
}

struct Job {
    events: Vec<Prepared>,
    /// Partitions (with the fencing tokens held for them) that must still be
    /// this process's when the events commit; empty without leases.
    fences: Vec<super::fences::Fence>,
    /// On failure the events come back, so a caller can retry without a copy.
    reply: oneshot::Sender<Result<Outcome, (CommitError, Vec<Prepared>)>>,
    /// When it was queued (the start of its traced `ingest.group_commit`).
    queued: Step,
}

/// Limits of the committer.
#[derive(Clone, Copy, Debug)]
pub struct CommitterSettings {
    pub max_events: usize,
    pub max_wait: Duration,
    pub queue_max_events: usize,
    /// SQLite: events stamped more than this before their commit may be
    /// resends of events retention deleted, so their group is checked
    /// against `retired_event_ids` (`crate::retention::retired_check_span`).
    /// `None` when retention is off. (Postgres checks every id against
    /// `event_ids`.)
    pub retired_check: Option<chrono::TimeDelta>,
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
        gate: WriteGate,
        runtime: Runtime,
        metrics: Metrics,
        settings: CommitterSettings,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(db, gate, runtime.clone(), metrics, settings, rx, queued.clone()));
        (Committer { tx, queued, settings, runtime }, task)
    }

    /// Commits the events; answers once they are durable (or not at all).
    pub async fn submit(&self, events: Vec<Prepared>) -> Result<Outcome, CommitError> {
        self.submit_or_return(events).await.map_err(|(e, _)| e)
    }

    /// [`Committer::submit`], handing the events back when they were not
    /// committed (empty if the committer went away with them).
    pub async fn submit_or_return(&self, events: Vec<Prepared>) -> Result<Outcome, (CommitError, Vec<Prepared>)> {
        self.submit_fenced(events, Vec::new()).await
    }

    /// [`Committer::submit_or_return`] for events of leased partitions: the
    /// commit happens only if every fence still holds (checked in the
    /// commit's transaction), else [`CommitError::Fenced`].
    pub async fn submit_fenced(
        &self,
        events: Vec<Prepared>,
        fences: Vec<super::fences::Fence>,
    ) -> Result<Outcome, (CommitError, Vec<Prepared>)> {
        let n = events.len();
        // Back-pressure: both the commit queue and the actors' backlog count.
        let backlog = self.queued.load(Ordering::Relaxed) + self.runtime.inflight();
        if backlog + n > self.settings.queue_max_events && backlog > 0 {
            return Err((CommitError::Overloaded, events));
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { events, fences, reply, queued: Step::start() }) {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err((CommitError::Stopped, job.events));
        }
        rx.await.unwrap_or(Err((CommitError::Stopped, Vec::new())))
    }
}

async fn run(
    db: DatabaseConnection,
    gate: WriteGate,
    runtime: Runtime,
    metrics: Metrics,
    settings: CommitterSettings,
    mut rx: mpsc::UnboundedReceiver<Job>,
    queued: Arc<AtomicUsize>,
) {
    let depth = pipeline_depth(db.get_database_backend());
    let mut inflight = tokio::task::JoinSet::new();
    let mut previous: Option<Turn> = None;
    while let Some(first) = rx.recv().await {
        // The group takes everything that queued while the pipeline was full.
        while inflight.len() >= depth {
            inflight.join_next().await;
        }
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
        let (order, turn) = Order::after(previous.take());
        previous = Some(turn);
        let (db, gate, runtime, metrics) = (db.clone(), gate.clone(), runtime.clone(), metrics.clone());
        let retired_check = settings.retired_check;
        inflight.spawn(async move { commit_group(&db, &gate, &runtime, &metrics, retired_check, jobs, order).await });
    }
    // Drained: every group in flight commits (or fails) and is answered.
    while inflight.join_next().await.is_some() {}
}

/// Groups in flight at once: two on Postgres (see the module doc), one on
/// SQLite, whose single writer would only make the second group wait for
/// the first one's lock.
fn pipeline_depth(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Postgres => 2,
        _ => 1,
    }
}

/// What a group waits for from the group before it, and what it tells the
/// group after it. A step the previous group never reaches (it failed) counts
/// as done when its sender drops, and a group passes a step on only after
/// the previous group passed it, so the order holds along the whole chain.
struct Order {
    previous_inserted: Option<oneshot::Receiver<()>>,
    previous_done: Option<oneshot::Receiver<()>>,
    inserted: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Sender<()>>,
}

/// The receiving ends of one group's [`Order`], for the next group.
struct Turn {
    inserted: oneshot::Receiver<()>,
    done: oneshot::Receiver<()>,
}

impl Order {
    fn after(previous: Option<Turn>) -> (Order, Turn) {
        let (inserted, inserted_rx) = oneshot::channel();
        let (done, done_rx) = oneshot::channel();
        let (previous_inserted, previous_done) = match previous {
            Some(t) => (Some(t.inserted), Some(t.done)),
            None => (None, None),
        };
        (
            Order { previous_inserted, previous_done, inserted: Some(inserted), done: Some(done) },
            Turn { inserted: inserted_rx, done: done_rx },
        )
    }

    /// Waits until the previous group's rows are in (or it gave up).
    async fn insert_turn(&mut self) {
        if let Some(rx) = self.previous_inserted.take() {
            let _ = rx.await;
        }
    }

    /// This group's rows are in: the next group may insert.
    async fn inserted(&mut self) {
        self.insert_turn().await;
        if let Some(tx) = self.inserted.take() {
            let _ = tx.send(());
        }
    }

    /// Waits until the previous group committed and handed its events on.
    async fn commit_turn(&mut self) {
        if let Some(rx) = self.previous_done.take() {
            let _ = rx.await;
        }
    }

    /// This group is finished, committed or not: the next group may commit.
    async fn done(&mut self) {
        self.inserted().await;
        self.commit_turn().await;
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

async fn commit_group(
    db: &DatabaseConnection,
    gate: &WriteGate,
    runtime: &Runtime,
    metrics: &Metrics,
    retired_check: Option<chrono::TimeDelta>,
    jobs: Vec<Job>,
    mut order: Order,
) {
    let started = Instant::now();
    let turn = gate.enter().await;
    let written = write(db, &jobs, retired_check, &mut order).await;
    drop(turn);
    match written {
        Ok((seqs, fenced)) => {
            // Jobs whose partitions moved on: refused whole, nothing of theirs written.
            let mut kept = Vec::with_capacity(jobs.len());
            for job in jobs {
                let stale: Vec<usize> =
                    job.fences.iter().filter(|(p, _)| fenced.contains(p)).map(|(p, _)| *p).collect();
                if stale.is_empty() {
                    kept.push(job);
                } else {
                    let _ = job.reply.send(Err((CommitError::Fenced(stale), job.events)));
                }
            }
            let jobs = kept;
            let total: usize = jobs.iter().map(|j| j.events.len()).sum();
            let mut logged = Vec::with_capacity(seqs.len());
            let mut outcomes = Vec::with_capacity(jobs.len());
            let mut replies = Vec::with_capacity(jobs.len());
            let acked_at_ms = chrono::Utc::now().timestamp_millis();
            let group = (total as i64, jobs.len() as i64);
            for (j, job) in jobs.into_iter().enumerate() {
                let mut o = Outcome::default();
                let traces = trace_commit(&job, group);
                for (i, p) in job.events.into_iter().enumerate() {
                    match seqs.get(j).and_then(|s| s[i]) {
                        Some(seq) => {
                            o.accepted += 1;
                            let trace = p.trace.and_then(|t| traces.iter().find(|(p, _)| *p == t).map(|(_, c)| *c));
                            logged.push(LoggedEvent {
                                seq,
                                event: p.event,
                                acked_at_ms: p.acked_at_ms.unwrap_or(acked_at_ms),
                                trace,
                            });
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
            order.done().await;
            for (reply, o) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(o));
            }
        }
        Err(e) => {
            order.done().await;
            let error = e.to_string();
            metrics.record(IngestEvent::CommitFailed { error: error.clone(), requests: jobs.len() });
            for job in jobs {
                let _ = job.reply.send(Err((CommitError::Database(error.clone()), job.events)));
            }
        }
    }
}

/// Records a committed job's `ingest.group_commit` span (queued → durable)
/// once per trace among its events; returns each trace's commit span.
fn trace_commit(job: &Job, (group_events, group_requests): (i64, i64)) -> Vec<(TraceParent, TraceParent)> {
    let parents = actors::trace::distinct(job.events.iter().filter_map(|p| p.trace.as_ref()));
    parents
        .into_iter()
        .filter_map(|parent| {
            let commit = job.queued.finish(
                "ingest.group_commit",
                Some(&parent),
                vec![
                    ("cartpulse.events", job.events.len() as i64),
                    ("cartpulse.group_events", group_events),
                    ("cartpulse.group_requests", group_requests),
                ],
            )?;
            Some((parent, commit))
        })
        .collect()
}

/// Inserts the group's distinct events in one transaction; returns the log
/// position of every event that was new, per job and event index, and the
/// partitions whose fence no longer holds (those jobs wrote nothing; the
/// returned positions are of the remaining jobs only, in order).
async fn write(
    db: &DatabaseConnection,
    jobs: &[Job],
    retired_check: Option<chrono::TimeDelta>,
    order: &mut Order,
) -> Result<(Vec<Vec<Option<i64>>>, Vec<usize>), DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let txn = db.begin().await?;
    let fences: Vec<super::fences::Fence> = jobs.iter().flat_map(|j| j.fences.iter().copied()).collect();
    let fenced = super::fences::stale(&txn, &fences).await?;
    // First occurrence of each id among the jobs that may write is the one that may be new.
    let jobs: Vec<&Job> = jobs.iter().filter(|j| !j.fences.iter().any(|(p, _)| fenced.contains(p))).collect();
    let total: usize = jobs.iter().map(|j| j.events.len()).sum();
    let mut first: HashMap<&str, (usize, usize)> = HashMap::with_capacity(total);
    for (j, job) in jobs.iter().enumerate() {
        for (i, p) in job.events.iter().enumerate() {
            first.entry(p.event.event_id.as_str()).or_insert((j, i));
        }
    }
    let mut unique: Vec<(usize, usize)> = first.values().copied().collect();
    unique.sort_unstable();
    let rows: Vec<&Prepared> = unique.iter().map(|&(j, i)| &jobs[j].events[i]).collect();
    // Encoded before the group's turn to insert, which waits for the group before.
    let insert = match backend {
        // Postgres checks every id against `event_ids` in the insert itself.
        DbBackend::Postgres => Insert::Postgres(postgres_statements(&rows, now)?),
        // Live events are far younger than anything retention deleted, so
        // only a group holding old ones (history replayed, a late resend)
        // pays for the check against `retired_event_ids`.
        _ => {
            Insert::Sqlite { retired: retired_check.is_some_and(|span| rows.iter().any(|p| p.event.time < now - span)) }
        }
    };
    order.insert_turn().await;
    let inserted = match insert {
        Insert::Postgres(statements) => insert_events_postgres(&txn, statements).await,
        Insert::Sqlite { retired } => insert_events_sqlite(&txn, &rows, now, retired).await,
    };
    order.inserted().await;
    let inserted = inserted?;

    // `first` names the occurrence each returned id was inserted as.
    let mut seqs: Vec<Vec<Option<i64>>> = jobs.iter().map(|j| vec![None; j.events.len()]).collect();
    for (seq, id) in inserted {
        if let Some(&(j, i)) = first.get(id.as_str()) {
            seqs[j][i] = Some(seq);
        }
    }
    order.commit_turn().await;
    txn.commit().await?;
    Ok((seqs, fenced))
}

/// A group's insert, ready before its turn comes.
enum Insert {
    Postgres(Vec<Statement>),
    Sqlite { retired: bool },
}

/// SQLite: prepared multi-row `INSERT … VALUES` statements of 256, 128, …, 1
/// rows (so at most nine distinct statements, all cached). Binding is cheap
/// in SQLite; its JSON functions, by contrast, cost more than the insert.
/// Statements of up to 1,024 rows (fewer round trips to the connection's
/// worker thread) were measured slower in 7 of 9 alternating pairs of
/// `bench ingest`, so the size stays at 256.
async fn insert_events_sqlite(
    txn: &DatabaseTransaction,
    rows: &[&Prepared],
    now: DateTime<Utc>,
    retired: bool,
) -> Result<Vec<(i64, String)>, DbErr> {
    let received = now.to_rfc3339();
    let mut out = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        let n = SQLITE_CHUNKS.iter().copied().find(|c| *c <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(n * 7);
        for p in chunk {
            let e = &p.event;
            values.push(e.event_id.as_str().into());
            values.push(e.customer_id.as_str().into());
            values.push(e.session_id.as_ref().map(|s| s.as_str().to_owned()).into());
            values.push(e.kind.name().into());
            values.push(e.time.to_rfc3339().into());
            values.push(received.as_str().into());
            values.push(p.body.as_str().into());
        }
        let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, sqlite_insert_sql(n, retired), values);
        for row in txn.query_all(stmt).await? {
            out.push((row.try_get("", "seq")?, row.try_get("", "event_id")?));
        }
    }
    Ok(out)
}

const SQLITE_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// One multi-row insert of `n` events. With `retired`, events whose ids
/// retention retired are left out in the same statement (one statement is
/// one write transaction step, so a retention batch cannot slip between
/// the check and the insert).
fn sqlite_insert_sql(n: usize, retired: bool) -> String {
    let mut sql = String::with_capacity(300 + n * 24);
    sql.push_str("INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) ");
    sql.push_str(if retired { "SELECT * FROM (VALUES " } else { "VALUES " });
    for k in 0..n {
        if k > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?)");
    }
    if retired {
        sql.push_str(") AS v WHERE NOT EXISTS (SELECT 1 FROM retired_event_ids r WHERE r.event_id = v.column1)");
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id");
    sql
}

/// Separates the values of one column in a Postgres parameter. No value can
/// hold it: ids are printable ASCII, type names and RFC 3339 times are
/// fixed alphabets, and JSON text escapes every control character.
const FIELD_SEP: char = '\u{1f}';

/// Postgres: each column travels as one text parameter, its values joined by
/// [`FIELD_SEP`] and split again by `string_to_array`, then zipped by
/// `unnest`: one round trip for the whole group, and no JSON for Postgres to
/// lex (a `json_to_recordset` parameter was lexed three times: the cast to
/// `json`, the recordset, and each body's own `json` column). Rows are
/// inserted in the group's order (`ORDER BY` the ordinality), so the log
/// positions follow it. An absent session is the empty string (a session
/// id is never empty), turned back into NULL. Encoded before the group's
/// turn to insert comes ([`insert_events_postgres`]).
fn postgres_statements(rows: &[&Prepared], now: DateTime<Utc>) -> Result<Vec<Statement>, DbErr> {
    // `events` is partitioned by day and cannot be unique by id alone:
    // `event_ids` is. An event goes into the log only if its id went into
    // `event_ids` in the same statement; ids stay there longer than the
    // events (retention.dedup_days), so every resend is caught there,
    // including one of an event retention deleted. The ids are unnested
    // twice rather than the whole group once into a CTE: materialising the
    // bodies for two readers and sort-merging on the ids made the statement
    // about 12 % slower than a hash semi-join on the new ids alone
    // (docs/benchmarks.md, "Where the time goes").
    const SQL: &str = "WITH fresh AS (INSERT INTO event_ids (event_id, received_at) \
                   SELECT e, $7 FROM unnest(string_to_array($1, E'\\x1f')) AS e \
                   ON CONFLICT DO NOTHING RETURNING event_id) \
         INSERT INTO events (event_id, customer_id, session_id, event_type, event_time, received_at, body) \
         SELECT x.e, x.c, NULLIF(x.s, ''), x.t, x.ts::timestamptz, $7, x.b \
         FROM unnest(string_to_array($1, E'\\x1f'), string_to_array($2, E'\\x1f'), \
                     string_to_array($3, E'\\x1f'), string_to_array($4, E'\\x1f'), string_to_array($5, E'\\x1f'), \
                     string_to_array($6, E'\\x1f')) WITH ORDINALITY AS x(e, c, s, t, ts, b, n) \
         WHERE x.e IN (SELECT event_id FROM fresh) \
         ORDER BY x.n \
         RETURNING seq, event_id";
    let mut statements = Vec::with_capacity(rows.len().div_ceil(ROWS_PER_STATEMENT));
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let body_bytes: usize = chunk.iter().map(|p| p.body.len() + 1).sum();
        let mut cols: [String; 6] = [
            String::with_capacity(chunk.len() * 40),
            String::with_capacity(chunk.len() * 40),
            String::with_capacity(chunk.len() * 40),
            String::with_capacity(chunk.len() * 12),
            String::with_capacity(chunk.len() * 36),
            String::with_capacity(body_bytes),
        ];
        for (k, p) in chunk.iter().enumerate() {
            let e = &p.event;
            if k > 0 {
                for c in cols.iter_mut() {
                    c.push(FIELD_SEP);
                }
            }
            cols[0].push_str(e.event_id.as_str());
            cols[1].push_str(e.customer_id.as_str());
            if let Some(s) = &e.session_id {
                cols[2].push_str(s.as_str());
            }
            cols[3].push_str(e.kind.name());
            cols[4].push_str(&e.time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            cols[5].push_str(&p.body);
        }
        // Checked, not assumed: a separator inside a value would shift every later column.
        let values = chunk.len();
        for (i, c) in cols.iter().enumerate() {
            if c.matches(FIELD_SEP).count() + 1 != values {
                return Err(DbErr::Custom(format!("a value of column {i} holds the field separator")));
            }
        }
        let [e, c, s, t, ts, b] = cols;
        statements.push(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SQL,
            [e.into(), c.into(), s.into(), t.into(), ts.into(), b.into(), now.into()],
        ));
    }
    Ok(statements)
}

/// Runs the group's statements ([`postgres_statements`]); returns the log
/// position and id of every event that was new.
async fn insert_events_postgres(
    txn: &DatabaseTransaction,
    statements: Vec<Statement>,
) -> Result<Vec<(i64, String)>, DbErr> {
    let mut out = Vec::new();
    for stmt in statements {
        for row in txn.query_all(stmt).await? {
            out.push((row.try_get("", "seq")?, row.try_get("", "event_id")?));
        }
    }
    Ok(out)
}
