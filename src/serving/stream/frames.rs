//! The server's messages on `GET /v1/stream` as types: the envelope every
//! frame has, the `_control` and `_error` payloads and the `scores` and
//! `segments` payloads (the `kpis` payload is the aggregator's
//! [`Kpis`](super::aggregator::rollup::Kpis), a `customer:{id}` payload the
//! actors' customer view). The hub and the connections build their frames
//! from these, and the API contract (`GET /v1/openapi.json`, its
//! `x-websocket` extension) is generated from the same types, so the
//! document and the wire cannot part.

use actors::event::{CustomerId, SessionId};
use serde::Serialize;

// Control and error frames are encoded from it; topic messages, whose `data`
// is encoded once and shared by every connection, by `Frame::data` with the
// same fields (a test below holds them together).
/// Every server message: `{"topic", "seq", "ts", "data"}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = StreamFrame)]
pub struct Envelope<'a> {
    /// `kpis`, `scores`, `segments`, `customer:{id}`, or `_control` / `_error`.
    pub topic: &'a str,
    /// Per topic, from 1, gap-free in one server's history; 0 on `_control` and `_error`.
    pub seq: u64,
    /// Server wall clock at publish, Unix milliseconds.
    pub ts: i64,
    /// The topic's payload (see `topics` in `x-websocket`).
    pub data: serde_json::Value,
}

/// A `_control` message's `data`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = StreamControl)]
pub enum Control {
    /// A subscribe was carried out (after any replay it asked for).
    Subscribed {
        topics: Vec<String>,
    },
    Unsubscribed {
        topics: Vec<String>,
    },
    /// The `auth` message was accepted.
    Authenticated,
    /// The answer to a `ping` message.
    Pong,
    /// Messages of a topic this connection will not get live.
    Gap(GapInfo),
}

/// A `gap` control message's fields besides `type`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = StreamGapInfo)]
pub struct GapInfo {
    pub topic: String,
    #[serde(flatten)]
    pub reason: Gap,
}

/// Why there is a gap, and which messages it spans.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[schema(as = StreamGap)]
pub enum Gap {
    /// `since` reaches further back than the history (or is ahead of the
    /// topic's numbering): `oldest` is the oldest seq kept, `last` the newest.
    TooOld { oldest: u64, last: u64 },
    /// Lost while this connection was behind its queue limit; resubscribe
    /// with `since` = `from` − 1 to fetch them from history.
    Dropped { from: u64, to: u64 },
    /// Many replicas only: the server itself could get these neither live
    /// nor from the Redis history; they cannot be fetched.
    Lost { from: u64, to: u64 },
}

/// Why a client message was refused (the connection stays open).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StreamErrorCode)]
pub enum ErrorCode {
    BadMessage,
    UnknownTopic,
    TooManyTopics,
    AlreadyAuthenticated,
}

impl ErrorCode {
    /// The wire name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownTopic => "unknown_topic",
            ErrorCode::TooManyTopics => "too_many_topics",
            ErrorCode::AlreadyAuthenticated => "already_authenticated",
        }
    }
}

/// An `_error` message's `data`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = StreamError)]
pub struct ErrorData<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
}

/// A `scores` message's `data`: a session whose predicted intent crossed the threshold.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = StreamScore)]
pub struct ScoreData<'a> {
    pub customer_id: &'a CustomerId,
    pub session_id: &'a SessionId,
    /// Purchase probability in [0, 1].
    pub score: f64,
    pub model_version: &'a str,
    /// True for the session's closing score.
    #[serde(rename = "final")]
    pub final_score: bool,
}

/// A `segments` message's `data`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = StreamSegmentMessage)]
pub enum SegmentMessage<'a> {
    /// A customer moved to another segment.
    Changed {
        customer_id: &'a CustomerId,
        /// Segmentation version.
        version: i32,
        /// The previous segment's index (`null` for a first assignment).
        from: Option<u32>,
        to: u32,
        /// The new segment's name.
        name: &'a str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_keep_their_wire_form() {
        let gap = Control::Gap(GapInfo { topic: "kpis".into(), reason: Gap::Dropped { from: 3, to: 9 } });
        assert_eq!(
            serde_json::to_string(&gap).unwrap(),
            r#"{"type":"gap","topic":"kpis","reason":"dropped","from":3,"to":9}"#
        );
        assert_eq!(serde_json::to_string(&Control::Pong).unwrap(), r#"{"type":"pong"}"#);
        let sub = Control::Subscribed { topics: vec!["scores".into()] };
        assert_eq!(serde_json::to_string(&sub).unwrap(), r#"{"type":"subscribed","topics":["scores"]}"#);
    }

    #[test]
    fn topic_frames_have_the_envelope_fields() {
        let topic: std::sync::Arc<str> = std::sync::Arc::from("kpis");
        let f = super::super::protocol::Frame::data(&topic, 3, 17, r#"{"a":1}"#);
        let from_wire: serde_json::Value = serde_json::from_str(&f.text).unwrap();
        let typed = serde_json::to_value(Envelope { topic: "kpis", seq: 3, ts: 17, data: serde_json::json!({"a": 1}) })
            .unwrap();
        assert_eq!(from_wire, typed);
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for c in
            [ErrorCode::BadMessage, ErrorCode::UnknownTopic, ErrorCode::TooManyTopics, ErrorCode::AlreadyAuthenticated]
        {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn segment_changes_carry_their_type() {
        let c = CustomerId::new_unchecked("c1");
        let v = serde_json::to_value(SegmentMessage::Changed {
            customer_id: &c,
            version: 2,
            from: None,
            to: 1,
            name: "loyal",
        })
        .unwrap();
        assert_eq!(v["type"], "changed");
        assert_eq!(v["from"], serde_json::Value::Null);
    }
}
