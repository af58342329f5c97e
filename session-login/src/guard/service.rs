//! The guard's service: where a request's login is checked.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use session_core::Session;
use tower_service::Service;

use super::{Config, ResponseFuture};
use crate::credentials::still_hold;
use crate::LoggedIn;

/// Lets only requests of logged-in sessions through to `S`; made by
/// [`RequireLoginLayer`](super::RequireLoginLayer).
#[derive(Clone)]
pub struct RequireLogin<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> RequireLogin<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireLogin<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service made ready is the one that serves the request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let session = request.extensions().get::<Session>().cloned();
        // For `LoggedIn` to reject as the guard does.
        request.extensions_mut().insert(config.clone());
        ResponseFuture::new(async move {
            let Some(session) = session else {
                return Ok(missing_session_layer());
            };
            let user = match session.user_id().await {
                Ok(Some(user)) => user,
                Ok(None) => {
                    return Ok(config.refusal(request.method(), request.uri(), request.headers()))
                }
                // The session layer answers with its error policy in place of this.
                Err(_) => return Ok(status(StatusCode::SERVICE_UNAVAILABLE, String::new())),
            };
            if let Some(credentials) = &config.credentials {
                match still_hold(&session, &user, credentials.as_ref()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Ok(config.refusal(
                            request.method(),
                            request.uri(),
                            request.headers(),
                        ))
                    }
                    Err(_) => return Ok(status(StatusCode::SERVICE_UNAVAILABLE, String::new())),
                }
            }
            request.extensions_mut().insert(LoggedIn(user));
            inner.call(request).await
        })
    }
}

fn missing_session_layer<B: From<String>>() -> Response<B> {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "`RequireLoginLayer` needs `SessionLayer` around it: add `.layer(SessionLayer::new(store))` \
         after `.route_layer(RequireLoginLayer::new(…))`"
            .to_owned(),
    )
}

fn status<B: From<String>>(code: StatusCode, body: String) -> Response<B> {
    let mut response = Response::new(B::from(body));
    *response.status_mut() = code;
    response
}

impl<S: fmt::Debug> fmt::Debug for RequireLogin<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLogin")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
