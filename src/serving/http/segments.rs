//! `/v1/segments`: the segmentation versions over HTTP. `GET` (read key)
//! lists every version with its figures, segment profiles and which one is
//! active; `POST /v1/segments/{version}/activate` (admin key) activates one.
//! Activation is stored in the database (so every replica's watcher follows
//! it) and also put into this process's slot at once, so the actors here
//! reassign on their next tick without waiting for a poll.

use super::AppState;
use crate::segments::assign::{self, ActivateError};
use crate::segments::versions;
use crate::serving::web::auth::{AdminScope, Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{web, HttpResponse};
use serde::Serialize;

/// `GET /v1/segments`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SegmentationList {
    /// The active version, if any.
    active: Option<i32>,
    /// Every version, newest first.
    segmentations: Vec<versions::VersionInfo>,
}

/// `POST /v1/segments/{version}/activate`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Activated {
    active: i32,
    /// The version's segment names, by segment index.
    names: Vec<String>,
}

impl From<ActivateError> for ApiError {
    fn from(e: ActivateError) -> Self {
        match e {
            ActivateError::UnknownVersion(_) => ApiError::NotFound(e.to_string()),
            ActivateError::Unusable { .. } => ApiError::Unprocessable(e.to_string()),
            ActivateError::Database(cause) => {
                tracing::warn!(error = %cause, "segmentation activation failed");
                ApiError::unavailable("the database is unavailable")
            }
        }
    }
}

/// `GET /v1/segments`: `{"active": V | null, "segmentations": [...]}`, newest first.
#[utoipa::path(
    get,
    path = "/v1/segments",
    tag = "segments",
    operation_id = "list_segmentations",
    summary = "Every segmentation version and the active one",
    responses(
        (status = 200, description = "Every version, newest first, and the active one.", body = SegmentationList),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn list(_auth: Auth<ReadScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = versions::list(&state.db).await.map_err(|e| {
        tracing::warn!(error = %format!("{e:#}"), "listing segmentations failed");
        ApiError::unavailable("the database is unavailable")
    })?;
    let active = rows.iter().find(|r| r.active).map(|r| r.version);
    Ok(HttpResponse::Ok().json(SegmentationList { active, segmentations: rows }))
}

/// `POST /v1/segments/{version}/activate`: `{"active": V, "names": [...]}`;
/// 404 for a version that does not exist, 422 for one this build cannot use.
#[utoipa::path(
    post,
    path = "/v1/segments/{version}/activate",
    tag = "segments",
    operation_id = "activate_segmentation",
    summary = "Activate a segmentation version",
    params(("version" = String, Path, description = "The segmentation version (an integer).")),
    responses(
        (status = 200, description = "Activated; every replica follows.", body = Activated),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the admin scope, or a console request lacks its CSRF token.", body = ErrorBody),
        (status = 404, description = "No such version.", body = ErrorBody),
        (status = 422, description = "A version this build cannot use.", body = ErrorBody),
        (status = 503, description = "The database is unavailable; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["admin"]), ("console_session" = ["admin"])),
)]
pub async fn activate(
    _auth: Auth<AdminScope>,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    // Versions are integers; anything else names no version.
    let version: i32 = raw.parse().map_err(|_| ApiError::NotFound(format!("no segmentation version {raw:?}")))?;
    let seg = assign::activate(&state.db, version).await?;
    let names = seg.names().to_vec();
    state.segments.set(Some(seg));
    Ok(HttpResponse::Ok().json(Activated { active: version, names }))
}
