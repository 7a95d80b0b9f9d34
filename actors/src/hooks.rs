//! What the session actors call out to, supplied by the application: the
//! purchase-intent scorer, the active segmentation, and the update bus that
//! feeds the KPI aggregator and the live stream. The runtime core knows these
//! only as traits and channels, so it stays free of candle, linfa and
//! WebSockets, and each can be absent (no model promoted, no segmentation
//! active, nobody listening) without the actors caring.

use crate::data::state::{CustomerView, SessionView};
use crate::data::{Score, SegmentAssignment};
use crate::event::{CustomerId, SessionId};
use crate::features::profile::ProfileFeatures;
use crate::features::ShoppersFeatures;
use crate::trace::{SpanRecorder, TraceParent};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// Everything the actors may call; cheap to clone.
#[derive(Clone)]
pub struct Hooks {
    pub scorer: Option<Arc<dyn Scorer>>,
    pub scoring: ScoringRules,
    pub segments: SegmentSlot,
    pub updates: UpdateBus,
    /// Records the spans of traced events (fold, snapshot); `None` with
    /// tracing off.
    pub spans: Option<Arc<dyn SpanRecorder>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            scorer: None,
            scoring: ScoringRules::default(),
            segments: SegmentSlot::default(),
            updates: UpdateBus::new(1 << 16),
            spans: None,
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("scorer", &self.scorer.is_some())
            .field("scoring", &self.scoring)
            .field("segments", &self.segments.current().map(|s| s.version()))
            .field("spans", &self.spans.is_some())
            .finish()
    }
}

/// When open sessions are scored.
#[derive(Clone, Copy, Debug)]
pub struct ScoringRules {
    /// An open session is rescored at most this often (and only if it changed).
    pub debounce: std::time::Duration,
    /// A `scores` update goes out when a session's score reaches this.
    pub alert_threshold: f64,
}

impl Default for ScoringRules {
    fn default() -> Self {
        ScoringRules { debounce: std::time::Duration::from_secs(2), alert_threshold: 0.5 }
    }
}

// ---------------------------------------------------------------- scoring

/// Why no score came back; the actor keeps its previous score and tries again
/// at the next change or at session end.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("no model is active")]
    NoModel,
    #[error("the inference pool is overloaded")]
    Overloaded,
    #[error("inference failed: {0}")]
    Failed(String),
}

/// What a score is for: a session still open (the model may then read its
/// features as a prefix of a longer session, calibrated by pages seen) or a
/// closed session's final score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// An open session after `pages` page views.
    Open { pages: u32 },
    /// A closed session, scored once.
    Final,
}

/// Scores sessions; implemented by the inference pool. The customer id picks
/// the model when two versions share traffic (a stable A/B split).
pub trait Scorer: Send + Sync + 'static {
    /// False while no model is loaded, so actors do not ask in vain.
    fn ready(&self) -> bool;
    /// `trace` is the fold span of the traced event that made the session
    /// change, if any: the scoring spans join its trace.
    fn score(
        &self,
        customer: &CustomerId,
        features: &ShoppersFeatures,
        stage: Stage,
        trace: Option<TraceParent>,
    ) -> BoxFuture<'static, Result<Score, ScoreError>>;
}

// ---------------------------------------------------------------- segments

/// An activated segmentation: nearest centroid of a transformed profile.
pub trait SegmentAssigner: Send + Sync + 'static {
    fn version(&self) -> i32;
    /// Segment index and name for this profile.
    fn assign(&self, profile: &ProfileFeatures) -> (u32, String);
}

/// The active segmentation, swapped at activation; readers take a clone of
/// the `Arc` so an activation never waits on them.
#[derive(Clone, Default)]
pub struct SegmentSlot(Arc<RwLock<Option<Arc<dyn SegmentAssigner>>>>);

impl SegmentSlot {
    pub fn current(&self) -> Option<Arc<dyn SegmentAssigner>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    /// Activates (or with `None` deactivates) a segmentation.
    pub fn set(&self, assigner: Option<Arc<dyn SegmentAssigner>>) {
        if let Ok(mut g) = self.0.write() {
            *g = assigner;
        }
    }
}

// ---------------------------------------------------------------- updates

/// What the actors tell the rest of the service as it happens.
#[derive(Clone, Debug)]
pub enum Update {
    /// A customer applied new events.
    Applied {
        customer: CustomerId,
        events: u32,
        orders: u32,
        revenue: f64,
        /// Earliest acknowledgement time among these events (Unix ms), when
        /// they came from live ingest rather than recovery.
        acked_at_ms: Option<i64>,
        /// The customer's open session after these events, if any (so a
        /// listener can count open sessions across restarts).
        open_session: Option<SessionId>,
        /// The customer's current segment, if assigned (so segment sizes can
        /// count customers whose assignment did not change since a restart).
        segment: Option<SegmentAssignment>,
        /// The `actor.fold` span of a traced event among these, so what the
        /// update causes downstream (rollup, frames) joins its trace.
        trace: Option<TraceParent>,
    },
    SessionClosed {
        customer: CustomerId,
        session: SessionView,
    },
    /// A session got a (new) score.
    Scored {
        customer: CustomerId,
        session: SessionId,
        score: Score,
        /// The score is at or above the alert threshold and the previous one
        /// of this session was not.
        crossed: bool,
        /// Scored at session end (the final score).
        final_score: bool,
    },
    SegmentChanged {
        customer: CustomerId,
        version: i32,
        from: Option<u32>,
        to: u32,
        name: String,
    },
    /// The full view of a customer someone is watching (see
    /// [`UpdateBus::watch`]).
    Customer {
        view: Arc<CustomerView>,
        /// The fold span of the traced event that changed it, if any.
        trace: Option<TraceParent>,
    },
}

/// A bounded broadcast of [`Update`]s. Sending never blocks an actor: a
/// listener that falls behind loses the oldest updates and is told how many
/// (tokio's `Lagged`). Also keeps which customers are watched, so actors build
/// full views only for those.
#[derive(Clone)]
pub struct UpdateBus {
    tx: broadcast::Sender<Arc<Update>>,
    watched: Arc<RwLock<HashMap<CustomerId, usize>>>,
}

impl UpdateBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        UpdateBus { tx, watched: Arc::default() }
    }

    pub fn send(&self, u: Update) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(u));
        }
    }

    /// True if anyone listens (so building an update is worth it).
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.tx.subscribe()
    }

    /// Someone starts watching a customer (reference counted).
    pub fn watch(&self, c: &CustomerId) {
        if let Ok(mut w) = self.watched.write() {
            *w.entry(c.clone()).or_default() += 1;
        }
    }

    pub fn unwatch(&self, c: &CustomerId) {
        if let Ok(mut w) = self.watched.write() {
            if let Some(n) = w.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    w.remove(c);
                }
            }
        }
    }

    pub fn is_watched(&self, c: &CustomerId) -> bool {
        self.watched.read().map(|w| !w.is_empty() && w.contains_key(c)).unwrap_or(false)
    }
}
