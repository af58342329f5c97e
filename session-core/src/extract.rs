//! The axum extractor.

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::error::SessionError;
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

/// The rejection when a handler asks for a [`Session`] on a route that the
/// [`SessionLayer`](crate::SessionLayer) does not wrap: a 500 that names the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSessionLayer;

impl MissingSessionLayer {
    const MESSAGE: &'static str = "the `Session` extractor needs `SessionLayer`: add \
        `.layer(SessionLayer::new(store))` to the router, after the routes that use it";
}

impl std::fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, Self::MESSAGE).into_response()
    }
}

/// A store failure becomes a 503 (the layer then sends its error policy's response
/// in its place); a value that does not (de)serialise, a 500; an operation the store
/// does not support, a 501; data no store can hold, a 400.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match self {
            SessionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Value(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SessionError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            SessionError::Refused(refusal) if refusal.is_too_large() => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            SessionError::Refused(_) => StatusCode::BAD_REQUEST,
        };
        (status, status.canonical_reason().unwrap_or_default()).into_response()
    }
}
