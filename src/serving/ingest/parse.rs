//! Parsing at the edge: a request body becomes typed [`Event`]s or, per event,
//! a rejection naming the field and the reason. A bad event never spoils the
//! good ones next to it; only a body that cannot be split into events at all
//! (not UTF-8, not a JSON array, too many events) fails as a whole.

use actors::event::{
    CartChange, CustomerId, Event, EventId, EventKind, OrderLine, PageKind, PageView, Purchase, SessionId, VisitorType,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest SKU, invoice, country or description we keep.
const MAX_TEXT_LEN: usize = 256;
/// Most lines in one purchase.
const MAX_LINES: usize = 1_000;
/// Largest quantity on a line or cart change.
const MAX_QUANTITY: u32 = 1_000_000;
/// Largest unit price (in the shop's currency).
const MAX_PRICE: f64 = 1.0e7;
/// Longest page duration we believe, in seconds (a day).
const MAX_DURATION_S: f64 = 86_400.0;

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// A JSON array of events (or one event object).
    JsonArray,
    /// One JSON event per line.
    Ndjson,
}

/// Why a whole body was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("body is empty")]
    Empty,
    #[error("body is not valid UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    #[error("body is not a JSON array of events: {0}")]
    NotJson(String),
    #[error("too many events in one request: {got} (the limit is {limit})")]
    TooManyEvents { got: usize, limit: usize },
}

/// One rejected event.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// Position of the event in the request, from 0.
    pub index: usize,
    /// The offending field (a path such as `lines[2].quantity`), or `""` for
    /// the event as a whole.
    pub field: String,
    pub reason: String,
}

/// A body split into events: the good ones (with their request index) and the
/// rejections.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    pub events: Vec<(usize, Event)>,
    pub rejected: Vec<Rejection>,
}

/// Limits that depend on configuration and the clock.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    pub max_events: usize,
    /// Events later than this are rejected as clock skew.
    pub latest_time: DateTime<Utc>,
}

/// Splits and validates a body.
pub fn parse_body(body: &[u8], format: BodyFormat, limits: ParseLimits) -> Result<ParsedBatch, BodyError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?;
    let mut out = ParsedBatch::default();
    match format {
        BodyFormat::JsonArray => {
            let trimmed = text.trim_start();
            let raws: Vec<&RawValue> = if trimmed.starts_with('{') {
                vec![serde_json::from_str::<&RawValue>(text).map_err(|e| BodyError::NotJson(e.to_string()))?]
            } else {
                serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?
            };
            if raws.len() > limits.max_events {
                return Err(BodyError::TooManyEvents { got: raws.len(), limit: limits.max_events });
            }
            for (i, raw) in raws.into_iter().enumerate() {
                push(&mut out, i, parse_event(raw.get(), limits));
            }
        }
        BodyFormat::Ndjson => {
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() > limits.max_events {
                return Err(BodyError::TooManyEvents { got: lines.len(), limit: limits.max_events });
            }
            for (i, line) in lines.into_iter().enumerate() {
                push(&mut out, i, parse_event(line, limits));
            }
        }
    }
    Ok(out)
}

/// Why a stream entry's text is not exactly one valid event.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{}: {reason}", if field.is_empty() { "event" } else { field })]
    Invalid { field: String, reason: String },
    #[error("the entry holds no event")]
    NoEvent,
}

/// One event on its own line (a stream entry as a gateway wrote it): the
/// same checks as an event of an NDJSON body of one line, without splitting.
/// Text that is empty or holds several lines goes through [`parse_body`].
pub fn parse_one(raw: &str, limits: ParseLimits) -> Result<Event, EntryError> {
    if raw.contains('\n') || raw.trim().is_empty() {
        let parsed = parse_body(raw.as_bytes(), BodyFormat::Ndjson, ParseLimits { max_events: 1, ..limits })?;
        if let Some(r) = parsed.rejected.into_iter().next() {
            return Err(EntryError::Invalid { field: r.field, reason: r.reason });
        }
        return parsed.events.into_iter().next().map(|(_, e)| e).ok_or(EntryError::NoEvent);
    }
    parse_event(raw, limits).map_err(|FieldError { field, reason }| EntryError::Invalid { field, reason })
}

