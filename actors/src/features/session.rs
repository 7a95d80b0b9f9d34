//! The 17 session features of the UCI Online Shoppers Purchasing Intention data
//! set, computed live from one session's events. The UCI file's form of them is in
//! [`super::uci`]; the inverse mapping (a row as page views) in
//! [`super::expand`].
//!
//! # Semantics of [`ShoppersFeatures`] as computed by [`SessionAccumulator`]
//!
//! | feature | definition |
//! | --- | --- |
//! | `Administrative`, `Informational`, `ProductRelated` | number of `page_view` events with `page_kind` administrative / informational / product. `other` pages count in none of the three. |
//! | `*_Duration` (seconds) | sum of the known `duration_s` of the pages of that kind. With ≥ 1 page of the kind and no known duration among them: `-1` (the UCI file's "unknown"); with 0 pages: `0`. A duration that is negative or not finite counts as unknown. |
//! | `BounceRates`, `ExitRates`, `PageValues` | arithmetic mean over all `page_view` events of the session (all four kinds, `other` included); `0` without page views. |
//! | `SpecialDay`, `OperatingSystems`, `Browser`, `Region`, `TrafficType`, `VisitorType` | taken from the session's first page view (earliest event time; on a tie, the one applied first). Without page views: `0` and `Other`. |
//! | `Month` (1..=12), `Weekend` | calendar month of the session's first event on the shop's clock (`features.timezone`, default UTC; [`SessionAccumulator::in_timezone`]), and whether that day is a Saturday or Sunday there. |
//!
//! "First event" is the earliest event time seen: the time given to
//! [`SessionAccumulator::new`] or any earlier time applied later, so a late,
//! out-of-order event moves [`SessionAccumulator::started_at`] back.
//!
//! Events of other kinds (cart changes, purchases, `session_end`) count in
//! `n_events`, `cart_adds`, `cart_removes` and `purchased`, never in the page
//! features. Every sum uses Neumaier compensation so that sessions with
//! thousands of pages stay exact.
//!
//! An event whose `session_id` is `Some` other session is ignored (with a
//! warning): it can only reach the accumulator through a routing bug, and
//! counting it would corrupt two sessions instead of one.

use chrono::{DateTime, Datelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::NeumaierSum;
use crate::event::{Event, EventKind, PageKind, PageView, SessionId, VisitorType};

/// Per page-kind running totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct KindStats {
    pages: u32,
    /// Pages of this kind whose duration was known; tells "-1" from "0".
    known_durations: u32,
    duration_s: NeumaierSum,
}

impl KindStats {
    fn duration_feature(&self) -> f64 {
        if self.pages == 0 {
            0.0
        } else if self.known_durations == 0 {
            -1.0
        } else {
            self.duration_s.value()
        }
    }
}

/// The visit context, taken from the first page view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct VisitContext {
    /// Time of the page view it came from, so an earlier late page can replace it.
    time: DateTime<Utc>,
    special_day: f64,
    os: u16,
    browser: u16,
    region: u16,
    traffic_type: u16,
    visitor_type: VisitorType,
}

/// Running state of one session, from which [`ShoppersFeatures`] are computed
/// in O(1). Plain data so that actors can snapshot it as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionAccumulator {
    session_id: SessionId,
    started_at: DateTime<Utc>,
    last_event_at: DateTime<Utc>,
    n_events: u32,
    administrative: KindStats,
    informational: KindStats,
    product: KindStats,
    other: KindStats,
    page_views: u32,
    bounce_rate_sum: NeumaierSum,
    exit_rate_sum: NeumaierSum,
    page_value_sum: NeumaierSum,
    context: Option<VisitContext>,
    cart_adds: u32,
    cart_removes: u32,
    purchased: bool,
    /// The shop's time zone, in which Month and Weekend are read from the
    /// start time; absent (UTC) in snapshots taken before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<Tz>,
}

impl SessionAccumulator {
    /// An empty session whose first event happened at `first_event_time`. The
    /// first event itself still has to be [`apply`](Self::apply)-ed.
    pub fn new(session_id: SessionId, first_event_time: DateTime<Utc>) -> Self {
        Self::in_timezone(session_id, first_event_time, Tz::UTC)
    }

    /// As [`new`](Self::new), for a shop in `timezone`.
    pub fn in_timezone(session_id: SessionId, first_event_time: DateTime<Utc>, timezone: Tz) -> Self {
        Self {
            session_id,
            started_at: first_event_time,
            last_event_at: first_event_time,
            n_events: 0,
            administrative: KindStats::default(),
            informational: KindStats::default(),
            product: KindStats::default(),
            other: KindStats::default(),
            page_views: 0,
            bounce_rate_sum: NeumaierSum::default(),
            exit_rate_sum: NeumaierSum::default(),
            page_value_sum: NeumaierSum::default(),
            context: None,
            cart_adds: 0,
            cart_removes: 0,
            purchased: false,
            timezone: (timezone != Tz::UTC).then_some(timezone),
        }
    }

    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// Earliest event time seen (see the module doc).
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Latest event time seen.
    pub fn last_event_at(&self) -> DateTime<Utc> {
        self.last_event_at
    }

    /// Events applied, of any kind.
    pub fn n_events(&self) -> u32 {
        self.n_events
    }

