//! Messages of the [`Hub`](super::Hub) actor: connections join, subscribe and
//! leave; the aggregator publishes; the application shuts it down.

use crate::serving::stream::outbox::Outbox;
use crate::serving::stream::protocol::Topic;
use actix::Message;
use std::collections::HashMap;
use std::sync::Arc;

/// A connection has authenticated; the hub keeps it to close it at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub outbox: Arc<Outbox>,
}

/// Subscribe a connection to topics; with `since`, replay what it missed
/// or tell it the gap. The `subscribed` confirmation, the replay and then the
/// live messages reach its outbox in that order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub outbox: Arc<Outbox>,
    pub topics: Vec<Topic>,
    pub since: HashMap<Topic, u64>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub conn: u64,
    pub topics: Vec<Topic>,
}

/// The connection has ended: drop it from every topic it had.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub conn: u64,
    pub topics: Vec<Topic>,
}

/// One message on a topic; `data` is its JSON text. Customer topics nobody
/// watches are ignored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub topic: Topic,
    pub data: String,
}

/// Close every client with 1001; answers how many there were.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// Sequence number and oldest kept seq of a topic (for tests and the bench).
#[derive(Message)]
#[rtype(result = "Option<(u64, u64)>")]
pub struct TopicState(pub Topic);

/// Remote mode: a frame received from a topic's channel, with the seq it
/// was given in Redis.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Received {
    pub topic: Topic,
    pub seq: u64,
    pub text: bytestring::ByteString,
}

/// Remote mode: the subscriber reconnected after an outage; read every
/// topic's history from where it stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resync;