fn push(out: &mut ParsedBatch, index: usize, r: Result<Event, FieldError>) {
    match r {
        Ok(e) => out.events.push((index, e)),
        Err(FieldError { field, reason }) => out.rejected.push(Rejection { index, field, reason }),
    }
}

#[derive(Debug)]
struct FieldError {
    field: String,
    reason: String,
}

fn bad(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.to_owned(), reason: reason.into() }
}

// serde checks the JSON types (with the path of the first mismatch); the
// checks below add the rules types cannot express. Its schema is the request
// body of `POST /v1/events` in the API contract: every field optional there
// too, because a missing one rejects that event only, never the batch.
/// One event. Every field any event type may carry; which are required
/// depends on `type` (docs/api.md, "Event schema"). An event missing one is
/// rejected alone (listed in the answer's `rejected`), never the batch.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = IngestEvent)]
pub struct WireEvent {
    /// `page_view`, `add_to_cart`, `remove_from_cart`, `purchase` or
    /// `session_end`; the fields each needs are in docs/api.md.
    #[serde(rename = "type")]
    kind: Option<String>,
    event_id: Option<String>,
    customer_id: Option<String>,
    session_id: Option<String>,
    time: Option<String>,
    // page_view
    page_kind: Option<String>,
    duration_s: Option<f64>,
    bounce_rate: Option<f64>,
    exit_rate: Option<f64>,
    page_value: Option<f64>,
    special_day: Option<f64>,
    os: Option<u16>,
    browser: Option<u16>,
    region: Option<u16>,
    traffic_type: Option<u16>,
    visitor_type: Option<String>,
    // cart
    sku: Option<String>,
    quantity: Option<i64>,
    unit_price: Option<f64>,
    // purchase
    invoice: Option<String>,
    lines: Option<Vec<WireLine>>,
    country: Option<String>,
    cancellation: Option<bool>,
}

/// One line of a purchase.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = IngestOrderLine)]
pub struct WireLine {
    sku: Option<String>,
    quantity: Option<i64>,
    unit_price: Option<f64>,
    description: Option<String>,
}

fn parse_event(raw: &str, limits: ParseLimits) -> Result<Event, FieldError> {
    // serde would also read a struct from a JSON array, positionally; an
    // event must be an object with named fields.
    if !raw.trim_start().starts_with('{') {
        return Err(bad("", "an event must be a JSON object"));
    }
    // The common case, a well-formed event, without the cost of tracking the
    // path of every field; only a failure is decoded again for its path.
    // (As before, whatever follows the object is not looked at.)
    let w = match WireEvent::deserialize(&mut serde_json::Deserializer::from_str(raw)) {
        Ok(w) => w,
        Err(_) => return Err(wire_error(raw)),
    };
    event_from_wire(w, limits)
}

/// The first error of `raw` as a [`WireEvent`], with the path of the field.
#[cold]
fn wire_error(raw: &str) -> FieldError {
    let mut de = serde_json::Deserializer::from_str(raw);
    match serde_path_to_error::deserialize::<_, WireEvent>(&mut de) {
        Ok(_) => bad("", "unreadable event"),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            let inner = e.into_inner();
            let reason = if inner.is_syntax() || inner.is_eof() {
                format!("invalid JSON (NaN and Infinity are not JSON): {inner}")
            } else {
                inner.to_string()
            };
            FieldError { field, reason }
        }
    }
}

