//! A customer's state and how events change it, free of actors and I/O so that
//! the live actor, crash recovery and offline jobs all run the same code.

use crate::data::{Score, SegmentAssignment};
use crate::event::{CustomerId, EventKind, LoggedEvent, SessionId};
use crate::features::profile::{ProfileAccumulator, ProfileFeatures, SessionSummary};
use crate::features::session::{SessionAccumulator, ShoppersFeatures};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The shop sent `session_end`.
    SessionEnd,
    /// No event for longer than the session gap.
    Inactivity,
    /// The customer's next event belonged to another session.
    NewSession,
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::SessionEnd => "session_end",
            CloseReason::Inactivity => "inactivity",
            CloseReason::NewSession => "new_session",
        }
    }
}

/// The ages (page views seen) at which an open session's score is kept, so
/// that served models are judged on open sessions too (the live evaluation
/// by session age).
pub const SCORED_AGES: [u32; 4] = [1, 3, 5, 10];

/// The score an open session got for its features as they stood when it
/// reached `pages` page views.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgeScore {
    pub pages: u32,
    pub probability: f64,
    pub model_version: String,
}

/// An open session reached one of [`SCORED_AGES`]: its features then, to be
/// scored.
#[derive(Clone, Debug)]
pub struct ReachedAge {
    pub session: SessionId,
    pub pages: u32,
    pub features: ShoppersFeatures,
}

/// Where [`CustomerState::record_age_score`] put a score.
#[derive(Debug)]
pub enum AgeRecorded {
    /// Kept with the open session.
    Open,
    /// The session has closed meanwhile: kept with it, and its row is to be
    /// written again.
    Closed(Box<ClosedSession>),
    /// The session is gone or already has a score at that age.
    Ignored,
}

/// A finished session as the customer keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClosedSession {
    pub summary: SessionSummary,
    pub features: ShoppersFeatures,
    pub cart_adds: u32,
    pub close_reason: CloseReason,
    /// Model that gave `summary.score` (the final score, taken at close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Its scores while open, at the ages of [`SCORED_AGES`] it reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub age_scores: Vec<AgeScore>,
}

/// Everything a `CustomerSession` actor knows; serialized whole as its snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    pub customer_id: CustomerId,
    /// Log position of the last event applied.
    pub last_seq: i64,
    pub profile: ProfileAccumulator,
    pub open: Option<SessionAccumulator>,
    /// Most recent closed sessions, newest last.
    pub recent: VecDeque<ClosedSession>,
    /// Latest score of the open session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_score: Option<Score>,
    /// The open session's scores at the ages of [`SCORED_AGES`] it reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_ages: Vec<AgeScore>,
    /// Segment in the active segmentation, once assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentAssignment>,
}

/// Tuning that changes how events fold into state.
#[derive(Clone, Copy, Debug)]
pub struct StateRules {
    /// Event-time gap after which the open session is closed.
    pub session_gap: Duration,
    /// Closed sessions kept in `recent`.
    pub recent_cap: usize,
    /// The shop's time zone: Month, Weekend and the order hours are read on
    /// its clock (`features.timezone`).
    pub timezone: chrono_tz::Tz,
}

/// What one `apply` changed, for persistence and telemetry.
#[derive(Debug, Default)]
pub struct Changes {
    pub applied: u64,
    pub skipped: u64,
    /// Sessions closed by these events, oldest first.
    pub closed: Vec<ClosedSession>,
    /// Ages of [`SCORED_AGES`] the open session reached with these events.
    pub reached: Vec<ReachedAge>,
}

impl CustomerState {
    pub fn new(customer_id: CustomerId) -> Self {
        CustomerState {
            customer_id,
            last_seq: 0,
            profile: ProfileAccumulator::default(),
            open: None,
            recent: VecDeque::new(),
            open_score: None,
            open_ages: Vec::new(),
            segment: None,
        }
    }

