//! How served model versions do on live traffic (read key):
//! `GET /v1/models/{version}/evaluation` (one version against the sessions'
//! outcomes), `GET /v1/models/compare` (the A/B analysis of two versions)
//! and `GET /v1/models/{version}/drift` (the live sessions against the
//! version's training rows).
//! Both are computed from the stored sessions when asked, so every replica
//! answers the same.

use super::AppState;
use crate::models::RegistryError;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{web, HttpResponse};
use serde::Deserialize;

/// The decision threshold of `version`: the registry's, or the served
/// model's for a model directory served directly; 404 when neither knows it.
async fn threshold_of(state: &AppState, version: &str) -> Result<f64, ApiError> {
    let registered = match state.models.get(version).await {
        Ok(info) => info.metrics["threshold"].as_f64(),
        Err(RegistryError::UnknownVersion(_)) => None,
        Err(e) => return Err(e.into()),
    };
    registered
        .or_else(|| state.inference.threshold_of(version).map(f64::from))
        .ok_or_else(|| ApiError::NotFound(format!("no model version {version:?} is registered or served")))
}

fn database_unavailable(e: sea_orm::DbErr) -> ApiError {
    tracing::warn!(error = %e, "reading the scored sessions failed");
    ApiError::unavailable("the database is unavailable")
}

/// `GET /v1/models/{version}/evaluation` (read key): how the version's final
/// scores did against the sessions' outcomes, overall and per day
/// (`models::evaluation`).
#[utoipa::path(
    get,
    path = "/v1/models/{version}/evaluation",
    tag = "models",
    operation_id = "model_evaluation",
    summary = "How a model version's final scores did against the sessions' outcomes",
    params(("version" = String, Path, description = "The model version.")),
    responses(
        (status = 200, description = "The live evaluation, overall and per day of the sessions' end (UTC).", body = crate::models::evaluation::Evaluation),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "No such version is registered or served.", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn evaluation(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let version = path.into_inner();
    let threshold = threshold_of(&state, &version).await?;
    let evaluation =
        crate::models::evaluation::evaluate(&state.db, &version, threshold).await.map_err(database_unavailable)?;
    Ok(HttpResponse::Ok().json(evaluation))
}

/// The query of `GET /v1/models/compare`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Arm A (the control). Default: the active version with the larger
    /// traffic share.
    a: Option<String>,
    /// Arm B. Default: the other active version.
    b: Option<String>,
}

/// `GET /v1/models/compare` (read key): the A/B analysis of two versions
/// (`models::comparison`), by default the two active ones of an A/B split.
#[utoipa::path(
    get,
    path = "/v1/models/compare",
    tag = "models",
    operation_id = "compare_models",
    summary = "A/B analysis of two model versions on the sessions each scored",
    params(CompareQuery),
    responses(
        (status = 200, description = "Per arm: sessions, conversion, accuracy, AUC, Brier score; each difference B − A with its 95 % confidence interval and p-value; a verdict on the AUC.", body = crate::models::comparison::Comparison),
        (status = 400, description = "Only one of a and b given, both the same, or no two active versions to default to.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "A version is neither registered nor served.", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn compare(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    query: Result<web::Query<CompareQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}; expected ?a=VERSION&b=VERSION")))?;
    let (a, b) = match (query.0.a, query.0.b) {
        (Some(a), Some(b)) => (a, b),
        (None, None) => crate::models::comparison::active_pair(&state.models).await?.ok_or_else(|| {
            ApiError::BadRequest(
                "exactly two versions must be active to compare them by default; name the two \
                 (?a=VERSION&b=VERSION) or split traffic between two (promote with a traffic share)"
                    .into(),
            )
        })?,
        _ => return Err(ApiError::BadRequest("give both a and b, or neither (the two active versions)".into())),
    };
    if a == b {
        return Err(ApiError::BadRequest(format!("a and b are both {a:?}; compare two different versions")));
    }
    let (ta, tb) = (threshold_of(&state, &a).await?, threshold_of(&state, &b).await?);
    let comparison = crate::models::comparison::compare_versions(&state.db, (&a, ta), (&b, tb))
        .await
        .map_err(database_unavailable)?;
    Ok(HttpResponse::Ok().json(comparison))
}

/// The query of `GET /v1/models/{version}/drift`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DriftQuery {
    /// The window in seconds (1 to 7,776,000, 90 days); default
    /// `inference.drift_window_s` (a day).
    window_s: Option<u64>,
}

/// `GET /v1/models/{version}/drift` (read key): the PSI of every session
/// feature over the sessions closed in the window against the version's
/// training rows, and of its final scores against its out-of-fold scores
/// (`models::drift`).
#[utoipa::path(
    get,
    path = "/v1/models/{version}/drift",
    tag = "models",
    operation_id = "model_drift",
    summary = "Drift of the live sessions and scores away from a version's training distribution",
    params(("version" = String, Path, description = "The model version."), DriftQuery),
    responses(
        (status = 200, description = "Per feature and for the score: PSI and whether it is flagged (PSI > 0.2 over at least 100 sessions).", body = crate::models::drift::DriftReport),
        (status = 400, description = "A bad window.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "No such version is registered or served, or its manifest has no training distribution (trained before drift was recorded).", body = ErrorBody),
        (status = 503, description = "The database or the model store is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn drift(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Result<web::Query<DriftQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    const MAX_WINDOW_S: u64 = 90 * 86_400;
    let query = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}; expected ?window_s=SECONDS")))?;
    let window = match query.0.window_s {
        None => state.drift_window,
        Some(s) if (1..=MAX_WINDOW_S).contains(&s) => std::time::Duration::from_secs(s),
        Some(s) => return Err(ApiError::BadRequest(format!("window_s must be 1 to {MAX_WINDOW_S} seconds, not {s}"))),
    };
    let version = path.into_inner();
    let model = match state.inference.model_of(&version) {
        Some(m) => m,
        None => match state.models.model(&version).await {
            Ok(m) => m,
            Err(RegistryError::UnknownVersion(_)) => {
                return Err(ApiError::NotFound(format!("no model version {version:?} is registered or served")))
            }
            Err(e) => return Err(e.into()),
        },
    };
    let reference = model.manifest.reference.as_ref().ok_or_else(|| {
        ApiError::NotFound(format!(
            "the manifest of {version} has no training distribution (it was trained before drift was recorded); \
             train and publish it again to follow its drift"
        ))
    })?;
    let live = crate::models::drift::LiveSample::read(&state.db, window).await.map_err(database_unavailable)?;
    Ok(HttpResponse::Ok().json(live.report(&version, reference)))
}
