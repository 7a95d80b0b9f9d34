//! Distributed tracing, end to end: real `cartpulse serve` processes export
//! over OTLP/HTTP to a receiver in this test, which decodes the real
//! protobuf export requests (`opentelemetry-proto`) and keeps every span.
//! The assertions are about the trace tree: which span is whose child,
//! across the gateway and the processor processes.

use crate::crash::BIN;
use crate::helpers::*;
use crate::inference::tiny_model;
use crate::roles::{subscribe, Deployment, Redis, Replica};
use crate::stream::until;
use cartpulse::jobs::bench::serve_process::{create_key, ServeCommand, ServeProcess};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One received span.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent: String,
    /// The exporting process's `cartpulse.role` resource attribute.
    role: String,
    service: String,
}

/// An OTLP/HTTP receiver on a free loopback port.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
    _server: actix_web::dev::ServerHandle,
}

type Store = (Arc<Mutex<Vec<Span>>>, Arc<Mutex<usize>>);

async fn collect(body: actix_web::web::Bytes, store: actix_web::web::Data<Store>) -> actix_web::HttpResponse {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return actix_web::HttpResponse::BadRequest().body(format!("not an ExportTraceServiceRequest: {e}")),
    };
    *store.1.lock().unwrap() += 1;
    let hex = |b: &[u8]| hex::encode(b);
    let mut out = store.0.lock().unwrap();
    for rs in request.resource_spans {
        let attr = |key: &str| {
            rs.resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                .and_then(|a| a.value.as_ref()?.value.clone())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default()
        };
        let (role, service) = (attr("cartpulse.role"), attr("service.name"));
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(Span {
                    name: s.name.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    role: role.clone(),
                    service: service.clone(),
                });
            }
        }
    }
    actix_web::HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

impl Receiver {
    async fn start() -> Receiver {
        let store: Store = (Arc::default(), Arc::default());
        let data = actix_web::web::Data::new(store.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(actix_web::web::PayloadConfig::new(64 << 20))
                .route("/v1/traces", actix_web::web::post().to(collect))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Receiver { url: format!("http://127.0.0.1:{port}"), spans: store.0, requests: store.1, _server: handle }
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }

    /// Waits until the trace has a span of every name in `names`.
    async fn wait_for(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        eventually(&format!("spans {names:?} of trace {trace_id}"), Duration::from_secs(30), || async {
            let spans = self.of_trace(trace_id);
            let missing: Vec<&&str> = names.iter().filter(|n| !spans.iter().any(|s| s.name == **n)).collect();
            if missing.is_empty() {
                Ok(spans)
            } else {
                let have: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
                Err(format!("missing {missing:?}; have {have:?}"))
            }
        })
        .await
    }

    fn env(&self, ratio: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CARTPULSE_TELEMETRY__OTLP_ENDPOINT", self.url.clone()),
            ("CARTPULSE_TELEMETRY__SAMPLING_RATIO", ratio.to_owned()),
            ("CARTPULSE_TELEMETRY__EXPORT_DELAY_MS", "100".to_owned()),
            ("CARTPULSE_TELEMETRY__SERVICE_NAME", "cartpulse-test".to_owned()),
        ]
    }
}

/// The one span named `name` (several would make the tree ambiguous).
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} span, got {found:#?}");
    found[0]
}

fn assert_child(child: &Span, parent: &Span) {
    assert_eq!(
        child.parent, parent.span_id,
        "{} ({}) should be a child of {} ({}): {child:#?} {parent:#?}",
        child.name, child.role, parent.name, parent.role
    );
}

/// A fresh sampled `traceparent` as a caller would send it.
fn caller_context() -> (String, String, String) {
    let (trace, span) = (hex::encode(rand::random::<[u8; 16]>()), hex::encode(rand::random::<[u8; 8]>()));
    (format!("00-{trace}-{span}-01"), trace, span)
}

fn visit(id: &str) -> Value {
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!([
        page_view(&format!("{id}-1"), &format!("{id}-c"), &format!("{id}-s"), &t, "product"),
        page_view(&format!("{id}-2"), &format!("{id}-c"), &format!("{id}-s"), &t, "cart"),
    ])
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: &Value,
    tp: Option<&str>,
) -> reqwest::Response {
    let mut req = client.post(format!("{base}{path}")).bearer_auth(key).json(body);
    if let Some(tp) = tp {
        req = req.header("traceparent", tp);
    }
    req.send().await.expect("request")
}

fn returned_traceparent(resp: &reqwest::Response) -> actors::trace::TraceParent {
    let v = resp.headers().get("traceparent").expect("a traced response carries traceparent").to_str().unwrap();
    actors::trace::TraceParent::parse(v).unwrap_or_else(|| panic!("invalid traceparent {v:?}"))
}

