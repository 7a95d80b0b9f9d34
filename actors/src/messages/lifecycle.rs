//! Actor lifecycle: passivation, snapshots and the shutdown drain.

use crate::customer::CustomerSession;
use crate::event::CustomerId;
use actix::{Addr, Message};
use std::collections::HashMap;
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

/// To the persister: write everything queued; answers when it is durable.
#[derive(Message)]
#[rtype(result = "Result<(), crate::RuntimeError>")]
pub struct FlushNow;

/// Shard → persister: the newest snapshots it holds that are not yet in the
/// database (queued or being written), as state JSON. An actor that starts
/// must see the final snapshot of its previous incarnation even if that is
/// still on its way to the database.
#[derive(Message)]
#[rtype(result = "HashMap<CustomerId, String>")]
pub struct Lookup {
    pub ids: Vec<CustomerId>,
}

/// To a shard: flush every actor; answers with the lowest log position still
/// waiting in a loading buffer (not yet applied, so not in any snapshot), or
/// `i64::MAX`.
#[derive(Message)]
#[rtype(result = "i64")]
pub struct Barrier;

/// Shard → actor: the shard holds too many actors; flush and offer to stop
/// (the actor then goes through the same `IdleReport` handshake as when idle).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PassivateNow;

/// To a shard: stop the actors of one partition's customers (their
/// partition moves to another processor, or is about to be replayed
/// afresh). Their last snapshot is harmless: a snapshot never replaces one
/// of a later log position.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EvictPartition {
    pub partition: usize,
    pub of: usize,
}

/// Shard → actor: stop now (its partition was given up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopNow;
