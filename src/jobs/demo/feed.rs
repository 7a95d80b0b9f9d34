//! The demo's traffic, on a thread of its own so it never competes with the
//! server's arbiters, in three phases:
//!
//! 1. **History.** The UCI Online Shoppers file (every row one session; or
//!    synthetic sessions when it is absent) as fast as the server takes it,
//!    then the UCI Online Retail file (every invoice one purchase) on a
//!    compressed clock: its year in about `retail_seconds`.
//! 2. **Segments.** Once the actors have stored the customers' profiles, a
//!    K-Means segmentation is fitted on the customers who ordered (5 segments) and
//!    activated, so every customer gets a segment.
//! 3. **Live.** Then, until the server stops, traffic shaped like the data
//!    at about `rate` events/s: visits drawn from the shoppers rows, each
//!    retold as a new customer's visit happening now, one page a second, and
//!    ending with an order when the row's visit did; and orders drawn from
//!    the retail invoices, retold as new orders of the same (returning)
//!    customers. The dashboards move, high-intent sessions come up, segment
//!    sizes change.

use crate::config::Settings;
use crate::jobs::replay::sender::{plan_batches, Sender, SenderConfig};
use crate::jobs::replay::{ReplayFormat, ReplayOptions, SessionEvents};
use actors::event::{CustomerId, Event, EventId, EventKind, SessionId};
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// What the feeder needs.
pub struct FeedOptions {
    pub settings: Settings,
    pub target: url::Url,
    pub ingest_key: SecretString,
    /// The shoppers file, when it exists.
    pub shoppers: Option<PathBuf>,
    /// Synthetic sessions to send instead.
    pub synthetic: u64,
    /// The retail file, when it exists.
    pub retail: Option<PathBuf>,
    /// Wall-clock seconds the retail year is compressed into.
    pub retail_seconds: f64,
    /// Events per second of the live phase (0: no live phase).
    pub rate: u32,
}

/// Runs the three phases; returns only when the server is gone or a phase failed.
pub async fn run(opts: FeedOptions) -> anyhow::Result<()> {
    let shoppers = history(&opts, ReplayFormat::Shoppers).await?;
    let retail: Vec<SessionEvents> = match &opts.retail {
        Some(_) => history(&opts, ReplayFormat::Retail).await?.into_iter().map(|(s, _)| s).collect(),
        None => Vec::new(),
    };
    segment(&opts).await;
    if opts.rate == 0 {
        return Ok(());
    }
    live(&opts, shoppers, retail).await
}

/// Replays one data set; answers its sessions for the live phase, each with
/// whether its visit ended in a purchase (the shoppers file's label; false
/// for anything else).
async fn history(opts: &FeedOptions, format: ReplayFormat) -> anyhow::Result<Vec<(SessionEvents, bool)>> {
    let (file, synthetic, speedup) = match format {
        ReplayFormat::Shoppers => (opts.shoppers.clone(), opts.shoppers.is_none().then_some(opts.synthetic), None),
        // About 373 days of invoices into `retail_seconds`.
        ReplayFormat::Retail => (opts.retail.clone(), None, Some(373.0 * 86_400.0 / opts.retail_seconds.max(1.0))),
    };
    let what = match (&file, format) {
        (Some(f), ReplayFormat::Shoppers) => format!("{} (every row a session)", f.display()),
        (Some(f), ReplayFormat::Retail) => {
            format!("{} (every invoice a purchase, a year in {:.0} s)", f.display(), opts.retail_seconds)
        }
        (None, _) => format!("{} synthetic sessions", opts.synthetic),
    };
    eprintln!("demo feed: replaying {what}");
    let replay = ReplayOptions {
        format,
        file,
        synthetic,
        target: opts.target.clone(),
        api_key: opts.ingest_key.clone(),
        rate: None,
        speedup,
        batch_size: 500,
        concurrency: 4,
        seed: 42,
        progress: true,
    };
    let (labelled, stats) = match (&replay.file, format) {
        (Some(path), ReplayFormat::Shoppers) => {
            let path = path.clone();
            let read = move || crate::jobs::replay::shoppers::expand_file_labelled(&path);
            (tokio::task::spawn_blocking(read).await??, None)
        }
        _ => {
            let (sessions, stats) = crate::jobs::replay::load(&replay).await?;
            (sessions.into_iter().map(|s| (s, false)).collect(), stats)
        }
    };
    let sessions = labelled.iter().map(|(s, _)| s.clone()).collect();
    let s = crate::jobs::replay::send(&replay, sessions, stats).await?;
    eprintln!(
        "demo feed: {} sessions, {} events accepted, {} duplicates ({:.0} events/s)",
        s.sessions, s.accepted, s.duplicates, s.events_per_s
    );
    Ok(labelled)
}

