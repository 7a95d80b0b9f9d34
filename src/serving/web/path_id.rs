//! `PathId<T>`: the `{id}` segment of a route, parsed into its id newtype at
//! the edge, so a handler never sees an id that breaks the id rules.

use super::error::ApiError;
use actix_web::{dev::Payload, FromRequest, HttpRequest};
use actors::event::Id;
use std::future::{ready, Ready};

/// The route's `{id}`, parsed; a malformed one is 400 naming what is wrong.
pub struct PathId<T>(pub T);

impl<T: Id> FromRequest for PathId<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let raw = req.match_info().get("id").unwrap_or_default();
        ready(raw.parse::<T>().map(PathId).map_err(|e| ApiError::BadRequest(format!("{} id {e}", T::WHAT))))
    }
}
