//! A customer's long-term behavioural profile: RFM, order-value spread, basket
//! habits, timing habits, spend trend, session and cart behaviour. It feeds the
//! K-Means segmentation and the dashboards.
//!
//! [`ProfileAccumulator`] keeps O(1) state per customer (Welford moments,
//! compensated sums and counters) plus three bounded collections: the last
//! [`MAX_WINDOW_ORDERS`] orders as (time, signed value) for the 90-day windows,
//! at most [`MAX_SKUS`] distinct SKUs and at most [`MAX_COUNTRIES`] countries.
//! It is deterministic: the same calls in the same order give bit-identical
//! features, also after a `serde_json` snapshot round trip (the crate enables
//! serde_json's `float_roundtrip`, and non-finite inputs are dropped so the
//! snapshot never holds a NaN).
//!
//! # Inputs
//!
//! - [`ProfileAccumulator::apply_purchase`]: an order, or with `cancellation`
//!   a cancelled invoice (its value is subtracted from net spend).
//! - [`ProfileAccumulator::apply_cart`]: each add/remove; the only source of
//!   the `cart_adds` / `cart_removes` features.
//! - [`ProfileAccumulator::apply_closed_session`]: each finished session; its
//!   own cart counts only decide whether the session "had a cart add".
//! - [`ProfileAccumulator::note_event_time`]: every event of the customer. The
//!   three `apply_*` calls note their times too (min/max, so noting twice is
//!   harmless).
//!
//! # Features
//!
//! "Orders" are non-cancelled purchases; times are UTC except the hour of day
//! and the day of week of an order, which are the shop's (`features.timezone`,
//! given to [`ProfileAccumulator::apply_purchase_in`]); "days" are
//! milliseconds / 86,400,000. A feature that is undefined (a mean over nothing,
//! a rate with a zero denominator) is `0.0`.
//!
//! | name | definition | unit |
//! | --- | --- | --- |
//! | `recency_days` | `as_of` − time of the latest order, clamped at 0; 0 without orders | days |
//! | `frequency` | number of orders | invoices |
//! | `monetary` | net spend: Σ order values − Σ cancellation values (may be negative if cancellations of untracked orders arrive) | currency |
//! | `order_value_mean` | mean order value (Σ quantity × unit price) | currency |
//! | `order_value_std` | population standard deviation (÷ n) of the order value | currency |
//! | `basket_items_mean` | mean number of items (Σ quantities) per order | items |
//! | `basket_lines_mean` | mean number of lines per order | lines |
//! | `product_breadth` | distinct SKUs over all orders (saturates at 10,000) | SKUs |
//! | `cancellation_rate` | cancelled invoices / (orders + cancelled invoices) | ratio |
//! | `tenure_days` | last_seen − first_seen over all events noted | days |
//! | `inter_order_gap_mean_days` | mean gap between consecutive orders (in arrival order; an order older than the latest one so far counts as a 0 gap) | days |
//! | `inter_order_gap_std_days` | population standard deviation of those gaps | days |
//! | `weekend_order_share` | share of orders placed on a Saturday or Sunday | ratio |
//! | `order_hour_mean` | mean time of day of the orders (linear, not circular) | hours 0..24 |
//! | `evening_order_share` | share of orders placed 18:00–23:59 | ratio |
//! | `morning_order_share` | share of orders placed 06:00–11:59 | ratio |
//! | `recent_spend_90d` | net spend (orders − cancellations) dated in (`as_of` − 90 d, `as_of`]; only the last 1,000 orders/cancellations are kept for it | currency |
//! | `earlier_spend` | `monetary` − `recent_spend_90d` − net spend dated after `as_of` | currency |
//! | `recent_spend_share` | `recent_spend_90d` / (`recent_spend_90d` + `earlier_spend`) clamped to 0..=1; 0 when that sum is ≤ 0 | ratio |
//! | `sessions` | closed sessions | sessions |
//! | `session_pages_mean` | mean page views (all kinds) per session | pages |
//! | `session_duration_mean_s` | mean of the sessions' summed known page durations | seconds |
//! | `product_page_share` | Σ product pages / Σ pages over sessions | ratio |
//! | `cart_adds` | add-to-cart events | events |
//! | `cart_removes` | remove-from-cart events | events |
//! | `cart_to_order_rate` | sessions with both a cart add and a purchase / sessions with a cart add | ratio |
//! | `session_conversion_rate` | sessions with a purchase / sessions | ratio |
//! | `mean_predicted_intent` | mean of the sessions' `score` where `Some` | probability |
//! | `countries` | distinct non-empty countries on invoices (saturates at 256) | countries |

