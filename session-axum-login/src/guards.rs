//! The route guards, as axum-login writes them: [`login_required!`](crate::login_required),
//! [`permission_required!`](crate::permission_required) and
//! [`predicate_required!`](crate::predicate_required), each a `route_layer` that lets a
//! request through when its [`AuthSession`](crate::AuthSession) passes, and otherwise
//! answers with a status or redirects to the login page with the page asked for in a
//! query parameter.

use axum::http::Uri;
use axum::response::{IntoResponse, Redirect, Response};
use session_login::{login_url, safe_next};

/// The redirect to `login_url` for a request of `asked_for`: a `307 Temporary
/// Redirect`, as axum-login's guards answer, with the page in `redirect_field` when
/// it is a path on this site (the login handler checks it again with
/// [`safe_next`](session_login::safe_next) before following it).
#[doc(hidden)]
pub fn login_redirect(login: &str, redirect_field: &str, asked_for: &Uri) -> Response {
    let asked_for = asked_for.path_and_query().map_or("/", |p| p.as_str());
    let location = match safe_next(asked_for) {
        Some(next) => login_url(login, redirect_field, next),
        None => login.to_owned(),
    };
    Redirect::temporary(&location).into_response()
}

/// A `route_layer` that lets through requests of a logged-in user. Without one, the
/// request gets `401 Unauthorized`, or with `login_url` a redirect there with the page
/// asked for in `next` (or the `redirect_field` given).
///
/// ```
/// # use axum_login::{AuthUser, AuthnBackend, UserId};
/// # #[derive(Clone, Debug)]
/// # struct User { id: i64 }
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { self.id }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = ();
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// use axum::{routing::get, Router};
/// use session_axum_login::login_required;
///
/// let app: Router = Router::new()
///     .route("/api/me", get(|| async { "me" }))
///     .route_layer(login_required!(Backend))
///     .route("/protected", get(|| async { "protected" }))
///     .route_layer(login_required!(Backend, login_url = "/login"));
/// # let _ = app;
/// ```
#[macro_export]
macro_rules! login_required {
    ($backend_type:ty) => {{
        async fn is_authenticated(auth_session: $crate::AuthSession<$backend_type>) -> bool {
            auth_session.user.is_some()
        }

        $crate::predicate_required!(
            is_authenticated,
            $crate::axum::http::StatusCode::UNAUTHORIZED
        )
    }};

    ($backend_type:ty, login_url = $login_url:expr, redirect_field = $redirect_field:expr) => {{
        async fn is_authenticated(auth_session: $crate::AuthSession<$backend_type>) -> bool {
            auth_session.user.is_some()
        }

        $crate::predicate_required!(
            is_authenticated,
            login_url = $login_url,
            redirect_field = $redirect_field
        )
    }};

    ($backend_type:ty, login_url = $login_url:expr) => {
        $crate::login_required!(
            $backend_type,
            login_url = $login_url,
            redirect_field = "next"
        )
    };
}

/// A `route_layer` that lets through requests of a user with every permission
/// listed (the user's own or its groups', as the backend's
/// [`AuthzBackend`](crate::AuthzBackend) says). Otherwise `403 Forbidden`, or with
/// `login_url` a redirect there. A backend error is logged and refuses the request.
///
/// ```
/// # use axum_login::{AuthUser, AuthnBackend, UserId};
/// # #[derive(Clone, Debug)]
/// # struct User { id: i64 }
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { self.id }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = ();
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// # impl axum_login::AuthzBackend for Backend { type Permission = String; }
/// use axum::{routing::get, Router};
/// use session_axum_login::permission_required;
///
/// let app: Router = Router::new()
///     .route("/restricted", get(|| async { "restricted" }))
///     .route_layer(permission_required!(Backend, login_url = "/login", "restricted.read"))
///     .route("/api/audit", get(|| async { "audit" }))
///     .route_layer(permission_required!(Backend, "audit.read", "audit.export"));
/// # let _ = app;
/// ```
#[macro_export]
macro_rules! permission_required {
    ($backend_type:ty, login_url = $login_url:expr, redirect_field = $redirect_field:expr, $($perm:expr),+ $(,)?) => {{
        async fn is_authorized(auth_session: $crate::AuthSession<$backend_type>) -> bool {
            $crate::has_all_permissions!(auth_session, $($perm),+)
        }

        $crate::predicate_required!(
            is_authorized,
            login_url = $login_url,
            redirect_field = $redirect_field
        )
    }};

    ($backend_type:ty, login_url = $login_url:expr, $($perm:expr),+ $(,)?) => {
        $crate::permission_required!(
            $backend_type,
            login_url = $login_url,
            redirect_field = "next",
            $($perm),+
        )
    };

    ($backend_type:ty, $($perm:expr),+ $(,)?) => {{
        async fn is_authorized(auth_session: $crate::AuthSession<$backend_type>) -> bool {
            $crate::has_all_permissions!(auth_session, $($perm),+)
        }

        $crate::predicate_required!(is_authorized, $crate::axum::http::StatusCode::FORBIDDEN)
    }};
}

