//! The 17 session features of the UCI Online Shoppers Purchasing Intention data
//! set, computed live from one session's events, and the inverse mapping (a UCI
//! row expanded into page views) that the replay tool and the tests use to check
//! that live features equal the offline ones.
//!
//! # Semantics of [`ShoppersFeatures`] as computed by [`SessionAccumulator`]
//!
//! | feature | definition |
//! | --- | --- |
//! | `Administrative`, `Informational`, `ProductRelated` | number of `page_view` events with `page_kind` administrative / informational / product. `other` pages count in none of the three. |
//! | `*_Duration` (seconds) | sum of the known `duration_s` of the pages of that kind. With ≥ 1 page of the kind and no known duration among them: `-1` (the UCI file's "unknown"); with 0 pages: `0`. A duration that is negative or not finite counts as unknown. |
//! | `BounceRates`, `ExitRates`, `PageValues` | arithmetic mean over all `page_view` events of the session (all four kinds, `other` included); `0` without page views. |
//! | `SpecialDay`, `OperatingSystems`, `Browser`, `Region`, `TrafficType`, `VisitorType` | taken from the session's first page view (earliest event time; on a tie, the one applied first). Without page views: `0` and `Other`. |
//! | `Month` (1..=12), `Weekend` | calendar month of the session's first event (UTC), and whether that day is a Saturday or Sunday. |
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
//!
//! # Replay: a UCI row as page views
//!
//! [`expand_row_pages`] turns a row into the page views whose live features
//! equal the row (within float rounding): each of the row's N pages carries the
//! row's bounce/exit/value and visit context; each kind's duration is split in
//! equal shares over that kind's pages with the rounding remainder on the last
//! one (`-1` becomes "unknown" on every page); a row without pages becomes one
//! `other` page. [`session_start_for`] gives a start time in the row's month
//! that is a weekend day iff the row's `Weekend`. The replay tool stamps the
//! pages 1 s apart from that start and adds ids.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc, Weekday};
use serde::{Deserialize, Serialize};

use super::{FeatureError, NeumaierSum};
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
}

