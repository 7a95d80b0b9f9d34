//! `/v1/models` (admin key): the model registry over HTTP. `GET` lists the
//! versions, `POST /v1/models/{version}/promote` (optional body
//! `{"traffic": P}`) promotes, `POST /v1/models/rollback` rolls back,
//! `POST /v1/models/{version}/shadow` puts a version in shadow and
//! `POST /v1/models/shadow/clear` ends it (409 for a version in the wrong
//! state, e.g. an active one).
//! `GET /v1/models/{version}/report/{name}.png` (read key) serves a report
//! image stored with the version. Publishing uploads a model directory and
//! is command-line only (`cartpulse models publish DIR`).

use super::AppState;
use crate::models::{RegistryError, StoreError};
use crate::serving::web::auth::{AdminScope, Auth, ReadScope};
use crate::serving::web::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownVersion(_) | RegistryError::UnknownReportImage { .. } => {
                ApiError::NotFound(e.to_string())
            }
            // Mapped to 409 by the shadow handlers (`ApiError` has no conflict).
            RegistryError::WrongState(_)
            | RegistryError::TrafficOutOfRange(_)
            | RegistryError::NothingToRollBack(_)
            | RegistryError::Refused(_)
            | RegistryError::InvalidModel { .. }
            | RegistryError::AlreadyPublished { .. }
            | RegistryError::ReportDiffers { .. }
            | RegistryError::Load { .. } => ApiError::BadRequest(e.to_string()),
            RegistryError::InvalidReport { ref source, .. } => ApiError::BadRequest(format!("{e}: {source}")),
            RegistryError::Store(StoreError::Backend { .. }) => {
                tracing::warn!(error = %e, "model store unavailable");
                ApiError::unavailable("the model store is unavailable right now")
            }
            RegistryError::Store(StoreError::Location(_)) => ApiError::Internal(anyhow::Error::new(e)),
            // The version's objects are bad (corrupt, missing, conflicting): the
            // request cannot succeed as it is, and the message names the object.
            RegistryError::Store(_) => ApiError::BadRequest(e.to_string()),
            RegistryError::Database(cause) => {
                tracing::warn!(error = %cause, "model registry query failed");
                ApiError::unavailable("the database is unavailable")
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    traffic: Option<f64>,
}

/// `GET /v1/models`: every version, newest published first.
pub async fn list(_auth: Auth<AdminScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let models = state.models.list().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "models": models })))
}

/// `POST /v1/models/{version}/promote`: body empty or `{"traffic": P}`.
pub async fn promote(
    _auth: Auth<AdminScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body =
        crate::serving::web::body::read_limited(&req, payload, crate::serving::web::client::SMALL_BODY_BYTES).await?;
    let body: PromoteBody = if body.iter().all(u8::is_ascii_whitespace) {
        PromoteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("body must be empty or {{\"traffic\": P}}: {e}")))?
    };
    let change = state.models.promote(&path.into_inner(), body.traffic).await?;
    Ok(HttpResponse::Ok().json(change))
}

/// `POST /v1/models/rollback`.
pub async fn rollback(_auth: Auth<AdminScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let change = state.models.rollback().await?;
    Ok(HttpResponse::Ok().json(change))
}

/// `POST /v1/models/{version}/shadow`: puts the version in shadow (the
/// previous shadow goes back to candidate). 404 unknown version, 409 an
/// active version, 400 a version whose objects are corrupt or missing.
pub async fn shadow(
    _auth: Auth<AdminScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.models.shadow(&path.into_inner()).await {
        Ok(change) => Ok(HttpResponse::Ok().json(change)),
        Err(e) => conflict_or(e),
    }
}

/// `POST /v1/models/shadow/clear`: ends the shadow deployment (200 with
/// `changed: false` when nothing was in shadow).
pub async fn unshadow(_auth: Auth<AdminScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.models.unshadow().await {
        Ok(change) => Ok(HttpResponse::Ok().json(change)),
        Err(e) => conflict_or(e),
    }
}

/// 409 (same body as every API error) for a change the version's state
/// does not allow; the usual mapping otherwise.
fn conflict_or(e: RegistryError) -> Result<HttpResponse, ApiError> {
    match e {
        RegistryError::WrongState(msg) => Ok(HttpResponse::Conflict().json(serde_json::json!({ "error": msg }))),
        other => Err(other.into()),
    }
}

/// `GET /v1/models/{version}/report/{name}` (read scope): a report image
/// (`roc.png`, …) stored with the version, checked against its registered
/// sha256. 404 naming the images the version has for an unknown (or
/// malformed) name. A stored image that is missing or corrupt is a server
/// fault (500, logged with the object), not the client's.
pub async fn report_image(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (version, name) = path.into_inner();
    let bytes = match state.models.report_image(&version, &name).await {
        Ok(b) => b,
        Err(e @ RegistryError::Store(StoreError::Corrupt { .. } | StoreError::Missing { .. })) => {
            return Err(ApiError::Internal(anyhow::Error::new(e)));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/png"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Published images never change; private: the request was authenticated.
        .insert_header((header::CACHE_CONTROL, "private, max-age=86400, immutable"))
        .body(bytes))
}

/// `GET /v1/models/{version}/evaluation` (read key): how the version's final
/// scores did against the sessions' outcomes, overall and per day
/// (`models::evaluation`). The decision threshold is the registry's, or the
/// served model's for a model directory served directly.
pub async fn evaluation(
    _auth: Auth<ReadScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let version = path.into_inner();
    let registered = match state.models.get(&version).await {
        Ok(info) => info.metrics["threshold"].as_f64(),
        Err(RegistryError::UnknownVersion(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let threshold = registered
        .or_else(|| state.inference.threshold_of(&version).map(f64::from))
        .ok_or_else(|| ApiError::NotFound(format!("no model version {version:?} is registered or served")))?;
    let evaluation = crate::models::evaluation::evaluate(&state.db, &version, threshold).await.map_err(|e| {
        tracing::warn!(error = %e, "reading the sessions for an evaluation failed");
        ApiError::unavailable("the database is unavailable")
    })?;
    Ok(HttpResponse::Ok().json(evaluation))
}