    /// Applies one event from the log unless it was applied before.
    pub fn apply(&mut self, logged: &LoggedEvent, rules: StateRules, changes: &mut Changes) {
        if logged.seq <= self.last_seq {
            changes.skipped += 1;
            return;
        }
        self.last_seq = logged.seq;
        changes.applied += 1;
        let ev = &logged.event;
        self.profile.note_event_time(ev.time);

        if let Some(sid) = &ev.session_id {
            // A session ends when the customer moves to another session or
            // comes back after the gap; the new event then opens a new one.
            if let Some(open) = &self.open {
                if ev.time - open.last_event_at() > rules.session_gap {
                    self.close_open(CloseReason::Inactivity, rules, changes);
                } else if open.session_id() != sid {
                    self.close_open(CloseReason::NewSession, rules, changes);
                }
            }
            // A closed session id is not reopened: its late events still count
            // in the profile (orders, cart) but not in the closed session.
            let late = self.open.is_none() && self.recent.iter().any(|c| &c.summary.session_id == sid);
            if !late {
                let acc = self
                    .open
                    .get_or_insert_with(|| SessionAccumulator::in_timezone(sid.clone(), ev.time, rules.timezone));
                acc.apply(ev);
                if matches!(ev.kind, EventKind::PageView(_)) && SCORED_AGES.contains(&acc.page_views()) {
                    changes.reached.push(ReachedAge {
                        session: sid.clone(),
                        pages: acc.page_views(),
                        features: acc.features(),
                    });
                }
            }
        }

        match &ev.kind {
            EventKind::Purchase(p) => self.profile.apply_purchase_in(ev.time, p, rules.timezone),
            EventKind::AddToCart(c) => self.profile.apply_cart(ev.time, true, c),
            EventKind::RemoveFromCart(c) => self.profile.apply_cart(ev.time, false, c),
            EventKind::SessionEnd => {
                if self.open.as_ref().map(|o| Some(o.session_id()) == ev.session_id.as_ref()).unwrap_or(false) {
                    self.close_open(CloseReason::SessionEnd, rules, changes);
                }
            }
            EventKind::PageView(_) => {}
        }
    }

    /// Closes the open session, if any, folding it into the profile.
    pub fn close_open(&mut self, reason: CloseReason, rules: StateRules, changes: &mut Changes) {
        if let Some(acc) = self.open.take() {
            self.open_score = None;
            let summary = SessionSummary::from_accumulator(&acc, None);
            self.profile.apply_closed_session(&summary);
            let closed = ClosedSession {
                summary,
                features: acc.features(),
                cart_adds: acc.cart_adds(),
                close_reason: reason,
                model_version: None,
                age_scores: std::mem::take(&mut self.open_ages),
            };
            self.recent.push_back(closed.clone());
            while self.recent.len() > rules.recent_cap.max(1) {
                self.recent.pop_front();
            }
            changes.closed.push(closed);
        }
    }

    /// Records the final score of a closed session and folds it into the
    /// profile. `None` if the session is no longer held or already scored, so
    /// a score counts once however often it is delivered.
    pub fn score_closed(&mut self, id: &SessionId, score: &Score) -> Option<ClosedSession> {
        let c = self.recent.iter_mut().find(|c| &c.summary.session_id == id)?;
        if c.summary.score.is_some() {
            return None;
        }
        c.summary.score = Some(score.probability);
        c.model_version = Some(score.model_version.clone());
        let c = c.clone();
        self.profile.apply_session_score(score.probability);
        Some(c)
    }

    /// Keeps the score `session` got at `score.pages` page views, once.
    pub fn record_age_score(&mut self, session: &SessionId, score: AgeScore) -> AgeRecorded {
        let held = |ages: &[AgeScore]| ages.iter().any(|a| a.pages == score.pages);
        if self.open.as_ref().is_some_and(|o| o.session_id() == session) {
            if held(&self.open_ages) {
                return AgeRecorded::Ignored;
            }
            self.open_ages.push(score);
            return AgeRecorded::Open;
        }
        match self.recent.iter_mut().find(|c| &c.summary.session_id == session) {
            Some(c) if !held(&c.age_scores) => {
                c.age_scores.push(score);
                AgeRecorded::Closed(Box::new(c.clone()))
            }
            _ => AgeRecorded::Ignored,
        }
    }

    /// The read model of this customer.
    pub fn view(&self, as_of: DateTime<Utc>) -> CustomerView {
        CustomerView {
            customer_id: self.customer_id.clone(),
            last_seq: self.last_seq,
            profile: self.profile.features(as_of),
            profile_as_of: as_of,
            first_seen: self.profile.first_seen(),
            last_seen: self.profile.last_seen(),
            open_session: self
                .open
                .as_ref()
                .map(|o| SessionView::open(&self.customer_id, o, self.open_score.as_ref(), &self.open_ages)),
            recent_sessions: self.recent.iter().rev().map(|c| SessionView::closed(&self.customer_id, c)).collect(),
            segment: self.segment.clone(),
        }
    }