use std::collections::{BTreeSet, VecDeque};

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::session::SessionAccumulator;
use super::NeumaierSum;
use crate::event::{CartChange, Purchase, SessionId};

/// Orders (and cancellations) kept for the 90-day spend windows.
pub const MAX_WINDOW_ORDERS: usize = 1_000;
/// Distinct SKUs remembered for `product_breadth`.
pub const MAX_SKUS: usize = 10_000;
/// Distinct countries remembered for `countries`.
pub const MAX_COUNTRIES: usize = 256;

const RECENT_WINDOW_DAYS: i64 = 90;
const MS_PER_DAY: f64 = 86_400_000.0;

/// Welford's running mean and variance: one pass, O(1) memory, numerically
/// stable where the textbook Σx² formula cancels catastrophically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.mean
        }
    }

    fn std_pop(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2.max(0.0) / self.n as f64).sqrt()
        }
    }
}

/// One order or cancellation for the spend windows; cancellations are negative.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct TimedValue {
    time: DateTime<Utc>,
    value: f64,
}

/// Running state of one customer's profile. Plain data so that actors can
/// snapshot it as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileAccumulator {
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,

    orders: u64,
    cancelled_invoices: u64,
    net_spend: NeumaierSum,
    order_value: Welford,
    basket_items: u64,
    basket_lines: u64,
    skus: BTreeSet<String>,
    last_order_at: Option<DateTime<Utc>>,
    order_gap_days: Welford,
    weekend_orders: u64,
    evening_orders: u64,
    morning_orders: u64,
    order_hours: NeumaierSum,
    window: VecDeque<TimedValue>,
    countries: BTreeSet<String>,

    cart_adds: u64,
    cart_removes: u64,

    sessions: u64,
    session_pages: u64,
    session_product_pages: u64,
    session_duration_s: NeumaierSum,
    sessions_with_cart_add: u64,
    sessions_with_cart_add_and_purchase: u64,
    sessions_purchased: u64,
    intent_scores: u64,
    intent_sum: NeumaierSum,
}

impl ProfileAccumulator {
    /// Earliest event time noted.
    pub fn first_seen(&self) -> Option<DateTime<Utc>> {
        self.first_seen
    }

