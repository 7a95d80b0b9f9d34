//! The partitioned Redis Streams between gateways and processors: key names,
//! the entry format, and the backlog (lag) per partition.
//!
//! Partition `p` of a deployment is the stream `{prefix}:events:{<tag>}`,
//! read by the consumer group [`GROUP`]; an event goes to partition
//! `hash(customer_id) % partitions` (the same hash that spreads customers
//! over shards), so one customer's events stay in order in one partition.
//! The part in braces is the key's hash tag ([`partition_tag`]): each
//! partition's stream is one Redis Cluster slot, chosen in the p-th of
//! `partitions` equal ranges of slots, so partitions spread evenly over
//! shards that own equal ranges (what `redis-cli --cluster create` and
//! ElastiCache set up) whatever their number; plain numbers would not (16
//! partitions tagged `{0}`..`{15}` leave 4 of 8 shards without a stream).
//! Entries that cannot be processed are moved to `{prefix}:events:dead`.
//!
//! An entry holds `e`, the event as JSON in the ingest format (the processor
//! parses it again with the edge parser: what reaches the actors is always
//! validated by the same code), and `a`, when the gateway acknowledged it
//! (milliseconds), from which the ingest→broadcast latency is measured.

use crate::redis_link::{Dedicated, DedicatedOptions, LinkError, RedisLink};
use actors::event::Event;
use redis::streams::StreamId;
use redis::Value;

/// The consumer group every processor joins.
pub const GROUP: &str = "processors";

/// Bound of the dead-letter stream (approximate trimming).
pub const DEAD_LETTER_MAX: usize = 100_000;

/// Key of partition `p`'s stream (of `partitions`).
pub fn partition_key(link: &RedisLink, p: usize, partitions: usize) -> String {
    link.key(&format!("events:{{{}}}", partition_tag(p, partitions)))
}

/// Redis Cluster slots.
const SLOTS: usize = 16_384;

/// The hash tag of partition `p` of `partitions`: `p.k` with the smallest
/// `k` whose slot (CRC16 of the tag, as Redis computes it) lies in the p-th
/// of `partitions` equal ranges of slots. The same on every replica and
/// every run; keys that belong with the partition (its lease) use it too.
pub fn partition_tag(p: usize, partitions: usize) -> String {
    let n = partitions.clamp(1, SLOTS);
    let (lo, hi) = (p * SLOTS / n, ((p + 1) * SLOTS / n).max(p * SLOTS / n + 1));
    // A range holds at least one slot and CRC16 spreads short strings well:
    // a few hundred tries at most for 1,024 partitions.
    (0u64..).map(|k| format!("{p}.{k}")).find(|tag| (lo..hi).contains(&slot(tag))).unwrap_or_else(|| p.to_string())
}

/// The Redis Cluster slot of a hash tag.
pub fn slot(tag: &str) -> usize {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) as usize % SLOTS
}

/// Key of the dead-letter stream.
pub fn dead_letter_key(link: &RedisLink) -> String {
    link.key("events:dead")
}

/// Field of an entry holding the event (JSON, ingest format).
pub const FIELD_EVENT: &str = "e";
/// Field of an entry holding when the gateway acknowledged it (ms).
pub const FIELD_ACKED: &str = "a";
/// Field of an entry holding its request's W3C `traceparent`, when traced:
/// the processor's spans become children of the gateway request's span.
pub const FIELD_TRACE: &str = "t";

/// The fields of one entry.
pub fn encode(event: &Event, acked_at_ms: i64) -> Result<[(&'static str, String); 2], serde_json::Error> {
    Ok([(FIELD_EVENT, serde_json::to_string(event)?), (FIELD_ACKED, acked_at_ms.to_string())])
}

/// An entry as read back: its id, the event JSON and the acknowledgement time.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub body: Option<String>,
    pub acked_at_ms: i64,
    /// The request's trace, if it was traced (an unreadable value is ignored).
    pub trace: Option<actors::trace::TraceParent>,
}

impl Entry {
    pub fn from_stream_id(s: &StreamId) -> Entry {
        let text = |k: &str| match s.map.get(k) {
            Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            Some(Value::SimpleString(t)) => Some(t.clone()),
            _ => None,
        };
        Entry {
            id: s.id.clone(),
            body: text(FIELD_EVENT),
            acked_at_ms: text(FIELD_ACKED).and_then(|a| a.parse().ok()).unwrap_or(0),
            trace: text(FIELD_TRACE).and_then(|t| actors::trace::TraceParent::parse(&t)),
        }
    }
}