/// Whether the auth session's user has every permission listed.
#[doc(hidden)]
#[macro_export]
macro_rules! has_all_permissions {
    ($auth_session:ident, $($perm:expr),+) => {{
        let mut granted = $auth_session.user.is_some();
        $(
            if granted {
                granted = match $auth_session.has_perm($perm.into()).await {
                    Ok(has) => has,
                    Err(err) => {
                        $crate::tracing::error!(error = %err, "could not read the user's permissions");
                        false
                    }
                };
            }
        )+
        granted
    }};
}

/// A `route_layer` that lets through requests whose
/// [`AuthSession`](crate::AuthSession) passes `predicate` (an async function of it
/// that returns `bool`); the others get `alternative` (any response), or a redirect
/// to `login_url`.
///
/// ```
/// # use axum_login::{AuthUser, AuthnBackend, UserId};
/// # #[derive(Clone, Debug)]
/// # struct User { id: i64 }
/// # impl AuthUser for User {
/// #     type Id = i64;
/// #     fn id(&self) -> i64 { self.id }
/// #     fn session_auth_hash(&self) -> &[u8] { &[] }
/// # }
/// # #[derive(Clone)]
/// # struct Backend;
/// # impl AuthnBackend for Backend {
/// #     type User = User;
/// #     type Credentials = ();
/// #     type Error = std::convert::Infallible;
/// #     async fn authenticate(&self, _: ()) -> Result<Option<User>, Self::Error> { Ok(None) }
/// #     async fn get_user(&self, _: &i64) -> Result<Option<User>, Self::Error> { Ok(None) }
/// # }
/// use axum::{http::StatusCode, routing::get, Router};
/// use session_axum_login::{predicate_required, AuthSession};
///
/// async fn is_admin(auth_session: AuthSession<Backend>) -> bool {
///     auth_session.user.is_some_and(|user| user.id == 1)
/// }
///
/// let app: Router = Router::new()
///     .route("/admin", get(|| async { "admin" }))
///     .route_layer(predicate_required!(is_admin, StatusCode::NOT_FOUND));
/// # let _ = app;
/// ```
#[macro_export]
macro_rules! predicate_required {
    ($predicate:expr, $alternative:expr) => {{
        use $crate::axum::response::IntoResponse as _;

        $crate::axum::middleware::from_fn(
            |auth_session: $crate::AuthSession<_>,
             request: $crate::axum::extract::Request,
             next: $crate::axum::middleware::Next| async move {
                if $predicate(auth_session).await {
                    next.run(request).await
                } else {
                    $alternative.into_response()
                }
            },
        )
    }};

    ($predicate:expr, login_url = $login_url:expr, redirect_field = $redirect_field:expr) => {{
        $crate::axum::middleware::from_fn(
            |auth_session: $crate::AuthSession<_>,
             $crate::axum::extract::OriginalUri(asked_for): $crate::axum::extract::OriginalUri,
             request: $crate::axum::extract::Request,
             next: $crate::axum::middleware::Next| async move {
                if $predicate(auth_session).await {
                    next.run(request).await
                } else {
                    $crate::__login_redirect($login_url, $redirect_field, &asked_for)
                }
            },
        )
    }};

    ($predicate:expr, login_url = $login_url:expr) => {
        $crate::predicate_required!($predicate, login_url = $login_url, redirect_field = "next")
    };
}
