//! The service: where each request gets its session and the response its cookie.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::error::StoreErrorKind;
use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::session::Session;
use crate::transport::IdUpdate;

/// Wraps a service so that every request carries a [`Session`] in its extensions;
/// made by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Parsing the id is all the work done before the handler: the store is asked
        // only if the handler uses the session.
        let incoming = self.shared.incoming(request.headers());
        let session = Session::new(self.shared.clone(), incoming);
        request.extensions_mut().insert(session.clone());
        ResponseFuture::new(self.inner.call(request), session)
    }
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Sets the id on the response, or replaces the response with the error policy's if
/// the store failed.
pub(crate) fn respond<B: Default>(
    session: &Session,
    mut response: Response<B>,
    outcome: Result<Option<IdUpdate>, StoreErrorKind>,
) -> Response<B> {
    match outcome {
        Ok(None) => response,
        Ok(Some(update)) => {
            let shared = session.shared();
            match shared.transport.write(response.headers_mut(), &update) {
                Ok(()) => response,
                Err(kind) => shared.on_store_error.response(kind).map(|()| B::default()),
            }
        }
        Err(kind) => session
            .shared()
            .on_store_error
            .response(kind)
            .map(|()| B::default()),
    }
}
