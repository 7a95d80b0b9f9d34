//! The API contract (`GET /v1/openapi.json`) as the black-box suite holds
//! the server to it: every response that goes through a [`TestApp`] request
//! method (see helpers.rs) is checked here. Its status must be documented
//! for the path and method, and a JSON body must validate against the
//! documented schema (JSON Schema 2020-12, the dialect of OpenAPI 3.1, with
//! formats such as `date-time` asserted). A mismatch panics naming the
//! request, the status and the schema error, so a test that sees an
//! undocumented answer fails even if it expected that answer.
//!
//! The document comes from the library (the same function the server
//! answers with), once per process; each response schema is compiled once.
//!
//! [`TestApp`]: super::helpers::TestApp

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What a compiled schema is cached by: (path template, method, status,
/// the schema's text), or `x-websocket` parts for stream frames.
type SchemaKey = (String, String, String, String);

pub struct Contract {
    doc: Value,
    validators: Mutex<HashMap<SchemaKey, Arc<jsonschema::Validator>>>,
}

/// The contract of this build, parsed once.
pub fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| Contract {
        doc: serde_json::from_str(cartpulse::serving::http::openapi::json()).expect("the contract is JSON"),
        validators: Mutex::new(HashMap::new()),
    })
}

/// Panics unless the response conforms to the contract (see the module doc).
pub fn check_response(method: &str, path: &str, status: u16, headers: &http::HeaderMap, body: &[u8]) {
    if let Err(e) = contract().check(method, path, status, headers, body) {
        let shown = String::from_utf8_lossy(&body[..body.len().min(600)]);
        panic!("contract violation: {method} {path} answered {status}: {e}\n  body: {shown}");
    }
}

impl Contract {
    /// The documented path template a concrete path falls under: an exact
    /// path first, else the template with the most literal segments.
    fn template(&self, path: &str) -> Option<&str> {
        let paths = self.doc["paths"].as_object()?;
        if paths.contains_key(path) {
            return paths.get_key_value(path).map(|(k, _)| k.as_str());
        }
        let segments: Vec<&str> = path.split('/').collect();
        paths
            .keys()
            .filter_map(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                if ts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (a, b) in ts.iter().zip(&segments) {
                    if a.starts_with('{') && a.ends_with('}') {
                        if b.is_empty() {
                            return None;
                        }
                    } else if a == b {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, t.as_str()))
            })
            .max()
            .map(|(_, t)| t)
    }

    /// Checks one response; `Err` says what does not conform.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let path = path.split('?').next().unwrap_or(path);
        let method = method.to_ascii_lowercase();
        let operation = self.template(path).and_then(|t| self.doc["paths"][t].get(&method).map(|op| (t, op)));
        let Some((template, operation)) = operation else {
            if !path.starts_with("/v1/") {
                // The console's own routes and the static files are not part of the API.
                return Ok(());
            }
            // No such endpoint: the fallback answers 404 with the error body.
            if status != 404 {
                return Err(format!("no documented operation, and the status is not 404 (got {status})"));
            }
            return self.validate_json("(no such endpoint)", &method, 404, "#/components/schemas/ErrorBody", body);
        };
        let responses = operation["responses"].as_object().ok_or("the operation documents no responses")?;
        let response = responses.get(&status.to_string()).or_else(|| responses.get("default")).ok_or_else(|| {
            let documented: Vec<&String> = responses.keys().collect();
            format!("status {status} is not documented for {method} {template} (documented: {documented:?})")
        })?;
        // Headers the contract promises (`Retry-After` on 503, …) must be there.
        for name in response.get("headers").and_then(Value::as_object).into_iter().flat_map(|h| h.keys()) {
            if !headers.contains_key(name.as_str()) {
                return Err(format!("the documented header {name} is missing"));
            }
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            // Documented without a body (101, 304).
            return Ok(());
        };
        let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if let Some(schema) = content.get("application/json") {
            if media.as_deref() != Some("application/json") {
                return Err(format!("Content-Type {media:?}, documented application/json"));
            }
            let Some(schema) = schema.get("schema") else {
                serde_json::from_slice::<Value>(body).map_err(|e| format!("the body is not JSON: {e}"))?;
                return Ok(());
            };
            return self.validate(template, &method, status, schema, body);
        }
        // Another media type (PNG, Prometheus text): the header must name it.
        let documented: Vec<String> =
            content.keys().map(|k| k.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).collect();
        match media {
            Some(m) if documented.contains(&m) => Ok(()),
            other => Err(format!("Content-Type {other:?}, documented {documented:?}")),
        }
    }

    fn validate_json(&self, template: &str, method: &str, status: u16, r: &str, body: &[u8]) -> Result<(), String> {
        self.validate(template, method, status, &serde_json::json!({ "$ref": r }), body)
    }

    fn validate(&self, template: &str, method: &str, status: u16, schema: &Value, body: &[u8]) -> Result<(), String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let key = (template.to_owned(), method.to_owned(), status.to_string(), schema.to_string());
        self.validate_value(key, schema, &value)
    }

    fn validate_value(&self, key: SchemaKey, schema: &Value, value: &Value) -> Result<(), String> {
        let validator = {
            let mut cache = self.validators.lock().expect("validator cache");
            match cache.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = Arc::new(self.compile(schema)?);
                    cache.insert(key, v.clone());
                    v
                }
            }
        };
        let errors: Vec<String> =
            validator.iter_errors(value).take(5).map(|e| format!("{} (at {})", e, e.instance_path())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("the body does not match the documented schema: {}", errors.join("; ")))
        }
    }

    /// Checks one server frame of `GET /v1/stream` against `x-websocket`:
    /// the envelope, then `data` against its topic's schema.
    pub fn check_frame(&self, frame: &Value) -> Result<(), String> {
        let ws = &self.doc["paths"]["/v1/stream"]["get"]["x-websocket"];
        let key = |what: &str| ("/v1/stream".to_owned(), "x-websocket".to_owned(), what.to_owned(), String::new());
        self.validate_value(key("frame"), &ws["frame"], frame).map_err(|e| format!("envelope: {e}"))?;
        let topic = frame["topic"].as_str().ok_or("no topic")?;
        let name = if topic.starts_with("customer:") { "customer:{id}" } else { topic };
        let schema = ws["topics"].get(name).ok_or_else(|| format!("topic {topic:?} is not in x-websocket"))?;
        self.validate_value(key(name), schema, &frame["data"]).map_err(|e| format!("data of {topic}: {e}"))
    }

    /// A validator for one response schema: the schema with the document's
    /// components beside it, so its `#/components/schemas/...` refs resolve.
    fn compile(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut root = serde_json::Map::new();
        root.insert("$schema".into(), "https://json-schema.org/draft/2020-12/schema".into());
        root.insert("components".into(), self.doc["components"].clone());
        root.insert("allOf".into(), Value::Array(vec![schema.clone()]));
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| format!("the documented schema does not compile: {e}"))
    }
}

