//! The live stream (`GET /v1/stream`, docs/stream.md) spoken to over real
//! WebSockets: authentication three ways, the KPI rollup, customer topics,
//! errors that keep the connection, `since` recovery and gaps, a stalled
//! client closed with 4008 while another keeps receiving, and 1001 on
//! shutdown of the real binary.

use crate::helpers::*;
use cartpulse::jobs::bench::serve_process::{create_key, ServeCommand, ServeProcess};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) fn ws_url(app: &TestApp, query: &str) -> String {
    format!("{}/v1/stream{query}", app.address.replacen("http://", "ws://", 1))
}

/// Connects with an optional `Authorization: Bearer` credential.
pub(crate) async fn connect(app: &TestApp, bearer: Option<&str>, query: &str) -> Result<Ws, WsError> {
    let mut req = ws_url(app, query).into_client_request().unwrap();
    if let Some(k) = bearer {
        req.headers_mut().insert("Authorization", format!("Bearer {k}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// What the server sent next: a JSON message, or its close code.
#[derive(Debug)]
pub(crate) enum Got {
    Json(Value),
    Closed(#[allow(dead_code)] Option<u16>),
}

pub(crate) async fn next(ws: &mut Ws, timeout: Duration) -> Got {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("no message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                let frame = serde_json::from_str(&t).expect("JSON frame");
                crate::contract::check_frame(&frame);
                return Got::Json(frame);
            }
            Some(Ok(Message::Close(c))) => return Got::Closed(c.map(|c| u16::from(c.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

/// The next JSON message satisfying `pred` (others are skipped).
pub(crate) async fn until(ws: &mut Ws, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no matching message in {timeout:?}");
        match next(ws, left).await {
            Got::Json(v) if pred(&v) => return v,
            Got::Json(_) => {}
            Got::Closed(c) => panic!("closed ({c:?}) while waiting"),
        }
    }
}

pub(crate) async fn closed_with(ws: &mut Ws, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    loop {
        match next(ws, deadline.saturating_duration_since(Instant::now())).await {
            Got::Closed(c) => return c,
            Got::Json(_) => {}
        }
    }
}

pub(crate) fn control(v: &Value, kind: &str) -> bool {
    v["topic"] == "_control" && v["data"]["type"] == kind
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) async fn subscribe(ws: &mut Ws, topics: &[&str], since: Value) {
    send(ws, json!({"type": "subscribe", "topics": topics, "since": since})).await;
    until(ws, Duration::from_secs(5), |v| control(v, "subscribed")).await;
}

#[actix_web::test]
async fn refuses_bad_credentials_and_accepts_header_query_token_and_first_message() {
    let app = spawn_app_with(Db::Sqlite, |s| s.stream.auth_timeout_ms = std::time::Duration::from_millis(500)).await;

    // Header: unknown key 401, wrong scope 403, both before the upgrade.
    match connect(&app, Some("cp_nope_nope"), "").await {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    match connect(&app, Some(&app.ingest_key), "").await {
        Err(WsError::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    let mut ws = connect(&app, Some(&app.read_key), "").await.expect("read key in the header");
    subscribe(&mut ws, &["kpis"], json!({})).await;
    until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    ws.close(None).await.ok();

    // Token endpoint: needs a read key; the token is short-lived.
    let (status, _) = app.post_json("/v1/stream/token", None, None).await;
    assert_eq!(status, 401);
    let (status, body) = app.post_json("/v1/stream/token", None, Some(&app.read_key.clone())).await;
    assert_eq!(status, 200);
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((290..=301).contains(&ttl), "ttl {ttl}");
    let token = body["token"].as_str().unwrap().to_owned();

    // Query token: accepted; a tampered one is upgraded and closed with 4001.
    let mut ws = connect(&app, None, &format!("?token={token}")).await.expect("query token");
    subscribe(&mut ws, &["scores"], json!({})).await;
    ws.close(None).await.ok();
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let mut ws = connect(&app, None, &format!("?token={tampered}")).await.expect("upgrade");
    assert_eq!(closed_with(&mut ws, Duration::from_secs(5)).await, Some(4001));

    // First message: a token or a read key works; a bad one, none, or
    // something else first gets 4001.
    for credential in [token.as_str(), app.read_key.as_str()] {
        let mut ws = connect(&app, None, "").await.expect("upgrade");
        send(&mut ws, json!({"type": "auth", "token": credential})).await;
        until(&mut ws, Duration::from_secs(5), |v| control(v, "authenticated")).await;
        subscribe(&mut ws, &["segments"], json!({})).await;
        ws.close(None).await.ok();
    }
    let mut ws = connect(&app, None, "").await.expect("upgrade");
    send(&mut ws, json!({"type": "auth", "token": app.ingest_key})).await;
    assert_eq!(closed_with(&mut ws, Duration::from_secs(5)).await, Some(4001));
    let mut ws = connect(&app, None, "").await.expect("upgrade");
    send(&mut ws, json!({"type": "subscribe", "topics": ["kpis"]})).await;
    assert_eq!(closed_with(&mut ws, Duration::from_secs(5)).await, Some(4001));
    let mut ws = connect(&app, None, "").await.expect("upgrade");
    let started = Instant::now();
    assert_eq!(closed_with(&mut ws, Duration::from_secs(5)).await, Some(4001));
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the auth timeout");

    let text = app.metrics_text().await;
    assert!(metric_value(&text, "cartpulse_stream_auth_refused_total{auth=\"message\"}") >= 3.0, "{text}");
    assert!(!text.contains(&token), "a token leaked into the metrics");
}

#[actix_web::test]
async fn kpis_show_the_events_just_posted() {
    let app = spawn_app(Db::Sqlite).await;
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    subscribe(&mut ws, &["kpis"], json!({})).await;
    // A first rollup before anything happened.
    let first = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    assert_eq!(first["data"]["orders_per_min"], 0.0);

    let t = now_rfc3339();
    let mut events: Vec<Value> = (0..9).map(|i| page_view(&format!("kp-{i}"), "kp-c", "kp-s", &t, "product")).collect();
    events.push(purchase("kp-buy", "kp-c", Some("kp-s"), &t, "KP1", 2, 5.0));
    let (status, body) = app.post_events(&Value::Array(events)).await;
    assert_eq!(status, 200, "{body}");

    let mut seen_events = 0.0;
    let mut last_seq = first["seq"].as_u64().unwrap();
    let k = loop {
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
        let seq = v["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "kpis seq must be gap-free");
        last_seq = seq;
        seen_events += v["data"]["events_per_s"].as_f64().unwrap();
        if v["data"]["orders_per_min"] == 1.0 {
            break v;
        }
    };
    let d = &k["data"];
    assert_eq!(d["revenue_per_min"], 10.0);
    assert_eq!(d["active_sessions"], 1);
    assert!(d["latency_ms"]["p50"].as_f64().is_some(), "{d}");
    assert!(d["latency_ms"]["p99"].as_f64().unwrap() < 1000.0, "{d}");
    // At 1 s ticks, events/s summed over the ticks is the events applied; a
    // tick skipped on a loaded machine spreads them over two seconds (10
    // events read as 5/s), so only the upper bound is exact: nothing is
    // counted twice, and something was counted.
    let more = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    seen_events += more["data"]["events_per_s"].as_f64().unwrap();
    assert!(seen_events > 0.0 && seen_events <= 11.5, "events seen {seen_events}");
    // The session ends: no longer active, and it converted.
    let end =
        json!([{"type": "session_end", "event_id": "kp-end", "customer_id": "kp-c", "session_id": "kp-s", "time": t}]);
    assert_eq!(app.post_events(&end).await.0, 200);
    let k = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis" && v["data"]["active_sessions"] == 0).await;
    assert_eq!(k["data"]["conversion_rate"], 1.0);
    assert!(app.metric("cartpulse_stream_latency_seconds_count").await >= 1.0);
    ws.close(None).await.ok();
}

#[actix_web::test]
async fn a_customer_topic_gets_that_customers_updates() {
    let app = spawn_app(Db::Sqlite).await;
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    subscribe(&mut ws, &["customer:cw-1"], json!({})).await;
    let t = now_rfc3339();
    for (i, other) in [(0, "cw-2"), (1, "cw-3")] {
        let evs = json!([
            page_view(&format!("cw1-{i}"), "cw-1", "cw-s", &t, "product"),
            page_view(&format!("{other}-{i}"), other, "other-s", &t, "product")
        ]);
        assert_eq!(app.post_events(&evs).await.0, 200);
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:cw-1").await;
        assert_eq!(v["seq"], i + 1);
        assert_eq!(v["data"]["type"], "view");
        assert_eq!(v["data"]["customer_id"], "cw-1");
        assert_eq!(v["data"]["open_session"]["n_events"], i + 1, "{v}");
    }
    // Unsubscribed: nothing more from it.
    send(&mut ws, json!({"type": "unsubscribe", "topics": ["customer:cw-1"]})).await;
    until(&mut ws, Duration::from_secs(5), |v| control(v, "unsubscribed")).await;
    assert_eq!(app.post_events(&json!([page_view("cw1-9", "cw-1", "cw-s", &t, "product")])).await.0, 200);
    send(&mut ws, json!({"type": "ping"})).await;
    let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] != "kpis").await;
    assert!(control(&v, "pong"), "expected only the pong, got {v}");
    ws.close(None).await.ok();
}

#[actix_web::test]
async fn unknown_topics_and_bad_messages_get_errors_and_the_connection_stays() {
    let app = spawn_app(Db::Sqlite).await;
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    let cases = [
        (json!({"type": "subscribe", "topics": ["weather"]}).to_string(), "unknown_topic"),
        (json!({"type": "subscribe", "topics": ["customer:bad id"]}).to_string(), "unknown_topic"),
        ("not json".to_owned(), "bad_message"),
        (json!({"type": "dance"}).to_string(), "bad_message"),
        (json!({"type": "subscribe", "topics": []}).to_string(), "bad_message"),
        (json!({"type": "auth", "token": "x"}).to_string(), "already_authenticated"),
    ];
    for (text, code) in cases {
        ws.send(Message::text(text.clone())).await.unwrap();
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "_error").await;
        assert_eq!(v["data"]["code"], code, "for {text}");
        assert_eq!(v["seq"], 0);
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "_error").await;
    assert_eq!(v["data"]["code"], "bad_message");
    // Still open and working.
    send(&mut ws, json!({"type": "ping"})).await;
    until(&mut ws, Duration::from_secs(5), |v| control(v, "pong")).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;
    until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "kpis").await;
    ws.close(None).await.ok();
}

#[actix_web::test]
async fn reconnecting_with_since_gets_what_was_missed_or_a_gap() {
    let app = spawn_app_with(Db::Sqlite, |s| s.stream.customer_history_messages = 4).await;
    let t = now_rfc3339();
    let post = |i: usize| {
        let app = &app;
        let t = t.clone();
        async move {
            let evs = json!([page_view(&format!("rs-{i}"), "rs-c", "rs-s", &t, "product")]);
            assert_eq!(app.post_events(&evs).await.0, 200);
        }
    };
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    subscribe(&mut ws, &["customer:rs-c"], json!({})).await;
    post(0).await;
    post(1).await;
    let mut last = 0;
    while last < 2 {
        last = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:rs-c").await["seq"].as_u64().unwrap();
    }
    ws.close(None).await.ok();
    drop(ws);

    // Missed while away: seq 3 and 4, recovered in order from the history.
    post(2).await;
    post(3).await;
    wait_topic_seq(&app, 4).await;
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    subscribe(&mut ws, &["customer:rs-c"], json!({"customer:rs-c": 2})).await;
    for expected in [3, 4] {
        let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:rs-c").await;
        assert_eq!(v["seq"], expected);
        assert_eq!(v["data"]["open_session"]["n_events"], expected);
    }
    // Live again after the replay.
    post(4).await;
    let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:rs-c").await;
    assert_eq!(v["seq"], 5);
    ws.close(None).await.ok();

    // History holds 4 (seq 2..=5): since 0 is too old, so a gap is announced.
    let mut ws = connect(&app, Some(&app.read_key), "").await.unwrap();
    send(&mut ws, json!({"type": "subscribe", "topics": ["customer:rs-c"], "since": {"customer:rs-c": 0}})).await;
    let gap = until(&mut ws, Duration::from_secs(5), |v| control(v, "gap")).await;
    assert_eq!(gap["data"]["topic"], "customer:rs-c");
    assert_eq!(gap["data"]["oldest"], 2);
    // Up to date: nothing replayed, and live messages continue.
    send(&mut ws, json!({"type": "subscribe", "topics": ["customer:rs-c"], "since": {"customer:rs-c": 5}})).await;
    post(5).await;
    let v = until(&mut ws, Duration::from_secs(5), |v| v["topic"] == "customer:rs-c").await;
    assert_eq!(v["seq"], 6);
    ws.close(None).await.ok();

    async fn wait_topic_seq(app: &TestApp, at_least: u64) {
        // The updates travel actor → aggregator → hub; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ws = connect(app, Some(&app.read_key), "").await.unwrap();
        loop {
            send(
                &mut ws,
                json!({"type": "subscribe", "topics": ["customer:rs-c"], "since": {"customer:rs-c": at_least - 1}}),
            )
            .await;
            let v = until(&mut ws, Duration::from_secs(5), |v| control(v, "subscribed")).await;
            let _ = v;
            if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["topic"] == "customer:rs-c" && v["seq"].as_u64() >= Some(at_least) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "topic never reached seq {at_least}");
        }
        ws.close(None).await.ok();
    }
}

/// A client with a tiny receive buffer that never reads.
async fn stalled_client(app: &TestApp, topics: &[String]) -> WebSocketStream<TcpStream> {
    let addr: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut req = ws_url(app, "").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {}", app.read_key).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws.send(Message::text(json!({"type": "subscribe", "topics": topics}).to_string())).await.unwrap();
    ws
}

#[actix_web::test]
async fn a_client_that_never_reads_is_closed_with_4008_while_another_keeps_receiving() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        // Room for several posts' bursts (25 views each), so the healthy
        // client keeps up even on a loaded CI machine; the stalled one never
        // reads, so it reaches any limit.
        s.stream.queue_max_messages = 256;
        s.stream.slow_after_ms = std::time::Duration::from_millis(500);
    })
    .await;
    let customers: Vec<String> = (0..25).map(|i| format!("sl-{i}")).collect();
    let topics: Vec<String> = customers.iter().map(|c| format!("customer:{c}")).collect();
    let mut stalled = stalled_client(&app, &topics).await;

    let mut healthy = connect(&app, Some(&app.read_key), "").await.unwrap();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    subscribe(&mut healthy, &refs, json!({})).await;
    let (count_tx, count_rx) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut n = 0u64;
        let mut last_seq = std::collections::HashMap::new();
        while let Some(Ok(m)) = healthy.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if let Some(topic) = v["topic"].as_str().filter(|t| t.starts_with("customer:")) {
                    let seq = v["seq"].as_u64().unwrap();
                    let prev = last_seq.insert(topic.to_owned(), seq).unwrap_or(0);
                    assert_eq!(seq, prev + 1, "the healthy client missed messages on {topic}");
                    n += 1;
                    let _ = count_tx.send(n);
                }
            }
        }
    });

    // Post until the stalled client is cut off (its socket buffers fill first).
    let t = chrono::Utc::now() - chrono::Duration::minutes(30);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while app.metric("cartpulse_stream_slow_disconnects_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the stalled client was never disconnected");
        let time = (t + chrono::Duration::seconds(round)).to_rfc3339();
        let evs: Vec<Value> = customers
            .iter()
            .map(|c| page_view(&format!("{c}-{round}"), c, &format!("{c}-s"), &time, "product"))
            .collect();
        assert_eq!(app.post_events(&Value::Array(evs)).await.0, 200);
        round += 1;
        // Lockstep with the healthy client: it is never more than one round
        // behind, however loaded the machine, while the stalled one falls
        // further behind every round.
        let mut rx = count_rx.clone();
        let want = round as u64 * customers.len() as u64;
        tokio::time::timeout(Duration::from_secs(10), async {
            while *rx.borrow() < want {
                rx.changed().await.unwrap();
            }
        })
        .await
        .expect("the healthy client fell behind");
    }
    // The healthy client keeps receiving after the cut.
    let before = *count_rx.borrow();
    for extra in 0..3 {
        let time = (t + chrono::Duration::seconds(round + extra)).to_rfc3339();
        let evs: Vec<Value> = customers
            .iter()
            .map(|c| page_view(&format!("{c}-x{extra}"), c, &format!("{c}-s"), &time, "product"))
            .collect();
        assert_eq!(app.post_events(&Value::Array(evs)).await.0, 200);
    }
    let mut rx = count_rx.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while *rx.borrow() < before + 3 * customers.len() as u64 {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the healthy client stopped receiving");

    // Once the stalled client reads, what was buffered ends with a 4008 close.
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("no close frame");
    assert_eq!(code, Some(4008));
    assert_eq!(CloseCode::from(4008u16), CloseCode::Library(4008));
    assert!(app.metric("cartpulse_stream_messages_dropped_total{reason=\"queue_full\"}").await >= 1.0);
    reader.abort();
}

