//! Committed events on their way from the committer to the customer actors.

use crate::event::{CustomerId, LoggedEvent};
use actix::Message;

/// Committed events for one shard, grouped by customer, each group in log
/// order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub batch: Vec<(CustomerId, Vec<LoggedEvent>)>,
}

/// Committed events for one customer, in log order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply(pub Vec<LoggedEvent>);