    /// The session with this id, if this customer still holds it.
    pub fn session(&self, id: &SessionId) -> Option<SessionView> {
        if let Some(o) = &self.open {
            if o.session_id() == id {
                return Some(SessionView::open(&self.customer_id, o, self.open_score.as_ref(), &self.open_ages));
            }
        }
        self.recent.iter().find(|c| &c.summary.session_id == id).map(|c| SessionView::closed(&self.customer_id, c))
    }
}

/// A customer as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CustomerView {
    pub customer_id: CustomerId,
    pub last_seq: i64,
    pub profile: ProfileFeatures,
    /// The time recency and the 90-day windows are measured from.
    pub profile_as_of: DateTime<Utc>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub open_session: Option<SessionView>,
    /// Newest first.
    pub recent_sessions: Vec<SessionView>,
    /// Segment in the active segmentation, once assigned.
    pub segment: Option<SegmentAssignment>,
}

/// A session as the API shows it (and as the sessions table stores it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: SessionId,
    pub customer_id: CustomerId,
    /// `open` or `closed`.
    #[schema(pattern = "^(open|closed)$")]
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub n_events: u32,
    pub purchased: bool,
    pub cart_adds: u32,
    pub close_reason: Option<CloseReason>,
    /// The 17 UCI Online Shoppers features under the file's column names.
    pub features: serde_json::Map<String, serde_json::Value>,
    /// Predicted purchase intent: the latest score of an open session, the
    /// final one (taken at close) of a closed session.
    pub score: Option<f64>,
    pub model_version: Option<String>,
    /// The scores the session got while open, when it reached 1, 3, 5 and
    /// 10 page views (those it reached and that were scored; for a closed
    /// session, only those of the model that gave its final score).
    #[serde(default)]
    pub age_scores: Vec<PageScore>,
}

/// A score at an age of the session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PageScore {
    /// Page views seen.
    pub pages: u32,
    pub score: f64,
}

impl SessionView {
    fn open(customer: &CustomerId, o: &SessionAccumulator, score: Option<&Score>, ages: &[AgeScore]) -> Self {
        SessionView {
            session_id: o.session_id().clone(),
            customer_id: customer.clone(),
            status: "open".into(),
            started_at: o.started_at(),
            last_event_at: o.last_event_at(),
            n_events: o.n_events(),
            purchased: o.purchased(),
            cart_adds: o.cart_adds(),
            close_reason: None,
            features: o.features().to_uci_json(),
            score: score.map(|s| s.probability),
            model_version: score.map(|s| s.model_version.clone()),
            age_scores: page_scores(ages.iter()),
        }
    }

    fn closed(customer: &CustomerId, c: &ClosedSession) -> Self {
        SessionView {
            session_id: c.summary.session_id.clone(),
            customer_id: customer.clone(),
            status: "closed".into(),
            started_at: c.summary.started_at,
            last_event_at: c.summary.ended_at,
            n_events: c.summary.n_events,
            purchased: c.summary.purchased,
            cart_adds: c.cart_adds,
            close_reason: Some(c.close_reason),
            features: c.features.to_uci_json(),
            score: c.summary.score,
            model_version: c.model_version.clone(),
            age_scores: page_scores(c.age_scores.iter().filter(|a| Some(&a.model_version) == c.model_version.as_ref())),
        }
    }

    /// The view of a closed session (for persisting it).
    pub fn of_closed(customer: &CustomerId, c: &ClosedSession) -> Self {
        Self::closed(customer, c)
    }

    /// The view of an open session (for persisting it).
    pub fn of_open(customer: &CustomerId, o: &SessionAccumulator, score: Option<&Score>, ages: &[AgeScore]) -> Self {
        Self::open(customer, o, score, ages)
    }

    /// The score at `pages` page views, if the session has one.
    pub fn age_score(&self, pages: u32) -> Option<f64> {
        self.age_scores.iter().find(|a| a.pages == pages).map(|a| a.score)
    }
}

