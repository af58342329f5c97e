//! The guard's configuration: where the login page is, and which requests are an
//! API's.

use std::fmt;
use std::sync::Arc;

use http::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use tower_layer::Layer;

use super::RequireLogin;
use crate::credentials::Credentials;
use crate::next::{login_url, safe_next};

/// A layer that lets only requests of logged-in sessions through (those whose
/// session has a user: [`Session::login`](session_core::Session::login)); it goes
/// inside the `SessionLayer`, on the routes to protect.
///
/// A request without a user gets:
/// - if it is a page's (a `GET` or `HEAD` from a browser), `303 See Other` to the
///   login page, with the page it asked for in a `next` parameter (a path on this
///   site only; see [`safe_next`](crate::safe_next));
/// - if it is an API's (its path starts with a prefix given to
///   [`with_api_prefix`](Self::with_api_prefix), or it accepts JSON and not HTML),
///   `401 Unauthorized` with a JSON body;
/// - otherwise (a form posted without a login), `303` to the login page.
///
/// ```
/// use axum::{routing::get, Router};
/// use http::{header, Request, StatusCode};
/// use session_core::SessionLayer;
/// use session_login::RequireLoginLayer;
/// use session_memory::MemoryStore;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let protected = Router::new()
///     .route("/reports", get(|| async { "reports" }))
///     .route("/api/me", get(|| async { "{}" }))
///     .route_layer(RequireLoginLayer::new("/login").with_api_prefix("/api/"));
/// let app = Router::new()
///     .route("/login", get(|| async { "the login form" }))
///     .merge(protected)
///     .layer(SessionLayer::new(MemoryStore::new()));
///
/// let page = app.clone().oneshot(Request::get("/reports?year=2026").body(axum::body::Body::empty())?).await?;
/// assert_eq!(page.status(), StatusCode::SEE_OTHER);
/// assert_eq!(page.headers()[header::LOCATION], "/login?next=/reports%3Fyear%3D2026");
///
/// let api = app.oneshot(Request::get("/api/me").body(axum::body::Body::empty())?).await?;
/// assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RequireLoginLayer {
    config: Arc<Config>,
}

/// What the guard and the extractor answer a request without a login.
#[derive(Clone)]
pub(crate) struct Config {
    login_path: String,
    api_prefixes: Vec<String>,
    pub(crate) credentials: Option<Arc<dyn Credentials>>,
}

impl RequireLoginLayer {
    /// A guard that sends pages to the login page at `login_path` (`/login`).
    pub fn new(login_path: impl Into<String>) -> Self {
        Self {
            config: Arc::new(Config {
                login_path: login_path.into(),
                api_prefixes: Vec::new(),
                credentials: None,
            }),
        }
    }

    /// Requests whose path starts with `prefix` (`/api/`) are an API's: they get a
    /// 401 with a JSON body rather than a redirect. May be given more than once.
    pub fn with_api_prefix(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config)
            .api_prefixes
            .push(prefix.into());
        self
    }
}

impl RequireLoginLayer {
    /// Ends, on its next request, a session tied with
    /// [`bind_credentials`](crate::bind_credentials) to credentials that have changed
    /// since: the request is then refused as one without a login. `credentials` gives
    /// the current fingerprint of a user's credentials.
    pub fn with_credentials(mut self, credentials: impl Credentials) -> Self {
        Arc::make_mut(&mut self.config).credentials = Some(Arc::new(credentials));
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            login_path: "/login".to_owned(),
            api_prefixes: Vec::new(),
            credentials: None,
        }
    }
}

impl Config {
    /// Whether the request is an API's rather than a page's.
    fn is_api(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let path = uri.path();
        if self
            .api_prefixes
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return true;
        }
        let accept = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        accept.contains("application/json") && !accept.contains("text/html")
    }

    /// The answer to a request of `method` for `uri` that has no login.
    pub(crate) fn refusal<B: From<String>>(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<B> {
        if self.is_api(uri, headers) {
            let mut response = Response::new(B::from(r#"{"error":"login required"}"#.to_owned()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return response;
        }
        let asked_for = uri.path_and_query().map_or("/", |p| p.as_str());
        let location = match (method, safe_next(asked_for)) {
            (&Method::GET | &Method::HEAD, Some(next)) => login_url(&self.login_path, "next", next),
            _ => self.login_path.clone(),
        };
        let mut response = Response::new(B::from(String::new()));
        *response.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(location) = HeaderValue::try_from(location) {
            response.headers_mut().insert(LOCATION, location);
        }
        response
    }
}

impl<S> Layer<S> for RequireLoginLayer {
    type Service = RequireLogin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireLogin::new(inner, self.config.clone())
    }
}

impl fmt::Debug for RequireLoginLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLoginLayer")
            .field("login_path", &self.config.login_path)
            .field("api_prefixes", &self.config.api_prefixes)
            .field("credentials", &self.config.credentials.is_some())
            .finish()
    }
}
