//! Synthetic shop traffic of our own making (`cartpulse replay --synthetic N`,
//! and the load of `cartpulse bench ingest`): deterministic for a seed, so
//! tests and benchmarks can rely on it, and shaped like the UCI Online Shoppers
//! sessions so the features and the model see plausible input.
//!
//! - N sessions over a pool of about N/3 customers, so customers return; a
//!   customer keeps device, region, traffic source and country across visits
//!   and is a `new` visitor only on the first one.
//! - Page views: product pages dominate; durations, bounce and exit rates by
//!   page kind; page value > 0 mostly on product pages of sessions that buy.
//! - Carts: buyers add every line they buy (and sometimes add and remove an
//!   extra item); some other sessions fill a cart and abandon it.
//! - About 15 % of the sessions end in a `purchase` of 1..=6 lines from a
//!   catalogue of 500 SKUs priced 0.50..50; every session ends with
//!   `session_end`.
//! - Sessions start in order, spread evenly over the 14 days before
//!   2026-01-01 (so the Christmas run-up gives `special_day` values); events of
//!   a session are seconds apart, and no customer has two sessions at once.
//!
//! Ids: customer `{prefix}-cK`, session `{prefix}-sN`, event `{prefix}-sN-K`
//! (K from 1 over the session's events), invoice `{prefix}-iN`; the default
//! prefix is `syn`.

use actors::event::{
    CartChange, CustomerId, Event, EventId, EventKind, OrderLine, PageKind, PageView, Purchase, SessionId, VisitorType,
};
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::SessionEvents;

/// Size of the product catalogue.
pub const CATALOGUE_SIZE: usize = 500;

/// 2026-01-01T00:00:00Z: fixed so that the same seed gives the same events
/// whenever it runs.
pub fn default_epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_767_225_600)
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Number of sessions.
    pub sessions: u64,
    pub seed: u64,
    /// Prefix of every id (customers, sessions, events, invoices).
    pub prefix: String,
    /// Size of the customer pool; `None` = about a third of the sessions.
    pub customers: Option<u64>,
    /// Sessions start evenly spread over `span` before `end`.
    pub span: TimeDelta,
    pub end: DateTime<Utc>,
}

impl SyntheticConfig {
    /// `sessions` sessions with the default prefix, pool and time range.
    pub fn new(sessions: u64, seed: u64) -> Self {
        Self {
            sessions,
            seed,
            prefix: "syn".to_owned(),
            customers: None,
            span: TimeDelta::days(14),
            end: default_epoch(),
        }
    }
}

/// Generates the sessions, in start-time order.
pub fn generate(cfg: &SyntheticConfig) -> Vec<SessionEvents> {
    let mut g = Generator::new(cfg);
    (1..=cfg.sessions).map(|n| g.session(n)).collect()
}

/// Generates sessions until they hold `target` events in total, cutting the
/// last session short if needed (it then lacks its tail, `session_end`
/// included). For loads that are sized in events rather than sessions.
pub fn generate_events(cfg: &SyntheticConfig, target: u64) -> Vec<SessionEvents> {
    // Sessions average about 15 events; overshoot the estimate and retry
    // bigger if the seed was unusually terse.
    let mut sessions = target / 10 + 1;
    loop {
        let all = generate(&SyntheticConfig { sessions, ..cfg.clone() });
        let total: u64 = all.iter().map(|s| s.events.len() as u64).sum();
        if total >= target {
            return truncate_to(all, target);
        }
        sessions = sessions.saturating_mul(2);
    }
}

fn truncate_to(sessions: Vec<SessionEvents>, target: u64) -> Vec<SessionEvents> {
    let mut left = target;
    let mut out = Vec::new();
    for mut s in sessions {
        if left == 0 {
            break;
        }
        // `left` is below the session length here, which is a usize.
        if (s.events.len() as u64) > left {
            s.events.truncate(left as usize);
        }
        left -= s.events.len() as u64;
        out.push(s);
    }
    out
}

struct Customer {
    id: CustomerId,
    os: u16,
    browser: u16,
    region: u16,
    traffic_type: u16,
    country: &'static str,
    /// Odd customers (about 1 %) the analytics cannot classify.
    other_visitor: bool,
    visits: u32,
    /// Time of the customer's last event so far.
    busy_until: Option<DateTime<Utc>>,
}