    /// Latest event time noted.
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.last_seen
    }

    /// Orders placed (cancellations not counted).
    pub fn orders(&self) -> u64 {
        self.orders
    }

    /// Notes the time of any event of the customer (for tenure and last_seen).
    pub fn note_event_time(&mut self, time: DateTime<Utc>) {
        self.first_seen = Some(self.first_seen.map_or(time, |t| t.min(time)));
        self.last_seen = Some(self.last_seen.map_or(time, |t| t.max(time)));
    }

    /// Applies an order, or a cancelled invoice when `purchase.cancellation`,
    /// for a shop in UTC.
    pub fn apply_purchase(&mut self, time: DateTime<Utc>, purchase: &Purchase) {
        self.apply_purchase_in(time, purchase, Tz::UTC);
    }

    /// As [`apply_purchase`](Self::apply_purchase), for a shop in `timezone`:
    /// the order's hour and weekday are read on the shop's clock.
    pub fn apply_purchase_in(&mut self, time: DateTime<Utc>, purchase: &Purchase, timezone: Tz) {
        self.note_event_time(time);
        let value = finite_or_zero(purchase.value());

        if let Some(country) = purchase.country.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            if self.countries.len() < MAX_COUNTRIES || self.countries.contains(country) {
                self.countries.insert(country.to_owned());
            }
        }

        let signed = if purchase.cancellation { -value } else { value };
        self.net_spend.add(signed);
        self.window.push_back(TimedValue { time, value: signed });
        while self.window.len() > MAX_WINDOW_ORDERS {
            self.window.pop_front();
        }

        if purchase.cancellation {
            self.cancelled_invoices += 1;
            return;
        }

        self.orders += 1;
        self.order_value.add(value);
        self.basket_items = self.basket_items.saturating_add(purchase.items());
        self.basket_lines = self.basket_lines.saturating_add(purchase.lines.len() as u64);
        for line in &purchase.lines {
            if self.skus.len() >= MAX_SKUS {
                break;
            }
            if !self.skus.contains(&line.sku) {
                self.skus.insert(line.sku.clone());
            }
        }

        match self.last_order_at {
            Some(last) => {
                // A late order cannot be slotted between earlier gaps without
                // keeping every order time, so it counts as a zero gap.
                let gap = if time >= last { days(time - last) } else { 0.0 };
                self.order_gap_days.add(gap);
                self.last_order_at = Some(last.max(time));
            }
            None => self.last_order_at = Some(time),
        }

        let local = time.with_timezone(&timezone);
        if matches!(local.weekday(), Weekday::Sat | Weekday::Sun) {
            self.weekend_orders += 1;
        }
        let hour = local.hour();
        if hour >= 18 {
            self.evening_orders += 1;
        } else if (6..12).contains(&hour) {
            self.morning_orders += 1;
        }
        self.order_hours.add(f64::from(local.num_seconds_from_midnight()) / 3600.0);
    }

    /// Applies one add-to-cart (`added`) or remove-from-cart event.
    pub fn apply_cart(&mut self, time: DateTime<Utc>, added: bool, _change: &CartChange) {
        self.note_event_time(time);
        if added {
            self.cart_adds += 1;
        } else {
            self.cart_removes += 1;
        }
    }

    /// Applies a finished session.
    pub fn apply_closed_session(&mut self, s: &SessionSummary) {
        self.note_event_time(s.started_at);
        self.note_event_time(s.ended_at);
        self.sessions += 1;
        self.session_pages += u64::from(s.pages);
        self.session_product_pages += u64::from(s.product_pages);
        if s.duration_s.is_finite() && s.duration_s >= 0.0 {
            self.session_duration_s.add(s.duration_s);
        }
        if s.cart_adds > 0 {
            self.sessions_with_cart_add += 1;
            if s.purchased {
                self.sessions_with_cart_add_and_purchase += 1;
            }
        }
        if s.purchased {
            self.sessions_purchased += 1;
        }
        if let Some(score) = s.score.filter(|x| x.is_finite()) {
            self.intent_scores += 1;
            self.intent_sum.add(score);
        }
    }

    /// Folds in the score of a session that was closed before its final
    /// score arrived (scoring is asynchronous); each session's score counts once.
    pub fn apply_session_score(&mut self, score: f64) {
        if score.is_finite() {
            self.intent_scores += 1;
            self.intent_sum.add(score);
        }
    }

    /// The profile's features as seen at `as_of` (see the module doc).
    pub fn features(&self, as_of: DateTime<Utc>) -> ProfileFeatures {
        let orders = self.orders as f64;
        let per_order = |x: u64| ratio(x as f64, orders);
        let sessions = self.sessions as f64;

        let cutoff = as_of.checked_sub_signed(TimeDelta::days(RECENT_WINDOW_DAYS));
        let mut recent = NeumaierSum::default();
        let mut after = NeumaierSum::default();
        for o in &self.window {
            if o.time > as_of {
                after.add(o.value);
            } else if cutoff.is_none_or(|c| o.time > c) {
                recent.add(o.value);
            }
        }
        let monetary = self.net_spend.value();
        let recent_spend = recent.value();
        let earlier_spend = monetary - recent_spend - after.value();
        let both = recent_spend + earlier_spend;
        let recent_spend_share = if both > 0.0 { (recent_spend / both).clamp(0.0, 1.0) } else { 0.0 };

        ProfileFeatures {
            recency_days: self.last_order_at.map_or(0.0, |t| days(as_of - t).max(0.0)),
            frequency: orders,
            monetary,
            order_value_mean: self.order_value.mean(),
            order_value_std: self.order_value.std_pop(),
            basket_items_mean: per_order(self.basket_items),
            basket_lines_mean: per_order(self.basket_lines),
            product_breadth: self.skus.len() as f64,
            cancellation_rate: ratio(self.cancelled_invoices as f64, (self.orders + self.cancelled_invoices) as f64),
            tenure_days: match (self.first_seen, self.last_seen) {
                (Some(a), Some(b)) => days(b - a).max(0.0),
                _ => 0.0,
            },
            inter_order_gap_mean_days: self.order_gap_days.mean(),
            inter_order_gap_std_days: self.order_gap_days.std_pop(),
            weekend_order_share: per_order(self.weekend_orders),
            order_hour_mean: ratio(self.order_hours.value(), orders),
            evening_order_share: per_order(self.evening_orders),
            morning_order_share: per_order(self.morning_orders),
            recent_spend_90d: recent_spend,
            earlier_spend,
            recent_spend_share,
            sessions,
            session_pages_mean: ratio(self.session_pages as f64, sessions),
            session_duration_mean_s: ratio(self.session_duration_s.value(), sessions),
            product_page_share: ratio(self.session_product_pages as f64, self.session_pages as f64),
            cart_adds: self.cart_adds as f64,
            cart_removes: self.cart_removes as f64,
            cart_to_order_rate: ratio(
                self.sessions_with_cart_add_and_purchase as f64,
                self.sessions_with_cart_add as f64,
            ),
            session_conversion_rate: ratio(self.sessions_purchased as f64, sessions),
            mean_predicted_intent: ratio(self.intent_sum.value(), self.intent_scores as f64),
            countries: self.countries.len() as f64,
        }
    }
}

