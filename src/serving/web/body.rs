//! Reading request bodies under a limit. Handlers take the raw payload and
//! read it here only after authentication succeeded, so an anonymous client
//! never gets a byte buffered; a declared `Content-Length` over the limit is
//! refused before reading, a stream that grows past it as soon as it does.

use super::error::ApiError;
use actix_web::{http::header, web, HttpRequest};
use futures::StreamExt;

/// The whole body, or 413 once it exceeds `limit` bytes.
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"));
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON body of at most `limit` bytes, parsed into `T`; `what` names the
/// expected shape in the error.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let body = read_limited(req, payload, limit).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("body must be {what}: {e}")))
}
