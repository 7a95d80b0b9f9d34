//! Replay of the UCI Online Shoppers Purchasing Intention CSV: every data row
//! becomes one session of one customer, made of page views whose live session
//! features equal the row's (the page split and start time come from
//! [`actors::features::session`], the one place that defines that mapping),
//! followed by a `session_end`.
//!
//! A row whose `Revenue` is TRUE (the visit ended in a purchase) also has a
//! `purchase` after its last page, so the platform records the outcome the
//! way a shop would send it; a purchase is not a page, so the 17 session
//! features are the same either way, and the session's `purchased` flag is
//! the row's label (what `cartpulse train --from-db` learns from).
//!
//! Ids: data row N (counted from 1, the header excluded) is customer `osi-cN`,
//! session `osi-sN`; its pages are events `osi-sN-p1`, `osi-sN-p2`, …, its
//! purchase `osi-sN-buy` (order `osi-oN`) and its end `osi-sN-end`. The pages
//! are 1 s apart from `session_start_for(month, weekend, N)`, the purchase
//! and then the end 1 s apart after the last page.
//! Because ids are fixed, replaying the file twice is harmless: the server
//! counts the second pass as duplicates.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use actors::event::{CustomerId, Event, EventId, EventKind, OrderLine, Purchase, SessionId};
use actors::features::{expand_row_pages, session_start_for, ShoppersFeatures};
use anyhow::{anyhow, Context};
use chrono::TimeDelta;

use super::SessionEvents;

/// Name of the label column that follows the 17 feature columns.
const REVENUE: &str = "Revenue";

/// Reads the whole file and expands every row. Errors name the path, and for a
/// bad row its number (data rows from 1), file line and column.
pub fn expand_file(path: &Path) -> anyhow::Result<Vec<SessionEvents>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    expand_reader(BufReader::new(file), &path.display().to_string())
}

/// As [`expand_file`], each session with its row's `Revenue` label (whether
/// the visit ended in a purchase).
pub fn expand_file_labelled(path: &Path) -> anyhow::Result<Vec<(SessionEvents, bool)>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    expand_labelled(BufReader::new(file), &path.display().to_string())
}

/// As [`expand_file`], from any reader; `source` names it in errors.
pub fn expand_reader<R: Read>(reader: R, source: &str) -> anyhow::Result<Vec<SessionEvents>> {
    Ok(expand_labelled(reader, source)?.into_iter().map(|(s, _)| s).collect())
}

fn expand_labelled<R: Read>(reader: R, source: &str) -> anyhow::Result<Vec<(SessionEvents, bool)>> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    check_header(csv.headers().with_context(|| format!("{source}: cannot read the header"))?)
        .with_context(|| format!("{source}: not an Online Shoppers CSV"))?;

    let mut sessions = Vec::new();
    for (i, record) in csv.records().enumerate() {
        let row = i + 1;
        let record = record.with_context(|| format!("{source}: row {row} (line {}): unreadable CSV", row + 1))?;
        let fields: Vec<&str> = record.iter().collect();
        // No field of this file spans lines, so data row N is line N + 1.
        let (features, revenue) = ShoppersFeatures::from_uci_record(&fields)
            .map_err(|e| anyhow!("{source}: row {row} (line {}): {e}", row + 1))?;
        sessions.push((session_for_row(row, &features, revenue), revenue));
    }
    Ok(sessions)
}

/// The session of data row `row` (from 1) with the given features, ending
/// in a purchase when `purchased`.
pub fn session_for_row(row: usize, features: &ShoppersFeatures, purchased: bool) -> SessionEvents {
    let customer = CustomerId::new_unchecked(format!("osi-c{row}"));
    let session = SessionId::new_unchecked(format!("osi-s{row}"));
    let start = session_start_for(features.month, features.weekend, row);
    let pages = expand_row_pages(features);

    let event = |id: String, offset_s: usize, kind: EventKind| Event {
        event_id: EventId::new_unchecked(id),
        customer_id: customer.clone(),
        session_id: Some(session.clone()),
        // A session has at most a few thousand pages, so the offset fits.
        time: start + TimeDelta::seconds(offset_s as i64),
        kind,
    };
    let mut events = Vec::with_capacity(pages.len() + 2);
    let n_pages = pages.len();
    for (k, page) in pages.into_iter().enumerate() {
        events.push(event(format!("osi-s{row}-p{}", k + 1), k, EventKind::PageView(page)));
    }
    let mut end = n_pages;
    if purchased {
        events.push(event(format!("osi-s{row}-buy"), end, EventKind::Purchase(order_for_row(row, features))));
        end += 1;
    }
    events.push(event(format!("osi-s{row}-end"), end, EventKind::SessionEnd));
    SessionEvents { customer, session, events }
}

