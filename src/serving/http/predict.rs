//! `POST /v1/predict`: scores feature vectors given in the request with the
//! served model (through the same pool the session actors use).
//!
//! Body: `{"features": {<17 UCI columns>}}` or `{"rows": [{...}, ...]}`, with
//! an optional `"customer_id"` that picks the arm of an A/B split the way a
//! session of that customer would be scored.

use super::AppState;
use crate::serving::inference::request::features_from_json;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most rows in one request.
const MAX_ROWS: usize = 10_000;

/// Either `features` (one row) or `rows` (up to 10,000), not both.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Picks the arm of an A/B split the way a session of this customer would be scored.
    customer_id: Option<String>,
    /// One row: the 17 UCI Online Shoppers features under the file's column names.
    features: Option<Map<String, Value>>,
    /// Several rows, each like `features`.
    rows: Option<Vec<Map<String, Value>>>,
}

/// The scores, one per row in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PredictReply {
    /// The version that scored the rows.
    model_version: String,
    /// The model's decision threshold: `buys` is `probability >= threshold`.
    threshold: f64,
    scores: Vec<Score>,
}

/// One row's score.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Score {
    /// Purchase probability in [0, 1].
    probability: f64,
    buys: bool,
}

/// Largest body: 10,000 rows of 17 features fit.
const MAX_BODY_BYTES: usize = 8 << 20;

/// Scores feature rows with the served model.
#[utoipa::path(
    post,
    path = "/v1/predict",
    tag = "models",
    operation_id = "predict",
    request_body(content = PredictRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One score per row.", body = PredictReply),
        (status = 400, description = "The body is not the JSON object described.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 413, description = "Body over 8 MiB.", body = ErrorBody),
        (status = 422, description = "Missing, empty or conflicting rows; too many rows; a bad feature value or customer_id.", body = ErrorBody),
        (status = 500, description = "An inference worker failed (logged).", body = ErrorBody),
        (status = 503, description = "No model is active, or the inference pool is over capacity or stopping; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn predict(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    http: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let req: PredictRequest = crate::serving::web::body::read_json(
        &http,
        payload,
        MAX_BODY_BYTES,
        "JSON {\"features\": {...}} or {\"rows\": [...]}",
    )
    .await?;
    let objects = match (req.features, req.rows) {
        (Some(f), None) => vec![f],
        (None, Some(rows)) if !rows.is_empty() => rows,
        (None, Some(_)) => return Err(ApiError::Unprocessable("rows is empty".into())),
        (Some(_), Some(_)) => return Err(ApiError::Unprocessable("give either features or rows, not both".into())),
        (None, None) => return Err(ApiError::Unprocessable("missing features (one object) or rows (a list)".into())),
    };
    if objects.len() > MAX_ROWS {
        return Err(ApiError::Unprocessable(format!("{} rows; at most {MAX_ROWS} per request", objects.len())));
    }
    if let Some(c) = &req.customer_id {
        actors::event::validate_id(c).map_err(|r| ApiError::Unprocessable(format!("customer_id {r}")))?;
    }
    let mut rows = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        rows.push(features_from_json(o).map_err(|e| ApiError::Unprocessable(format!("row {i}: {e}")))?);
    }
    let trace = crate::telemetry::traces::http::of_request(&http);
    let p = state.inference.predict_traced(req.customer_id.as_deref(), rows, trace).await?;
    // Widened to f64 as the answer always had them (the f64 of the f32 score).
    let scores = p.probabilities.iter().map(|&x| Score { probability: f64::from(x), buys: x >= p.threshold }).collect();
    Ok(HttpResponse::Ok().json(PredictReply {
        model_version: p.model_version.to_string(),
        threshold: f64::from(p.threshold),
        scores,
    }))
}