/// Scores by age, youngest first.
fn page_scores<'a>(ages: impl Iterator<Item = &'a AgeScore>) -> Vec<PageScore> {
    let mut v: Vec<PageScore> = ages.map(|a| PageScore { pages: a.pages, score: a.probability }).collect();
    v.sort_by_key(|a| a.pages);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventId, PageKind, PageView, VisitorType};
    use chrono::TimeZone;

    fn rules() -> StateRules {
        StateRules { session_gap: Duration::minutes(30), recent_cap: 4, timezone: chrono_tz::Tz::UTC }
    }

    fn logged(seq: i64, kind: EventKind) -> LoggedEvent {
        let time = Utc.with_ymd_and_hms(2025, 3, 3, 10, 0, 0).single().unwrap() + Duration::seconds(seq);
        LoggedEvent {
            seq,
            event: Event {
                event_id: EventId::new_unchecked(format!("e{seq}")),
                customer_id: CustomerId::new_unchecked("c1"),
                session_id: Some(SessionId::new_unchecked("s1")),
                time,
                kind,
            },
            acked_at_ms: 0,
            trace: None,
        }
    }

    fn page() -> EventKind {
        EventKind::PageView(PageView {
            page_kind: PageKind::Product,
            duration_s: Some(5.0),
            bounce_rate: 0.0,
            exit_rate: 0.1,
            page_value: 2.0,
            special_day: 0.0,
            os: 1,
            browser: 1,
            region: 1,
            traffic_type: 1,
            visitor_type: VisitorType::Returning,
        })
    }

    fn score(pages: u32, version: &str) -> AgeScore {
        AgeScore { pages, probability: f64::from(pages) / 100.0, model_version: version.into() }
    }

    #[test]
    fn an_open_session_is_scored_at_each_age_once_and_keeps_the_scores_when_it_closes() {
        let mut state = CustomerState::new(CustomerId::new_unchecked("c1"));
        let mut changes = Changes::default();
        for seq in 1..=12 {
            state.apply(&logged(seq, page()), rules(), &mut changes);
        }
        let reached: Vec<(u32, u32)> = changes.reached.iter().map(|r| (r.pages, r.features.product_related)).collect();
        assert_eq!(reached, vec![(1, 1), (3, 3), (5, 5), (10, 10)], "the features as they stood at each age");
        // Redelivered events reach nothing again.
        let mut again = Changes::default();
        state.apply(&logged(5, page()), rules(), &mut again);
        assert!(again.reached.is_empty());

        let sid = SessionId::new_unchecked("s1");
        assert!(matches!(state.record_age_score(&sid, score(1, "v1")), AgeRecorded::Open));
        assert!(matches!(state.record_age_score(&sid, score(1, "v1")), AgeRecorded::Ignored), "once per age");
        assert!(matches!(state.record_age_score(&sid, score(3, "v1")), AgeRecorded::Open));
        let open = state.session(&sid).unwrap();
        assert_eq!(open.age_scores, vec![PageScore { pages: 1, score: 0.01 }, PageScore { pages: 3, score: 0.03 }]);

        // A snapshot keeps them.
        let back: CustomerState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);

        state.apply(&logged(13, EventKind::SessionEnd), rules(), &mut changes);
        assert!(state.open_ages.is_empty());
        // A score that lands after the close joins the closed session, whose row is written again.
        match state.record_age_score(&sid, score(10, "v1")) {
            AgeRecorded::Closed(c) => assert_eq!(c.age_scores.len(), 3),
            other => panic!("{other:?}"),
        }
        // Only the scores of the version that gave the final score are shown.
        state.record_age_score(&sid, score(5, "v0"));
        let closed = state.score_closed(&sid, &Score { probability: 0.4, model_version: "v1".into() }).unwrap();
        let view = SessionView::of_closed(&CustomerId::new_unchecked("c1"), &closed);
        assert_eq!(view.age_scores.iter().map(|a| a.pages).collect::<Vec<_>>(), vec![1, 3, 10]);
        assert_eq!((view.age_score(3), view.age_score(5)), (Some(0.03), None));
        let unknown = SessionId::new_unchecked("nope");
        assert!(matches!(state.record_age_score(&unknown, score(1, "v1")), AgeRecorded::Ignored));
    }
}