fn days(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / MS_PER_DAY
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// What the profile keeps of a finished session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: SessionId,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub n_events: u32,
    /// All page views, `other` included.
    pub pages: u32,
    pub product_pages: u32,
    /// Sum of the known page durations (all kinds), >= 0.
    pub duration_s: f64,
    pub cart_adds: u32,
    pub cart_removes: u32,
    pub purchased: bool,
    /// Predicted purchase intent, when a model scored the session.
    pub score: Option<f64>,
}

impl SessionSummary {
    /// Summarises a session; `ended_at` is its latest event time.
    pub fn from_accumulator(acc: &SessionAccumulator, score: Option<f64>) -> Self {
        Self {
            session_id: acc.session_id().clone(),
            started_at: acc.started_at(),
            ended_at: acc.last_event_at(),
            n_events: acc.n_events(),
            pages: acc.page_views(),
            product_pages: acc.features().product_related,
            duration_s: acc.known_duration_s().max(0.0),
            cart_adds: acc.cart_adds(),
            cart_removes: acc.cart_removes(),
            purchased: acc.purchased(),
            score,
        }
    }
}

/// The profile features (definitions and units: docs/features.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfileFeatures {
    pub recency_days: f64,
    pub frequency: f64,
    pub monetary: f64,
    pub order_value_mean: f64,
    pub order_value_std: f64,
    pub basket_items_mean: f64,
    pub basket_lines_mean: f64,
    pub product_breadth: f64,
    pub cancellation_rate: f64,
    pub tenure_days: f64,
    pub inter_order_gap_mean_days: f64,
    pub inter_order_gap_std_days: f64,
    pub weekend_order_share: f64,
    pub order_hour_mean: f64,
    pub evening_order_share: f64,
    pub morning_order_share: f64,
    pub recent_spend_90d: f64,
    pub earlier_spend: f64,
    pub recent_spend_share: f64,
    pub sessions: f64,
    pub session_pages_mean: f64,
    pub session_duration_mean_s: f64,
    pub product_page_share: f64,
    pub cart_adds: f64,
    pub cart_removes: f64,
    pub cart_to_order_rate: f64,
    pub session_conversion_rate: f64,
    pub mean_predicted_intent: f64,
    pub countries: f64,
}

