//! Reads of live customer state. Replies travel on a oneshot channel so every
//! message to an actor can use `do_send` and keep mailbox order (a read sent
//! after an acknowledgement sees the acknowledged events).

use crate::data::state::{CustomerView, SessionView};
use crate::event::{CustomerId, SessionId};
use crate::RuntimeError;
use actix::Message;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

/// What to read.
#[derive(Clone, Debug)]
pub enum Query {
    Customer,
    Session(SessionId),
}

/// The answer.
#[derive(Debug)]
pub enum Answer {
    Customer(Box<CustomerView>),
    Session(Option<Box<SessionView>>),
}

pub type Reply = oneshot::Sender<Result<Option<Answer>, RuntimeError>>;

/// To a shard: read a customer, activating its actor if needed. `None` when
/// the customer has never been seen.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ask {
    pub customer: CustomerId,
    pub query: Query,
    /// Time recency is measured from.
    pub as_of: DateTime<Utc>,
    pub reply: Reply,
}

/// To a customer actor: answer a query.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inspect {
    pub query: Query,
    pub as_of: DateTime<Utc>,
    pub reply: Reply,
}
