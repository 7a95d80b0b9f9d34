//! Checks that the API contract covers what the code serves: every route of
//! [`super::super::routes`], the stream protocol of docs/stream.md in both
//! directions, and the auth answers of every authenticated operation.

use super::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn doc() -> Value {
    serde_json::from_str(json()).expect("the document is JSON")
}

/// The routes registered in `routes()`, read from its source, so a new
/// route without `#[utoipa::path]` (and a line in `paths(...)`) fails here.
fn registered_routes() -> BTreeSet<(String, String)> {
    let src = include_str!("mod.rs");
    let body = src.split("pub fn routes(").nth(1).expect("routes() in mod.rs");
    let body = body.split("\n}\n").next().expect("end of routes()");
    let mut out = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.split(".route(\"").nth(1) else { continue };
        let (path, rest) = rest.split_once('"').expect("quoted path");
        let method = rest.split("web::").nth(1).and_then(|m| m.split('(').next()).expect("web::<method>()");
        // Inside the `/v1` scope unless it is one of the top-level probes.
        let full =
            if ["/healthz", "/readyz", "/metrics"].contains(&path) { path.to_owned() } else { format!("/v1{path}") };
        out.insert((full, method.to_owned()));
    }
    assert!(out.len() > 10, "parsing routes() found only {out:?}");
    out
}

#[test]
fn every_registered_route_is_documented() {
    let doc = doc();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true), "OpenAPI 3.1");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(p, item)| item.as_object().expect("path item").keys().map(move |m| (p.clone(), m.clone())))
        .collect();
    let registered = registered_routes();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(missing.is_empty(), "routes without a documented operation: {missing:?}");
    assert!(extra.is_empty(), "documented operations no route serves: {extra:?}");
}

#[test]
fn authenticated_operations_document_their_refusals() {
    let doc = doc();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"].as_array().unwrap_or_else(|| panic!("{method} {path}: no security"));
            let needs_key = security.iter().any(|r| r.get("api_key").is_some());
            if !needs_key {
                continue;
            }
            for status in ["401", "403", "503"] {
                let r = &op["responses"][status];
                assert!(r.is_object(), "{method} {path}: status {status} is not documented");
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}: the error body"
                );
            }
        }
    }
}

/// Every string a schema allows as a `const` or `enum` value, and every
/// property name, following `$ref`s.
fn names(doc: &Value, schema: &Value, seen: &mut BTreeSet<String>, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                if seen.insert(r.clone()) {
                    let name = r.rsplit('/').next().unwrap();
                    names(doc, &doc["components"]["schemas"][name], seen, out);
                }
            }
            if let Some(Value::String(c)) = m.get("const") {
                out.insert(c.clone());
            }
            if let Some(Value::Array(e)) = m.get("enum") {
                out.extend(e.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
            if let Some(Value::Object(p)) = m.get("properties") {
                out.extend(p.keys().cloned());
            }
            for v in m.values() {
                names(doc, v, seen, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| names(doc, v, seen, out)),
        _ => {}
    }
}

/// The protocol part of docs/stream.md (before "Inside the server").
fn stream_md() -> &'static str {
    let md = include_str!("../../../docs/stream.md");
    &md[..md.find("## Inside the server").expect("docs/stream.md has its sections")]
}

/// The identifiers docs/stream.md quotes (`"type"`, `"subscribed"`, …) and
/// the error codes it lists in backquotes.
fn named_in_stream_md() -> BTreeSet<String> {
    let md = stream_md();
    let ident = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let mut out = BTreeSet::new();
    let mut parts = md.split('"');
    parts.next();
    // Every other piece between double quotes is quoted; text may hold an
    // odd quote, so pieces are taken by pairs and only identifiers kept.
    while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
        if ident(inside) {
            out.insert(inside.to_owned());
        }
    }
    let codes = md.split("**More error codes:**").nth(1).expect("the error codes list");
    let codes = &codes[..codes.find("\n- ").unwrap_or(codes.len())];
    out.extend(codes.split('`').skip(1).step_by(2).filter(|w| ident(w)).map(str::to_owned));
    out
}

#[test]
fn the_stream_protocol_matches_docs_stream_md() {
    let doc = doc();
    let ws = &doc["paths"]["/v1/stream"]["get"]["x-websocket"];
    assert!(ws.is_object(), "GET /v1/stream has no x-websocket extension");
    let mut in_ws = BTreeSet::new();
    names(&doc, ws, &mut BTreeSet::new(), &mut in_ws);
    in_ws.extend(ws["topics"].as_object().unwrap().keys().cloned());
    let in_md = named_in_stream_md();
    for expected in ["subscribe", "ping", "subscribed", "gap", "too_old", "events_per_s", "too_many_topics"] {
        assert!(in_md.contains(expected), "the docs/stream.md scan missed {expected:?}: {in_md:?}");
    }
    // `token`/`expires_at` are the POST /v1/stream/token answer's, described there.
    let mut in_doc = in_ws.clone();
    names(&doc, &doc["paths"]["/v1/stream/token"], &mut BTreeSet::new(), &mut in_doc);
    let undocumented: Vec<_> = in_md.difference(&in_doc).collect();
    assert!(undocumented.is_empty(), "named in docs/stream.md but not in the contract: {undocumented:?}");

    // And the other way: every message type, gap reason and error code of
    // the contract is in the prose.
    let md = stream_md();
    let mut literals = BTreeSet::new();
    for name in ["StreamClientMessage", "StreamControl", "StreamGap", "StreamErrorCode", "StreamSegmentMessage"] {
        let mut found = BTreeSet::new();
        names(&doc, &doc["components"]["schemas"][name], &mut BTreeSet::new(), &mut found);
        literals.extend(found);
    }
    for name in &literals {
        assert!(
            md.contains(&format!("\"{name}\"")) || md.contains(&format!("`{name}`")),
            "{name:?} of the contract is not in docs/stream.md"
        );
    }
    for c in ws["closeCodes"].as_array().unwrap() {
        let code = c["code"].as_u64().unwrap().to_string();
        assert!(md.contains(&code), "close code {code} is not in docs/stream.md");
    }
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let text = json();
    for (i, _) in text.match_indices("\"$ref\": \"#/components/schemas/") {
        let rest = &text[i + "\"$ref\": \"#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref to {name}");
    }
}