struct Generator<'a> {
    cfg: &'a SyntheticConfig,
    rng: StdRng,
    prices: Vec<f64>,
    customers: Vec<Customer>,
    step_ms: i64,
}

// Category weights roughly follow the UCI file's marginals.
const OS_WEIGHTS: [u32; 8] = [26, 53, 21, 4, 1, 1, 1, 1];
const BROWSER_WEIGHTS: [u32; 13] = [20, 65, 1, 6, 4, 1, 1, 1, 1, 1, 1, 1, 1];
const REGION_WEIGHTS: [u32; 9] = [39, 9, 20, 10, 3, 7, 6, 4, 4];
const TRAFFIC_WEIGHTS: [u32; 20] = [20, 32, 17, 9, 2, 4, 1, 3, 1, 4, 2, 1, 6, 1, 1, 1, 1, 1, 1, 1];
const COUNTRIES: [(&str, u32); 8] = [
    ("United Kingdom", 80),
    ("Germany", 5),
    ("France", 5),
    ("EIRE", 3),
    ("Spain", 2),
    ("Netherlands", 2),
    ("Belgium", 2),
    ("Portugal", 1),
];

impl<'a> Generator<'a> {
    fn new(cfg: &'a SyntheticConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        // Squaring skews the catalogue towards cheap items, as in gift shops.
        let prices = (0..CATALOGUE_SIZE).map(|_| round2(0.5 + 49.5 * rng.random::<f64>().powi(2))).collect();
        let pool = cfg.customers.unwrap_or(cfg.sessions / 3).max(1);
        let customers = (1..=pool)
            .map(|k| Customer {
                id: CustomerId::new_unchecked(format!("{}-c{k}", cfg.prefix)),
                os: pick(&mut rng, &OS_WEIGHTS) as u16 + 1,
                browser: pick(&mut rng, &BROWSER_WEIGHTS) as u16 + 1,
                region: pick(&mut rng, &REGION_WEIGHTS) as u16 + 1,
                traffic_type: pick(&mut rng, &TRAFFIC_WEIGHTS) as u16 + 1,
                country: COUNTRIES[pick(&mut rng, &COUNTRIES.map(|c| c.1))].0,
                other_visitor: rng.random_bool(0.01),
                visits: 0,
                busy_until: None,
            })
            .collect();
        let span_ms = cfg.span.num_milliseconds().max(0);
        let step_ms = span_ms / i64::try_from(cfg.sessions.max(1)).unwrap_or(i64::MAX);
        Self { cfg, rng, prices, customers, step_ms }
    }

