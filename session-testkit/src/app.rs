//! A small app behind the layer, and a client that keeps its cookie like a browser.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use session_core::store::SessionId;
use session_core::{Expiry, Session, SessionError, SessionKey, SessionLayer};
use tokio::sync::Barrier;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

/// The app the contract drives: a tower service over `String` bodies.
pub type App = BoxCloneService<Request<String>, Response<String>, Infallible>;

/// Holds a request in the middle of its handler: `/paused-set` (and `/paused-put`) waits at `arrived`
/// after changing the session, then at `proceed` before returning.
#[derive(Debug)]
pub struct Pause {
    /// Both the request and the test reach it once the session was changed.
    pub arrived: Barrier,
    /// Both reach it when the test lets the request finish.
    pub proceed: Barrier,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            arrived: Barrier::new(2),
            proceed: Barrier::new(2),
        }
    }
}

/// The app, behind `layer`. Routes (the session is the request's; path segments are
/// percent-decoded; data no store can hold is a 400):
///
/// | route | does |
/// | --- | --- |
/// | `GET /get/{key}` | the value as JSON, `null` if absent |
/// | `POST /set/{key}/{value}` | sets a string value, without reading the session |
/// | `POST /remove/{key}` | removes a key |
/// | `POST /incr/{key}` | `update`s a number by one; the body is the result |
/// | `POST /login/{user}` | logs the user in |
/// | `GET /user` | the user, empty if none |
/// | `GET /sessions` | how many sessions the user has |
/// | `POST /logout` | destroys the session |
/// | `POST /logout-everywhere` | ends all the user's sessions |
/// | `POST /cycle` | cycles the id |
/// | `POST /remember` | gives the session an endless expiry with a persistent cookie |
/// | `POST /paused-set/{key}/{value}` | reads and sets a value, then waits on `pause` |
/// | `POST /paused-put/{key}/{value}` | sets a value unread, then waits on `pause` |
/// | `GET /noop` | does not touch the session |
pub fn app(layer: SessionLayer, pause: Option<Arc<Pause>>) -> App {
    let handler = service_fn(move |request: Request<String>| {
        let pause = pause.clone();
        async move {
            let session = request
                .extensions()
                .get::<Session>()
                .cloned()
                .expect("the app runs behind SessionLayer");
            // Segments percent-decoded, so that a test can send any character.
            let path: Vec<String> = request
                .uri()
                .path()
                .split('/')
                .skip(1)
                .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
                .collect();
            let result = route(&session, request.method(), &path, pause.as_deref()).await;
            Ok::<_, Infallible>(match result {
                Ok(body) => Response::new(body),
                Err(SessionError::Store(_)) => status(StatusCode::SERVICE_UNAVAILABLE),
                Err(SessionError::Refused(refusal)) if refusal.is_too_large() => {
                    status(StatusCode::PAYLOAD_TOO_LARGE)
                }
                Err(SessionError::Refused(_)) => status(StatusCode::BAD_REQUEST),
                Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
            })
        }
    });
    BoxCloneService::new(layer.layer(handler))
}

fn status(code: StatusCode) -> Response<String> {
    let mut response = Response::new(code.to_string());
    *response.status_mut() = code;
    response
}