impl SessionAccumulator {
    /// An empty session whose first event happened at `first_event_time`. The
    /// first event itself still has to be [`apply`](Self::apply)-ed.
    pub fn new(session_id: SessionId, first_event_time: DateTime<Utc>) -> Self {
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
            month: self.started_at.month() as u8,
            operating_systems: ctx.map_or(0, |c| c.os),
            browser: ctx.map_or(0, |c| c.browser),
            region: ctx.map_or(0, |c| c.region),
            traffic_type: ctx.map_or(0, |c| c.traffic_type),
            visitor_type: ctx.map_or(VisitorType::Other, |c| c.visitor_type),
            weekend: is_weekend(self.started_at.weekday()),
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

fn is_weekend(d: Weekday) -> bool {
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

/// Month spellings of the UCI file (`June` is spelled out there; Jan and Apr do
/// not occur in the file, so their short forms are our choice).
const MONTH_NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "June", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

const REVENUE_COLUMN: &str = "Revenue";

impl ShoppersFeatures {
    /// The UCI file's feature column names, in file order (without `Revenue`).
    pub const UCI_COLUMNS: [&'static str; 17] = [
        "Administrative",
        "Administrative_Duration",
        "Informational",
        "Informational_Duration",
        "ProductRelated",
        "ProductRelated_Duration",
        "BounceRates",
        "ExitRates",
        "PageValues",
        "SpecialDay",
        "Month",
        "OperatingSystems",
        "Browser",
        "Region",
        "TrafficType",
        "VisitorType",
        "Weekend",
    ];

    /// The month as the UCI file spells it (`"Feb"`, `"June"`, …); `""` for a
    /// month outside 1..=12.
    pub fn month_name(month: u8) -> &'static str {
        match month {
            1..=12 => MONTH_NAMES[usize::from(month - 1)],
            _ => "",
        }
    }

    /// The features as a JSON object keyed by the UCI column names: counts and
    /// the categorical codes as integers, `Month` and `VisitorType` as the file
    /// spells them, `Weekend` as a bool, everything else as a float.
    pub fn to_uci_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let values: [Value; 17] = [
            Value::from(self.administrative),
            Value::from(self.administrative_duration),
            Value::from(self.informational),
            Value::from(self.informational_duration),
            Value::from(self.product_related),
            Value::from(self.product_related_duration),
            Value::from(self.bounce_rates),
            Value::from(self.exit_rates),
            Value::from(self.page_values),
            Value::from(self.special_day),
            Value::from(Self::month_name(self.month)),
            Value::from(self.operating_systems),
            Value::from(self.browser),
            Value::from(self.region),
            Value::from(self.traffic_type),
            Value::from(self.visitor_type.uci_name()),
            Value::from(self.weekend),
        ];
        Self::UCI_COLUMNS.iter().zip(values).map(|(k, v)| ((*k).to_owned(), v)).collect()
    }

    /// Parses one data row of the UCI CSV: 18 fields in header order (the 17
    /// features, then `Revenue`). Fields are trimmed, so a stray `\r` from the
    /// file's CRLF endings is harmless. Durations must be `>= 0` or exactly `-1`.
    pub fn from_uci_record(record: &[&str]) -> Result<(Self, bool), FeatureError> {
        if record.len() != Self::UCI_COLUMNS.len() + 1 {
            return Err(FeatureError::FieldCount { expected: Self::UCI_COLUMNS.len() + 1, got: record.len() });
        }
        let field = |i: usize| (Self::UCI_COLUMNS.get(i).copied().unwrap_or(REVENUE_COLUMN), record[i].trim());
        let features = Self {
            administrative: parse_count(field(0))?,
            administrative_duration: parse_duration(field(1))?,
            informational: parse_count(field(2))?,
            informational_duration: parse_duration(field(3))?,
            product_related: parse_count(field(4))?,
            product_related_duration: parse_duration(field(5))?,
            bounce_rates: parse_float(field(6), Some(1.0))?,
            exit_rates: parse_float(field(7), Some(1.0))?,
            page_values: parse_float(field(8), None)?,
            special_day: parse_float(field(9), Some(1.0))?,
            month: parse_month(field(10))?,
            operating_systems: parse_code(field(11))?,
            browser: parse_code(field(12))?,
            region: parse_code(field(13))?,
            traffic_type: parse_code(field(14))?,
            visitor_type: parse_visitor_type(field(15))?,
            weekend: parse_bool(field(16))?,
        };
        let revenue = parse_bool(field(17))?;
        Ok((features, revenue))
    }
}

fn invalid(column: &'static str, value: &str, reason: impl Into<String>) -> FeatureError {
    FeatureError::InvalidValue { column, value: value.to_owned(), reason: reason.into() }
}

fn parse_count((column, s): (&'static str, &str)) -> Result<u32, FeatureError> {
    s.parse::<u32>().map_err(|e| invalid(column, s, format!("not a non-negative integer ({e})")))
}

fn parse_code((column, s): (&'static str, &str)) -> Result<u16, FeatureError> {
    s.parse::<u16>().map_err(|e| invalid(column, s, format!("not an integer code 0..=65535 ({e})")))
}

fn parse_finite(column: &'static str, s: &str) -> Result<f64, FeatureError> {
    let x = s.parse::<f64>().map_err(|e| invalid(column, s, format!("not a number ({e})")))?;
    if !x.is_finite() {
        return Err(invalid(column, s, "not a finite number"));
    }
    Ok(x)
}

fn parse_duration((column, s): (&'static str, &str)) -> Result<f64, FeatureError> {
    let x = parse_finite(column, s)?;
    if x < 0.0 && x != -1.0 {
        return Err(invalid(column, s, "a duration is >= 0, or -1 for unknown"));
    }
    Ok(x)
}

fn parse_float((column, s): (&'static str, &str), max: Option<f64>) -> Result<f64, FeatureError> {
    let x = parse_finite(column, s)?;
    if x < 0.0 {
        return Err(invalid(column, s, "must be >= 0"));
    }
    if let Some(max) = max.filter(|m| x > *m) {
        return Err(invalid(column, s, format!("must be <= {max}")));
    }
    Ok(x)
}

fn parse_month((column, s): (&'static str, &str)) -> Result<u8, FeatureError> {
    // "Jun" is accepted too because other copies of the data set use it.
    let pos = MONTH_NAMES
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .or_else(|| s.eq_ignore_ascii_case("Jun").then_some(5));
    match pos {
        // pos < 12, so the narrowing is lossless.
        Some(i) => Ok(i as u8 + 1),
        None => Err(invalid(column, s, "not a month name (Jan, Feb, …, June, Jul, …, Dec)")),
    }
}

fn parse_visitor_type((column, s): (&'static str, &str)) -> Result<VisitorType, FeatureError> {
    [VisitorType::Returning, VisitorType::New, VisitorType::Other]
        .into_iter()
        .find(|v| v.uci_name() == s)
        .ok_or_else(|| invalid(column, s, "expected Returning_Visitor, New_Visitor or Other"))
}

fn parse_bool((column, s): (&'static str, &str)) -> Result<bool, FeatureError> {
    if s.eq_ignore_ascii_case("TRUE") {
        Ok(true)
    } else if s.eq_ignore_ascii_case("FALSE") {
        Ok(false)
    } else {
        Err(invalid(column, s, "expected TRUE or FALSE"))
    }
}

/// The page views whose live features equal `features` (see the module doc):
/// administrative pages, then informational, then product, or a single `other`
/// page when all three counts are 0. A duration given for a kind with 0 pages
/// cannot be represented and is dropped.
pub fn expand_row_pages(features: &ShoppersFeatures) -> Vec<PageView> {
    let f = features;
    let page = |page_kind: PageKind, duration_s: Option<f64>| PageView {
        page_kind,
        duration_s,
        bounce_rate: f.bounce_rates,
        exit_rate: f.exit_rates,
        page_value: f.page_values,
        special_day: f.special_day,
        os: f.operating_systems,
        browser: f.browser,
        region: f.region,
        traffic_type: f.traffic_type,
        visitor_type: f.visitor_type,
    };
    let kinds = [
        (PageKind::Administrative, f.administrative, f.administrative_duration),
        (PageKind::Informational, f.informational, f.informational_duration),
        (PageKind::Product, f.product_related, f.product_related_duration),
    ];
    let total: usize = kinds.iter().map(|(_, n, _)| *n as usize).sum();
    let mut pages = Vec::with_capacity(total.max(1));
    for (kind, n, duration) in kinds {
        if n == 0 {
            continue;
        }
        if !(duration.is_finite() && duration >= 0.0) {
            // -1 (unknown) in the file: every page of the kind is unmeasured.
            pages.extend((0..n).map(|_| page(kind, None)));
            continue;
        }
        let share = duration / f64::from(n);
        pages.extend((1..n).map(|_| page(kind, Some(share))));
        // The remainder is > 0 whenever duration > 0 (share·(n−1) falls short of
        // duration by share, far more than rounding), so max() is only a guard.
        let last = (duration - share * f64::from(n - 1)).max(0.0);
        pages.push(page(kind, Some(last)));
    }
    if pages.is_empty() {
        pages.push(page(PageKind::Other, None));
    }
    pages
}

/// A session start in 2025 for a replayed row: a day of `month` (clamped to
/// 1..=12) that is a Saturday or Sunday iff `weekend`, cycling through the
/// eligible days with `row_index`, at 08:00 UTC plus `row_index % 36000`
/// seconds (so at most 17:59:59, leaving six hours for the pages to stay on
/// the same day).
pub fn session_start_for(month: u8, weekend: bool, row_index: usize) -> DateTime<Utc> {
    let month = u32::from(month.clamp(1, 12));
    let days: Vec<NaiveDate> = (1..=31)
        .filter_map(|d| NaiveDate::from_ymd_opt(2025, month, d))
        .filter(|d| is_weekend(d.weekday()) == weekend)
        .collect();
    // Every month has both weekend and week days, so the fallbacks never run.
    let day = match days.get(row_index % days.len().max(1)) {
        Some(d) => *d,
        None => NaiveDate::from_ymd_opt(2025, month, 1).unwrap_or_default(),
    };
    // row_index % 36000 < 36000, so the cast is lossless.
    let secs = 8 * 3600 + (row_index % 36_000) as i64;
    day.and_time(NaiveTime::MIN).and_utc() + TimeDelta::seconds(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CartChange, CustomerId, EventId, OrderLine, Purchase};
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid test time")
    }

    fn ev(n: usize, session: &str, time: DateTime<Utc>, kind: EventKind) -> Event {
        Event {
            event_id: EventId::new_unchecked(format!("e{n}")),
            customer_id: CustomerId::new_unchecked("c1"),
            session_id: Some(SessionId::new_unchecked(session)),
            time,
            kind,
        }
    }

    fn pv(kind: PageKind, dur: Option<f64>, b: f64, e: f64, v: f64) -> PageView {
        PageView {
            page_kind: kind,
            duration_s: dur,
            bounce_rate: b,
            exit_rate: e,
            page_value: v,
            special_day: 0.0,
            os: 0,
            browser: 0,
            region: 0,
            traffic_type: 0,
            visitor_type: VisitorType::Other,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
    }

    /// Field-by-field comparison; returns the first mismatch.
    fn compare(got: &ShoppersFeatures, want: &ShoppersFeatures) -> Result<(), String> {
        let floats = [
            ("Administrative_Duration", got.administrative_duration, want.administrative_duration),
            ("Informational_Duration", got.informational_duration, want.informational_duration),
            ("ProductRelated_Duration", got.product_related_duration, want.product_related_duration),
            ("BounceRates", got.bounce_rates, want.bounce_rates),
            ("ExitRates", got.exit_rates, want.exit_rates),
            ("PageValues", got.page_values, want.page_values),
            ("SpecialDay", got.special_day, want.special_day),
        ];
        for (name, g, w) in floats {
            if !close(g, w) {
                return Err(format!("{name}: got {g}, want {w}"));
            }
        }
        let exact = ShoppersFeatures {
            administrative_duration: 0.0,
            informational_duration: 0.0,
            product_related_duration: 0.0,
            bounce_rates: 0.0,
            exit_rates: 0.0,
            page_values: 0.0,
            special_day: 0.0,
            ..want.clone()
        };
        let got_exact = ShoppersFeatures {
            administrative_duration: 0.0,
            informational_duration: 0.0,
            product_related_duration: 0.0,
            bounce_rates: 0.0,
            exit_rates: 0.0,
            page_values: 0.0,
            special_day: 0.0,
            ..got.clone()
        };
        if exact != got_exact {
            return Err(format!("integer/categorical fields differ: got {got_exact:?}, want {exact:?}"));
        }
        Ok(())
    }

    /// What the replay tool does: expand, stamp 1 s apart, apply.
    fn replay(features: &ShoppersFeatures, row_index: usize) -> SessionAccumulator {
        let start = session_start_for(features.month, features.weekend, row_index);
        let sid = format!("s{row_index}");
        let mut acc = SessionAccumulator::new(SessionId::new_unchecked(sid.clone()), start);
        for (k, page) in expand_row_pages(features).into_iter().enumerate() {
            let time = start + TimeDelta::seconds(k as i64);
            acc.apply(&ev(k, &sid, time, EventKind::PageView(page)));
        }
        acc
    }

    #[test]
    fn hand_made_session() {
        // 2025-03-08 is a Saturday.
        let t0 = t(2025, 3, 8, 23, 59, 0);
        let mut first = pv(PageKind::Administrative, Some(10.0), 0.1, 0.2, 0.0);
        first.special_day = 0.4;
        first.os = 2;
        first.browser = 3;
        first.region = 7;
        first.traffic_type = 11;
        first.visitor_type = VisitorType::New;
        let mut acc = SessionAccumulator::new(SessionId::new_unchecked("s"), t0);
        let kinds = vec![
            EventKind::PageView(first),
            EventKind::PageView(pv(PageKind::Product, Some(20.0), 0.0, 0.1, 30.0)),
            EventKind::PageView(pv(PageKind::Product, None, 0.2, 0.3, 0.0)),
            EventKind::PageView(pv(PageKind::Other, Some(5.0), 0.1, 0.2, 6.0)),
            EventKind::AddToCart(CartChange { sku: "A".into(), quantity: 1, unit_price: Some(2.0) }),
            EventKind::RemoveFromCart(CartChange { sku: "A".into(), quantity: 1, unit_price: None }),
            EventKind::AddToCart(CartChange { sku: "B".into(), quantity: 2, unit_price: Some(3.0) }),
            EventKind::Purchase(Purchase {
                invoice: "I1".into(),
                lines: vec![OrderLine { sku: "B".into(), quantity: 2, unit_price: 3.0, description: None }],
                country: None,
                cancellation: false,
            }),
            EventKind::SessionEnd,
        ];
        for (k, kind) in kinds.into_iter().enumerate() {
            // Crosses midnight into Sunday March 9th: month/weekend come from the start.
            acc.apply(&ev(k, "s", t0 + TimeDelta::seconds(30 * k as i64), kind));
        }
        // An event of another session is ignored.
        acc.apply(&ev(99, "other", t0, EventKind::SessionEnd));

        assert_eq!(acc.n_events(), 9);
        assert_eq!(acc.page_views(), 4);
        assert_eq!((acc.cart_adds(), acc.cart_removes(), acc.purchased()), (2, 1, true));
        assert_eq!(acc.started_at(), t0);
        assert_eq!(acc.last_event_at(), t0 + TimeDelta::seconds(240));
        assert!(close(acc.known_duration_s(), 35.0));
        let f = acc.features();
        let want = ShoppersFeatures {
            administrative: 1,
            administrative_duration: 10.0,
            informational: 0,
            informational_duration: 0.0,
            product_related: 2,
            product_related_duration: 20.0,
            bounce_rates: 0.4 / 4.0,
            exit_rates: 0.8 / 4.0,
            page_values: 36.0 / 4.0,
            special_day: 0.4,
            month: 3,
            operating_systems: 2,
            browser: 3,
            region: 7,
            traffic_type: 11,
            visitor_type: VisitorType::New,
            weekend: true,
        };
        compare(&f, &want).expect("features");

        // A late page view from before the start moves the start and the context.
        let mut late = pv(PageKind::Informational, Some(1.0), 0.0, 0.0, 0.0);
        late.os = 9;
        acc.apply(&ev(100, "s", t(2025, 2, 28, 12, 0, 0), EventKind::PageView(late)));
        let f = acc.features();
        assert_eq!((f.month, f.weekend, f.operating_systems, f.informational), (2, false, 9, 1));
        assert_eq!(acc.last_event_at(), t0 + TimeDelta::seconds(240));

        // Snapshot round trip.
        let json = serde_json::to_string(&acc).expect("serialize");
        let back: SessionAccumulator = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, acc);
        assert_eq!(back.features(), acc.features());
    }

    #[test]
    fn unknown_duration_rule() {
        let mut acc = SessionAccumulator::new(SessionId::new_unchecked("s"), t(2025, 5, 5, 8, 0, 0));
        let pages = [
            pv(PageKind::Product, None, 0.0, 0.0, 0.0),
            pv(PageKind::Product, Some(f64::NAN), 0.0, 0.0, 0.0),
            pv(PageKind::Administrative, None, 0.0, 0.0, 0.0),
            pv(PageKind::Administrative, Some(-3.0), 0.0, 0.0, 0.0),
            pv(PageKind::Administrative, Some(0.0), 0.0, 0.0, 0.0),
        ];
        for (k, p) in pages.into_iter().enumerate() {
            acc.apply(&ev(k, "s", t(2025, 5, 5, 8, 0, k as u32), EventKind::PageView(p)));
        }
        let f = acc.features();
        // Pages but no known duration: -1. One known 0 s page: 0. No pages: 0.
        assert_eq!(f.product_related, 2);
        assert_eq!(f.product_related_duration, -1.0);
        assert_eq!(f.administrative, 3);
        assert_eq!(f.administrative_duration, 0.0);
        assert_eq!((f.informational, f.informational_duration), (0, 0.0));
        assert_eq!(acc.known_duration_s(), 0.0);

        // A -1 row expands to unmeasured pages and comes back as -1.
        let row = ShoppersFeatures { product_related_duration: -1.0, ..f.clone() };
        let pages = expand_row_pages(&row);
        let product: Vec<&PageView> = pages.iter().filter(|p| p.page_kind == PageKind::Product).collect();
        assert_eq!(product.len(), 2);
        assert!(product.iter().all(|p| p.duration_s.is_none()));
        compare(&replay(&row, 3).features(), &ShoppersFeatures { month: 5, weekend: false, ..row.clone() })
            .expect("-1 row");
    }

    #[test]
    fn zero_page_row() {
        let line = "0,0,0,0,0,0,0.2,0.2,0,0.6,Nov,3,2,4,13,New_Visitor,TRUE,FALSE";
        let fields: Vec<&str> = line.split(',').collect();
        let (row, revenue) = ShoppersFeatures::from_uci_record(&fields).expect("parse");
        assert!(!revenue);
        let pages = expand_row_pages(&row);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].page_kind, PageKind::Other);
        let acc = replay(&row, 17);
        assert_eq!(acc.page_views(), 1);
        compare(&acc.features(), &row).expect("zero-page row");
        assert_eq!(acc.features().product_related_duration, 0.0);
    }

    #[test]
    fn empty_session_features() {
        let acc = SessionAccumulator::new(SessionId::new_unchecked("s"), t(2025, 1, 1, 0, 0, 0));
        let f = acc.features();
        assert_eq!((f.month, f.weekend, f.visitor_type), (1, false, VisitorType::Other));
        assert_eq!((f.bounce_rates, f.exit_rates, f.page_values), (0.0, 0.0, 0.0));
        assert_eq!(acc.n_events(), 0);
    }

    #[test]
    fn uci_json_and_parse_errors() {
        let fields = [
            "2",
            "-1",
            "0",
            "0",
            "5",
            "64.5",
            "0",
            "0.1",
            "3.25",
            "0",
            "June",
            "2",
            "2",
            "1",
            "2",
            "Returning_Visitor",
            "FALSE",
            "TRUE\r",
        ];
        let (f, revenue) = ShoppersFeatures::from_uci_record(&fields).expect("parse");
        assert!(revenue);
        assert_eq!(f.month, 6);
        let json = f.to_uci_json();
        let keys: Vec<&str> = json.keys().map(String::as_str).collect();
        let mut want_keys = ShoppersFeatures::UCI_COLUMNS.to_vec();
        want_keys.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, want_keys);
        assert_eq!(json["Month"], serde_json::json!("June"));
        assert_eq!(json["VisitorType"], serde_json::json!("Returning_Visitor"));
        assert_eq!(json["Weekend"], serde_json::json!(false));
        assert!(json["Administrative"].is_u64());
        assert!(json["OperatingSystems"].is_u64());
        assert!(json["Administrative_Duration"].is_f64());
        assert_eq!(json["Administrative_Duration"].as_f64(), Some(-1.0));
        assert!(json["BounceRates"].is_f64());
        assert_eq!(ShoppersFeatures::month_name(2), "Feb");
        assert_eq!(ShoppersFeatures::month_name(13), "");

        let mut bad = fields;
        bad[10] = "Juin";
        let err = ShoppersFeatures::from_uci_record(&bad).expect_err("bad month");
        assert!(err.to_string().contains("Month") && err.to_string().contains("Juin"), "{err}");
        let mut bad = fields;
        bad[1] = "-2";
        let err = ShoppersFeatures::from_uci_record(&bad).expect_err("bad duration");
        assert!(matches!(err, FeatureError::InvalidValue { column: "Administrative_Duration", .. }), "{err}");
        let mut bad = fields;
        bad[4] = "1.5";
        let err = ShoppersFeatures::from_uci_record(&bad).expect_err("bad count");
        assert!(matches!(err, FeatureError::InvalidValue { column: "ProductRelated", .. }), "{err}");
        let mut bad = fields;
        bad[17] = "yes";
        let err = ShoppersFeatures::from_uci_record(&bad).expect_err("bad revenue");
        assert!(matches!(err, FeatureError::InvalidValue { column: "Revenue", .. }), "{err}");
        let err = ShoppersFeatures::from_uci_record(&fields[..17]).expect_err("short");
        assert_eq!(err, FeatureError::FieldCount { expected: 18, got: 17 });
    }

    #[test]
    fn session_start_month_weekend_and_spread() {
        for month in 1..=12u8 {
            for weekend in [false, true] {
                let mut days = std::collections::BTreeSet::new();
                for i in 0..40 {
                    let s = session_start_for(month, weekend, i * 997);
                    let end = s + TimeDelta::seconds(2000);
                    assert_eq!(s.year(), 2025);
                    assert_eq!(s.month(), u32::from(month));
                    assert_eq!(is_weekend(s.weekday()), weekend, "{s}");
                    assert_eq!(end.date_naive(), s.date_naive(), "{s}");
                    days.insert(s.day());
                }
                assert!(days.len() >= 8, "month {month} weekend {weekend}: {days:?}");
            }
        }
    }

    /// Deterministic pseudo-random rows, used when the real file is absent.
    fn generated_rows(n: usize) -> Vec<Vec<String>> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |m: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % m
        };
        (0..n)
            .map(|i| {
                let mut counts = [next(6), next(4), next(60)];
                if i % 17 == 0 {
                    counts = [0, 0, 0];
                }
                let mut row = Vec::new();
                for c in counts {
                    row.push(c.to_string());
                    let d = match (c, next(5)) {
                        (0, _) => 0.0,
                        (_, 0) => -1.0,
                        (_, 1) => 0.0,
                        _ => next(1_000_000) as f64 / 7.0,
                    };
                    row.push(d.to_string());
                }
                row.push((next(2000) as f64 / 10_000.0).to_string());
                row.push((next(2000) as f64 / 10_000.0).to_string());
                row.push(if next(4) == 0 { (next(100_000) as f64 / 3.0).to_string() } else { "0".into() });
                row.push((next(6) as f64 / 5.0).to_string());
                row.push(MONTH_NAMES[next(12) as usize].to_string());
                for m in [8, 13, 9, 20] {
                    row.push((1 + next(m)).to_string());
                }
                row.push(["Returning_Visitor", "New_Visitor", "Other"][next(3) as usize].to_string());
                row.push(if next(3) == 0 { "TRUE" } else { "FALSE" }.to_string());
                row.push(if next(6) == 0 { "TRUE" } else { "FALSE" }.to_string());
                row
            })
            .collect()
    }

    /// Parses, replays and compares every row; returns the number of rows with
    /// Revenue. Panics listing the first mismatches.
    fn check_rows(rows: &[Vec<String>]) -> usize {
        let mut failures = Vec::new();
        let mut revenue_rows = 0;
        for (i, row) in rows.iter().enumerate() {
            let fields: Vec<&str> = row.iter().map(String::as_str).collect();
            let (want, revenue) = match ShoppersFeatures::from_uci_record(&fields) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("row {i}: {e}"));
                    continue;
                }
            };
            revenue_rows += usize::from(revenue);
            let acc = replay(&want, i);
            let pages = (want.administrative + want.informational + want.product_related).max(1);
            assert_eq!(acc.n_events(), pages);
            if let Err(e) = compare(&acc.features(), &want) {
                failures.push(format!("row {i}: {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows differ, first: {:?}",
            failures.len(),
            rows.len(),
            &failures[..failures.len().min(5)]
        );
        revenue_rows
    }

    #[test]
    fn generated_rows_reproduce_features() {
        let rows = generated_rows(200);
        assert!(check_rows(&rows) > 0);
        // The generator must exercise the -1 and zero-page cases.
        assert!(rows.iter().any(|r| r[1] == "-1" || r[3] == "-1" || r[5] == "-1"));
        assert!(rows.iter().any(|r| r[0] == "0" && r[2] == "0" && r[4] == "0"));
    }

    /// Every row of the UCI file (or generated rows without it) expanded into
    /// page views must give back the row's features.
    #[test]
    fn replayed_rows_reproduce_features() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/online_shoppers_intention.csv");
        let rows: Vec<Vec<String>> = match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut lines = text.lines();
                let header: Vec<&str> = lines.next().expect("header").split(',').map(str::trim).collect();
                let mut want_header = ShoppersFeatures::UCI_COLUMNS.to_vec();
                want_header.push(REVENUE_COLUMN);
                assert_eq!(header, want_header);
                let rows: Vec<Vec<String>> =
                    lines.filter(|l| !l.trim().is_empty()).map(|l| l.split(',').map(str::to_owned).collect()).collect();
                assert_eq!(rows.len(), 12_330, "row count of {path}");
                println!("checking all {} rows of {path}", rows.len());
                rows
            }
            Err(e) => {
                println!("{path} not readable ({e}); checking 200 generated rows instead");
                generated_rows(200)
            }
        };
        let revenue_rows = check_rows(&rows);
        assert!(revenue_rows > 0);
        println!("{} rows reproduced ({revenue_rows} with Revenue)", rows.len());
    }
}
