//! Publishing (processes that run the actors): the aggregator hands each
//! topic message to [`Publisher::publish`], which never waits: a bounded
//! queue (beyond it the message is dropped and counted) feeds one task that
//! sends up to `batch` messages per pipeline, each one run of [`SCRIPT`]:
//! the topic's seq is incremented, the frame (exactly `Frame::data`'s text,
//! so clients see no difference from one process) is appended to the topic's
//! history with id `<seq>-0` and published on its sharded channel, all
//! atomically, so seqs are gap-free and the history holds whatever was
//! published.
//!
//! When Redis is unreachable the queue holds what it can (newer messages
//! beyond its bound are dropped) and the task retries with backoff; the
//! outage is logged once. A batch that fails after it was sent is dropped,
//! not retried (it may have been applied in part; a retry could publish a
//! message twice).

use super::{backoff, Outage, TopicKeys};
use crate::redis_link::{Conn, RedisLink};
use crate::stream::protocol::{now_ms, Topic};
use crate::stream::telemetry::{StreamEvent, StreamMetrics};
use tokio::sync::mpsc;

/// KEYS: seq, hist, channel. ARGV: frame head (`{"topic":T,"seq":`), frame
/// tail (`,"ts":MS,"data":D}`), history length, trim mode (`~` or `=`),
/// expiry of the topic's keys in seconds (0: none). Returns the seq.
///
/// If the seq key was lost (evicted, expired) while the history survived,
/// numbering continues after the history's newest entry.
pub const SCRIPT: &str = r#"
local seq = redis.call('INCR', KEYS[1])
if seq == 1 then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local s = tonumber(string.match(last[1][1], '^(%d+)-'))
    if s and s >= seq then
      seq = s + 1
      redis.call('SET', KEYS[1], seq)
    end
  end
end
local frame = ARGV[1] .. seq .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], ARGV[3], seq .. '-0', 'f', frame)
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('SPUBLISH', KEYS[3], frame)
return seq
"#;

/// Bounds of the publisher.
#[derive(Clone, Copy, Debug)]
pub struct PublishSettings {
    /// Messages waiting for Redis at most.
    pub queue: usize,
    /// Messages per pipeline at most.
    pub batch: usize,
    pub history_messages: usize,
    pub customer_history_messages: usize,
    /// Expiry of a customer topic's seq and history (refreshed by each publication).
    pub customer_ttl_s: u64,
}

struct Publication {
    topic: Topic,
    ts: i64,
    data: String,
}

/// The aggregator's way to Redis; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Publication>,
    metrics: StreamMetrics,
}

impl Publisher {
    /// Starts the publishing task on the current runtime.
    pub fn start(link: RedisLink, settings: PublishSettings, metrics: StreamMetrics) -> Publisher {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        tokio::spawn(run(link, settings, metrics.clone(), rx));
        Publisher { tx, metrics }
    }

    /// Queues a message; never waits. `ts` is taken now (publication time).
    pub fn publish(&self, topic: Topic, data: String) {
        let p = Publication { topic, ts: now_ms(), data };
        if self.tx.try_send(p).is_err() {
            self.metrics.record(StreamEvent::RedisPublishDropped { n: 1, reason: "redis_queue_full" });
        }
    }
}

enum BatchError {
    /// Nothing was sent (no connection): the batch can be retried.
    NotSent(String),
    /// Sent, and failed: the batch is dropped.
    Failed(String),
}

async fn run(link: RedisLink, settings: PublishSettings, metrics: StreamMetrics, mut rx: mpsc::Receiver<Publication>) {
    let script = redis::Script::new(SCRIPT);
    let mut outage = Outage::default();
    let mut delays = backoff();
    let mut buf: Vec<Publication> = Vec::new();
    let batch = settings.batch.max(1);
    loop {
        if buf.is_empty() {
            match rx.recv().await {
                Some(p) => buf.push(p),
                None => return,
            }
        }
        while buf.len() < batch {
            match rx.try_recv() {
                Ok(p) => buf.push(p),
                Err(_) => break,
            }
        }
        match send_batch(&link, &script, &settings, &buf).await {
            Ok(()) => {
                metrics.record(StreamEvent::RedisPublished { n: buf.len() as u64 });
                buf.clear();
                if let Some(down_for) = outage.up() {
                    metrics.record(StreamEvent::RedisUp { conn: "publisher", down_for, reconnect: true });
                    delays = backoff();
                }
            }
            Err(BatchError::NotSent(e)) => {
                if outage.down() {
                    metrics.record(StreamEvent::RedisDown { conn: "publisher", error: &e });
                }
                let wait = delays.next().unwrap_or(std::time::Duration::from_secs(5));
                tokio::time::sleep(wait).await;
            }
            Err(BatchError::Failed(e)) => {
                if outage.down() {
                    metrics.record(StreamEvent::RedisDown { conn: "publisher", error: &e });
                }
                metrics.record(StreamEvent::RedisPublishDropped { n: buf.len() as u64, reason: "redis_failed" });
                buf.clear();
            }
        }
    }
}

/// One pipeline of script runs (on a cluster, one per topic: a topic's keys
/// are one slot; topics go concurrently, each in order); loads the script
/// once if the server lacks it (a NOSCRIPT fails every command of the
/// pipeline, so nothing ran).
async fn send_batch(
    link: &RedisLink,
    script: &redis::Script,
    settings: &PublishSettings,
    buf: &[Publication],
) -> Result<(), BatchError> {
    let conn = link.conn().await.map_err(|e| BatchError::NotSent(e.to_string()))?;
    let mut pipes: Vec<(String, redis::Pipeline)> = Vec::new();
    for p in buf {
        let keys = TopicKeys::new(link, &p.topic);
        // One group on a single node; one per topic (its slot) on a cluster.
        let group = if link.is_cluster() { keys.seq.as_str() } else { "" };
        let i = match pipes.iter().position(|(g, _)| g == group) {
            Some(i) => i,
            None => {
                pipes.push((group.to_owned(), redis::pipe()));
                pipes.len() - 1
            }
        };
        let pipe = &mut pipes[i].1;
        let name = serde_json::to_string(&p.topic.name()).unwrap_or_else(|_| "\"\"".into());
        let head = format!("{{\"topic\":{name},\"seq\":");
        let tail = format!(",\"ts\":{},\"data\":{}}}", p.ts, p.data);
        let (maxlen, mode, ttl) = match p.topic {
            Topic::Customer(_) => (settings.customer_history_messages, "=", settings.customer_ttl_s.max(1)),
            _ => (settings.history_messages, "~", 0),
        };
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(3)
            .arg(&keys.seq)
            .arg(&keys.hist)
            .arg(&keys.channel)
            .arg(head)
            .arg(tail)
            .arg(maxlen.max(1))
            .arg(mode)
            .arg(ttl)
            .ignore();
    }
    let conn = &conn;
    if let [(_, pipe)] = &pipes[..] {
        return run_scripts(conn, script, pipe).await;
    }
    let sends = pipes.iter().map(|(_, pipe)| run_scripts(conn, script, pipe));
    futures::future::join_all(sends).await.into_iter().collect()
}

async fn run_scripts(conn: &Conn<'_>, script: &redis::Script, pipe: &redis::Pipeline) -> Result<(), BatchError> {
    let mut conn = conn.clone_handle();
    let first = pipe.query_async::<()>(&mut conn).await;
    let res = match first {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(&mut conn).await.map_err(|e| BatchError::Failed(e.to_string()))?;
            pipe.query_async::<()>(&mut conn).await
        }
        other => other,
    };
    res.map_err(|e| BatchError::Failed(e.to_string()))
}