/// Fits a segmentation on the stored profiles and activates it. A failure
/// is reported and the demo goes on without segments.
async fn segment(opts: &FeedOptions) {
    // The actors store profiles within `actors.snapshot_max_delay_ms`.
    let wait = opts.settings.actors.snapshot_max_delay_ms + Duration::from_secs(1);
    eprintln!("demo feed: segmenting the customers in {} s …", wait.as_secs());
    tokio::time::sleep(wait).await;
    let res = async {
        let report = crate::jobs::segment::run(crate::jobs::segment::SegmentOptions {
            settings: opts.settings.clone(),
            // Five segments read better on a dashboard than the silhouette's pick.
            k: crate::jobs::segment::KChoice::Fixed(5),
            export_matrix: None,
            assignments: None,
            report: None,
            seed: 42,
            print_table: false,
            // Most of the shoppers' visitors never ordered (those who did
            // ordered once, and their sessions are dated years after the
            // retail orders): segments of buyers say more.
            buyers_only: true,
            lake: None,
        })
        .await?;
        let db = crate::db::connect(&opts.settings).await?;
        crate::segments::assign::activate(&db, report.version).await?;
        anyhow::Ok(report)
    }
    .await;
    match res {
        Ok(r) => eprintln!(
            "demo feed: segmentation v{} active: {} segments over {} customers ({})",
            r.version,
            r.k,
            r.n_customers,
            r.segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Err(e) => eprintln!("demo feed: no segmentation ({e:#}); the Segments page stays empty"),
    }
}

/// How often the live phase sends what is due.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A retold visit in progress: the next page goes when it is due, one a second.
struct Visit {
    events: std::collections::VecDeque<Event>,
    due: tokio::time::Instant,
}

/// Live traffic until the server stops answering: about `rate` visits at a
/// time, each a shoppers row retold as a new customer's visit that happens
/// now, one page a second (so about `rate` events/s), ending with a
/// purchase when its row's visit did (the basket drawn from the retail
/// orders); and besides, about one order a second by a returning customer
/// of the retail file.
async fn live(
    opts: &FeedOptions,
    shoppers: Vec<(SessionEvents, bool)>,
    retail: Vec<SessionEvents>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!shoppers.is_empty(), "no sessions to draw live traffic from");
    let mut config = SenderConfig::new(opts.target.clone(), opts.ingest_key.clone());
    config.concurrency = 1;
    let sender = Sender::new(config)?;
    let orders: Vec<SessionEvents> = retail
        .into_iter()
        .filter(|s| {
            !s.customer.as_str().starts_with("guest-")
                && s.events.iter().any(|e| matches!(&e.kind, EventKind::Purchase(p) if !p.cancellation))
        })
        .collect();
    eprintln!(
        "demo feed: live traffic, about {} visits at a time (one page a second each){}; Ctrl-C stops the demo",
        opts.rate,
        if orders.is_empty() { "" } else { ", and orders of returning customers" }
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let run = chrono::Utc::now().timestamp();
    let mut visits: Vec<Visit> = Vec::new();
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let now = tokio::time::Instant::now();
        // Ramp up over about a second; visits start at random phases.
        let mut starts = (opts.rate as usize / 10).max(1);
        while visits.len() < opts.rate as usize && starts > 0 {
            starts -= 1;
            n += 1;
            let (s, purchased) = shoppers.choose(&mut rng).expect("not empty");
            let basket = purchased.then(|| orders.choose(&mut rng)).flatten();
            let offset = std::time::Duration::from_millis(rand::Rng::random_range(&mut rng, 0..1000));
            visits.push(Visit { events: retell_visit(s, basket, &format!("d{run}-{n}")), due: now + offset });
        }
        let mut due = Vec::new();
        for v in visits.iter_mut().filter(|v| v.due <= now) {
            if let Some(e) = v.events.pop_front() {
                due.push(e);
                v.due += std::time::Duration::from_secs(1);
            }
        }
        visits.retain(|v| !v.events.is_empty());
        if !orders.is_empty() && ticks % 10 == 0 {
            n += 1;
            let o = orders.choose(&mut rng).expect("not empty");
            due.extend(retell_order(o, &o.customer, None, &format!("d{run}-{n}")));
        }
        if due.is_empty() {
            continue;
        }
        let stamp = chrono::Utc::now();
        let chunks: Vec<SessionEvents> = due
            .into_iter()
            .map(|mut e| {
                e.time = stamp;
                SessionEvents {
                    customer: e.customer_id.clone(),
                    session: e.session_id.clone().unwrap_or_else(|| SessionId::new_unchecked("none")),
                    events: vec![e],
                }
            })
            .collect();
        sender.send(plan_batches(chunks, 500)?).await?;
    }
}

