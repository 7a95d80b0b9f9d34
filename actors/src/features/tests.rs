//! Round trips of the session features: events → [`SessionAccumulator`],
//! UCI records ↔ [`ShoppersFeatures`], and rows → page views → the same
//! features again.

use super::expand::{expand_row_pages, session_start_for};
use super::session::{is_weekend, SessionAccumulator, ShoppersFeatures};
use super::uci::{MONTH_NAMES, REVENUE_COLUMN};
use super::FeatureError;
use crate::event::{CartChange, CustomerId, EventId, OrderLine, Purchase};
use crate::event::{Event, EventKind, PageKind, PageView, SessionId, VisitorType};
use chrono::TimeZone;
use chrono::{DateTime, Datelike, TimeDelta, Utc};

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