impl ProfileFeatures {
    /// Feature names, in [`to_vec`](Self::to_vec) order.
    pub const NAMES: [&'static str; 29] = [
        "recency_days",
        "frequency",
        "monetary",
        "order_value_mean",
        "order_value_std",
        "basket_items_mean",
        "basket_lines_mean",
        "product_breadth",
        "cancellation_rate",
        "tenure_days",
        "inter_order_gap_mean_days",
        "inter_order_gap_std_days",
        "weekend_order_share",
        "order_hour_mean",
        "evening_order_share",
        "morning_order_share",
        "recent_spend_90d",
        "earlier_spend",
        "recent_spend_share",
        "sessions",
        "session_pages_mean",
        "session_duration_mean_s",
        "product_page_share",
        "cart_adds",
        "cart_removes",
        "cart_to_order_rate",
        "session_conversion_rate",
        "mean_predicted_intent",
        "countries",
    ];

    /// The features as a vector in [`NAMES`](Self::NAMES) order.
    pub fn to_vec(&self) -> Vec<f64> {
        vec![
            self.recency_days,
            self.frequency,
            self.monetary,
            self.order_value_mean,
            self.order_value_std,
            self.basket_items_mean,
            self.basket_lines_mean,
            self.product_breadth,
            self.cancellation_rate,
            self.tenure_days,
            self.inter_order_gap_mean_days,
            self.inter_order_gap_std_days,
            self.weekend_order_share,
            self.order_hour_mean,
            self.evening_order_share,
            self.morning_order_share,
            self.recent_spend_90d,
            self.earlier_spend,
            self.recent_spend_share,
            self.sessions,
            self.session_pages_mean,
            self.session_duration_mean_s,
            self.product_page_share,
            self.cart_adds,
            self.cart_removes,
            self.cart_to_order_rate,
            self.session_conversion_rate,
            self.mean_predicted_intent,
            self.countries,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CustomerId, Event, EventId, EventKind, OrderLine, PageKind, PageView, VisitorType};
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid test time")
    }