/// A shoppers visit told again as a new customer's (ids tagged with `tag`),
/// with a purchase of `basket`'s lines before its end when given. The times
/// are set when each event is sent.
fn retell_visit(s: &SessionEvents, basket: Option<&SessionEvents>, tag: &str) -> std::collections::VecDeque<Event> {
    let customer = CustomerId::new_unchecked(format!("live-c{tag}"));
    let session = SessionId::new_unchecked(format!("live-s{tag}"));
    let mut out = std::collections::VecDeque::with_capacity(s.events.len() + 1);
    for (i, e) in s.events.iter().enumerate() {
        if matches!(e.kind, EventKind::SessionEnd) {
            if let Some(b) = basket {
                out.extend(retell_order(b, &customer, Some(&session), tag));
            }
        }
        let mut e = e.clone();
        e.event_id = EventId::new_unchecked(format!("live-e{tag}-{i}"));
        e.customer_id = customer.clone();
        e.session_id = Some(session.clone());
        out.push_back(e);
    }
    out
}

/// An order told again (a fresh invoice `live-{tag}`) by `customer`, in
/// `session` when given.
fn retell_order(o: &SessionEvents, customer: &CustomerId, session: Option<&SessionId>, tag: &str) -> Vec<Event> {
    o.events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Purchase(p) if !p.cancellation))
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            e.event_id = EventId::new_unchecked(format!("live-o{tag}-{i}"));
            e.customer_id = customer.clone();
            e.session_id = session.cloned();
            if let EventKind::Purchase(p) = &mut e.kind {
                p.invoice = format!("live-{tag}");
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: serde_json::Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    fn visit() -> SessionEvents {
        let t = "2017-05-01T10:00:00Z";
        SessionEvents {
            customer: CustomerId::new_unchecked("osi-c1"),
            session: SessionId::new_unchecked("osi-s1"),
            events: vec![
                event(serde_json::json!({"type": "page_view", "event_id": "p1", "customer_id": "osi-c1",
                    "session_id": "osi-s1", "time": t, "page_kind": "product", "duration_s": 5.0,
                    "bounce_rate": 0.0, "exit_rate": 0.1, "page_value": 0.0})),
                event(serde_json::json!({"type": "session_end", "event_id": "end", "customer_id": "osi-c1",
                    "session_id": "osi-s1", "time": t})),
            ],
        }
    }

    fn order() -> SessionEvents {
        SessionEvents {
            customer: CustomerId::new_unchecked("rc-1"),
            session: SessionId::new_unchecked("none"),
            events: vec![event(serde_json::json!({"type": "purchase", "event_id": "rt-1", "customer_id": "rc-1",
                "time": "2011-01-01T10:00:00Z", "invoice": "536365",
                "lines": [{"sku": "A", "quantity": 2, "unit_price": 3.5}]}))],
        }
    }

    #[test]
    fn a_retold_visit_is_a_new_customers_with_the_order_before_its_end() {
        let plain: Vec<Event> = retell_visit(&visit(), None, "x1").into();
        assert_eq!(plain.len(), 2);
        assert!(plain.iter().all(|e| e.customer_id.as_str() == "live-cx1"));
        assert!(plain.iter().all(|e| e.session_id.as_ref().map(|s| s.as_str()) == Some("live-sx1")));
        assert_ne!(plain[0].event_id, plain[1].event_id);

        let bought: Vec<Event> = retell_visit(&visit(), Some(&order()), "x2").into();
        let kinds: Vec<&str> = bought.iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["page_view", "purchase", "session_end"]);
        let EventKind::Purchase(p) = &bought[1].kind else { unreachable!() };
        assert_eq!(p.invoice, "live-x2");
        assert_eq!(bought[1].customer_id.as_str(), "live-cx2");
        assert_eq!(bought[1].session_id.as_ref().map(|s| s.as_str()), Some("live-sx2"));
    }

    #[test]
    fn a_retold_order_is_the_same_customers_with_a_fresh_invoice() {
        let o = order();
        let again = retell_order(&o, &o.customer, None, "x3");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].customer_id.as_str(), "rc-1");
        assert_eq!(again[0].event_id.as_str(), "live-ox3-0");
        assert!(matches!(&again[0].kind, EventKind::Purchase(p) if p.invoice == "live-x3" && p.lines.len() == 1));
    }
}
