//! `/v1/models` (admin key): the model registry over HTTP (the live
//! evaluation and the A/B analysis are in `model_quality`). `GET` lists the
//! versions, `POST /v1/models/{version}/promote` (optional body
//! `{"traffic": P}`) promotes, `POST /v1/models/rollback` rolls back,
//! `POST /v1/models/{version}/shadow` puts a version in shadow and
//! `POST /v1/models/shadow/clear` ends it (409 for a version in the wrong
//! state, e.g. an active one).
//! `GET /v1/models/{version}/report/{name}.png` (read key) serves a report
//! image stored with the version. Publishing uploads a model directory and
//! is command-line only (`cartpulse models publish DIR`).

use super::AppState;
use crate::models::registry::{Change, ModelInfo, ShadowChange};
use crate::models::{RegistryError, StoreError};
use crate::serving::web::auth::{AdminScope, Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

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

/// The optional body of a promotion.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// Share of customers for an A/B split, strictly between 0 and 1;
    /// without it the version becomes the only active one.
    traffic: Option<f64>,
}

/// `GET /v1/models`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Newest published first.
    models: Vec<ModelInfo>,
}

/// `GET /v1/models`: every version, newest published first.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    operation_id = "list_models",
    summary = "Every model version, newest published first",
    responses(
        (status = 200, description = "Every version, newest published first.", body = ModelList),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope.", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
pub async fn list(_auth: Auth<AdminScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let models = state.models.list().await?;
    Ok(HttpResponse::Ok().json(ModelList { models }))
}

/// `POST /v1/models/{version}/promote`: body empty or `{"traffic": P}`.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/promote",
    tag = "models",
    operation_id = "promote_model",
    summary = "Promote a model version (alone, or an A/B share)",
    params(("version" = String, Path, description = "The model version.")),
    request_body(content = Option<PromoteBody>, content_type = "application/json", description = "Empty, or `{\"traffic\": P}` for an A/B split."),
    responses(
        (status = 200, description = "The active set before and after.", body = Change),
        (status = 400, description = "A bad body or traffic share, or a version that cannot serve (its objects are corrupt or missing, it does not load).", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 404, description = "No such version.", body = ErrorBody),
        (status = 413, description = "Body too large.", body = ErrorBody),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "The database or the model store is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
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
#[utoipa::path(
    post,
    path = "/v1/models/rollback",
    tag = "models",
    operation_id = "rollback_models",
    summary = "Roll back the last promotion",
    responses(
        (status = 200, description = "The last promotion was undone: the active set before and after.", body = Change),
        (status = 400, description = "Nothing to roll back to, or the previous version cannot serve.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 404, description = "A version named by the promotion history is gone.", body = ErrorBody),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "The database or the model store is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
pub async fn rollback(_auth: Auth<AdminScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let change = state.models.rollback().await?;
    Ok(HttpResponse::Ok().json(change))
}

/// `POST /v1/models/{version}/shadow`: puts the version in shadow (the
/// previous shadow goes back to candidate). 404 unknown version, 409 an
/// active version, 400 a version whose objects are corrupt or missing.
#[utoipa::path(
    post,
    path = "/v1/models/{version}/shadow",
    tag = "models",
    operation_id = "shadow_model",
    summary = "Put a model version in shadow",
    params(("version" = String, Path, description = "The model version.")),
    responses(
        (status = 200, description = "The shadow before and after.", body = ShadowChange),
        (status = 400, description = "A version whose objects are corrupt or missing, or that does not load.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 404, description = "No such version.", body = ErrorBody),
        (status = 409, description = "The version's state does not allow it (e.g. an active version).", body = ErrorBody),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "The database or the model store is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
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
#[utoipa::path(
    post,
    path = "/v1/models/shadow/clear",
    tag = "models",
    operation_id = "clear_shadow",
    summary = "End the shadow deployment",
    responses(
        (status = 200, description = "The shadow deployment ended (`changed: false` when nothing was in shadow).", body = ShadowChange),
        (status = 400, description = "The registry refused the change.", body = ErrorBody),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 409, description = "The shadow version's state changed meanwhile.", body = ErrorBody),
        (status = 500, description = "Internal error (logged).", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
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
        RegistryError::WrongState(msg) => Ok(HttpResponse::Conflict().json(ErrorBody { error: msg })),
        other => Err(other.into()),
    }
}

/// `GET /v1/models/{version}/report/{name}` (read scope): a report image
/// (`roc.png`, …) stored with the version, checked against its registered
/// sha256. 404 naming the images the version has for an unknown (or
/// malformed) name. A stored image that is missing or corrupt is a server
/// fault (500, logged with the object), not the client's.
#[utoipa::path(
    get,
    path = "/v1/models/{version}/report/{name}",
    tag = "models",
    operation_id = "model_report_image",
    summary = "A report image of a model version (PNG)",
    params(
        ("version" = String, Path, description = "The model version."),
        ("name" = String, Path, description = "The image's name, e.g. `roc.png` (see the version's `report` in `GET /v1/models`)."),
    ),
    responses(
        (status = 200, description = "The PNG, checked against its registered sha256.", content_type = "image/png", body = Vec<u8>),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 404, description = "No such version, or no such image (the message names the version's images).", body = ErrorBody),
        (status = 500, description = "The stored image is missing or corrupt (logged).", body = ErrorBody),
        (status = 503, description = "The database or the model store is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
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