    fn session(&mut self, n: u64) -> SessionEvents {
        let offset = TimeDelta::milliseconds(self.step_ms.saturating_mul(n as i64 - 1));
        let mut start = self.cfg.end - self.cfg.span + offset;
        let ci = self.pick_customer(start);
        if let Some(busy) = self.customers[ci].busy_until {
            if busy >= start {
                start = busy + TimeDelta::seconds(60);
            }
        }

        let visitor_type = {
            let c = &self.customers[ci];
            if c.other_visitor {
                VisitorType::Other
            } else if c.visits == 0 {
                VisitorType::New
            } else {
                VisitorType::Returning
            }
        };
        let p_buy = match visitor_type {
            VisitorType::New => 0.11,
            VisitorType::Returning => 0.16,
            VisitorType::Other => 0.12,
        };
        let buys = self.rng.random_bool(p_buy);
        let kinds = self.page_kinds(buys);
        let single_page = kinds.len() == 1;
        let special_day = special_day(start);
        let (os, browser, region, traffic_type, country) = {
            let c = &self.customers[ci];
            (c.os, c.browser, c.region, c.traffic_type, c.country)
        };
        let pages: Vec<PageView> = kinds
            .iter()
            .map(|&k| {
                let mut p = self.page(k, buys, single_page);
                p.special_day = special_day;
                p.os = os;
                p.browser = browser;
                p.region = region;
                p.traffic_type = traffic_type;
                p.visitor_type = visitor_type;
                p
            })
            .collect();

        let lines = if buys { self.order_lines() } else { Vec::new() };
        let cart = self.cart_changes(&lines, buys);
        // Cart changes happen right after product pages, in cart order.
        let product_positions: Vec<usize> =
            kinds.iter().enumerate().filter(|(_, k)| **k == PageKind::Product).map(|(i, _)| i).collect();
        let mut slots: Vec<usize> = cart
            .iter()
            .map(|_| match product_positions.len() {
                0 => kinds.len().saturating_sub(1),
                len => product_positions[self.rng.random_range(0..len)],
            })
            .collect();
        slots.sort_unstable();

        let mut kinds_out: Vec<EventKind> = Vec::with_capacity(pages.len() + cart.len() + 2);
        let mut cart_iter = cart.into_iter().zip(slots).peekable();
        for (i, page) in pages.into_iter().enumerate() {
            kinds_out.push(EventKind::PageView(page));
            while let Some((change, _)) = cart_iter.next_if(|(_, slot)| *slot == i) {
                kinds_out.push(change);
            }
        }
        kinds_out.extend(cart_iter.map(|(c, _)| c));
        if buys {
            kinds_out.push(EventKind::Purchase(Purchase {
                invoice: format!("{}-i{n}", self.cfg.prefix),
                lines,
                country: Some(country.to_owned()),
                cancellation: false,
            }));
        }
        kinds_out.push(EventKind::SessionEnd);

        let customer = self.customers[ci].id.clone();
        let session = SessionId::new_unchecked(format!("{}-s{n}", self.cfg.prefix));
        let mut time = start;
        let mut events = Vec::with_capacity(kinds_out.len());
        for (k, kind) in kinds_out.into_iter().enumerate() {
            let gap = self.gap_after(&kind);
            events.push(Event {
                event_id: EventId::new_unchecked(format!("{}-s{n}-{}", self.cfg.prefix, k + 1)),
                customer_id: customer.clone(),
                session_id: Some(session.clone()),
                time,
                kind,
            });
            time += TimeDelta::seconds(gap);
        }
        let c = &mut self.customers[ci];
        c.visits += 1;
        c.busy_until = events.last().map(|e| e.time);
        SessionEvents { customer, session, events }
    }

    /// A customer who is not mid-session at `start`; a few tries, then anyone
    /// (the caller then delays the session).
    fn pick_customer(&mut self, start: DateTime<Utc>) -> usize {
        let len = self.customers.len();
        let mut ci = self.rng.random_range(0..len);
        for _ in 0..8 {
            match self.customers[ci].busy_until {
                Some(busy) if busy >= start => ci = self.rng.random_range(0..len),
                _ => break,
            }
        }
        ci
    }

    fn page_kinds(&mut self, buys: bool) -> Vec<PageKind> {
        let product =
            if buys { 3 + geometric(&mut self.rng, 22.0, 300) } else { 1 + geometric(&mut self.rng, 11.0, 300) };
        let admin = geometric(&mut self.rng, if buys { 3.0 } else { 1.8 }, 30);
        let info = geometric(&mut self.rng, 0.5, 20);
        let mut kinds: Vec<PageKind> = std::iter::repeat_n(PageKind::Product, product)
            .chain(std::iter::repeat_n(PageKind::Administrative, admin))
            .chain(std::iter::repeat_n(PageKind::Informational, info))
            .collect();
        kinds.shuffle(&mut self.rng);
        // Half the visits land on the home page first.
        if self.rng.random_bool(0.5) {
            kinds.insert(0, PageKind::Other);
        }
        kinds
    }

