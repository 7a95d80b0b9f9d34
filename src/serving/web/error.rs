//! The HTTP boundary's error type: every failure a handler can return, mapped
//! to a status code and a JSON body `{"error": "..."}`. Internal causes are
//! logged with their chain and never shown to clients.

use crate::keys::AuthError;
use crate::serving::ingest::committer::CommitError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use actors::RuntimeError;

/// The body of every error answer (and of 409 from the model registry).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read; internal causes are never shown.
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// Well-formed JSON whose content is invalid.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{reason}")]
    Unavailable { reason: String, retry_after_s: u32 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        ApiError::Unavailable { reason: reason.into(), retry_after_s: 1 }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        match self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
            }
            ApiError::Unavailable { reason, retry_after_s } => {
                tracing::warn!(%reason, "service unavailable");
                r.insert_header((header::RETRY_AFTER, retry_after_s.to_string()));
            }
            ApiError::Unauthorized(_) => {
                r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        r.json(ErrorBody { error: self.to_string() })
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Invalid => ApiError::Unauthorized(e.to_string()),
            AuthError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            AuthError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "key lookup failed");
                ApiError::unavailable("cannot check the API key right now")
            }
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Overloaded => {
                ApiError::unavailable("ingest is over capacity; nothing was stored, retry shortly")
            }
            CommitError::Database(cause) => {
                tracing::warn!(error = %cause, "commit failed");
                ApiError::unavailable("the database is unavailable; nothing was stored, retry shortly")
            }
            CommitError::Stopped => ApiError::unavailable("the service is shutting down; nothing was stored"),
            e @ CommitError::Encoding(_) => ApiError::Internal(e.into()),
            // Logged (once per request) where it happened.
            CommitError::Queue(_) => {
                ApiError::unavailable("the event queue (Redis) is unavailable; nothing was acknowledged, retry shortly")
            }
            // Only processors' fenced commits get it; no request waits on those.
            CommitError::Fenced(_) => ApiError::unavailable("nothing was stored, retry shortly"),
            CommitError::NotReplicated { .. } => ApiError::unavailable(
                "the event queue's replicas did not confirm the events in time; nothing was acknowledged, resend \
                 (duplicates are ignored)",
            ),
        }
    }
}

impl From<crate::serving::inference::InferenceError> for ApiError {
    fn from(e: crate::serving::inference::InferenceError) -> Self {
        use crate::serving::inference::InferenceError as E;
        match e {
            E::NoModel => ApiError::unavailable("no model is active; promote one with `cartpulse models promote`"),
            E::Overloaded(_) => ApiError::unavailable("the inference pool is over capacity; retry shortly"),
            E::Stopped => ApiError::unavailable("the service is shutting down"),
            E::Worker(cause) => ApiError::Internal(anyhow::anyhow!("inference worker failed: {cause}")),
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        tracing::warn!(error = %e, "runtime read failed");
        ApiError::unavailable("customer state is unavailable right now")
    }
}
