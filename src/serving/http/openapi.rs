//! The API contract: an OpenAPI 3.1 document generated with `utoipa` from
//! the handlers' own annotations and the types they answer with (every
//! reply body is a typed struct deriving `ToSchema`), so it cannot drift
//! from the code. It covers every `/v1` endpoint and the health ones, their
//! security (API keys by scope, the console's session cookie), statuses and
//! error bodies. The live stream's protocol (client messages, server
//! frames, close codes) is under the `x-websocket` extension of
//! `GET /v1/stream`, generated from the stream's wire types
//! ([`crate::serving::stream::frames`], [`crate::serving::stream::protocol`]).
//!
//! Served unauthenticated at `GET /v1/openapi.json` (it is public), printed
//! by `cartpulse openapi`; the console renders it on its API page.

use super::{customers, events, health, model_quality, models, predict, segments, stream, system};
use crate::serving::stream::protocol::close;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;
use std::sync::OnceLock;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cartpulse API",
        description = "Real-time e-commerce analytics: events in, live customer features, scores and segments out. \
                       Every error answer is `{\"error\": \"...\"}` (`ErrorBody`); a 503 carries `Retry-After`. \
                       The live stream's protocol is in the `x-websocket` extension of `GET /v1/stream`.",
    ),
    paths(
        events::post_events,
        stream::connect,
        stream::token,
        customers::get_customer,
        customers::get_session,
        predict::predict,
        models::list,
        models::promote,
        models::rollback,
        models::shadow,
        models::unshadow,
        models::report_image,
        model_quality::evaluation,
        model_quality::compare,
        model_quality::drift,
        system::system,
        segments::list,
        segments::activate,
        openapi_json,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        crate::serving::web::error::ErrorBody,
        crate::serving::stream::protocol::RawMsg,
        crate::serving::stream::frames::Envelope,
        crate::serving::stream::frames::Control,
        crate::serving::stream::frames::GapInfo,
        crate::serving::stream::frames::Gap,
        crate::serving::stream::frames::ErrorData,
        crate::serving::stream::frames::ErrorCode,
        crate::serving::stream::frames::ScoreData,
        crate::serving::stream::frames::SegmentMessage,
        crate::serving::stream::aggregator::rollup::Kpis,
        crate::serving::stream::aggregator::rollup::Latency,
        actors::data::state::CustomerView,
    )),
    modifiers(&Security, &StreamProtocol),
    tags(
        (name = "ingest", description = "Shop events in."),
        (name = "stream", description = "The live stream (WebSocket)."),
        (name = "customers", description = "Customers and sessions as the actors see them."),
        (name = "models", description = "Scoring and the model registry."),
        (name = "segments", description = "Customer segmentations."),
        (name = "system", description = "Replicas and dependencies."),
        (name = "health", description = "Liveness, readiness, metrics and this document."),
    ),
)]
struct ApiDoc;

/// The security schemes the operations name. An operation's requirement
/// lists the scope it needs (OpenAPI 3.1 allows role names for non-OAuth
/// schemes).
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cp_<id>_<secret>")
                    .description(Some(
                        "An API key as `Authorization: Bearer <key>` (`cartpulse keys create --scope \
                         ingest|read|admin`). The scope an operation lists is the one it needs; an admin key \
                         may act wherever ingest or read is needed. A missing or unknown key is 401 (with \
                         `WWW-Authenticate: Bearer`), a key without the scope 403.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "console_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::serving::console::session::COOKIE_NAME,
                &format!(
                    "The admin console's login session (`POST /console/login`; named `{}` when the console is \
                     served over TLS). Only looked at when no `Authorization` header is sent. A console admin has \
                     the admin scope, a viewer the read scope. A state change (POST) also needs the \
                     `X-CSRF-Token` header with the token the login answered, otherwise 403.",
                    crate::serving::console::session::SECURE_COOKIE_NAME
                ),
            ))),
        );
    }
}

/// The live stream's protocol, from its wire types, as the `x-websocket`
/// extension of `GET /v1/stream`.
struct StreamProtocol;

/// A reference to a component schema.
fn schema_ref(name: &str) -> serde_json::Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The `x-websocket` extension's content.
pub fn websocket_protocol() -> serde_json::Value {
    let close_codes: Vec<_> =
        close::ALL.iter().map(|(code, meaning)| json!({ "code": code, "meaning": meaning })).collect();
    json!({
        "description": "Text frames, one JSON object each; the full protocol is docs/stream.md. The client sends \
                        `clientMessages`; every server message is a `frame` whose `data` depends on its topic \
                        (`topics`). A bad client message is answered on `_error` and never closes the connection.",
        "clientMessages": schema_ref("StreamClientMessage"),
        "frame": schema_ref("StreamFrame"),
        "topics": {
            "kpis": schema_ref("StreamKpis"),
            "scores": schema_ref("StreamScore"),
            "segments": schema_ref("StreamSegmentMessage"),
            // The customer view of `GET /v1/customers/{id}` with `"type": "view"` put first.
            "customer:{id}": {
                "allOf": [
                    schema_ref("CustomerView"),
                    {
                        "type": "object",
                        "required": ["type"],
                        "properties": {
                            "type": { "const": "view" },
                            // When the update comes from a traced request's events.
                            "trace_id": { "type": "string", "pattern": "^[0-9a-f]{32}$" },
                        },
                    },
                ],
            },
            "_control": schema_ref("StreamControl"),
            "_error": schema_ref("StreamError"),
        },
        "closeCodes": close_codes,
    })
}

impl Modify for StreamProtocol {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Some(get) = doc.paths.paths.get_mut("/v1/stream").and_then(|item| item.get.as_mut()) else {
            // The path is in `paths(...)` above; a test checks the extension is there.
            return;
        };
        let extensions = get.extensions.get_or_insert_with(Default::default);
        extensions.merge(ExtensionsBuilder::new().add("x-websocket", websocket_protocol()).build());
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: pretty JSON, and its ETag. Built once.
fn served() -> &'static (String, String) {
    static SERVED: OnceLock<(String, String)> = OnceLock::new();
    SERVED.get_or_init(|| {
        // Plain data: encoding cannot fail.
        let text = document().to_pretty_json().unwrap_or_default();
        use sha2::Digest;
        let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(text.as_bytes())[..16]));
        (text, etag)
    })
}

/// The document as pretty JSON (what `cartpulse openapi` prints).
pub fn json() -> &'static str {
    &served().0
}

/// This document: the API contract.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "health",
    operation_id = "openapi",
    responses(
        (status = 200, description = "This OpenAPI 3.1 document.", content_type = "application/json",
         headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
    ),
    security(()),
)]
pub async fn openapi_json(req: HttpRequest) -> HttpResponse {
    let (text, etag) = served();
    // It changes only with the binary: cacheable by anyone, revalidated by ETag.
    let cache = (header::CACHE_CONTROL, "public, max-age=3600");
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return HttpResponse::NotModified().insert_header(cache).insert_header((header::ETAG, etag.as_str())).finish();
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(cache)
        .insert_header((header::ETAG, etag.as_str()))
        .body(text.as_str())
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