/// Entries not yet delivered to the group plus those delivered and not
/// acknowledged, per partition (`XINFO GROUPS` lag + pending). A partition
/// without a group yet counts its whole length.
pub async fn backlog(link: &RedisLink, partitions: usize) -> Result<Vec<u64>, LinkError> {
    let keys: Vec<String> = (0..partitions).map(|p| partition_key(link, p, partitions)).collect();
    let mut c = link.conn().await?;
    Ok(backlog_of(&mut c, &keys).await?)
}

/// [`backlog`] of the streams `keys`, on any connection (the bench reads it
/// too). One pipeline per stream, so it holds on a cluster as well.
pub async fn backlog_of<C: redis::aio::ConnectionLike>(
    c: &mut C,
    keys: &[String],
) -> Result<Vec<u64>, redis::RedisError> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN").arg(key).cmd("XINFO").arg("GROUPS").arg(key);
        // XINFO fails on a stream that does not exist yet: then the length (0) counts.
        let replies: Vec<Value> = match pipe.query_async(c).await {
            Ok(r) => r,
            Err(e) if !link_broken(&e) => {
                let len: u64 = redis::cmd("XLEN").arg(key).query_async(c).await?;
                out.push(len);
                continue;
            }
            Err(e) => return Err(e),
        };
        let len = match replies.first() {
            Some(Value::Int(n)) => (*n).max(0) as u64,
            _ => 0,
        };
        out.push(if len == 0 { 0 } else { replies.get(1).and_then(group_backlog).unwrap_or(len) });
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

/// One connection of our own, opened on first use and shared by every
/// caller (commands from concurrent requests are pipelined on it), replaced
/// after it broke. The hot paths use it instead of the bb8 pool, whose
/// checkout costs a PING round trip per command.
pub struct DirectConnection {
    link: RedisLink,
    response_timeout: std::time::Duration,
    conn: tokio::sync::Mutex<Option<Dedicated>>,
}

impl DirectConnection {
    /// Commands time out after `response_timeout`.
    pub fn new(link: RedisLink, response_timeout: std::time::Duration) -> DirectConnection {
        DirectConnection { link, response_timeout, conn: tokio::sync::Mutex::new(None) }
    }

    /// The connection (a cheap clone), connecting first if needed.
    pub async fn get(&self) -> Result<Dedicated, redis::RedisError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let opts = DedicatedOptions { response_timeout: Some(self.response_timeout), pushes: None, no_retries: false };
        let c = self.link.dedicated(opts).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs `pipe` (one slot's commands on a cluster); after an error of the
    /// link (not a command's own error) the connection is dropped, so the
    /// next call opens a new one.
    pub async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, redis::RedisError> {
        let mut c = self.get().await?;
        let res = pipe.query_async(&mut c).await;
        if let Err(e) = &res {
            if link_broken(e) {
                *self.conn.lock().await = None;
            }
        }
        res
    }
}

/// True when an error means the connection itself is unusable.
pub fn link_broken(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
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

#[cfg(test)]
mod tag_tests {
    use super::{partition_tag, slot, SLOTS};

    #[test]
    fn slots_match_redis() {
        // CLUSTER KEYSLOT of these, from a real Redis.
        assert_eq!(slot("123456789"), 12_739);
        assert_eq!(slot("foo"), 12_182);
    }

    #[test]
    fn partitions_spread_evenly_over_any_equal_split_of_the_slots() {
        for n in [1, 3, 8, 16, 64, 1024] {
            let slots: Vec<usize> = (0..n).map(|p| slot(&partition_tag(p, n))).collect();
            for (p, s) in slots.iter().enumerate() {
                assert!(p * SLOTS / n <= *s && *s < ((p + 1) * SLOTS / n).max(p * SLOTS / n + 1), "{n}: {p} -> {s}");
            }
            for shards in [1, 2, 3, 4, 8] {
                if n < shards {
                    continue;
                }
                let mut per = vec![0; shards];
                for s in &slots {
                    per[s * shards / SLOTS] += 1;
                }
                // Exactly even when the shards divide the partitions; else a
                // partition whose range straddles two shards goes to either.
                for c in &per {
                    let off = (*c as f64 - n as f64 / shards as f64).abs();
                    assert!(if n % shards == 0 { off == 0.0 } else { off < 2.0 }, "{n} on {shards} shards: {per:?}");
                }
            }
        }
        assert_eq!(partition_tag(3, 16), partition_tag(3, 16), "stable");
    }
}
