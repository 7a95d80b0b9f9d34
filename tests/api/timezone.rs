//! The shop's time zone (`features.timezone`): a shop in US Pacific time has
//! a Friday-evening session on Halloween whose UTC time is already Saturday
//! 1 November, and a Saturday-evening session whose UTC time is Sunday
//! morning. Month, Weekend and the order-time shares must follow the shop's
//! clock; the same events in a UTC deployment read the UTC calendar.

use crate::helpers::*;
use serde_json::{json, Value};

/// Two sessions with one order each, times in UTC:
/// - `tz-s1`: Fri 2025-10-31 20:00–20:30 PDT = Sat 2025-11-01 03:00–03:30 UTC;
/// - `tz-s2`: Sat 2025-11-22 19:30–19:50 PST = Sun 2025-11-23 03:30–03:50 UTC.
fn events() -> Value {
    let end = |id: &str, s: &str, t: &str| json!({"type": "session_end", "event_id": id, "customer_id": "tz-c", "session_id": s, "time": t});
    json!([
        page_view("tz-1", "tz-c", "tz-s1", "2025-11-01T03:00:00Z", "product"),
        purchase("tz-2", "tz-c", Some("tz-s1"), "2025-11-01T03:20:00Z", "tz-o1", 1, 30.0),
        end("tz-3", "tz-s1", "2025-11-01T03:30:00Z"),
        page_view("tz-4", "tz-c", "tz-s2", "2025-11-23T03:30:00Z", "product"),
        purchase("tz-5", "tz-c", Some("tz-s2"), "2025-11-23T03:40:00Z", "tz-o2", 1, 20.0),
        end("tz-6", "tz-s2", "2025-11-23T03:50:00Z"),
    ])
}

async fn features_in(timezone: Option<&str>) -> (Value, Value, Value) {
    let tz = timezone.map(str::to_owned);
    let app = spawn_app_with(Db::Sqlite, move |s| {
        if let Some(tz) = tz {
            s.features.timezone = tz.parse().unwrap();
        }
    })
    .await;
    let (status, body) = app.post_events(&events()).await;
    assert_eq!(status, 200, "{body}");
    let (s1, s2) = (app.get_session("tz-s1").await, app.get_session("tz-s2").await);
    assert_eq!((s1.0, s2.0), (200, 200), "{} {}", s1.1, s2.1);
    let (status, customer) = app.get_customer("tz-c").await;
    assert_eq!(status, 200, "{customer}");
    (s1.1["features"].clone(), s2.1["features"].clone(), customer["profile"].clone())
}

#[actix_web::test]
async fn a_pacific_shop_reads_month_weekend_and_order_hours_on_its_own_clock() {
    let (halloween, saturday, profile) = features_in(Some("America/Los_Angeles")).await;
    assert_eq!((&halloween["Month"], &halloween["Weekend"]), (&json!("Oct"), &json!(false)), "{halloween}");
    assert_eq!((&saturday["Month"], &saturday["Weekend"]), (&json!("Nov"), &json!(true)), "{saturday}");
    // Both orders were placed in the shop's evening (20:20 and 19:40), one
    // of them on its weekend.
    assert_eq!(profile["evening_order_share"], 1.0, "{profile}");
    assert_eq!(profile["morning_order_share"], 0.0, "{profile}");
    assert_eq!(profile["weekend_order_share"], 0.5, "{profile}");
    let hour = profile["order_hour_mean"].as_f64().unwrap();
    assert!((hour - (20.0 + 20.0 / 60.0 + 19.0 + 40.0 / 60.0) / 2.0).abs() < 1e-9, "{profile}");
}

#[actix_web::test]
async fn a_utc_deployment_reads_the_utc_calendar() {
    let (halloween, saturday, profile) = features_in(None).await;
    assert_eq!((&halloween["Month"], &halloween["Weekend"]), (&json!("Nov"), &json!(true)), "{halloween}");
    assert_eq!((&saturday["Month"], &saturday["Weekend"]), (&json!("Nov"), &json!(true)), "{saturday}");
    assert_eq!(profile["evening_order_share"], 0.0, "{profile}");
    assert_eq!(profile["weekend_order_share"], 1.0, "{profile}");
}

#[test]
fn an_unknown_time_zone_is_refused_by_key_name() {
    let overrides = cartpulse::config::Overrides { database_url: Some("sqlite::memory:".into()), ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cartpulse.toml");
    std::fs::write(&file, "[features]\ntimezone = \"Mars/Olympus\"\n").unwrap();
    let err = cartpulse::config::Settings::load(Some(&file), &overrides).expect_err("Mars/Olympus is refused");
    let text = format!("{err:#}");
    assert!(text.contains("timezone") && text.contains("Mars/Olympus") && text.contains("IANA"), "{text}");
}
