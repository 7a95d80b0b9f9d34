//! Publishing (processes that run the actors): the aggregator hands each
//! topic message to [`Publisher::publish`], which never waits: a bounded
//! queue (beyond it the message is dropped and counted) feeds one task that
//! sends up to `batch` messages at a time, as one run of [`SCRIPT`] per
//! slot (all of them on a single node, one per topic on a cluster): for each
//! message the topic's seq is incremented, the frame (exactly `Frame::data`'s
//! text, so clients see no difference from one process) is appended to the
//! topic's history with id `<seq>-0` and published on its sharded channel,
//! all atomically, so seqs are gap-free and the history holds whatever was
//! published. One run for many messages, not one each: a script call costs
//! Redis about twice the commands it runs.
//!
//! When Redis is unreachable the queue holds what it can (newer messages
//! beyond its bound are dropped) and the task retries with backoff; the
//! outage is logged once. A batch that fails after it was sent is dropped,
//! not retried (it may have been applied in part; a retry could publish a
//! message twice).

use super::{backoff, Outage, TopicKeys};
use crate::redis_link::{Conn, RedisLink};
use crate::serving::stream::protocol::{now_ms, Topic};
use crate::serving::stream::telemetry::{StreamEvent, StreamMetrics};
use tokio::sync::mpsc;

/// Publishes messages in order. KEYS: three per message (seq, hist,
/// channel). ARGV: five per message: frame head (`{"topic":T,"seq":`), frame
/// tail (`,"ts":MS,"data":D}`), history length, trim mode (`~` or `=`),
/// expiry of the topic's keys in seconds (0: none). Returns how many it
/// published.
///
/// If a seq key was lost (evicted, expired) while its history survived,
/// numbering continues after the history's newest entry.
pub const SCRIPT: &str = r#"
local n = #KEYS / 3
for i = 0, n - 1 do
  local k, a = i * 3, i * 5
  local seq = redis.call('INCR', KEYS[k + 1])
  if seq == 1 then
    local last = redis.call('XREVRANGE', KEYS[k + 2], '+', '-', 'COUNT', 1)
    if #last > 0 then
      local s = tonumber(string.match(last[1][1], '^(%d+)-'))
      if s and s >= seq then
        seq = s + 1
        redis.call('SET', KEYS[k + 1], seq)
      end
    end
  end
  local frame = ARGV[a + 1] .. seq .. ARGV[a + 2]
  redis.call('XADD', KEYS[k + 2], 'MAXLEN', ARGV[a + 4], ARGV[a + 3], seq .. '-0', 'f', frame)
  local ttl = tonumber(ARGV[a + 5])
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[k + 1], ttl)
    redis.call('EXPIRE', KEYS[k + 2], ttl)
  end
  redis.call('SPUBLISH', KEYS[k + 3], frame)
end
return n
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

/// One script run per slot (on a cluster one per topic, as a topic's keys
/// are one slot; topics go concurrently, each in order; on a single node one
/// run for the whole batch); loads the script once if the server lacks it (a
/// NOSCRIPT means nothing ran).
async fn send_batch(
    link: &RedisLink,
    script: &redis::Script,
    settings: &PublishSettings,
    buf: &[Publication],
) -> Result<(), BatchError> {
    let conn = link.conn().await.map_err(|e| BatchError::NotSent(e.to_string()))?;
    // Per slot group: the keys, then the arguments, of its messages in order.
    let mut runs: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for p in buf {
        let keys = TopicKeys::new(link, &p.topic);
        let group = if link.is_cluster() { keys.seq.as_str() } else { "" };
        let i = match runs.iter().position(|(g, _, _)| g == group) {
            Some(i) => i,
            None => {
                runs.push((group.to_owned(), Vec::new(), Vec::new()));
                runs.len() - 1
            }
        };
        let name = serde_json::to_string(&p.topic.name()).unwrap_or_else(|_| "\"\"".into());
        let (maxlen, mode, ttl) = match p.topic {
            Topic::Customer(_) => (settings.customer_history_messages, "=", settings.customer_ttl_s.max(1)),
            _ => (settings.history_messages, "~", 0),
        };
        let (_, k, a) = &mut runs[i];
        k.extend([keys.seq, keys.hist, keys.channel]);
        a.extend([
            format!("{{\"topic\":{name},\"seq\":"),
            format!(",\"ts\":{},\"data\":{}}}", p.ts, p.data),
            maxlen.max(1).to_string(),
            mode.to_owned(),
            ttl.to_string(),
        ]);
    }
    let cmds: Vec<(String, redis::Cmd)> = runs
        .into_iter()
        .map(|(group, keys, args)| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(args);
            (group, cmd)
        })
        .collect();
    let conn = &conn;
    if let [(_, cmd)] = &cmds[..] {
        return run_script(conn, script, cmd).await;
    }
    let sends = cmds.iter().map(|(_, cmd)| run_script(conn, script, cmd));
    futures::future::join_all(sends).await.into_iter().collect()
}

async fn run_script(conn: &Conn<'_>, script: &redis::Script, cmd: &redis::Cmd) -> Result<(), BatchError> {
    let mut conn = conn.clone_handle();
    let first = cmd.query_async::<()>(&mut conn).await;
    let res = match first {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(&mut conn).await.map_err(|e| BatchError::Failed(e.to_string()))?;
            cmd.query_async::<()>(&mut conn).await
        }
        other => other,
    };
    res.map_err(|e| BatchError::Failed(e.to_string()))
}
