//! Ingest: parsing at the edge ([`parse`]) and the durable group commit into
//! the event log ([`committer`]). With Redis, gateways append to partitioned
//! streams ([`queue`], format in [`streams`]) and processors consume them
//! into the committer ([`consumer`]).

pub mod committer;
pub mod consumer;
pub mod fences;
pub mod leases;
pub mod parse;
pub mod queue;
pub mod streams;

use actors::event::Event;
use actors::trace::TraceParent;
use committer::{CommitError, Committer, Outcome, Prepared};
use queue::EventQueue;

/// Where a request's events go: straight to the log (one process), or into
/// the Redis Streams for the processors (gateway, or all with Redis).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per process, cloned as the app state is
pub enum Ingest {
    Direct(Committer),
    Queued(EventQueue),
}

impl Ingest {
    /// Answers once the events are durable (in the log, or in Redis).
    /// `trace` is the request's sampled trace context, if it is traced.
    pub async fn submit(&self, events: Vec<Event>, trace: Option<TraceParent>) -> Result<Outcome, CommitError> {
        match self {
            Ingest::Direct(c) => {
                let prepared = events
                    .into_iter()
                    .map(|e| Prepared::new(e, None).map(|p| Prepared { trace, ..p }))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(CommitError::Encoding)?;
                c.submit(prepared).await
            }
            Ingest::Queued(q) => q.submit(events, trace).await,
        }
    }
}
