//! `POST /v1/predict`: scores feature vectors given in the request with the
//! served model (through the same pool the session actors use).
//!
//! Body: `{"features": {<17 UCI columns>}}` or `{"rows": [{...}, ...]}`, with
//! an optional `"customer_id"` that picks the arm of an A/B split the way a
//! session of that customer would be scored.

use super::AppState;
use crate::serving::inference::request::features_from_json;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most rows in one request.
const MAX_ROWS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    customer_id: Option<String>,
    features: Option<Map<String, Value>>,
    rows: Option<Vec<Map<String, Value>>>,
}

/// Largest body: 10,000 rows of 17 features fit.
const MAX_BODY_BYTES: usize = 8 << 20;

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
    let scores: Vec<Value> =
        p.probabilities.iter().map(|&x| serde_json::json!({ "probability": x, "buys": x >= p.threshold })).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "model_version": &*p.model_version,
        "threshold": p.threshold,
        "scores": scores,
    })))
}
