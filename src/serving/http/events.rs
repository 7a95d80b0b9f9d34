//! `POST /v1/events`: a batch of events in, a per-batch verdict out.
//!
//! Status codes: 200 when at least one event was accepted or was a duplicate
//! (the body lists any rejected ones); 422 when every event was rejected; 400
//! for a body that is not JSON / NDJSON or holds no events; 413 for a body
//! over the byte limit or with too many events; 415 for another content type;
//! 401/403 for a missing/wrong key; 503 (+ `Retry-After`) when nothing could
//! be committed — then nothing of the batch was acknowledged.

use super::AppState;
use crate::serving::ingest::parse::{parse_body, BodyError, BodyFormat, ParseLimits, Rejection};
use crate::serving::web::auth::{Auth, IngestScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use crate::telemetry::traces::Step;
use crate::telemetry::IngestEvent;
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use serde::Serialize;

/// The verdict on a batch (200, or 422 when every event was rejected).
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchReply {
    /// Events stored now.
    accepted: usize,
    /// Events stored before (same `event_id`): acknowledged, not stored twice.
    duplicates: usize,
    /// Events refused, each with its index in the request and why.
    rejected: Vec<Rejection>,
}

fn body_format(req: &HttpRequest) -> Result<BodyFormat, ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType("missing Content-Type; use application/json or application/x-ndjson".into())
        })?;
    match ct.as_str() {
        "application/json" => Ok(BodyFormat::JsonArray),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Ok(BodyFormat::Ndjson)
        }
        other => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {:?}; use application/json or application/x-ndjson",
            other.chars().take(60).collect::<String>()
        ))),
    }
}

/// Ingests a batch of events.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "ingest",
    operation_id = "post_events",
    request_body(
        description = "A JSON array of events (or one event object), or NDJSON: one event per line. \
                       Body size and event count are limited (`ingest.max_body_bytes`, `ingest.max_events_per_request`).",
        content(
            (Vec<crate::serving::ingest::parse::WireEvent> = "application/json"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 200, description = "At least one event was accepted or was a duplicate; `rejected` lists the others.", body = BatchReply),
        (status = 400, description = "The body is not JSON / NDJSON, or holds no events.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key.", body = ErrorBody),
        (status = 403, description = "The key lacks the ingest scope.", body = ErrorBody),
        (status = 413, description = "Body over the byte limit, or too many events.", body = ErrorBody),
        (status = 415, description = "Content-Type other than JSON or NDJSON.", body = ErrorBody),
        (status = 422, description = "Every event was rejected.", body = BatchReply),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "Nothing of the batch was acknowledged: retry after `Retry-After` seconds \
                                      (duplicates are ignored).", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["ingest"]), ("console_session" = ["ingest"])),
)]
pub async fn post_events(
    _auth: Auth<IngestScope>,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let result = handle(&state, &req, payload).await;
    if let Err(e) = &result {
        use actix_web::ResponseError;
        let status = e.status_code().as_u16();
        if status != 503 {
            state.metrics.record(IngestEvent::BodyRefused { status });
        }
    }
    result
}

async fn handle(state: &AppState, req: &HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let format = body_format(req)?;
    let trace = crate::telemetry::traces::http::of_request(req);
    let body = crate::serving::web::body::read_limited(req, payload, state.ingest.max_body_bytes).await?;
    let parsing = Step::start();
    let limits = ParseLimits {
        max_events: state.ingest.max_events_per_request,
        latest_time: chrono::Utc::now() + crate::config::chrono_span(state.ingest.max_future_skew_s),
    };
    // Parsing a large body is CPU work: keep it off the I/O thread.
    let parsed = web::block(move || parse_body(&body, format, limits))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("parse task failed: {e}")))?
        .map_err(|e| match e {
            BodyError::TooManyEvents { .. } => ApiError::PayloadTooLarge(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    parsing.finish(
        "ingest.parse",
        trace.as_ref(),
        vec![("cartpulse.events", parsed.events.len() as i64), ("cartpulse.rejected", parsed.rejected.len() as i64)],
    );
    if !parsed.rejected.is_empty() {
        state.metrics.record(IngestEvent::Rejected { n: parsed.rejected.len() });
    }
    if parsed.events.is_empty() {
        if parsed.rejected.is_empty() {
            return Err(ApiError::BadRequest("the body holds no events".into()));
        }
        return Ok(HttpResponse::UnprocessableEntity().json(BatchReply {
            accepted: 0,
            duplicates: 0,
            rejected: parsed.rejected,
        }));
    }
    let events = parsed.events.into_iter().map(|(_, event)| event).collect();
    let outcome = state.pipeline.submit(events, trace).await.inspect_err(|e| {
        if matches!(e, crate::serving::ingest::committer::CommitError::Overloaded) {
            state.metrics.record(IngestEvent::Overloaded);
        }
    })?;
    Ok(HttpResponse::Ok().json(BatchReply {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected: parsed.rejected,
    }))
}
