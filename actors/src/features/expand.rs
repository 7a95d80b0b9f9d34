//! A UCI row as page views, for the replay tool and the round-trip tests.
//!
//! [`expand_row_pages`] turns a row into the page views whose live features
//! equal the row (within float rounding): each of the row's N pages carries the
//! row's bounce/exit/value and visit context; each kind's duration is split in
//! equal shares over that kind's pages with the rounding remainder on the last
//! one (`-1` becomes "unknown" on every page); a row without pages becomes one
//! `other` page. [`session_start_for`] gives a start time in the row's month
//! that is a weekend day iff the row's `Weekend`. The replay tool stamps the
//! pages 1 s apart from that start and adds ids.

use super::session::{is_weekend, ShoppersFeatures};
use crate::event::{PageKind, PageView};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};

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

/// Applies the replayed session of row `row_index` (what the replay tool
/// sends) page by page, calling `on_page` with the session as it stands
/// after each page: the prefixes an open session of that row shows.
pub fn replay_row_pages(
    features: &ShoppersFeatures,
    row_index: usize,
    mut on_page: impl FnMut(&super::SessionAccumulator),
) {
    use crate::event::{CustomerId, Event, EventId, EventKind, SessionId};
    let start = session_start_for(features.month, features.weekend, row_index);
    let session = SessionId::new_unchecked(format!("prefix-{row_index}"));
    let customer = CustomerId::new_unchecked(format!("prefix-{row_index}"));
    let mut acc = super::SessionAccumulator::new(session.clone(), start);
    for (k, page) in expand_row_pages(features).into_iter().enumerate() {
        acc.apply(&Event {
            event_id: EventId::new_unchecked(format!("prefix-{row_index}-{k}")),
            customer_id: customer.clone(),
            session_id: Some(session.clone()),
            // A row has at most a few thousand pages, so the offset fits.
            time: start + TimeDelta::seconds(k as i64),
            kind: EventKind::PageView(page),
        });
        on_page(&acc);
    }
}
