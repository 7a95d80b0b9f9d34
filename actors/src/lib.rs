//! The runtime core of cartpulse: typed events, the feature code shared by the
//! live session actors and the offline jobs, the `CustomerSession` actors and
//! their shards, and the persister that snapshots them.
//!
//! Correctness rests on one rule: the event log (table `events`) is the truth
//! and every piece of state carries the log position it reflects. An actor
//! loads its last snapshot and applies the log after it; it applies an event
//! only if its position is newer. So a crash, a redelivery or a race between
//! an old and a new incarnation of an actor never loses or double-counts.

pub mod customer;
pub mod event;
pub mod features;
pub mod messages;
pub mod persister;
pub mod runtime;
pub mod shard;
pub mod store;
pub mod telemetry;

/// Errors the runtime reports to its callers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the runtime is stopping")]
    Stopped,
    #[error("an actor is unreachable: {0}")]
    Unreachable(String),
}