#[actix_web::test]
async fn a_request_through_a_gateway_and_a_processor_is_one_trace() {
    let receiver = Receiver::start().await;
    let d = Deployment::new(Redis::Single).await;
    let env = receiver.env("1");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let processor: Replica = d.start_with("processor", None, None, 4, &env).await;
    let gateway: Replica = d.start_with("gateway", None, None, 4, &env).await;
    let mut ws = d.ws(&gateway).await;
    subscribe(&mut ws, &["kpis"], json!({})).await;

    let (tp, trace_id, caller_span) = caller_context();
    let resp = post(&d.client, &gateway.base(), &d.key, "/v1/events", &visit("tr1"), Some(&tp)).await;
    assert_eq!(resp.status(), 200);
    let returned = returned_traceparent(&resp);
    assert_eq!(returned.trace_id_hex(), trace_id, "the response continues the caller's trace");
    assert_ne!(hex::encode(returned.span_id), caller_span, "the response names the server's own span");
    assert!(returned.sampled());

    let names = [
        "POST /v1/events",
        "ingest.parse",
        "redis.xadd",
        "processor.read",
        "ingest.group_commit",
        "actor.fold",
        "actor.snapshot",
        "stream.aggregate",
        "stream.publish",
    ];
    let spans = receiver.wait_for(&trace_id, &names).await;
    let http = one(&spans, "POST /v1/events");
    assert_eq!(http.parent, caller_span, "the server span is a child of the caller's");
    assert_eq!(http.span_id, hex::encode(returned.span_id));
    assert_eq!((http.role.as_str(), http.service.as_str()), ("gateway", "cartpulse-test"));
    for name in ["ingest.parse", "redis.xadd"] {
        let s = one(&spans, name);
        assert_child(s, http);
        assert_eq!(s.role, "gateway");
    }
    // Across Redis: the processor's spans hang below the gateway's request.
    let read = one(&spans, "processor.read");
    assert_eq!(read.role, "processor");
    assert_child(read, http);
    let commit = one(&spans, "ingest.group_commit");
    assert_child(commit, read);
    let fold = one(&spans, "actor.fold");
    assert_child(fold, commit);
    let snapshot = one(&spans, "actor.snapshot");
    assert_child(snapshot, fold);
    let aggregate = one(&spans, "stream.aggregate");
    assert_child(aggregate, fold);
    let publish = spans.iter().find(|s| s.name == "stream.publish" && s.parent == aggregate.span_id);
    assert!(publish.is_some(), "no stream.publish below stream.aggregate: {spans:#?}");
    for s in &spans {
        if !["POST /v1/events", "ingest.parse", "redis.xadd"].contains(&s.name.as_str()) {
            assert_eq!(s.role, "processor", "{s:#?}");
        }
    }

    // The dashboard frame caused by the traced events names the trace.
    let frame =
        until(&mut ws, Duration::from_secs(20), |v| v["topic"] == "kpis" && v["data"]["trace_id"] == trace_id).await;
    assert!(frame["data"]["events_per_s"].is_number(), "{frame}");
    drop((processor, gateway));
}

/// A process of its own (role all, SQLite) with a model, so scoring runs.
async fn single_process(receiver: &Receiver, ratio: &str) -> (ServeProcess, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let key = create_key(BIN, &db, "traces", "admin").expect("keys create");
    let server = ServeCommand::new(BIN)
        .unwrap()
        .args(["--database-url", &db])
        .envs(receiver.env(ratio))
        .env("CARTPULSE_INFERENCE__MODEL_DIR", tiny_model(1).display().to_string())
        .env("CARTPULSE_INFERENCE__SCORE_DEBOUNCE_MS", "0")
        .env("CARTPULSE_ACTORS__SNAPSHOT_MAX_DELAY_MS", "100")
        .start(Duration::from_secs(30))
        .await
        .expect("cartpulse serve");
    (server, key, dir)
}

#[actix_web::test]
async fn scoring_joins_the_trace_of_the_event_or_request_that_asked_for_it() {
    let receiver = Receiver::start().await;
    let (server, key, _dir) = single_process(&receiver, "1").await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();

    // An ingested visit: the actor's fold asks for a score of the open session.
    let (tp, trace_id, _) = caller_context();
    let resp = post(&client, &base, &key, "/v1/events", &visit("sc1"), Some(&tp)).await;
    assert_eq!(resp.status(), 200);
    let spans = receiver
        .wait_for(&trace_id, &["ingest.group_commit", "actor.fold", "inference.queue_wait", "inference.forward"])
        .await;
    let http = one(&spans, "POST /v1/events");
    assert_eq!(http.role, "all");
    let commit = one(&spans, "ingest.group_commit");
    assert_child(commit, http);
    let fold = one(&spans, "actor.fold");
    assert_child(fold, commit);
    let batch = spans.iter().find(|s| s.name == "inference.batch").expect("inference.batch");
    assert_child(batch, fold);
    assert_child(spans.iter().find(|s| s.name == "inference.queue_wait").unwrap(), fold);
    assert_child(spans.iter().find(|s| s.name == "inference.forward").unwrap(), batch);

    // POST /v1/predict: the pool's spans are the request's children.
    let row = json!({ "features": {
        "Administrative": 0, "Administrative_Duration": 0.0, "Informational": 0, "Informational_Duration": 0.0,
        "ProductRelated": 3, "ProductRelated_Duration": 64.0, "BounceRates": 0.0, "ExitRates": 0.02,
        "PageValues": 0.0, "SpecialDay": 0.0, "Month": "Nov", "OperatingSystems": 2, "Browser": 2, "Region": 1,
        "TrafficType": 2, "VisitorType": "Returning_Visitor", "Weekend": false
    }});
    let (tp, trace_id, _) = caller_context();
    let resp = post(&client, &base, &key, "/v1/predict", &row, Some(&tp)).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let spans = receiver
        .wait_for(&trace_id, &["POST /v1/predict", "inference.queue_wait", "inference.batch", "inference.forward"])
        .await;
    let http = one(&spans, "POST /v1/predict");
    assert_child(one(&spans, "inference.queue_wait"), http);
    let batch = one(&spans, "inference.batch");
    assert_child(batch, http);
    assert_child(one(&spans, "inference.forward"), batch);
}

