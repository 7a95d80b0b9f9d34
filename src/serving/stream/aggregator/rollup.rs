//! The KPI rollup's arithmetic, kept apart from the actor so it can be fed
//! updates and clocks directly in unit tests.
//!
//! - `events_per_s`: live events applied over the last second; `orders_per_min`
//!   and `revenue_per_min`: over the last 60 s (cancellations subtract revenue).
//!   Events replayed at start-up (no acknowledgement time) are not "live" and
//!   count in none of these.
//! - `active_sessions`: customers with an open session, from the open session each `Applied`
//!   names and `SessionClosed`; one with no event for the session gap (wall time) is
//!   dropped, as its actor would close the session.
//! - `conversion_rate`: share of the sessions closed in the last
//!   `conversion_window` that purchased (`null` when none closed).
//! - `mean_intent`: mean latest score over the open sessions that have one.
//! - `segment_sizes`: customers per segment of the newest segmentation version,
//!   from the `SegmentChanged` updates seen by this process.
//! - `latency_ms`: acknowledgement → broadcast p50/p99 over the last 10 s.

use actors::event::{CustomerId, SessionId};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A customer with an open session.
struct Active {
    session: Option<SessionId>,
    last_activity: Instant,
    score: Option<f64>,
}

/// One rollup, as sent on `kpis` (docs/stream.md, "KPI definitions").
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StreamKpis)]
pub struct Kpis {
    pub events_per_s: f64,
    pub orders_per_min: f64,
    pub revenue_per_min: f64,
    pub active_sessions: usize,
    pub conversion_rate: Option<f64>,
    pub mean_intent: Option<f64>,
    pub segment_sizes: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    /// The trace of a traced event this rollup includes (sampled requests
    /// only), so a dashboard developer can go from a frame to its trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Ingest acknowledged → broadcast, over the last 10 s (`null` without live events).
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = StreamLatency)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Counts of one interval between two rollups.
#[derive(Clone, Copy, Default)]
struct Slice {
    events: u64,
    orders: u64,
    revenue: f64,
}

pub struct Rollup {
    session_gap: Duration,
    conversion_window: Duration,
    current: Slice,
    /// Closed intervals (start, end, counts), newest last, covering the last 60 s.
    slices: VecDeque<(Instant, Instant, Slice)>,
    last_tick: Instant,
    active: HashMap<CustomerId, Active>,
    /// (closed at, purchased) within the conversion window.
    closed: VecDeque<(Instant, bool)>,
    /// Customer → (version, segment index); sizes by (version, index) with names.
    segment_of: HashMap<CustomerId, (i32, u32)>,
    segment_sizes: HashMap<(i32, u32), (String, u64)>,
    newest_version: Option<i32>,
    /// Latency histograms in µs, one per second, the newest last (10 kept).
    latency: VecDeque<Histogram<u64>>,
    latency_started: Instant,
}

impl Rollup {
    pub fn new(session_gap: Duration, conversion_window: Duration, now: Instant) -> Rollup {
        Rollup {
            session_gap,
            conversion_window,
            current: Slice::default(),
            slices: VecDeque::new(),
            last_tick: now,
            active: HashMap::new(),
            closed: VecDeque::new(),
            segment_of: HashMap::new(),
            segment_sizes: HashMap::new(),
            newest_version: None,
            latency: VecDeque::from([new_histogram()]),
            latency_started: now,
        }
    }

    /// Events applied by one customer; `live` when they came from ingest (not replay).
    pub fn applied(&mut self, customer: &CustomerId, events: u32, orders: u32, revenue: f64, live: bool, now: Instant) {
        if live {
            self.current.events += events as u64;
            self.current.orders += orders as u64;
            self.current.revenue += revenue;
        }
        if let Some(a) = self.active.get_mut(customer) {
            a.last_activity = now;
        }
    }

    /// One acknowledgement → broadcast latency.
    pub fn latency(&mut self, seconds: f64) {
        if let Some(h) = self.latency.back_mut() {
            // Clamped to the histogram's range; a minute is far beyond any target here.
            let _ = h.record((seconds * 1e6).clamp(0.0, 60e6).round() as u64);
        }
    }

