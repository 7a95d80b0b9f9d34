//! Actor lifecycle: passivation, snapshots and the shutdown drain.

use crate::customer::state::SessionView;
use crate::customer::CustomerSession;
use crate::event::CustomerId;
use actix::{Addr, Message};
use tokio::sync::oneshot;

/// Actor → shard: "I have been idle; I have processed `processed` messages".
/// The shard agrees (true) only if it has forwarded no more than that, so no
/// message can be in flight to an actor that stops.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IdleReport {
    pub customer: CustomerId,
    pub addr: Addr<CustomerSession>,
    pub processed: u64,
}

/// Shard → actor: write a snapshot now if anything changed (shutdown drain).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushState {
    pub done: oneshot::Sender<()>,
}

/// To a shard: flush every actor (answers when all snapshots are queued at
/// the persister).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushShard;

/// Actor → persister: the customer's state as of `last_seq`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Snapshot {
    pub customer_id: CustomerId,
    pub last_seq: i64,
    pub state_json: String,
    pub profile_json: String,
    /// Sessions that changed since the previous snapshot.
    pub sessions: Vec<SessionView>,
}

/// To the persister: write everything queued; answers when it is durable.
#[derive(Message)]
#[rtype(result = "Result<(), crate::RuntimeError>")]
pub struct FlushNow;
