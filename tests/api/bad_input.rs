//! The malformed-input corpus: every case gets its documented status (and,
//! for a bad event, the offending field), and the service keeps serving.

use crate::helpers::*;
use serde_json::{json, Value};

fn good() -> Value {
    page_view("ok-1", "cb", "sb", "2025-05-03T10:00:00Z", "product")
}

fn with(field: &str, value: Value) -> Value {
    let mut e = good();
    e[field] = value;
    e
}

fn without(field: &str) -> Value {
    let mut e = good();
    e.as_object_mut().unwrap().remove(field);
    e
}

fn buy(lines: Value) -> Value {
    json!({"type": "purchase", "event_id": "p-1", "customer_id": "cb", "time": "2025-05-03T10:00:00Z",
           "invoice": "INV-9", "lines": lines})
}

/// (name, content type, body, expected status, expected field of rejection 0)
type Case = (&'static str, Option<&'static str>, Vec<u8>, u16, Option<&'static str>);

fn corpus() -> Vec<Case> {
    let j = Some("application/json");
    let nd = Some("application/x-ndjson");
    let one = |e: Value| json!([e]).to_string().into_bytes();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let many = json!((0..10_001).map(|i| json!({"i": i})).collect::<Vec<_>>()).to_string().into_bytes();
    vec![
        ("empty body", j, vec![], 400, None),
        ("whitespace body", j, b"   \n ".to_vec(), 400, None),
        ("truncated array", j, b"[{\"type\":".to_vec(), 400, None),
        ("not json", j, b"{not json".to_vec(), 400, None),
        ("invalid utf-8", j, vec![b'[', b'"', 0xff, 0xfe, b'"', b']'], 400, None),
        ("empty array", j, b"[]".to_vec(), 400, None),
        ("a bare string", j, b"\"hello\"".to_vec(), 400, None),
        ("deep nesting", j, deep, 422, Some("")),
        ("NaN literal", j, b"[{\"bounce_rate\": NaN}]".to_vec(), 400, None),
        ("number out of range", j, b"[{\"page_value\": 1e999}]".to_vec(), 422, Some("page_value")),
        ("too many events", j, many, 413, None),
        ("text/plain", Some("text/plain"), one(good()), 415, None),
        ("no content type", None, one(good()), 415, None),
        ("xml", Some("application/xml"), b"<events/>".to_vec(), 415, None),
        ("unknown event type", j, one(with("type", json!("teleport"))), 422, Some("type")),
        ("missing type", j, one(without("type")), 422, Some("type")),
        ("missing event_id", j, one(without("event_id")), 422, Some("event_id")),
        ("empty event_id", j, one(with("event_id", json!(""))), 422, Some("event_id")),
        ("huge event_id", j, one(with("event_id", json!("x".repeat(10_000)))), 422, Some("event_id")),
        ("event_id with space", j, one(with("event_id", json!("a b"))), 422, Some("event_id")),
        ("customer_id a number", j, one(with("customer_id", json!(123))), 422, Some("customer_id")),
        ("missing customer_id", j, one(without("customer_id")), 422, Some("customer_id")),
        ("time not a timestamp", j, one(with("time", json!("yesterday"))), 422, Some("time")),
        ("time in the far future", j, one(with("time", json!("2999-01-01T00:00:00Z"))), 422, Some("time")),
        ("page view without session", j, one(without("session_id")), 422, Some("session_id")),
        ("bounce rate above 1", j, one(with("bounce_rate", json!(1.5))), 422, Some("bounce_rate")),
        ("bounce rate a string", j, one(with("bounce_rate", json!("high"))), 422, Some("bounce_rate")),
        ("negative duration", j, one(with("duration_s", json!(-5))), 422, Some("duration_s")),
        ("unknown page kind", j, one(with("page_kind", json!("checkout"))), 422, Some("page_kind")),
        ("absurd page value", j, one(with("page_value", json!(1e300))), 422, Some("page_value")),
        ("unknown visitor type", j, one(with("visitor_type", json!("alien"))), 422, Some("visitor_type")),
        ("negative os", j, one(with("os", json!(-1))), 422, Some("os")),
        (
            "nested object as field",
            j,
            one(with("bounce_rate", json!({"a": [1, 2, {"b": 3}]}))),
            422,
            Some("bounce_rate"),
        ),
        ("event is an array", j, b"[[1,2,3]]".to_vec(), 422, Some("")),
        (
            "NaN in an NDJSON line",
            nd,
            b"{\"type\":\"page_view\",\"bounce_rate\":NaN}\n".to_vec(),
            422,
            Some("bounce_rate"),
        ),
        (
            "negative purchase quantity",
            j,
            one(buy(json!([{"sku": "A", "quantity": -3, "unit_price": 1.0}]))),
            422,
            Some("lines[0].quantity"),
        ),
        (
            "fractional quantity",
            j,
            one(buy(json!([{"sku": "A", "quantity": 2.5, "unit_price": 1.0}]))),
            422,
            Some("lines[0].quantity"),
        ),
        (
            "negative unit price",
            j,
            one(buy(json!([{"sku": "A", "quantity": 1, "unit_price": -1.0}]))),
            422,
            Some("lines[0].unit_price"),
        ),
        ("purchase without lines", j, one(buy(json!([]))), 422, Some("lines")),
        ("purchase lines not an array", j, one(buy(json!("A x 1"))), 422, Some("lines")),
        (
            "huge sku",
            j,
            one(buy(json!([{"sku": "s".repeat(100_000), "quantity": 1, "unit_price": 1.0}]))),
            422,
            Some("lines[0].sku"),
        ),
        (
            "control characters in sku",
            j,
            one(buy(json!([{"sku": "a\u{0}b", "quantity": 1, "unit_price": 1.0}]))),
            422,
            Some("lines[0].sku"),
        ),
        (
            "zero cart quantity",
            j,
            one(json!({"type": "add_to_cart", "event_id": "a-1", "customer_id": "cb", "session_id": "sb",
                       "time": "2025-05-03T10:00:00Z", "sku": "A", "quantity": 0, "unit_price": 1.0})),
            422,
            Some("quantity"),
        ),
    ]
}

#[actix_web::test]
async fn malformed_input_gets_documented_errors_and_the_service_keeps_serving() {
    let app = spawn_app(Db::Sqlite).await;
    let cases = corpus();
    assert!(cases.len() >= 30);
    for (name, ct, body, status, field) in cases {
        let r = app.post_events_raw(Some(&app.ingest_key), ct, body).await;
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "case {name:?}: {body}");
        match field {
            Some(f) => {
                assert_eq!(body["rejected"][0]["field"], f, "case {name:?}: {body}");
                assert!(body["rejected"][0]["reason"].as_str().is_some_and(|r| !r.is_empty()), "case {name:?}");
                assert_eq!(body["accepted"], 0);
            }
            None => assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "case {name:?}: {body}"),
        }
    }
    // A 50 MB body is refused without being stored.
    let big = vec![b' '; 50 * 1024 * 1024];
    let r = app.post_events_raw(Some(&app.ingest_key), Some("application/json"), big).await;
    assert_eq!(r.status(), 413);

    // Bad events never block good ones in the same batch.
    let (s, body) =
        app.post_events(&json!([good(), with("bounce_rate", json!(7)), with("event_id", json!("ok-2"))])).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["field"], "bounce_rate");

    let (s, _) = app.get_json("/readyz", None).await;
    assert_eq!(s, 200);
    assert_eq!(app.metric("cartpulse_events_ingested_total").await, 2.0);
    assert!(app.metric("cartpulse_events_rejected_total").await >= 30.0);
}