/// `cartpulse serve` as a child process with a read key, and a WebSocket
/// client subscribed to `kpis` on it.
async fn serve_with_viewer(drain_s: u64) -> (ServeProcess, u16, Ws, tempfile::TempDir) {
    const BIN: &str = env!("CARGO_BIN_EXE_cartpulse");
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ws.db").display());
    let key = create_key(BIN, &db_url, "ws", "read").expect("keys create");
    let child = ServeCommand::new(BIN)
        .unwrap()
        .args(["--database-url", &db_url])
        .env("CARTPULSE_SHUTDOWN__DRAIN_S", drain_s.to_string())
        .spawn()
        .expect("spawn serve");
    let port = child.port;
    let url = format!("ws://127.0.0.1:{port}/v1/stream");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ws = loop {
        let mut req = url.clone().into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {key}").parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => break ws,
            Err(e) => {
                assert!(Instant::now() < deadline, "server never accepted: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    send(&mut ws, json!({"type": "subscribe", "topics": ["kpis"]})).await;
    until(&mut ws, Duration::from_secs(5), |v| control(v, "subscribed")).await;
    (child, port, ws, dir)
}

#[actix_web::test]
async fn shutdown_closes_clients_with_1001() {
    let (mut child, _port, mut ws, _dir) = serve_with_viewer(0).await;
    let started = Instant::now();
    child.signal(libc::SIGTERM).unwrap();
    let code = closed_with(&mut ws, Duration::from_secs(10)).await;
    let status = child.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, Some(1001));
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the stop waited on the WebSocket");
}

/// With `shutdown.drain_s`, SIGTERM makes `/readyz` answer 503 at once while
/// requests and streams keep being served; the close (1001) comes after the
/// drain.
#[actix_web::test]
async fn sigterm_reports_not_ready_and_serves_through_the_drain() {
    const DRAIN: Duration = Duration::from_secs(3);
    let (mut child, port, mut ws, _dir) = serve_with_viewer(DRAIN.as_secs()).await;
    let http = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    assert_eq!(http.get(&readyz).send().await.unwrap().status(), 200);
    let started = Instant::now();
    child.signal(libc::SIGTERM).unwrap();
    let not_ready = loop {
        let r = http.get(&readyz).send().await.expect("still serving while draining");
        if r.status() == 503 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "/readyz still {} after SIGTERM", r.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(not_ready < Duration::from_secs(1), "{not_ready:?}");
    let body: Value = http.get(&readyz).send().await.unwrap().json().await.unwrap();
    assert!(body.to_string().contains("draining"), "{body}");
    let health = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness holds while draining");
    let code = closed_with(&mut ws, DRAIN + Duration::from_secs(10)).await;
    let closed_after = started.elapsed();
    assert_eq!(code, Some(1001));
    assert!(closed_after >= DRAIN, "the stream closed after {closed_after:?}, before the {DRAIN:?} drain");
    let status = child.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status:?}");
}