async fn route(
    session: &Session,
    method: &Method,
    path: &[String],
    pause: Option<&Pause>,
) -> Result<String, SessionError> {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    Ok(match (method.as_str(), parts.as_slice()) {
        ("GET", ["get", key]) => {
            let value: Option<serde_json::Value> = session.get(key).await?;
            value.unwrap_or_default().to_string()
        }
        ("POST", ["set", key, value]) => {
            session.insert(key, *value).await?;
            String::new()
        }
        ("POST", ["remove", key]) => {
            session.remove(key).await?;
            String::new()
        }
        ("POST", ["incr", key]) => session
            .update(key, |n: Option<u64>| n.unwrap_or(0) + 1)
            .await?
            .to_string(),
        ("POST", ["login", user]) => {
            session.login(*user).await?;
            String::new()
        }
        ("GET", ["user"]) => session.user_id().await?.unwrap_or_default(),
        ("GET", ["sessions"]) => session.user_sessions().await?.len().to_string(),
        ("POST", ["logout"]) => {
            session.destroy().await;
            String::new()
        }
        ("POST", ["logout-everywhere"]) => session.logout_everywhere().await?.to_string(),
        ("POST", ["cycle"]) => {
            session.cycle_id().await?;
            String::new()
        }
        ("POST", ["remember"]) => {
            let endless = Expiry::on_inactivity(std::time::Duration::MAX).persistent();
            session.set_expiry(endless).await?;
            String::new()
        }
        ("POST", ["paused-set", key, value]) => {
            session.get::<serde_json::Value>(key).await?;
            session.insert(key, *value).await?;
            if let Some(pause) = pause {
                pause.arrived.wait().await;
                pause.proceed.wait().await;
            }
            String::new()
        }
        ("POST", ["paused-put", key, value]) => {
            session.insert(key, *value).await?;
            if let Some(pause) = pause {
                pause.arrived.wait().await;
                pause.proceed.wait().await;
            }
            String::new()
        }
        ("GET", ["noop"]) => String::new(),
        _ => "no such route".to_owned(),
    })
}

/// A response, as the client saw it.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: String,
    /// Its headers.
    pub headers: HeaderMap,
}

impl Reply {
    /// The reply `response` makes, its body read whole (as text, lossily).
    pub async fn read<B>(response: Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("the body reads").to_bytes();
        Self {
            status: parts.status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            headers: parts.headers,
        }
    }

    /// The `name=value` pair of the only `Set-Cookie`; fails the test if there is
    /// not exactly one.
    pub fn cookie_pair(&self) -> String {
        let cookies = self.set_cookies();
        assert_eq!(cookies.len(), 1, "expected one Set-Cookie, got {cookies:?}");
        let pair = cookies[0].split(';').next().unwrap_or_default();
        pair.to_owned()
    }

    /// The `Set-Cookie` headers it carried.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// Sends one request to any service (an axum `Router`, an [`App`]), with `cookie` as
/// its `Cookie` header if given, and reads the reply: for tests that manage cookies
/// themselves; [`Client`] keeps them as a browser does.
pub async fn send<S, R>(service: &S, method: &str, path: &str, cookie: Option<&str>) -> Reply
where
    S: tower::Service<Request<String>, Response = Response<R>> + Clone,
    S::Error: std::fmt::Debug,
    R: http_body::Body,
    R::Error: std::fmt::Debug,
{
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let request = request.body(String::new()).expect("a valid request");
    let response = service
        .clone()
        .oneshot(request)
        .await
        .expect("the service answers");
    Reply::read(response).await
}

/// A client of an [`App`] that keeps the session cookie as a browser does.
#[derive(Clone)]
pub struct Client {
    app: App,
    cookie_name: String,
    /// The cookie's value, if the client holds one.
    pub cookie: Option<String>,
}

impl Client {
    /// A client without a cookie, for a layer whose cookie is named `id`.
    pub fn new(app: &App) -> Self {
        Self {
            app: app.clone(),
            cookie_name: "id".to_owned(),
            cookie: None,
        }
    }

    /// The key of the session the client's cookie names.
    pub fn key(&self) -> Option<SessionKey> {
        self.cookie
            .as_deref()
            .and_then(SessionId::parse)
            .map(|id| id.key())
    }

    /// Sends a request with the client's cookie, and keeps what `Set-Cookie` says.
    pub async fn send(&mut self, method: Method, path: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = &self.cookie {
            request = request.header(COOKIE, format!("{}={value}", self.cookie_name));
        }
        let request = request.body(String::new()).expect("a valid request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let reply = Reply {
            status: parts.status,
            body,
            headers: parts.headers,
        };
        for set_cookie in reply.set_cookies() {
            let (pair, attributes) = set_cookie.split_once(';').unwrap_or((set_cookie, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name != self.cookie_name {
                continue;
            }
            let removal = attributes.to_ascii_lowercase().contains("max-age=0");
            self.cookie = (!removal && !value.is_empty()).then(|| value.to_owned());
        }
        reply
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Method::GET, path).await
    }

    /// `POST path`.
    pub async fn post(&mut self, path: &str) -> Reply {
        self.send(Method::POST, path).await
    }
}