    fn page(&mut self, kind: PageKind, buys: bool, single_page: bool) -> PageView {
        let r = &mut self.rng;
        let (mean_s, bounce_max, exit_lo, exit_hi) = match kind {
            PageKind::Administrative => (25.0, 0.03, 0.01, 0.05),
            PageKind::Informational => (35.0, 0.05, 0.02, 0.10),
            PageKind::Product => (if buys { 50.0 } else { 38.0 }, 0.04, 0.01, 0.08),
            PageKind::Other => (10.0, 0.20, 0.05, 0.20),
        };
        let duration_s =
            if r.random_bool(0.02) { None } else { Some(round1(-mean_s * (1.0 - r.random::<f64>()).ln())) };
        let (bounce_rate, exit_rate) = if single_page {
            (0.2, 0.2)
        } else {
            let bounce = round4(bounce_max * r.random::<f64>().powi(2));
            (bounce, round4(exit_lo + (exit_hi - exit_lo) * r.random::<f64>()))
        };
        let page_value = match kind {
            PageKind::Product if buys && r.random_bool(0.55) => round2(5.0 + 75.0 * r.random::<f64>()),
            PageKind::Product if r.random_bool(0.03) => round2(1.0 + 29.0 * r.random::<f64>()),
            PageKind::Administrative if buys && r.random_bool(0.15) => round2(1.0 + 9.0 * r.random::<f64>()),
            _ => 0.0,
        };
        PageView {
            page_kind: kind,
            duration_s,
            bounce_rate,
            exit_rate,
            page_value,
            special_day: 0.0,
            os: 0,
            browser: 0,
            region: 0,
            traffic_type: 0,
            visitor_type: VisitorType::Other,
        }
    }

    fn sku(&mut self) -> usize {
        // Popular items first: a power law over the catalogue.
        let u: f64 = self.rng.random();
        ((CATALOGUE_SIZE as f64 * u.powf(1.7)) as usize).min(CATALOGUE_SIZE - 1)
    }

    fn sku_name(&self, i: usize) -> String {
        format!("SKU{:04}", i + 1)
    }

    fn order_lines(&mut self) -> Vec<OrderLine> {
        let n = self.rng.random_range(1..=6);
        let mut chosen: Vec<usize> = Vec::with_capacity(n);
        while chosen.len() < n {
            let s = self.sku();
            if !chosen.contains(&s) {
                chosen.push(s);
            }
        }
        chosen
            .into_iter()
            .map(|s| OrderLine {
                sku: self.sku_name(s),
                quantity: 1 + geometric(&mut self.rng, 0.8, 11) as u32,
                unit_price: self.prices[s],
                description: None,
            })
            .collect()
    }

    /// Adds (and removes) in the order they happen: every bought line is added;
    /// buyers sometimes add and drop an extra item; a third of the others fill
    /// a cart they then partly empty or abandon.
    fn cart_changes(&mut self, lines: &[OrderLine], buys: bool) -> Vec<EventKind> {
        let mut adds: Vec<CartChange> = lines
            .iter()
            .map(|l| CartChange { sku: l.sku.clone(), quantity: l.quantity, unit_price: Some(l.unit_price) })
            .collect();
        let extra = if buys {
            usize::from(self.rng.random_bool(0.25))
        } else if self.rng.random_bool(0.33) {
            self.rng.random_range(1..=3)
        } else {
            0
        };
        let mut removes = Vec::new();
        for _ in 0..extra {
            let s = self.sku();
            let change = CartChange { sku: self.sku_name(s), quantity: 1, unit_price: Some(self.prices[s]) };
            if buys || self.rng.random_bool(0.4) {
                removes.push(CartChange { unit_price: None, ..change.clone() });
            }
            adds.push(change);
        }
        adds.shuffle(&mut self.rng);
        adds.into_iter().map(EventKind::AddToCart).chain(removes.into_iter().map(EventKind::RemoveFromCart)).collect()
    }

    /// Seconds until the next event of the session.
    fn gap_after(&mut self, kind: &EventKind) -> i64 {
        match kind {
            EventKind::PageView(p) => match p.duration_s {
                // Whole seconds, at least 1, so events never share a time.
                Some(d) => (d.round() as i64).clamp(1, 900),
                None => self.rng.random_range(2..=30),
            },
            EventKind::AddToCart(_) | EventKind::RemoveFromCart(_) => self.rng.random_range(2..=8),
            EventKind::Purchase(_) | EventKind::SessionEnd => self.rng.random_range(1..=5),
        }
    }
}

/// Closeness to Christmas the way the UCI file measures special days: 1 five
/// to seven days before, falling by 0.2 a day on either side.
fn special_day(t: DateTime<Utc>) -> f64 {
    if t.month() != 12 || t.day() >= 25 {
        return 0.0;
    }
    let days_before = 25 - t.day() as i32;
    let off = if days_before < 5 {
        5 - days_before
    } else if days_before > 7 {
        days_before - 7
    } else {
        0
    };
    round1((1.0 - 0.2 * off as f64).max(0.0))
}

