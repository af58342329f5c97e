//! What the client gets when the session store fails.

use std::fmt;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};

use crate::error::StoreErrorKind;

/// Decides the response when the store fails during a request.
///
/// The layer calls it instead of sending the handler's response, whatever that was,
/// so that a handler which ignored the error cannot turn a store outage into a new
/// session or a cleared cookie. The body is the response body type's default.
///
/// ```
/// use http::{Response, StatusCode};
/// use session_core::{OnStoreError, StoreErrorKind};
///
/// // A closure is a policy.
/// let policy = |_: StoreErrorKind| {
///     Response::builder().status(StatusCode::BAD_GATEWAY).body(()).unwrap()
/// };
/// assert_eq!(policy.response(StoreErrorKind::Unavailable).status(), StatusCode::BAD_GATEWAY);
/// ```
pub trait OnStoreError: Send + Sync + 'static {
    /// The response for a failure of this kind.
    fn response(&self, kind: StoreErrorKind) -> Response<()>;
}

impl<F> OnStoreError for F
where
    F: Fn(StoreErrorKind) -> Response<()> + Send + Sync + 'static,
{
    fn response(&self, kind: StoreErrorKind) -> Response<()> {
        self(kind)
    }
}

/// The default policy: `503 Service Unavailable` with `Retry-After`, except for a
/// session too large for its cookie ([`StoreErrorKind::TooLarge`]), which retrying
/// cannot mend: `500 Internal Server Error`.
///
/// ```
/// use std::time::Duration;
/// use session_core::{DefaultOnStoreError, OnStoreError, StoreErrorKind};
///
/// let policy = DefaultOnStoreError::new().with_retry_after(Duration::from_secs(2));
/// let response = policy.response(StoreErrorKind::TimedOut);
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["retry-after"], "2");
/// assert_eq!(policy.response(StoreErrorKind::TooLarge).status(), 500);
/// ```
#[derive(Clone, Copy)]
pub struct DefaultOnStoreError {
    retry_after: Duration,
}

impl DefaultOnStoreError {
    /// The default policy, advising a retry after one second.
    pub fn new() -> Self {
        Self {
            retry_after: Duration::from_secs(1),
        }
    }

    /// Sets the `Retry-After` advice, in whole seconds.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }
}

impl Default for DefaultOnStoreError {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DefaultOnStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultOnStoreError")
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl OnStoreError for DefaultOnStoreError {
    fn response(&self, kind: StoreErrorKind) -> Response<()> {
        let mut response = Response::new(());
        if kind == StoreErrorKind::TooLarge {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after.as_secs()));
        response
    }
}