fn event_from_wire(w: WireEvent, limits: ParseLimits) -> Result<Event, FieldError> {
    let kind_name = w.kind.as_deref().ok_or_else(|| bad("type", "is required"))?;
    let event_id = EventId::parse(req(&w.event_id, "event_id")?).map_err(|r| bad("event_id", r.to_string()))?;
    let customer_id =
        CustomerId::parse(req(&w.customer_id, "customer_id")?).map_err(|r| bad("customer_id", r.to_string()))?;
    let session_id = match &w.session_id {
        Some(s) => Some(SessionId::parse(s).map_err(|r| bad("session_id", r.to_string()))?),
        None => None,
    };
    let time = parse_time(req(&w.time, "time")?, limits)?;
    let needs_session = || session_id.clone().ok_or_else(|| bad("session_id", format!("is required for {kind_name}")));
    let kind = match kind_name {
        "page_view" => {
            needs_session()?;
            EventKind::PageView(page_view(&w)?)
        }
        "add_to_cart" => {
            needs_session()?;
            let price = unit(req_num(w.unit_price, "unit_price")?, "unit_price")?;
            EventKind::AddToCart(CartChange {
                sku: text(&w.sku, "sku")?,
                quantity: qty(w.quantity, "quantity")?,
                unit_price: Some(price),
            })
        }
        "remove_from_cart" => {
            needs_session()?;
            let price = match w.unit_price {
                Some(p) => Some(unit(p, "unit_price")?),
                None => None,
            };
            EventKind::RemoveFromCart(CartChange {
                sku: text(&w.sku, "sku")?,
                quantity: qty(w.quantity, "quantity")?,
                unit_price: price,
            })
        }
        "purchase" => EventKind::Purchase(purchase(&w)?),
        "session_end" => {
            needs_session()?;
            EventKind::SessionEnd
        }
        other => {
            return Err(bad(
                "type",
                format!(
                "unknown event type {:?}; expected page_view, add_to_cart, remove_from_cart, purchase or session_end",
                truncate(other)
            ),
            ))
        }
    };
    Ok(Event { event_id, customer_id, session_id, time, kind })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

fn req<'a>(v: &'a Option<String>, field: &str) -> Result<&'a str, FieldError> {
    v.as_deref().ok_or_else(|| bad(field, "is required"))
}

fn req_num(v: Option<f64>, field: &str) -> Result<f64, FieldError> {
    v.ok_or_else(|| bad(field, "is required"))
}

fn parse_time(s: &str, limits: ParseLimits) -> Result<DateTime<Utc>, FieldError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| bad("time", format!("is not an RFC 3339 timestamp ({e}), e.g. 2026-11-27T10:15:00Z")))?
        .with_timezone(&Utc);
    if t.timestamp() < 0 {
        return Err(bad("time", "is before 1970"));
    }
    if t > limits.latest_time {
        return Err(bad("time", "is too far in the future (check the producer's clock)"));
    }
    Ok(t)
}

fn text(v: &Option<String>, field: &str) -> Result<String, FieldError> {
    let s = req(v, field)?;
    check_text(s, field)?;
    Ok(s.to_owned())
}

fn check_text(s: &str, field: &str) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if s.len() > MAX_TEXT_LEN {
        return Err(bad(field, format!("longer than {MAX_TEXT_LEN} bytes ({} bytes)", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(field, "contains control characters"));
    }
    Ok(())
}

fn fraction(v: f64, field: &str) -> Result<f64, FieldError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(bad(field, format!("must be between 0 and 1 (got {v})")));
    }
    Ok(v)
}

fn unit(v: f64, field: &str) -> Result<f64, FieldError> {
    if !(0.0..=MAX_PRICE).contains(&v) {
        return Err(bad(field, format!("must be between 0 and {MAX_PRICE} (got {v})")));
    }
    Ok(v)
}

fn qty(v: Option<i64>, field: &str) -> Result<u32, FieldError> {
    let q = v.ok_or_else(|| bad(field, "is required"))?;
    if q < 1 || q > MAX_QUANTITY as i64 {
        return Err(bad(field, format!("must be a whole number from 1 to {MAX_QUANTITY} (got {q})")));
    }
    Ok(q as u32)
}