    pub fn session_opened(&mut self, customer: &CustomerId, session: &SessionId, now: Instant) {
        let a =
            self.active.entry(customer.clone()).or_insert(Active { session: None, last_activity: now, score: None });
        if a.session.as_ref() != Some(session) {
            a.score = None;
        }
        a.session = Some(session.clone());
        a.last_activity = now;
    }

    pub fn session_closed(&mut self, customer: &CustomerId, session: &SessionId, purchased: bool, now: Instant) {
        if let Some(a) = self.active.get(customer) {
            if a.session.as_ref().map(|s| s == session).unwrap_or(true) {
                self.active.remove(customer);
            }
        }
        self.closed.push_back((now, purchased));
    }

    pub fn scored(&mut self, customer: &CustomerId, session: &SessionId, score: f64, final_score: bool) {
        if final_score {
            return;
        }
        if let Some(a) = self.active.get_mut(customer) {
            if a.session.as_ref() == Some(session) {
                a.score = Some(score);
            }
        }
    }

    pub fn segment_changed(&mut self, customer: &CustomerId, version: i32, to: u32, name: &str) {
        if self.newest_version.map(|v| version < v).unwrap_or(false) {
            return;
        }
        if self.newest_version != Some(version) {
            // A new segmentation: sizes start again from the customers that move into it.
            self.newest_version = Some(version);
            self.segment_sizes.clear();
            self.segment_of.clear();
        }
        if let Some(old) = self.segment_of.insert(customer.clone(), (version, to)) {
            if let Some((_, n)) = self.segment_sizes.get_mut(&old) {
                *n = n.saturating_sub(1);
            }
        }
        let e = self.segment_sizes.entry((version, to)).or_insert_with(|| (name.to_owned(), 0));
        e.0 = name.to_owned();
        e.1 += 1;
    }

    /// Closes the current interval and computes the rollup.
    pub fn tick(&mut self, now: Instant) -> Kpis {
        Kpis::merge(&[self.part(now)])
    }

    /// Closes the current interval and returns this process's share of the
    /// rollup as sums, which processors owning different partitions add up
    /// (see [`Kpis::merge`]).
    pub fn part(&mut self, now: Instant) -> KpiPart {
        let started = std::mem::replace(&mut self.last_tick, now);
        self.slices.push_back((started, now, std::mem::take(&mut self.current)));
        let minute = Duration::from_secs(60);
        while self.slices.front().map(|(_, end, _)| now.saturating_duration_since(*end) >= minute).unwrap_or(false) {
            self.slices.pop_front();
        }
        // events/s over the newest slices covering a second (one at the
        // default 1 s tick, many when ticking faster), per time covered. The
        // aggregator ticks on a fixed grid (`messages::tick_stream`), so the
        // slices are whole intervals and each event counts in one rate only.
        let second = Duration::from_secs(1);
        let (mut events, mut from) = (0u64, now);
        for (start, _, s) in self.slices.iter().rev() {
            if now.saturating_duration_since(from) >= second {
                break;
            }
            events += s.events;
            from = *start;
        }
        let covered = now.saturating_duration_since(from).as_secs_f64();
        let events_per_s = if covered > 0.0 { events as f64 / covered } else { 0.0 };
        let (orders, revenue) =
            self.slices.iter().fold((0u64, 0f64), |(o, r), (_, _, s)| (o + s.orders, r + s.revenue));

        let gap = self.session_gap;
        self.active.retain(|_, a| now.saturating_duration_since(a.last_activity) < gap);
        let window = self.conversion_window;
        while self.closed.front().map(|(t, _)| now.saturating_duration_since(*t) > window).unwrap_or(false) {
            self.closed.pop_front();
        }
        let scores: Vec<f64> = self.active.values().filter_map(|a| a.score).collect();

        let mut merged = new_histogram();
        for h in &self.latency {
            let _ = merged.add(h);
        }
        // One histogram per second of wall time; the last 10 make the window.
        if now.saturating_duration_since(self.latency_started) >= Duration::from_secs(1) {
            self.latency_started = now;
            self.latency.push_back(new_histogram());
            while self.latency.len() > 10 {
                self.latency.pop_front();
            }
        }
        let version = self.newest_version;
        let segment_sizes = self
            .segment_sizes
            .iter()
            .filter(|((v, _), (_, n))| Some(*v) == version && *n > 0)
            .map(|(_, (name, n))| (name.clone(), *n))
            .collect();
        KpiPart {
            events_per_s,
            orders,
            revenue,
            active_sessions: self.active.len(),
            closed: self.closed.len() as u64,
            purchased: self.closed.iter().filter(|(_, p)| *p).count() as u64,
            score_sum: scores.iter().sum(),
            scored: scores.len() as u64,
            segment_version: version,
            segment_sizes,
            latency_us: merged.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect(),
            trace_id: None,
        }
    }
}