/// Panics unless a frame the stream sent conforms to the contract.
pub fn check_frame(frame: &Value) {
    if let Err(e) = contract().check_frame(frame) {
        panic!("contract violation: a GET /v1/stream frame: {e}\n  frame: {frame}");
    }
}

/// The checker itself must be able to fail: each wrong answer here is one a
/// broken handler could give.
#[test]
fn the_checker_rejects_answers_the_contract_does_not_allow() {
    let c = contract();
    let typed = |ct: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        h
    };
    let json = &typed("application/json");
    let error = br#"{"error":"no such customer"}"#;
    assert_eq!(c.check("GET", "/v1/customers/c1", 404, json, error), Ok(()));
    // An undocumented status.
    let e = c.check("GET", "/v1/customers/c1", 418, json, error).unwrap_err();
    assert!(e.contains("418 is not documented"), "{e}");
    // An error body of another shape.
    let e = c.check("GET", "/v1/customers/c1", 404, json, br#"{"message":"gone"}"#).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    // A 200 missing required fields and with a wrong type.
    let e = c.check("GET", "/v1/customers/c1", 200, json, br#"{"customer_id":"c1","last_seq":"7"}"#).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    // Not JSON at all, or JSON under another media type.
    assert!(c.check("GET", "/v1/system", 401, json, b"nope").unwrap_err().contains("not JSON"));
    assert!(c.check("GET", "/v1/system", 401, &typed("text/plain"), error).is_err());
    assert!(c.check("GET", "/v1/system", 401, &http::HeaderMap::new(), error).unwrap_err().contains("Content-Type"));
    // A date that is not RFC 3339 (and the token's documented Cache-Control).
    let mut no_store = typed("application/json");
    no_store.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
    let token = br#"{"token":"t","expires_at":"2026-01-01T00:00:00Z"}"#;
    assert!(c.check("POST", "/v1/stream/token", 200, json, token).unwrap_err().contains("Cache-Control"));
    assert_eq!(c.check("POST", "/v1/stream/token", 200, &no_store, token), Ok(()));
    let token = br#"{"token":"t","expires_at":"tomorrow"}"#;
    assert!(c.check("POST", "/v1/stream/token", 200, &no_store, token).unwrap_err().contains("date-time"));
    let ingest_ok = br#"{"accepted":1,"duplicates":0,"rejected":[]}"#;
    assert_eq!(c.check("POST", "/v1/events", 200, json, ingest_ok), Ok(()));
    assert!(c.check("POST", "/v1/events", 200, json, br#"{"accepted":-1,"duplicates":0,"rejected":[]}"#).is_err());
    // An endpoint that does not exist must answer 404 with the error body.
    assert_eq!(c.check("GET", "/v1/nope", 404, json, error), Ok(()));
    assert!(c.check("GET", "/v1/nope", 200, json, b"{}").is_err());
    // A PNG must be labelled as one.
    assert_eq!(c.check("GET", "/v1/models/v1/report/roc.png", 200, &typed("image/png"), b"\x89PNG"), Ok(()));
    assert!(c.check("GET", "/v1/models/v1/report/roc.png", 200, json, b"{}").is_err());
    // A 503 without its Retry-After.
    let e = c.check("GET", "/v1/system", 503, json, error).unwrap_err();
    assert!(e.contains("Retry-After"), "{e}");
    let mut retry = typed("application/json");
    retry.insert(http::header::RETRY_AFTER, "1".parse().unwrap());
    assert_eq!(c.check("GET", "/v1/system", 503, &retry, error), Ok(()));
    // Routes outside the API are not the contract's business.
    assert_eq!(c.check("GET", "/console/me", 200, json, b"{}"), Ok(()));

    // Stream frames: the envelope and each topic's payload.
    let pong = serde_json::json!({"topic": "_control", "seq": 0, "ts": 1, "data": {"type": "pong"}});
    assert_eq!(c.check_frame(&pong), Ok(()));
    let gap = serde_json::json!({"topic": "_control", "seq": 0, "ts": 1,
        "data": {"type": "gap", "topic": "kpis", "reason": "dropped", "from": 3, "to": 9}});
    assert_eq!(c.check_frame(&gap), Ok(()));
    let bad_gap = serde_json::json!({"topic": "_control", "seq": 0, "ts": 1,
        "data": {"type": "gap", "topic": "kpis", "reason": "dropped", "from": 3}});
    assert!(c.check_frame(&bad_gap).is_err(), "a dropped gap without `to`");
    let unknown = serde_json::json!({"topic": "_control", "seq": 0, "ts": 1, "data": {"type": "dance"}});
    assert!(c.check_frame(&unknown).is_err());
    let error = serde_json::json!({"topic": "_error", "seq": 0, "ts": 1, "data": {"code": "nope", "message": "x"}});
    assert!(c.check_frame(&error).is_err(), "an error code the server does not have");
    let no_seq = serde_json::json!({"topic": "kpis", "ts": 1, "data": {}});
    assert!(c.check_frame(&no_seq).unwrap_err().contains("envelope"));
    let score = serde_json::json!({"topic": "scores", "seq": 4, "ts": 1, "data": {"customer_id": "c1",
        "session_id": "s1", "score": 0.9, "model_version": "m", "final": false}});
    assert_eq!(c.check_frame(&score), Ok(()));
    let bad_score = serde_json::json!({"topic": "scores", "seq": 4, "ts": 1, "data": {"customer_id": "c 1",
        "session_id": "s1", "score": 0.9, "model_version": "m", "final": false}});
    assert!(c.check_frame(&bad_score).is_err(), "a customer id with a space");
}

/// The contract is public and cacheable: no key, `Cache-Control: public`, an
/// ETag that a revalidation answers with 304, and the very document the
/// library builds.
#[actix_web::test]
async fn the_contract_is_served_without_credentials_and_cacheable() {
    let app = super::helpers::spawn_app(super::helpers::Db::Sqlite).await;
    let (status, text) = app.get_text("/v1/openapi.json").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, cartpulse::serving::http::openapi::json());
    let r = app.client.get(format!("{}/v1/openapi.json", app.address)).send().await.expect("GET");
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header("cache-control").starts_with("public"), "Cache-Control: {}", header("cache-control"));
    assert!(header("content-type").starts_with("application/json"));
    let etag = header("etag");
    assert!(etag.starts_with('"') && etag.len() > 10, "ETag: {etag:?}");
    let again = app
        .client
        .get(format!("{}/v1/openapi.json", app.address))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("GET with If-None-Match");
    assert_eq!(again.status().as_u16(), 304);
    let stale = app
        .client
        .get(format!("{}/v1/openapi.json", app.address))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .expect("GET with another ETag");
    assert_eq!(stale.status().as_u16(), 200);
}

/// The ids' schema (pattern and lengths) accepts exactly what the server's
/// id rules accept, character by character.
#[test]
fn the_id_schema_is_the_id_rules() {
    let c = contract();
    let schema = c.compile(&serde_json::json!({ "$ref": "#/components/schemas/CustomerId" })).expect("compiles");
    let mut probes: Vec<String> = (0u8..128).map(|b| format!("a{}b", b as char)).collect();
    probes.extend(["".into(), "é".into(), "x".repeat(128), "x".repeat(129)]);
    for id in probes {
        let rules = actors::event::validate_id(&id).is_ok();
        assert_eq!(schema.is_valid(&Value::String(id.clone())), rules, "id {id:?}: the id rules say {rules}");
    }
}