    /// Page views of any kind, `other` included.
    pub fn page_views(&self) -> u32 {
        self.page_views
    }

    /// Sum of the known page durations over all four page kinds, in seconds.
    pub fn known_duration_s(&self) -> f64 {
        let mut total = NeumaierSum::default();
        for k in [&self.administrative, &self.informational, &self.product, &self.other] {
            total.add(k.duration_s.value());
        }
        total.value()
    }

    /// `add_to_cart` events applied.
    pub fn cart_adds(&self) -> u32 {
        self.cart_adds
    }

    /// `remove_from_cart` events applied.
    pub fn cart_removes(&self) -> u32 {
        self.cart_removes
    }

    /// Whether a purchase that is not a cancellation happened in this session.
    pub fn purchased(&self) -> bool {
        self.purchased
    }

    /// Applies one event of this session (any kind).
    pub fn apply(&mut self, event: &Event) {
        if let Some(sid) = &event.session_id {
            if *sid != self.session_id {
                tracing::warn!(
                    session = %self.session_id,
                    event_session = %sid,
                    event_id = %event.event_id,
                    "event of another session ignored"
                );
                return;
            }
        }
        self.n_events = self.n_events.saturating_add(1);
        if event.time < self.started_at {
            self.started_at = event.time;
        }
        if event.time > self.last_event_at {
            self.last_event_at = event.time;
        }
        match &event.kind {
            EventKind::PageView(page) => self.apply_page(event.time, page),
            EventKind::AddToCart(_) => self.cart_adds = self.cart_adds.saturating_add(1),
            EventKind::RemoveFromCart(_) => self.cart_removes = self.cart_removes.saturating_add(1),
            EventKind::Purchase(p) => {
                if !p.cancellation {
                    self.purchased = true;
                }
            }
            EventKind::SessionEnd => {}
        }
    }

    fn apply_page(&mut self, time: DateTime<Utc>, page: &PageView) {
        let stats = match page.page_kind {
            PageKind::Administrative => &mut self.administrative,
            PageKind::Informational => &mut self.informational,
            PageKind::Product => &mut self.product,
            PageKind::Other => &mut self.other,
        };
        stats.pages = stats.pages.saturating_add(1);
        if let Some(d) = page.duration_s.filter(|d| d.is_finite() && *d >= 0.0) {
            stats.known_durations = stats.known_durations.saturating_add(1);
            stats.duration_s.add(d);
        }
        self.page_views = self.page_views.saturating_add(1);
        // Ingest validates the ranges; the finiteness guard is what keeps the
        // JSON snapshot loadable (serde_json writes NaN as null).
        self.bounce_rate_sum.add(finite_or_zero(page.bounce_rate));
        self.exit_rate_sum.add(finite_or_zero(page.exit_rate));
        self.page_value_sum.add(finite_or_zero(page.page_value));
        if self.context.as_ref().is_none_or(|c| time < c.time) {
            self.context = Some(VisitContext {
                time,
                special_day: finite_or_zero(page.special_day),
                os: page.os,
                browser: page.browser,
                region: page.region,
                traffic_type: page.traffic_type,
                visitor_type: page.visitor_type,
            });
        }
    }

    /// The session's 17 UCI features as of the events applied so far.
    pub fn features(&self) -> ShoppersFeatures {
        let mean = |s: &NeumaierSum| {
            if self.page_views == 0 {
                0.0
            } else {
                s.value() / f64::from(self.page_views)
            }
        };
        let ctx = self.context.as_ref();
        let local_start = self.started_at.with_timezone(&self.timezone.unwrap_or(Tz::UTC));
        ShoppersFeatures {
            administrative: self.administrative.pages,
            administrative_duration: self.administrative.duration_feature(),
            informational: self.informational.pages,
            informational_duration: self.informational.duration_feature(),
            product_related: self.product.pages,
            product_related_duration: self.product.duration_feature(),
            bounce_rates: mean(&self.bounce_rate_sum),
            exit_rates: mean(&self.exit_rate_sum),
            page_values: mean(&self.page_value_sum),
            special_day: ctx.map_or(0.0, |c| c.special_day),
            // month() is 1..=12, so the narrowing cannot lose anything.
            month: local_start.month() as u8,
            operating_systems: ctx.map_or(0, |c| c.os),
            browser: ctx.map_or(0, |c| c.browser),
            region: ctx.map_or(0, |c| c.region),
            traffic_type: ctx.map_or(0, |c| c.traffic_type),
            visitor_type: ctx.map_or(VisitorType::Other, |c| c.visitor_type),
            weekend: is_weekend(local_start.weekday()),
        }
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

pub(crate) fn is_weekend(d: Weekday) -> bool {
    matches!(d, Weekday::Sat | Weekday::Sun)
}

/// The 17 features of one session, as in the UCI Online Shoppers data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShoppersFeatures {
    pub administrative: u32,
    pub administrative_duration: f64,
    pub informational: u32,
    pub informational_duration: f64,
    pub product_related: u32,
    pub product_related_duration: f64,
    pub bounce_rates: f64,
    pub exit_rates: f64,
    pub page_values: f64,
    pub special_day: f64,
    /// 1..=12.
    pub month: u8,
    pub operating_systems: u16,
    pub browser: u16,
    pub region: u16,
    pub traffic_type: u16,
    pub visitor_type: VisitorType,
    pub weekend: bool,
}