#[actix_web::test]
async fn the_sampling_ratio_decides_new_traces_and_a_caller_decides_its_own() {
    let receiver = Receiver::start().await;
    let (server, key, _dir) = single_process(&receiver, "0").await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();

    // Ratio 0 and no caller context: not sampled, nothing exported, but the
    // response still names a (not sampled) context.
    let resp = post(&client, &base, &key, "/v1/events", &visit("s0"), None).await;
    assert_eq!(resp.status(), 200);
    let unsampled = returned_traceparent(&resp);
    assert!(!unsampled.sampled());

    // An unsampled caller is followed too.
    let (tp, quiet_trace, _) = caller_context();
    let tp = format!("{}-00", tp.trim_end_matches("-01"));
    let resp = post(&client, &base, &key, "/v1/events", &visit("s2"), Some(&tp)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(returned_traceparent(&resp).trace_id_hex(), quiet_trace);
    // A malformed header is ignored (a new, here unsampled, trace).
    let resp = post(&client, &base, &key, "/v1/events", &visit("s3"), Some("00-zz-yy-01")).await;
    assert_eq!(resp.status(), 200);
    assert!(!returned_traceparent(&resp).sampled());

    // A sampled caller is followed whatever the ratio.
    let (tp, trace_id, _) = caller_context();
    let resp = post(&client, &base, &key, "/v1/events", &visit("s1"), Some(&tp)).await;
    assert_eq!(resp.status(), 200);
    receiver.wait_for(&trace_id, &["POST /v1/events", "ingest.group_commit", "actor.fold", "actor.snapshot"]).await;

    // The unsampled requests came first and the exporter sends spans in the
    // order they end: had any of theirs been exported, it would be here.
    let exported = receiver.spans.lock().unwrap().clone();
    assert!(*receiver.requests.lock().unwrap() >= 1);
    for s in &exported {
        assert_eq!(s.trace_id, trace_id, "only the sampled caller's trace is exported: {s:#?}");
    }
    assert!(!exported.iter().any(|s| s.trace_id == unsampled.trace_id_hex() || s.trace_id == quiet_trace));
    drop(server);
}

#[actix_web::test]
async fn json_log_lines_of_a_traced_request_carry_its_trace_id() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let key = create_key(BIN, &db, "traces", "admin").expect("keys create");
    let log = dir.path().join("serve.log");
    let server = ServeCommand::new(BIN)
        .unwrap()
        .args(["--database-url", &db])
        .envs(receiver.env("0"))
        .env("CARTPULSE_LOG__FORMAT", "json")
        .log_to(&log)
        .start(Duration::from_secs(30))
        .await
        .expect("cartpulse serve");
    // No model is active: the predict request is answered 503, and that
    // warning is logged inside the request's span.
    let row = serde_json::json!({ "features": {
        "Administrative": 0, "Administrative_Duration": 0.0, "Informational": 0, "Informational_Duration": 0.0,
        "ProductRelated": 3, "ProductRelated_Duration": 64.0, "BounceRates": 0.0, "ExitRates": 0.02,
        "PageValues": 0.0, "SpecialDay": 0.0, "Month": "Nov", "OperatingSystems": 2, "Browser": 2, "Region": 1,
        "TrafficType": 2, "VisitorType": "Returning_Visitor", "Weekend": false
    }});
    let (tp, trace_id, _) = caller_context();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", server.port);
    let resp = post(&client, &base, &key, "/v1/predict", &row, Some(&tp)).await;
    assert_eq!(resp.status(), 503);
    let line = eventually("the warning is logged", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
        text.lines()
            .find(|l| l.contains("service unavailable"))
            .map(str::to_owned)
            .ok_or_else(|| format!("not yet in {} lines", text.lines().count()))
    })
    .await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["span"]["trace_id"], trace_id.as_str(), "the line names the request's trace: {v}");
    drop(server);
}
