//! The wire protocol of `GET /v1/stream` (docs/stream.md): topic names, what
//! clients may send, and the server's frames. Everything a client can get
//! wrong is parsed here into a typed value or a [`ClientError`], so the
//! connection code never deals with raw JSON.

use super::frames::{Control, Envelope, ErrorCode, ErrorData};
use actors::event::CustomerId;
use bytestring::ByteString;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Close codes (docs/stream.md, "Close codes").
pub mod close {
    /// The server is shutting down; reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Authentication missing, invalid or expired.
    pub const AUTH: u16 = 4001;
    /// No pong or message within the heartbeat timeout.
    pub const IDLE: u16 = 4002;
    /// Slow consumer: stayed behind the queue limit too long.
    pub const SLOW: u16 = 4008;

    /// Every close code a client can see, with its meaning: what the API
    /// contract (`x-websocket`) and docs/stream.md list.
    pub const ALL: [(u16, &str); 7] = [
        (1000, "normal closure (answering the client's close)"),
        (GOING_AWAY, "server shutting down (reconnect elsewhere)"),
        (1002, "protocol error"),
        (TOO_BIG, "a client frame over the size limit (64 KiB)"),
        (AUTH, "authentication missing, invalid or expired"),
        (IDLE, "idle: no pong/message within the heartbeat timeout"),
        (SLOW, "slow consumer: stayed behind the queue limit"),
    ];
}

/// A topic a client can subscribe to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Kpis,
    Scores,
    Segments,
    Customer(CustomerId),
}

impl Topic {
    /// Parses a topic name; `None` for an unknown topic or a bad customer id.
    pub fn parse(s: &str) -> Option<Topic> {
        match s {
            "kpis" => Some(Topic::Kpis),
            "scores" => Some(Topic::Scores),
            "segments" => Some(Topic::Segments),
            _ => s.strip_prefix("customer:").and_then(|id| CustomerId::parse(id).ok()).map(Topic::Customer),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Topic::Kpis => "kpis".into(),
            Topic::Scores => "scores".into(),
            Topic::Segments => "segments".into(),
            Topic::Customer(c) => format!("customer:{}", c.as_str()),
        }
    }

    /// The KPI rollup is a state, not a sequence of events: a client that is
    /// behind only needs the newest one.
    pub fn coalesces(&self) -> bool {
        matches!(self, Topic::Kpis)
    }
}

/// What a client sends, as parsed.
#[derive(Debug, PartialEq)]
pub enum ClientMsg {
    Auth { token: String },
    Subscribe { topics: Vec<Topic>, since: HashMap<Topic, u64> },
    Unsubscribe { topics: Vec<Topic> },
    Ping,
}

/// A client message that cannot be acted on; answered on `_error`, never by
/// closing the connection.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    BadMessage(String),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("at most {0} topics per connection")]
    TooManyTopics(usize),
    #[error("already authenticated")]
    AlreadyAuthenticated,
}

impl ClientError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::BadMessage(_) => ErrorCode::BadMessage,
            ClientError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            ClientError::TooManyTopics(_) => ErrorCode::TooManyTopics,
            ClientError::AlreadyAuthenticated => ErrorCode::AlreadyAuthenticated,
        }
    }
}

/// A client message as sent (one text frame); [`parse_client`] checks what
/// types cannot (topic names, `since` naming subscribed topics). The API
/// contract's `x-websocket` shows this type.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = StreamClientMessage)]
pub enum RawMsg {
    /// The first message of a connection without credentials on the upgrade:
    /// a stream token or a read-scope key, within 5 s.
    Auth {
        token: String,
    },
    /// Topics: `kpis`, `scores`, `segments`, `customer:{id}`; at most 100 per connection.
    Subscribe {
        topics: Vec<String>,
        /// Per topic, the last `seq` seen: what was missed is replayed from history first.
        #[serde(default)]
        since: HashMap<String, u64>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    /// Answered by a `pong` control message.
    Ping,
}

/// Parses one text frame. A subscribe naming unknown topics is refused whole
/// (the error names the first), so a client never ends up half-subscribed.
pub fn parse_client(text: &str) -> Result<ClientMsg, ClientError> {
    let raw: RawMsg = serde_json::from_str(text).map_err(|e| ClientError::BadMessage(e.to_string()))?;
    let topics = |names: Vec<String>| -> Result<Vec<Topic>, ClientError> {
        if names.is_empty() {
            return Err(ClientError::BadMessage("`topics` is empty".into()));
        }
        // Each topic once, in the client's order: a frame repeating a topic
        // thousands of times must cost the hub (and Redis) one subscription.
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for n in names {
            let t = Topic::parse(&n).ok_or(ClientError::UnknownTopic(n))?;
            if seen.insert(t.clone()) {
                out.push(t);
            }
        }
        Ok(out)
    };
    Ok(match raw {
        RawMsg::Auth { token } => ClientMsg::Auth { token },
        RawMsg::Subscribe { topics: names, since } => {
            let topics = topics(names)?;
            let mut parsed = HashMap::new();
            for (name, seq) in since {
                let t = Topic::parse(&name).ok_or_else(|| ClientError::UnknownTopic(name.clone()))?;
                if !topics.contains(&t) {
                    return Err(ClientError::BadMessage(format!("`since` names {name:?}, which is not in `topics`")));
                }
                parsed.insert(t, seq);
            }
            ClientMsg::Subscribe { topics, since: parsed }
        }
        RawMsg::Unsubscribe { topics: names } => ClientMsg::Unsubscribe { topics: topics(names)? },
        RawMsg::Ping => ClientMsg::Ping,
    })
}

#[cfg(test)]
mod dedup_tests {
    use super::*;