fn page_view(w: &WireEvent) -> Result<PageView, FieldError> {
    let page_kind = match req(&w.page_kind, "page_kind")? {
        "administrative" => PageKind::Administrative,
        "informational" => PageKind::Informational,
        "product" => PageKind::Product,
        "other" => PageKind::Other,
        other => {
            return Err(bad(
                "page_kind",
                format!(
                    "unknown page kind {:?}; expected administrative, informational, product or other",
                    truncate(other)
                ),
            ))
        }
    };
    let duration_s = match w.duration_s {
        None => None,
        Some(d) if (0.0..=MAX_DURATION_S).contains(&d) => Some(d),
        Some(d) => {
            return Err(bad(
                "duration_s",
                format!("must be between 0 and {MAX_DURATION_S} seconds, or null when unknown (got {d})"),
            ))
        }
    };
    let page_value = req_num(w.page_value, "page_value")?;
    if !(0.0..=MAX_PRICE).contains(&page_value) {
        return Err(bad("page_value", format!("must be between 0 and {MAX_PRICE} (got {page_value})")));
    }
    let visitor_type = match w.visitor_type.as_deref() {
        None | Some("other") => VisitorType::Other,
        Some("returning") => VisitorType::Returning,
        Some("new") => VisitorType::New,
        Some(other) => {
            return Err(bad(
                "visitor_type",
                format!("unknown visitor type {:?}; expected returning, new or other", truncate(other)),
            ))
        }
    };
    Ok(PageView {
        page_kind,
        duration_s,
        bounce_rate: fraction(req_num(w.bounce_rate, "bounce_rate")?, "bounce_rate")?,
        exit_rate: fraction(req_num(w.exit_rate, "exit_rate")?, "exit_rate")?,
        page_value,
        special_day: fraction(w.special_day.unwrap_or(0.0), "special_day")?,
        os: w.os.unwrap_or(0),
        browser: w.browser.unwrap_or(0),
        region: w.region.unwrap_or(0),
        traffic_type: w.traffic_type.unwrap_or(0),
        visitor_type,
    })
}

