//! The stream's Redis fan-out across replicas (`Fanout::Redis`; protocol side
//! in docs/stream.md, "Many replicas").
//!
//! - [`publisher`]: processes that run the actors number and keep every
//!   publication centrally, atomically, with one Lua script per message
//!   (INCR the topic's seq, XADD to its history with id `<seq>-0`, SPUBLISH
//!   the frame), batched into pipelines by one task behind a bounded queue,
//!   so the aggregator never waits on Redis;
//! - [`subscriber`]: one dedicated RESP3 connection holding the sharded
//!   subscriptions (SSUBSCRIBE) of a process, reconnected with backoff;
//! - [`history`]: XRANGE reads of a topic's history (gap fills, `since`
//!   recovery);
//! - [`watch`]: gateways announce the customers their clients follow;
//!   processors keep those watches (with an expiry) on the actors' bus.
//!
//! Every key of a topic carries the topic as a hash tag, so a topic's seq,
//! history and channel land in one cluster slot and the script is valid on
//! Redis Cluster too: `{prefix}:{kpis}:seq`, `{prefix}:{kpis}:hist`,
//! `{prefix}:{kpis}:ch`. The prefix must not contain `{`.

pub mod history;
pub mod publisher;
pub mod subscriber;
pub mod watch;

use super::protocol::Topic;
use crate::redis_link::RedisLink;

/// The three keys of one topic.
#[derive(Clone, Debug)]
pub struct TopicKeys {
    pub seq: String,
    pub hist: String,
    pub channel: String,
}

impl TopicKeys {
    pub fn new(link: &RedisLink, topic: &Topic) -> TopicKeys {
        let tag = format!("{{{}}}", topic.name());
        TopicKeys {
            seq: link.key(&format!("{tag}:seq")),
            hist: link.key(&format!("{tag}:hist")),
            channel: link.key(&format!("{tag}:ch")),
        }
    }
}

/// Splits a frame as sent on a topic channel, `{"topic":T,"seq":N,…}`, into
/// its topic name and seq, without parsing the rest.
pub fn frame_head(payload: &[u8]) -> Option<(String, u64)> {
    let rest = payload.strip_prefix(b"{\"topic\":")?;
    let mut de = serde_json::Deserializer::from_slice(rest).into_iter::<String>();
    let name = de.next()?.ok()?;
    let rest = rest.get(de.byte_offset()..)?.strip_prefix(b",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((name, seq))
}

/// Logs a Redis outage once, not per failed attempt: `down` answers true the
/// first time after the link was up, `up` answers how long it was down.
#[derive(Default)]
pub struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    pub fn down(&mut self) -> bool {
        if self.since.is_some() {
            return false;
        }
        self.since = Some(std::time::Instant::now());
        true
    }

    pub fn up(&mut self) -> Option<std::time::Duration> {
        self.since.take().map(|s| s.elapsed())
    }

    pub fn is_down(&self) -> bool {
        self.since.is_some()
    }
}

/// Reconnection delays: 100 ms doubling to 5 s, with jitter, forever.
pub fn backoff() -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::stream::protocol::Frame;
    use std::sync::Arc;

    #[test]
    fn the_head_of_a_frame_is_its_topic_and_seq() {
        let t: Arc<str> = Arc::from("customer:a\"b{c}");
        let f = Frame::data(&t, 4711, 5, r#"{"x":",\"seq\":1"}"#);
        assert_eq!(frame_head(f.text.as_bytes()), Some(("customer:a\"b{c}".to_owned(), 4711)));
        assert_eq!(frame_head(b"{\"topic\":\"kpis\"}"), None);
        assert_eq!(frame_head(b"nonsense"), None);
    }
}