    fn line(sku: &str, quantity: u32, unit_price: f64) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, unit_price, description: None }
    }

    fn purchase(invoice: &str, lines: Vec<OrderLine>, country: &str, cancellation: bool) -> Purchase {
        Purchase { invoice: invoice.into(), lines, country: Some(country.into()), cancellation }
    }

    fn summary(
        id: &str,
        pages: u32,
        product: u32,
        dur: f64,
        adds: u32,
        purchased: bool,
        score: Option<f64>,
    ) -> SessionSummary {
        SessionSummary {
            session_id: SessionId::new_unchecked(id),
            started_at: t(2025, 2, 1, 10, 0),
            ended_at: t(2025, 2, 1, 10, 30),
            n_events: pages + adds,
            pages,
            product_pages: product,
            duration_s: dur,
            cart_adds: adds,
            cart_removes: 0,
            purchased,
            score,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    /// The hand-computed example of the tests below.
    fn example() -> ProfileAccumulator {
        let mut p = ProfileAccumulator::default();
        // Sat 2025-01-04 10:00: 2×5 + 1×10 = 20, 3 items, 2 lines.
        p.apply_purchase(
            t(2025, 1, 4, 10, 0),
            &purchase("1", vec![line("A", 2, 5.0), line("B", 1, 10.0)], "UK", false),
        );
        // Tue 2025-01-14 19:30: 40, 1 item, 1 line.
        p.apply_purchase(t(2025, 1, 14, 19, 30), &purchase("2", vec![line("A", 1, 40.0)], "UK", false));
        // Cancellation on 2025-01-20 of 1×5.
        p.apply_purchase(t(2025, 1, 20, 12, 0), &purchase("C3", vec![line("A", 1, 5.0)], "France", true));
        // Sat 2025-03-15 07:00: 3×20 = 60.
        p.apply_purchase(t(2025, 3, 15, 7, 0), &purchase("4", vec![line("C", 3, 20.0)], " Germany ", false));
        p.note_event_time(t(2025, 4, 1, 10, 0));
        let change = CartChange { sku: "A".into(), quantity: 1, unit_price: Some(5.0) };
        for added in [true, true, false, true] {
            p.apply_cart(t(2025, 2, 1, 10, 5), added, &change);
        }
        p.apply_closed_session(&summary("s1", 10, 6, 100.0, 2, true, Some(0.8)));
        p.apply_closed_session(&summary("s2", 4, 0, 30.0, 1, false, None));
        p.apply_closed_session(&summary("s3", 2, 2, 0.0, 0, true, Some(0.4)));
        p
    }

    #[test]
    fn hand_computed_example() {
        let p = example();
        let f = p.features(t(2025, 4, 30, 0, 0));
        let want = [
            ("recency_days", 45.0 + 17.0 / 24.0),
            ("frequency", 3.0),
            ("monetary", 115.0),
            ("order_value_mean", 40.0),
            ("order_value_std", (800.0f64 / 3.0).sqrt()),
            ("basket_items_mean", 7.0 / 3.0),
            ("basket_lines_mean", 4.0 / 3.0),
            ("product_breadth", 3.0),
            ("cancellation_rate", 0.25),
            ("tenure_days", 87.0),
            // Gaps: 10 d 9.5 h and 59 d 11.5 h.
            ("inter_order_gap_mean_days", 69.875 / 2.0),
            ("inter_order_gap_std_days", (59.0 + 11.5 / 24.0 - 10.0 - 9.5 / 24.0) / 2.0),
            ("weekend_order_share", 2.0 / 3.0),
            ("order_hour_mean", 36.5 / 3.0),
            ("evening_order_share", 1.0 / 3.0),
            ("morning_order_share", 2.0 / 3.0),
            // Window (2025-01-30, 2025-04-30]: only the 60 order.
            ("recent_spend_90d", 60.0),
            ("earlier_spend", 55.0),
            ("recent_spend_share", 60.0 / 115.0),
            ("sessions", 3.0),
            ("session_pages_mean", 16.0 / 3.0),
            ("session_duration_mean_s", 130.0 / 3.0),
            ("product_page_share", 0.5),
            ("cart_adds", 3.0),
            ("cart_removes", 1.0),
            ("cart_to_order_rate", 0.5),
            ("session_conversion_rate", 2.0 / 3.0),
            ("mean_predicted_intent", 0.6),
            ("countries", 3.0),
        ];
        let got = f.to_vec();
        assert_eq!(want.len(), ProfileFeatures::NAMES.len());
        for (i, (name, w)) in want.iter().enumerate() {
            assert_eq!(ProfileFeatures::NAMES[i], *name);
            assert!(close(got[i], *w), "{name}: got {}, want {w}", got[i]);
        }
        assert_eq!(p.first_seen(), Some(t(2025, 1, 4, 10, 0)));
        assert_eq!(p.last_seen(), Some(t(2025, 4, 1, 10, 0)));
    }

    #[test]
    fn as_of_before_last_order() {
        let p = example();
        // as_of between the January orders and the March one.
        let f = p.features(t(2025, 2, 1, 0, 0));
        assert_eq!(f.recency_days, 0.0);
        // Window (2024-11-03, 2025-02-01]: 20 + 40 − 5; the March order is after as_of.
        assert!(close(f.recent_spend_90d, 55.0));
        assert!(close(f.earlier_spend, 0.0));
        assert!(close(f.recent_spend_share, 1.0));
    }

    #[test]
    fn serde_round_trip_is_bit_identical() {
        let mut p = example();
        // Awkward binary fractions, to catch lossy float parsing.
        for i in 0..300u32 {
            let price = 0.1 + f64::from(i) / 3.0;
            let time = t(2024, 1, 1, 0, 0) + TimeDelta::seconds(i64::from(i) * 12_345);
            p.apply_purchase(
                time,
                &purchase(&i.to_string(), vec![line(&format!("S{i}"), i % 7 + 1, price)], "UK", i % 11 == 0),
            );
            let s = SessionSummary {
                score: Some(1.0 / f64::from(i + 3)),
                duration_s: f64::from(i) * 0.7,
                ..summary("s", 3, 1, 0.0, 1, i % 2 == 0, None)
            };
            p.apply_closed_session(&s);
        }
        let json = serde_json::to_string(&p).expect("serialize");
        let back: ProfileAccumulator = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
        let as_of = t(2025, 6, 1, 0, 0);
        let a: Vec<u64> = p.features(as_of).to_vec().iter().map(|x| x.to_bits()).collect();
        let b: Vec<u64> = back.features(as_of).to_vec().iter().map(|x| x.to_bits()).collect();
        assert_eq!(a, b);
        // Same events in the same order: same bits.
        let c: Vec<u64> = example().features(as_of).to_vec().iter().map(|x| x.to_bits()).collect();
        let d: Vec<u64> = example().features(as_of).to_vec().iter().map(|x| x.to_bits()).collect();
        assert_eq!(c, d);
    }

    #[test]
    fn empty_profile_is_all_zero() {
        let p = ProfileAccumulator::default();
        let v = p.features(t(2025, 1, 1, 0, 0)).to_vec();
        assert_eq!(v.len(), ProfileFeatures::NAMES.len());
        assert!(v.iter().all(|x| *x == 0.0 && !x.is_nan()), "{v:?}");
        assert_eq!((p.first_seen(), p.last_seen()), (None, None));
    }

    #[test]
    fn bounded_memory_and_non_finite_inputs() {
        let mut p = ProfileAccumulator::default();
        let base = t(2025, 1, 1, 0, 0);
        for i in 0..MAX_SKUS as u32 + 1_500 {
            let time = base + TimeDelta::minutes(i64::from(i));
            p.apply_purchase(
                time,
                &purchase(&i.to_string(), vec![line(&format!("S{i}"), 1, 1.0)], &format!("C{}", i % 300), false),
            );
        }
        assert_eq!(p.window.len(), MAX_WINDOW_ORDERS);
        let f = p.features(base + TimeDelta::days(30));
        assert_eq!(f.product_breadth, MAX_SKUS as f64);
        assert_eq!(f.countries, MAX_COUNTRIES as f64);
        assert!(close(f.monetary, 11_500.0));
        assert!(close(f.recent_spend_90d, 1_000.0));
        assert!(close(f.earlier_spend, 10_500.0));

        let mut q = ProfileAccumulator::default();
        q.apply_purchase(base, &purchase("x", vec![line("A", 1, f64::NAN)], "UK", false));
        q.apply_closed_session(&summary("s", 1, 1, f64::INFINITY, 0, false, Some(f64::NAN)));
        assert!(q.features(base).to_vec().iter().all(|x| x.is_finite()));
        let json = serde_json::to_string(&q).expect("serialize");
        assert_eq!(serde_json::from_str::<ProfileAccumulator>(&json).expect("deserialize"), q);
    }

    #[test]
    fn summary_from_accumulator() {
        let start = t(2025, 5, 3, 9, 0);
        let sid = SessionId::new_unchecked("s9");
        let mut acc = SessionAccumulator::new(sid.clone(), start);
        let page = |kind, dur| PageView {
            page_kind: kind,
            duration_s: dur,
            bounce_rate: 0.0,
            exit_rate: 0.0,
            page_value: 0.0,
            special_day: 0.0,
            os: 1,
            browser: 1,
            region: 1,
            traffic_type: 1,
            visitor_type: VisitorType::Returning,
        };
        let kinds = [
            EventKind::PageView(page(PageKind::Product, Some(12.5))),
            EventKind::PageView(page(PageKind::Other, Some(2.5))),
            EventKind::PageView(page(PageKind::Administrative, None)),
            EventKind::AddToCart(CartChange { sku: "A".into(), quantity: 1, unit_price: Some(1.0) }),
            EventKind::Purchase(purchase("C1", vec![line("A", 1, 1.0)], "UK", true)),
        ];
        for (k, kind) in kinds.into_iter().enumerate() {
            acc.apply(&Event {
                event_id: EventId::new_unchecked(format!("e{k}")),
                customer_id: CustomerId::new_unchecked("c"),
                session_id: Some(sid.clone()),
                time: start + TimeDelta::seconds(60 * k as i64),
                kind,
            });
        }
        let s = SessionSummary::from_accumulator(&acc, Some(0.3));
        assert_eq!(s.started_at, start);
        assert_eq!(s.ended_at, start + TimeDelta::seconds(240));
        assert_eq!((s.n_events, s.pages, s.product_pages, s.cart_adds, s.cart_removes), (5, 3, 1, 1, 0));
        assert_eq!(s.duration_s, 15.0);
        assert!(!s.purchased, "a cancellation is not a purchase");
        assert_eq!(s.score, Some(0.3));
    }
}
