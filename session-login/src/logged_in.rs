//! [`LoggedIn`]: the logged-in user, in the request's extensions behind the guard,
//! and as an axum extractor.

#[cfg(feature = "axum")]
use std::sync::Arc;

#[cfg(feature = "axum")]
use axum_core::{
    body::Body,
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
#[cfg(feature = "axum")]
use http::{request::Parts, StatusCode};
#[cfg(feature = "axum")]
use session_core::Session;

#[cfg(feature = "axum")]
use crate::guard::Config;

/// The id of the logged-in user: the guard puts it in the extensions of the requests
/// it lets through. As an axum extractor (feature `axum`) it rejects a request whose
/// session has no user as [`RequireLoginLayer`](crate::RequireLoginLayer) does: a
/// redirect to the login page for a page, a 401 for an API (with the guard's
/// settings when the guard is on the route, else to `/login`).
///
/// ```
/// use axum::{routing::get, Router};
/// use session_core::SessionLayer;
/// use session_login::LoggedIn;
/// use session_memory::MemoryStore;
///
/// async fn dashboard(LoggedIn(user): LoggedIn) -> String {
///     format!("hello, {user}")
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(dashboard))
///     .layer(SessionLayer::new(MemoryStore::new()));
/// # let _ = app;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedIn(pub String);

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl<S: Send + Sync> FromRequestParts<S> for LoggedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Behind the guard, which has read the user already.
        if let Some(logged_in) = parts.extensions.get::<LoggedIn>() {
            return Ok(logged_in.clone());
        }
        let session = Session::from_request_parts(parts, &())
            .await
            .map_err(IntoResponse::into_response)?;
        match session.user_id().await {
            Ok(Some(user)) => Ok(LoggedIn(user)),
            Ok(None) => {
                let config = parts.extensions.get::<Arc<Config>>().cloned();
                let config = config.unwrap_or_default();
                Err(config.refusal::<Body>(&parts.method, &parts.uri, &parts.headers))
            }
            // The session layer answers with its error policy in place of this.
            Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        }
    }
}
