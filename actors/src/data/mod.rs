//! The data of the runtime, free of actors and I/O: a customer's state and
//! how events change it ([`state`]), what the models say about it ([`Score`],
//! [`SegmentAssignment`]) and the snapshot the persister writes
//! ([`Snapshot`]). It depends only on the event types and the feature code,
//! so the live actors, crash recovery, the store and offline jobs all share
//! it without depending on each other.

pub mod state;

use serde::{Deserialize, Serialize};
use state::SessionView;

/// A model's answer for one session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Purchase probability in [0, 1].
    pub probability: f64,
    pub model_version: String,
}

/// The segment a customer is in, as kept in its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SegmentAssignment {
    /// Segmentation version.
    pub version: i32,
    /// Segment index in that version.
    pub segment: u32,
    pub name: String,
}

/// Actor → persister: the customer's state as of `last_seq`.
#[derive(actix::Message, Clone)]
#[rtype(result = "()")]
pub struct Snapshot {
    pub customer_id: crate::event::CustomerId,
    pub last_seq: i64,
    pub state_json: String,
    pub profile_json: String,
    /// Sessions that changed since the previous snapshot.
    pub sessions: Vec<SessionView>,
    /// The customer's segment in the active segmentation, if assigned.
    pub segment: Option<SegmentAssignment>,
    /// The fold span of the newest traced event in it, and when the snapshot
    /// was taken: the persister records the write as that trace's
    /// `actor.snapshot` span (snapshots that coalesce keep the newest).
    pub trace: Option<(crate::trace::TraceParent, std::time::SystemTime)>,
}

/// Stable partition of a customer id (FNV-1a): the same on every replica and
/// every run, because stream partitions are derived from it too.
pub fn partition(customer: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in customer.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as usize
}
