//! Reads of a topic's history in Redis (a stream whose entry ids are
//! `<seq>-0` and whose one field `f` is the frame as published): gap fills on
//! gateways and `since` recovery for clients whose gap the local history
//! does not reach.

use super::TopicKeys;
use crate::redis_link::{LinkError, RedisLink};
use crate::serving::stream::protocol::Frame;
use redis::streams::StreamRangeReply;
use redis::Value;
use std::sync::Arc;
use std::time::Duration;

/// Longest a history read may take before it counts as failed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the history holds from a client's `since` on.
#[derive(Debug)]
pub struct Recovery {
    /// The topic's newest seq (0: never published, or expired).
    pub head: u64,
    /// Seq of the oldest entry still kept, if any.
    pub oldest: Option<u64>,
    /// Frames with seq > since, oldest first (at most the read's count).
    pub frames: Vec<Frame>,
}

/// Frames with seq >= `from`, oldest first, at most `count`.
pub async fn range(
    link: &RedisLink,
    keys: &TopicKeys,
    name: &Arc<str>,
    from: u64,
    count: usize,
) -> Result<Vec<Frame>, LinkError> {
    let read = async {
        let mut conn = link.conn().await?;
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&keys.hist)
            .arg(format!("{from}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(frames(name, reply))
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.map_err(|_| LinkError::TimedOut("history read"))?
}

/// The head, the oldest kept seq and the frames after `since`, read in one
/// round trip.
pub async fn recover(
    link: &RedisLink,
    keys: &TopicKeys,
    name: &Arc<str>,
    since: u64,
    count: usize,
) -> Result<Recovery, LinkError> {
    let read = async {
        let mut conn = link.conn().await?;
        let (head, first, after): (Option<u64>, StreamRangeReply, StreamRangeReply) = redis::pipe()
            .cmd("GET")
            .arg(&keys.seq)
            .cmd("XRANGE")
            .arg(&keys.hist)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&keys.hist)
            .arg(format!("{}-0", since.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut conn)
            .await?;
        let oldest = first.ids.first().and_then(|e| entry_seq(&e.id));
        Ok(Recovery { head: head.unwrap_or(0), oldest, frames: frames(name, after) })
    };
    tokio::time::timeout(READ_TIMEOUT, read).await.map_err(|_| LinkError::TimedOut("history read"))?
}

fn entry_seq(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(s, _)| s.parse().ok())
}

fn frames(name: &Arc<str>, reply: StreamRangeReply) -> Vec<Frame> {
    reply
        .ids
        .into_iter()
        .filter_map(|e| {
            let seq = entry_seq(&e.id)?;
            let text = match e.map.get("f")? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            Some(Frame { topic: Some(name.clone()), seq, text: text.into() })
        })
        .collect()
}