/// Number of failures before a success with the given mean, capped.
fn geometric(rng: &mut StdRng, mean: f64, cap: usize) -> usize {
    let p_continue = mean / (1.0 + mean);
    let mut n = 0;
    while n < cap && rng.random_bool(p_continue) {
        n += 1;
    }
    n
}

/// Index drawn with the given weights (all weights here are > 0).
fn pick(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.random_range(0..total.max(1));
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        let a = generate(&SyntheticConfig::new(300, 7));
        let b = generate(&SyntheticConfig::new(300, 7));
        let c = generate(&SyntheticConfig::new(300, 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn traffic_is_plausible() {
        let sessions = generate(&SyntheticConfig::new(3_000, 42));
        assert_eq!(sessions.len(), 3_000);

        let buyers =
            sessions.iter().filter(|s| s.events.iter().any(|e| matches!(e.kind, EventKind::Purchase(_)))).count();
        let share = buyers as f64 / 3_000.0;
        assert!((0.10..=0.20).contains(&share), "purchase share {share}");

        let customers: HashSet<&str> = sessions.iter().map(|s| s.customer.as_str()).collect();
        assert!(customers.len() < 1_000 && customers.len() > 800, "{} customers", customers.len());

        let mut pages = HashMap::new();
        let mut ids = HashSet::new();
        let mut last_by_customer: HashMap<&str, DateTime<Utc>> = HashMap::new();
        let mut prev_start = None;
        for s in &sessions {
            assert!(matches!(s.events.last().map(|e| &e.kind), Some(EventKind::SessionEnd)));
            let start = s.events[0].time;
            if let Some(p) = prev_start {
                assert!(start >= p, "sessions start in order");
            }
            prev_start = Some(start);
            if let Some(last) = last_by_customer.get(s.customer.as_str()) {
                assert!(start > *last, "customer {} has overlapping sessions", s.customer);
            }
            last_by_customer.insert(s.customer.as_str(), s.events.last().map(|e| e.time).unwrap());
            for w in s.events.windows(2) {
                assert!(w[1].time > w[0].time);
            }
            let buys = s.events.iter().any(|e| matches!(e.kind, EventKind::Purchase(_)));
            for (k, e) in s.events.iter().enumerate() {
                assert_eq!(e.event_id.as_str(), format!("{}-{}", s.session, k + 1));
                assert!(actors::event::validate_id(e.event_id.as_str()).is_ok());
                assert!(ids.insert(e.event_id.clone()), "duplicate id");
                match &e.kind {
                    EventKind::PageView(p) => {
                        let entry = pages.entry(p.page_kind as u8).or_insert((0u64, 0u64, 0u64));
                        entry.0 += 1;
                        if p.page_value > 0.0 {
                            if buys {
                                entry.1 += 1;
                            } else {
                                entry.2 += 1;
                            }
                        }
                        assert!((0.0..=1.0).contains(&p.bounce_rate) && (0.0..=1.0).contains(&p.exit_rate));
                    }
                    EventKind::Purchase(p) => {
                        assert!((1..=6).contains(&p.lines.len()));
                        for l in &p.lines {
                            assert!((0.5..=50.0).contains(&l.unit_price));
                        }
                    }
                    _ => {}
                }
            }
        }
        let product = pages[&(PageKind::Product as u8)];
        let total: u64 = pages.values().map(|v| v.0).sum();
        assert!(product.0 * 2 > total, "product pages dominate");
        // Valued pages mostly belong to buying sessions (15 % of sessions).
        assert!(product.1 > product.2, "{product:?}");
    }

    #[test]
    fn generate_events_hits_the_target_exactly() {
        let mut cfg = SyntheticConfig::new(0, 1);
        cfg.prefix = "bench-x-p0".into();
        let s = generate_events(&cfg, 10_001);
        assert_eq!(s.iter().map(|s| s.events.len()).sum::<usize>(), 10_001);
        assert!(s[0].customer.as_str().starts_with("bench-x-p0-c"));
    }
}