/// The order of a row that ended in a purchase. The file has no basket: one
/// line worth the row's page value (what the visit's pages were worth to the
/// shop, UCI's `PageValues`), at least 1.
fn order_for_row(row: usize, features: &ShoppersFeatures) -> Purchase {
    let unit_price = (features.page_values.max(1.0) * 100.0).round() / 100.0;
    Purchase {
        invoice: format!("osi-o{row}"),
        lines: vec![OrderLine { sku: "osi-visit".into(), quantity: 1, unit_price, description: None }],
        country: None,
        cancellation: false,
    }
}

fn check_header(header: &csv::StringRecord) -> anyhow::Result<()> {
    let expected = ShoppersFeatures::UCI_COLUMNS.iter().copied().chain([REVENUE]);
    let got: Vec<&str> = header.iter().map(str::trim).collect();
    if got.len() != ShoppersFeatures::UCI_COLUMNS.len() + 1 {
        anyhow::bail!(
            "expected {} columns ({}, …, {REVENUE}), found {}",
            ShoppersFeatures::UCI_COLUMNS.len() + 1,
            ShoppersFeatures::UCI_COLUMNS[0],
            got.len()
        );
    }
    for (i, (want, have)) in expected.zip(got).enumerate() {
        if want != have {
            anyhow::bail!("column {} is {have:?}, expected {want:?}", i + 1);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::event::PageKind;

    const HEADER: &str = "Administrative,Administrative_Duration,Informational,Informational_Duration,ProductRelated,ProductRelated_Duration,BounceRates,ExitRates,PageValues,SpecialDay,Month,OperatingSystems,Browser,Region,TrafficType,VisitorType,Weekend,Revenue";

    fn csv_text(rows: &[&str]) -> String {
        let mut s = String::from(HEADER);
        for r in rows {
            s.push_str("\r\n");
            s.push_str(r);
        }
        s.push_str("\r\n");
        s
    }

    #[test]
    fn rows_become_sessions_with_ids_order_and_times() {
        let text = csv_text(&[
            "0,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,FALSE,FALSE",
            "2,30,1,-1,3,90,0.01,0.05,12.5,0,Nov,2,2,3,4,New_Visitor,TRUE,TRUE",
        ]);
        let sessions = expand_reader(text.as_bytes(), "inline").unwrap();
        assert_eq!(sessions.len(), 2);

        let s1 = &sessions[0];
        assert_eq!(s1.customer.as_str(), "osi-c1");
        assert_eq!(s1.session.as_str(), "osi-s1");
        let ids: Vec<&str> = s1.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["osi-s1-p1", "osi-s1-end"]);

        let s2 = &sessions[1];
        let ids: Vec<&str> = s2.events.iter().map(|e| e.event_id.as_str()).collect();
        // Revenue TRUE: a purchase after the last page, then the end.
        assert_eq!(
            ids,
            ["osi-s2-p1", "osi-s2-p2", "osi-s2-p3", "osi-s2-p4", "osi-s2-p5", "osi-s2-p6", "osi-s2-buy", "osi-s2-end"]
        );
        match &s2.events[6].kind {
            EventKind::Purchase(p) => {
                assert_eq!(p.invoice, "osi-o2");
                assert!(!p.cancellation);
                assert_eq!(p.value(), 12.5, "one line worth the row's page value");
            }
            other => panic!("expected the purchase, got {other:?}"),
        }
        let start = session_start_for(11, true, 2);
        for (k, e) in s2.events.iter().enumerate() {
            assert_eq!(e.time, start + TimeDelta::seconds(k as i64), "event {k}");
            assert_eq!(e.customer_id.as_str(), "osi-c2");
            assert_eq!(e.session_id.as_ref().map(|s| s.as_str()), Some("osi-s2"));
        }
        assert!(matches!(s2.events.last().map(|e| &e.kind), Some(EventKind::SessionEnd)));
        let kinds: Vec<PageKind> = s2
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PageView(p) => Some(p.page_kind),
                _ => None,
            })
            .collect();
        assert_eq!(kinds.iter().filter(|k| **k == PageKind::Administrative).count(), 2);
        assert_eq!(kinds.iter().filter(|k| **k == PageKind::Informational).count(), 1);
        assert_eq!(kinds.iter().filter(|k| **k == PageKind::Product).count(), 3);
    }

    #[test]
    fn bad_row_names_row_and_column() {
        let text = csv_text(&[
            "0,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,FALSE,FALSE",
            "0,0,0,0,1,0,0.2,0.2,0,0,Smarch,1,1,1,1,Returning_Visitor,FALSE,FALSE",
        ]);
        let err = format!("{:#}", expand_reader(text.as_bytes(), "inline").unwrap_err());
        assert!(err.contains("row 2"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("Month"), "{err}");
    }

    #[test]
    fn wrong_header_and_missing_file_are_clear() {
        let err = format!("{:#}", expand_reader("a,b\n1,2\n".as_bytes(), "x.csv").unwrap_err());
        assert!(err.contains("x.csv") && err.contains("Online Shoppers"), "{err}");
        let err = format!("{:#}", expand_file(Path::new("/nonexistent/shoppers.csv")).unwrap_err());
        assert!(err.contains("/nonexistent/shoppers.csv"), "{err}");
    }

    /// The whole point of the expansion: a session actor fed these events
    /// computes the row's features again (month and weekend included, which
    /// come from the event times).
    #[test]
    fn live_features_equal_the_row() {
        use actors::features::session::SessionAccumulator;
        let rows = [
            "0,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,FALSE,FALSE",
            "2,30,1,-1,3,90,0.01,0.05,12.5,0.4,Nov,2,2,3,4,New_Visitor,TRUE,TRUE",
            "4,61.5,0,0,17,702.25,0.003,0.021,3.3,0,June,3,5,9,13,Other,FALSE,FALSE",
        ];
        let sessions = expand_reader(csv_text(&rows).as_bytes(), "inline").unwrap();
        for (row, s) in rows.iter().zip(&sessions) {
            let fields: Vec<&str> = row.split(',').collect();
            let (want, _) = ShoppersFeatures::from_uci_record(&fields).unwrap();
            let mut acc = SessionAccumulator::new(s.session.clone(), s.events[0].time);
            for e in &s.events {
                acc.apply(e);
            }
            let got = acc.features();
            assert_eq!(acc.purchased(), row.ends_with("TRUE"), "the session's outcome is the row's label: {row}");
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
            assert_eq!(
                (got.administrative, got.informational, got.product_related),
                (want.administrative, want.informational, want.product_related)
            );
            assert!(close(got.administrative_duration, want.administrative_duration), "{got:?} vs {want:?}");
            assert!(close(got.informational_duration, want.informational_duration), "{got:?} vs {want:?}");
            assert!(close(got.product_related_duration, want.product_related_duration), "{got:?} vs {want:?}");
            assert!(close(got.bounce_rates, want.bounce_rates) && close(got.exit_rates, want.exit_rates));
            assert!(close(got.page_values, want.page_values) && close(got.special_day, want.special_day));
            assert_eq!((got.month, got.weekend), (want.month, want.weekend), "row {row}");
            assert_eq!(
                (got.operating_systems, got.browser, got.region, got.traffic_type, got.visitor_type),
                (want.operating_systems, want.browser, want.region, want.traffic_type, want.visitor_type)
            );
        }
    }

    /// The real file, when present (it is not part of the repository).
    #[test]
    fn real_file_expands_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/online_shoppers_intention.csv");
        if !path.exists() {
            eprintln!("skipped: {} not present", path.display());
            return;
        }
        let sessions = expand_file(&path).unwrap();
        assert_eq!(sessions.len(), 12_330);
        assert_eq!(sessions[12_329].customer.as_str(), "osi-c12330");
    }
}
