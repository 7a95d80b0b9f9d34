//! The runtime core of cartpulse: typed events ([`event`]), the feature code
//! shared by the live session actors and the offline jobs ([`features`]), the
//! actors' data free of actors and I/O ([`data`]: customer state, views,
//! scores, snapshots), the `CustomerSession` actors ([`customer`]) and their
//! shards, the persister that snapshots them, and the [`runtime`] that wires
//! them. Dependencies point one way: event ← features ← data ← the actors.
//!
//! Correctness rests on one rule: the event log (table `events`) is the truth
//! and every piece of state carries the log position it reflects. An actor
//! loads its last snapshot and applies the log after it; it applies an event
//! only if its position is newer. So a crash, a redelivery or a race between
//! an old and a new incarnation of an actor never loses or double-counts.

pub mod customer;
pub mod data;
pub mod event;
pub mod features;
pub mod hooks;
pub mod messages;
pub mod persister;
pub mod runtime;
pub mod shard;
pub mod store;
pub mod telemetry;
pub mod trace;

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

/// Serializes write transactions on a single-writer database (SQLite): the
/// committer, the persister and checkpoints take turns through a fair async
/// lock instead of colliding on SQLite's lock, whose busy handler sleeps in
/// steps of milliseconds. `None` (Postgres) lets them write concurrently.
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    /// A gate that serializes writers.
    pub fn serial() -> Self {
        WriteGate(Some(std::sync::Arc::new(tokio::sync::Mutex::new(()))))
    }

    /// A gate that lets every writer through.
    pub fn open() -> Self {
        WriteGate(None)
    }

    /// Waits for this writer's turn; the turn ends when the guard drops.
    pub async fn enter(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.0 {
            Some(m) => Some(m.clone().lock_owned().await),
            None => None,
        }
    }
}