    #[test]
    fn repeated_topics_are_kept_once_in_order() {
        let names: Vec<String> =
            (0..5_000).flat_map(|_| ["kpis".to_owned(), "customer:c1".to_owned()]).chain(["scores".into()]).collect();
        let text = serde_json::json!({ "type": "subscribe", "topics": names }).to_string();
        let ClientMsg::Subscribe { topics, .. } = parse_client(&text).unwrap() else { panic!("not a subscribe") };
        assert_eq!(topics.iter().map(Topic::name).collect::<Vec<_>>(), ["kpis", "customer:c1", "scores"]);
    }
}

/// Server wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One encoded server message, shared by every connection it goes to (the
/// text is reference counted, so fan-out never copies it).
#[derive(Clone, Debug)]
pub struct Frame {
    /// The topic's shared name; `None` for control and error frames.
    pub topic: Option<Arc<str>>,
    pub seq: u64,
    pub text: ByteString,
}

impl Frame {
    /// `{"topic":T,"seq":N,"ts":MS,"data":DATA}` where `data` is JSON text.
    pub fn data(topic: &Arc<str>, seq: u64, ts: i64, data: &str) -> Frame {
        let name = serde_json::to_string(&**topic).unwrap_or_else(|_| "\"\"".into());
        let text = format!("{{\"topic\":{name},\"seq\":{seq},\"ts\":{ts},\"data\":{data}}}");
        Frame { topic: Some(topic.clone()), seq, text: text.into() }
    }

    /// A `_control` message with `seq` 0.
    pub fn control(data: Control) -> Frame {
        Self::unsequenced("_control", data)
    }

    /// An `_error` message with `seq` 0.
    pub fn error(code: ErrorCode, message: &str) -> Frame {
        Self::unsequenced("_error", ErrorData { code, message })
    }

    fn unsequenced(topic: &str, data: impl serde::Serialize) -> Frame {
        // Plain structs and strings: encoding cannot fail.
        let data = serde_json::to_value(data).unwrap_or_default();
        let text = serde_json::to_string(&Envelope { topic, seq: 0, ts: now_ms(), data }).unwrap_or_default();
        Frame { topic: None, seq: 0, text: text.into() }
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_and_name_round_trip() {
        for name in ["kpis", "scores", "segments", "customer:c-42"] {
            assert_eq!(Topic::parse(name).map(|t| t.name()), Some(name.to_owned()));
        }
        assert_eq!(Topic::parse("weather"), None);
        assert_eq!(Topic::parse("customer:"), None);
        assert_eq!(Topic::parse("customer:a b"), None);
    }

    #[test]
    fn subscribe_with_since_parses_and_checks_topics() {
        let m = parse_client(r#"{"type":"subscribe","topics":["kpis","scores"],"since":{"kpis":41}}"#).unwrap();
        let mut since = HashMap::new();
        since.insert(Topic::Kpis, 41);
        assert_eq!(m, ClientMsg::Subscribe { topics: vec![Topic::Kpis, Topic::Scores], since });
        assert_eq!(
            parse_client(r#"{"type":"subscribe","topics":["kpis","nope"]}"#),
            Err(ClientError::UnknownTopic("nope".into()))
        );
        assert!(matches!(
            parse_client(r#"{"type":"subscribe","topics":["kpis"],"since":{"scores":1}}"#),
            Err(ClientError::BadMessage(_))
        ));
        assert!(matches!(parse_client("not json"), Err(ClientError::BadMessage(_))));
        assert!(matches!(parse_client(r#"{"type":"dance"}"#), Err(ClientError::BadMessage(_))));
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMsg::Ping));
    }

    #[test]
    fn frames_are_valid_json() {
        let t: Arc<str> = Arc::from("customer:\"odd\"");
        let f = Frame::data(&t, 7, 123, r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&f.text).unwrap();
        assert_eq!(v["topic"], "customer:\"odd\"");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["data"]["a"], 1);
        let e: serde_json::Value = serde_json::from_str(&Frame::error(ErrorCode::BadMessage, "x").text).unwrap();
        assert_eq!(e["topic"], "_error");
        assert_eq!(e["seq"], 0);
    }
}