/// One process's share of the rollup: sums that add up across processors
/// owning different partitions (each customer lives in one of them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct KpiPart {
    pub events_per_s: f64,
    pub orders: u64,
    pub revenue: f64,
    pub active_sessions: usize,
    /// Sessions closed within the conversion window, and those that purchased.
    pub closed: u64,
    pub purchased: u64,
    /// Latest scores of the open sessions that have one: sum and count.
    pub score_sum: f64,
    pub scored: u64,
    pub segment_version: Option<i32>,
    pub segment_sizes: BTreeMap<String, u64>,
    /// Latency histogram (µs value → count) over the last 10 s.
    pub latency_us: Vec<(u64, u64)>,
    /// A traced event's trace among this part's events, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Kpis {
    /// The rollup of the whole deployment from every processor's part.
    pub fn merge(parts: &[KpiPart]) -> Kpis {
        let sum_u = |f: fn(&KpiPart) -> u64| parts.iter().map(f).sum::<u64>();
        let (closed, purchased, scored) = (sum_u(|p| p.closed), sum_u(|p| p.purchased), sum_u(|p| p.scored));
        let score_sum: f64 = parts.iter().map(|p| p.score_sum).sum();
        let version = parts.iter().filter_map(|p| p.segment_version).max();
        let mut segment_sizes: BTreeMap<String, u64> = BTreeMap::new();
        for p in parts.iter().filter(|p| p.segment_version == version && version.is_some()) {
            for (name, n) in &p.segment_sizes {
                *segment_sizes.entry(name.clone()).or_default() += n;
            }
        }
        let mut latency = new_histogram();
        for p in parts {
            for &(v, n) in &p.latency_us {
                let _ = latency.record_n(v, n);
            }
        }
        let latency_ms = if latency.is_empty() {
            Latency { p50: None, p99: None }
        } else {
            let ms = |q: f64| round(latency.value_at_quantile(q) as f64 / 1000.0, 1);
            Latency { p50: Some(ms(0.5)), p99: Some(ms(0.99)) }
        };
        Kpis {
            events_per_s: round(parts.iter().map(|p| p.events_per_s).sum(), 1),
            orders_per_min: sum_u(|p| p.orders) as f64,
            revenue_per_min: round(parts.iter().map(|p| p.revenue).sum(), 2),
            active_sessions: parts.iter().map(|p| p.active_sessions).sum(),
            conversion_rate: (closed > 0).then(|| round(purchased as f64 / closed as f64, 4)),
            mean_intent: (scored > 0).then(|| round(score_sum / scored as f64, 4)),
            segment_sizes,
            latency_ms,
            trace_id: parts.iter().find_map(|p| p.trace_id.clone()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 2 significant digits: a few KiB each.
    Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CustomerId {
        CustomerId::new_unchecked(s)
    }
    fn s(x: &str) -> SessionId {
        SessionId::new_unchecked(x)
    }

    #[test]
    fn rates_sessions_conversion_and_intent() {
        let t0 = Instant::now();
        let mut r = Rollup::new(Duration::from_secs(1800), Duration::from_secs(300), t0);
        r.session_opened(&c("a"), &s("a1"), t0);
        r.session_opened(&c("b"), &s("b1"), t0);
        r.applied(&c("a"), 10, 1, 25.0, true, t0);
        r.applied(&c("b"), 5, 0, 0.0, true, t0);
        // Replayed at start-up: not live, not in the rates.
        r.applied(&c("z"), 1000, 9, 900.0, false, t0);
        r.scored(&c("a"), &s("a1"), 0.8, false);
        r.scored(&c("b"), &s("b1"), 0.2, false);
        r.latency(0.004);
        r.latency(0.006);
        let k = r.tick(t0 + Duration::from_secs(1));
        assert_eq!(k.events_per_s, 15.0);
        assert_eq!(k.orders_per_min, 1.0);
        assert_eq!(k.revenue_per_min, 25.0);
        assert_eq!(k.active_sessions, 2);
        assert_eq!(k.mean_intent, Some(0.5));
        assert_eq!(k.conversion_rate, None);
        assert!(k.latency_ms.p50.unwrap() >= 3.9 && k.latency_ms.p99.unwrap() <= 6.1, "{:?}", k.latency_ms);

        r.session_closed(&c("a"), &s("a1"), true, t0 + Duration::from_secs(1));
        r.applied(&c("b"), 2, 0, 0.0, true, t0 + Duration::from_secs(1));
        let k = r.tick(t0 + Duration::from_secs(2));
        assert_eq!(k.events_per_s, 2.0);
        // Orders and revenue are per minute: the first second still counts.
        assert_eq!(k.orders_per_min, 1.0);
        assert_eq!(k.active_sessions, 1);
        assert_eq!(k.conversion_rate, Some(1.0));
        assert_eq!(k.mean_intent, Some(0.2));

        // Past the minute, and past the session gap with no activity.
        let k = r.tick(t0 + Duration::from_secs(3600));
        assert_eq!((k.orders_per_min, k.revenue_per_min), (0.0, 0.0));
        assert_eq!(k.active_sessions, 0);
        assert_eq!(k.conversion_rate, None);
    }

    #[test]
    fn parts_of_two_processors_merge_into_the_rollup_of_one() {
        let t0 = Instant::now();
        let gap = Duration::from_secs(1800);
        let win = Duration::from_secs(300);
        let (mut one, mut a, mut b) = (Rollup::new(gap, win, t0), Rollup::new(gap, win, t0), Rollup::new(gap, win, t0));
        // Customer x lives on processor a, y on processor b; `one` sees both.
        let feed = |r: &mut Rollup, c_: &str, events: u32, orders: u32, revenue: f64, score: f64, lat: f64| {
            r.session_opened(&c(c_), &s(&format!("{c_}1")), t0);
            r.applied(&c(c_), events, orders, revenue, true, t0);
            r.scored(&c(c_), &s(&format!("{c_}1")), score, false);
            r.latency(lat);
            r.segment_changed(&c(c_), 3, orders, if orders > 0 { "buyers" } else { "browsers" });
        };
        for (r, who) in [(&mut one, "x"), (&mut a, "x")] {
            feed(r, who, 7, 1, 30.0, 0.9, 0.004);
        }
        for (r, who) in [(&mut one, "y"), (&mut b, "y")] {
            feed(r, who, 3, 0, 0.0, 0.1, 0.020);
        }
        one.session_closed(&c("y"), &s("y1"), false, t0);
        b.session_closed(&c("y"), &s("y1"), false, t0);
        let t1 = t0 + Duration::from_secs(1);
        let whole = one.tick(t1);
        let merged = Kpis::merge(&[a.part(t1), b.part(t1)]);
        assert_eq!(merged, whole);
        assert_eq!(merged.events_per_s, 10.0);
        assert_eq!(merged.active_sessions, 1);
        assert_eq!(merged.conversion_rate, Some(0.0));
        assert_eq!(merged.segment_sizes.get("buyers"), Some(&1));
        // A part survives the trip through JSON (how processors exchange them).
        let p = a.part(t1 + Duration::from_secs(1));
        assert_eq!(serde_json::from_str::<KpiPart>(&serde_json::to_string(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn segment_sizes_follow_moves_and_new_versions() {
        let t0 = Instant::now();
        let mut r = Rollup::new(Duration::from_secs(1800), Duration::from_secs(300), t0);
        r.segment_changed(&c("a"), 1, 0, "loyal");
        r.segment_changed(&c("b"), 1, 0, "loyal");
        r.segment_changed(&c("c"), 1, 1, "new");
        r.segment_changed(&c("a"), 1, 1, "new");
        let k = r.tick(t0 + Duration::from_secs(1));
        assert_eq!(k.segment_sizes.get("loyal"), Some(&1));
        assert_eq!(k.segment_sizes.get("new"), Some(&2));
        r.segment_changed(&c("a"), 2, 3, "whales");
        r.segment_changed(&c("b"), 1, 1, "new"); // an older version: ignored
        let k = r.tick(t0 + Duration::from_secs(2));
        assert_eq!(k.segment_sizes.len(), 1);
        assert_eq!(k.segment_sizes.get("whales"), Some(&1));
    }
}
