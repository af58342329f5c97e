//! [`AuthManagerLayer`]: a session-kit [`SessionLayer`] that also gives each request an
//! [`AuthSession`], built as axum-login builds its own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{Request, Response, StatusCode};
use axum_login::AuthnBackend;
use session_core::{Session, SessionError, SessionLayer, SessionService};
use tower_layer::Layer;
use tower_service::Service;

use crate::auth_session::{AuthSession, Error};

/// Builds an [`AuthManagerLayer`] from a backend and a session-kit [`SessionLayer`]:
/// the session layer's settings (store, cookie, timeouts, the cap of sessions per
/// user) are the auth layer's.
///
/// ```
/// use axum_login::{AuthUser, AuthnBackend, UserId};
/// use session_axum_login::AuthManagerLayerBuilder;
/// use session_core::SessionLayer;
/// use session_memory::MemoryStore;
///
/// #[derive(Clone, Debug)]
/// struct User {
///     id: i64,
///     password_hash: String,
/// }
///
/// impl AuthUser for User {
///     type Id = i64;
///     fn id(&self) -> i64 {
///         self.id
///     }
///     fn session_auth_hash(&self) -> &[u8] {
///         self.password_hash.as_bytes()
///     }
/// }
///
/// #[derive(Clone)]
/// struct Backend;
///
/// impl AuthnBackend for Backend {
///     type User = User;
///     type Credentials = (String, String);
///     type Error = std::convert::Infallible;
///
///     async fn authenticate(&self, _: Self::Credentials) -> Result<Option<User>, Self::Error> {
///         Ok(None)
///     }
///     async fn get_user(&self, _: &UserId<Self>) -> Result<Option<User>, Self::Error> {
///         Ok(None)
///     }
/// }
///
/// let session_layer = SessionLayer::builder(MemoryStore::new())
///     .with_max_sessions_per_user(3)
///     .build()
///     .expect("a valid configuration");
/// let auth_layer = AuthManagerLayerBuilder::new(Backend, session_layer).build();
/// let app: axum::Router = axum::Router::new().layer(auth_layer);
/// # let _ = app;
/// ```
#[derive(Clone)]
#[must_use]
pub struct AuthManagerLayerBuilder<Backend> {
    backend: Backend,
    session_layer: SessionLayer,
}

impl<Backend: AuthnBackend> AuthManagerLayerBuilder<Backend> {
    /// A builder of the layer that serves `backend`'s users from `session_layer`'s
    /// sessions.
    pub fn new(backend: Backend, session_layer: SessionLayer) -> Self {
        Self {
            backend,
            session_layer,
        }
    }

    /// The layer.
    pub fn build(self) -> AuthManagerLayer<Backend> {
        AuthManagerLayer {
            backend: self.backend,
            session_layer: self.session_layer,
        }
    }
}

impl<Backend> fmt::Debug for AuthManagerLayerBuilder<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthManagerLayerBuilder")
            .field("session_layer", &self.session_layer)
            .finish_non_exhaustive()
    }
}

/// The session layer and, inside it, an [`AuthSession`] for every request; made by
/// [`AuthManagerLayerBuilder`].
#[derive(Clone)]
pub struct AuthManagerLayer<Backend> {
    backend: Backend,
    session_layer: SessionLayer,
}

impl<Backend> fmt::Debug for AuthManagerLayer<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthManagerLayer")
            .field("session_layer", &self.session_layer)
            .finish_non_exhaustive()
    }
}

impl<S, Backend: AuthnBackend> Layer<S> for AuthManagerLayer<Backend> {
    type Service = SessionService<AuthManager<S, Backend>>;

    fn layer(&self, inner: S) -> Self::Service {
        self.session_layer.layer(AuthManager {
            inner,
            backend: self.backend.clone(),
        })
    }
}

/// The service inside the session layer that loads the request's user and puts an
/// [`AuthSession`] in its extensions.
#[derive(Clone)]
pub struct AuthManager<S, Backend> {
    inner: S,
    backend: Backend,
}

impl<S, Backend> fmt::Debug for AuthManager<S, Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthManager").finish_non_exhaustive()
    }
}

impl<ReqBody, ResBody, S, Backend> Service<Request<ReqBody>> for AuthManager<S, Backend>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send,
    Backend: AuthnBackend + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service polled ready is the one to call; a clone stays for next time.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let backend = self.backend.clone();
        Box::pin(async move {
            let Some(session) = request.extensions().get::<Session>().cloned() else {
                tracing::error!("AuthManager runs only inside the session layer");
                return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
            };
            match AuthSession::from_session(session, backend).await {
                Ok(auth_session) => {
                    request.extensions_mut().insert(auth_session);
                    inner.call(request).await
                }
                // The session layer answers with its error policy in place of this.
                Err(Error::Session(SessionError::Store(_))) => {
                    Ok(status(StatusCode::SERVICE_UNAVAILABLE))
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not load the session's user");
                    Ok(status(StatusCode::INTERNAL_SERVER_ERROR))
                }
            }
        })
    }
}

fn status<B: Default>(status: StatusCode) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
}
