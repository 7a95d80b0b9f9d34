//! The partitioned Redis Streams between gateways and processors: key names,
//! the entry format, and the backlog (lag) per partition.
//!
//! Partition `p` of a deployment is the stream `{prefix}:events:{p}`, read
//! by the consumer group [`GROUP`]; an event goes to partition
//! `hash(customer_id) % partitions` (the same hash that spreads customers
//! over shards), so one customer's events stay in order in one partition.
//! Entries that cannot be processed are moved to `{prefix}:events:dead`.
//!
//! An entry holds `e`, the event as JSON in the ingest format (the processor
//! parses it again with the edge parser: what reaches the actors is always
//! validated by the same code), and `a`, when the gateway acknowledged it
//! (milliseconds), from which the ingest→broadcast latency is measured.

use crate::redis_link::{LinkError, RedisLink};
use actors::event::Event;
use redis::streams::StreamId;
use redis::Value;

/// The consumer group every processor joins.
pub const GROUP: &str = "processors";

/// Bound of the dead-letter stream (approximate trimming).
pub const DEAD_LETTER_MAX: usize = 100_000;

/// Key of partition `p`'s stream.
pub fn partition_key(link: &RedisLink, p: usize) -> String {
    link.key(&format!("events:{p}"))
}

/// Key of the dead-letter stream.
pub fn dead_letter_key(link: &RedisLink) -> String {
    link.key("events:dead")
}

/// The fields of one entry.
pub fn encode(event: &Event, acked_at_ms: i64) -> Result<[(&'static str, String); 2], serde_json::Error> {
    Ok([("e", serde_json::to_string(event)?), ("a", acked_at_ms.to_string())])
}

/// An entry as read back: its id, the event JSON and the acknowledgement time.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub body: Option<String>,
    pub acked_at_ms: i64,
}

impl Entry {
    pub fn from_stream_id(s: &StreamId) -> Entry {
        let text = |k: &str| match s.map.get(k) {
            Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            Some(Value::SimpleString(t)) => Some(t.clone()),
            _ => None,
        };
        Entry { id: s.id.clone(), body: text("e"), acked_at_ms: text("a").and_then(|a| a.parse().ok()).unwrap_or(0) }
    }
}

/// Entries not yet delivered to the group plus those delivered and not
/// acknowledged, per partition (`XINFO GROUPS` lag + pending). A partition
/// without a group yet counts its whole length.
pub async fn backlog(link: &RedisLink, partitions: usize) -> Result<Vec<u64>, LinkError> {
    let mut c = link.conn().await?;
    let mut pipe = redis::pipe();
    for p in 0..partitions {
        pipe.cmd("XLEN").arg(partition_key(link, p));
    }
    let lens: Vec<u64> = pipe.query_async(&mut *c).await?;
    let mut out = Vec::with_capacity(partitions);
    for (p, len) in lens.into_iter().enumerate() {
        if len == 0 {
            out.push(0);
            continue;
        }
        let groups: Result<Value, redis::RedisError> =
            redis::cmd("XINFO").arg("GROUPS").arg(partition_key(link, p)).query_async(&mut *c).await;
        out.push(match groups {
            Ok(v) => group_backlog(&v).unwrap_or(len),
            Err(_) => len,
        });
    }
    Ok(out)
}

/// `lag + pending` of [`GROUP`] in an `XINFO GROUPS` reply (RESP2 arrays of
/// field/value pairs). `lag` can be nil when Redis cannot tell; then `None`.
fn group_backlog(v: &Value) -> Option<u64> {
    let Value::Array(groups) = v else { return None };
    for g in groups {
        let fields = match g {
            Value::Array(f) => f.clone(),
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            _ => continue,
        };
        let mut name = None;
        let (mut lag, mut pending) = (None, None);
        for pair in fields.chunks(2) {
            let [k, v] = pair else { continue };
            let key = match k {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => continue,
            };
            let num = match v {
                Value::Int(i) => Some(*i as u64),
                _ => None,
            };
            match key.as_str() {
                "name" => {
                    name = match v {
                        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        Value::SimpleString(s) => Some(s.clone()),
                        _ => None,
                    }
                }
                "lag" => lag = num,
                "pending" => pending = num,
                _ => {}
            }
        }
        if name.as_deref() == Some(GROUP) {
            return Some(lag? + pending.unwrap_or(0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{group_backlog, GROUP};
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn group(name: &str, lag: Value, pending: i64) -> Value {
        Value::Array(vec![
            bulk("name"),
            bulk(name),
            bulk("consumers"),
            Value::Int(1),
            bulk("pending"),
            Value::Int(pending),
            bulk("last-delivered-id"),
            bulk("5-0"),
            bulk("entries-read"),
            Value::Int(5),
            bulk("lag"),
            lag,
        ])
    }

    #[test]
    fn backlog_is_lag_plus_pending_of_our_group() {
        let reply = Value::Array(vec![group("others", Value::Int(99), 9), group(GROUP, Value::Int(7), 3)]);
        assert_eq!(group_backlog(&reply), Some(10));
        // Redis cannot always tell the lag (nil): the caller then counts the stream's length.
        let unknown = Value::Array(vec![group(GROUP, Value::Nil, 3)]);
        assert_eq!(group_backlog(&unknown), None);
        assert_eq!(group_backlog(&Value::Array(vec![])), None);
    }
}