fn purchase(w: &WireEvent) -> Result<Purchase, FieldError> {
    let invoice = text(&w.invoice, "invoice")?;
    let cancellation = w.cancellation.unwrap_or(false);
    let wire_lines = w.lines.as_ref().ok_or_else(|| bad("lines", "is required"))?;
    if wire_lines.is_empty() {
        return Err(bad("lines", "must hold at least one line"));
    }
    if wire_lines.len() > MAX_LINES {
        return Err(bad("lines", format!("more than {MAX_LINES} lines ({})", wire_lines.len())));
    }
    let mut lines = Vec::with_capacity(wire_lines.len());
    for (i, l) in wire_lines.iter().enumerate() {
        let f = |name: &str| format!("lines[{i}].{name}");
        let sku = l.sku.as_deref().ok_or_else(|| bad(&f("sku"), "is required"))?;
        check_text(sku, &f("sku"))?;
        // A cancellation may state what it takes back with negative quantities
        // (as invoicing systems do); we keep the magnitude. On a purchase a
        // negative quantity is an error.
        let raw_q = l.quantity.ok_or_else(|| bad(&f("quantity"), "is required"))?;
        let q = if cancellation { raw_q.checked_abs().unwrap_or(i64::MAX) } else { raw_q };
        if q < 1 || q > MAX_QUANTITY as i64 {
            let why = if cancellation {
                format!("must be a non-zero whole number of at most {MAX_QUANTITY} in magnitude (got {raw_q})")
            } else {
                format!("must be a whole number from 1 to {MAX_QUANTITY} (got {raw_q}); send returns as a cancellation")
            };
            return Err(bad(&f("quantity"), why));
        }
        let price = unit(l.unit_price.ok_or_else(|| bad(&f("unit_price"), "is required"))?, &f("unit_price"))?;
        let description = match &l.description {
            Some(d) if d.trim().is_empty() => None,
            Some(d) => {
                check_text(d, &f("description"))?;
                Some(d.clone())
            }
            None => None,
        };
        lines.push(OrderLine { sku: sku.to_owned(), quantity: q as u32, unit_price: price, description });
    }
    let country = match &w.country {
        Some(c) => {
            check_text(c, "country")?;
            Some(c.clone())
        }
        None => None,
    };
    Ok(Purchase { invoice, lines, country, cancellation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ParseLimits {
        ParseLimits { max_events: 100, latest_time: Utc::now() + chrono::Duration::days(1) }
    }

    #[test]
    fn good_and_bad_events_are_separated() {
        let body = br#"[
          {"type":"page_view","event_id":"e1","customer_id":"c1","session_id":"s1","time":"2025-03-01T10:00:00Z",
           "page_kind":"product","duration_s":12.5,"bounce_rate":0.1,"exit_rate":0.2,"page_value":3.0},
          {"type":"page_view","event_id":"e2","customer_id":"c1","session_id":"s1","time":"2025-03-01T10:00:01Z",
           "page_kind":"product","bounce_rate":"high","exit_rate":0.2,"page_value":3.0},
          {"type":"purchase","event_id":"e3","customer_id":"c1","time":"2025-03-01T10:00:02Z","invoice":"A1",
           "lines":[{"sku":"X","quantity":-2,"unit_price":1.5}]}
        ]"#;
        let b = parse_body(body, BodyFormat::JsonArray, limits()).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.rejected.len(), 2);
        assert_eq!(b.rejected[0].index, 1);
        assert_eq!(b.rejected[0].field, "bounce_rate");
        assert_eq!(b.rejected[1].field, "lines[0].quantity");
    }

    #[test]
    fn cancellation_keeps_magnitude() {
        let body = br#"{"type":"purchase","event_id":"e3","customer_id":"c1","time":"2025-03-01T10:00:02Z","invoice":"C1","cancellation":true,
           "lines":[{"sku":"X","quantity":-2,"unit_price":1.5}]}"#;
        let b = parse_body(body, BodyFormat::JsonArray, limits()).unwrap();
        match &b.events[0].1.kind {
            EventKind::Purchase(p) => assert_eq!(p.lines[0].quantity, 2),
            k => panic!("unexpected {k:?}"),
        }
    }

    #[test]
    fn ndjson_bad_line_does_not_spoil_others() {
        let body = b"{\"type\":\"session_end\",\"event_id\":\"e1\",\"customer_id\":\"c\",\"session_id\":\"s\",\"time\":\"2025-01-01T00:00:00Z\"}\n{not json\n";
        let b = parse_body(body, BodyFormat::Ndjson, limits()).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.rejected[0].index, 1);
    }

    #[test]
    fn whole_body_errors() {
        assert_eq!(parse_body(b"  ", BodyFormat::JsonArray, limits()).unwrap_err(), BodyError::Empty);
        assert!(matches!(parse_body(b"[1,", BodyFormat::JsonArray, limits()), Err(BodyError::NotJson(_))));
        assert!(matches!(parse_body(&[0x5b, 0xff, 0x5d], BodyFormat::JsonArray, limits()), Err(BodyError::NotUtf8(1))));
    }

    #[test]
    fn canonical_form_round_trips() {
        let body = br#"{"type":"add_to_cart","event_id":"e1","customer_id":"c1","session_id":"s1","time":"2025-03-01T10:00:00Z","sku":"A","quantity":2,"unit_price":3.5}"#;
        let b = parse_body(body, BodyFormat::JsonArray, limits()).unwrap();
        let e = &b.events[0].1;
        let again: Event = serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap();
        assert_eq!(&again, e);
    }
    #[test]
    fn one_entry_is_checked_like_a_line_of_a_body() {
        let good = r#"{"type":"session_end","event_id":"e1","customer_id":"c","session_id":"s","time":"2025-01-01T00:00:00Z"}"#;
        let e = parse_one(good, limits()).unwrap();
        assert_eq!(e, parse_body(good.as_bytes(), BodyFormat::Ndjson, limits()).unwrap().events[0].1);
        let bad = r#"{"type":"page_view","event_id":"e2","customer_id":"c","session_id":"s","time":"2025-01-01T00:00:00Z","page_kind":"product","bounce_rate":"high","exit_rate":0.2,"page_value":3.0}"#;
        let err = parse_one(bad, limits()).unwrap_err().to_string();
        assert!(err.starts_with("bounce_rate: "), "{err}");
        let e = parse_one("{not json", limits()).unwrap_err().to_string();
        assert!(e.contains("invalid JSON"), "{e}");
        assert!(parse_one("", limits()).is_err());
        assert!(parse_one(&format!("{good}\n{good}"), limits()).unwrap_err().to_string().contains("too many events"));
    }
}
