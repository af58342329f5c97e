//! A small admin site with login: the kind of application session-kit exists for.
//!
//! Run with: `PLAIN_HTTP=1 cargo run --example admin`, then open <http://127.0.0.1:3000/> and log
//! in as `alice` (password `wonderland`) or `bob` (password `builder`).
//!
//! Environment:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PORT` | `3000` | port to listen on (127.0.0.1) |
//! | `SERVER_ID` | `server-1` | name shown on every page, to see which server answered |
//! | `SESSION_STORE` | `memory` | where sessions live: `memory`; `redis://host:port`, `redis-cluster://host:port,…` or `redis-sentinel://host:port,…/master_name` (feature `redis`); `postgres://user@host/db` (feature `postgres`), `mysql://user@host/db` (feature `mysql`) or `sqlite://path` (feature `sqlite`; the file is created), table `sessions`, created at start; `cookie`: in the browser, encrypted (feature `cookie`); `tiered+redis://host:port`, `tiered+redis-sentinel://host:port,…/master_name` or `tiered+postgres://user@host/db`: cached in each server, in front of that Redis or PostgreSQL, coherent over its pub/sub or `NOTIFY` (feature `tiered`); `tiered-strict+…` the same in strict mode, with no coherence window |
//! | `SESSION_KEY` | none | for `cookie`: keys of at least 32 random bytes in base64 (`head -c 32 /dev/urandom \| base64`), comma-separated; the first seals, all open |
//! | `SESSION_EPOCHS` | none | for `cookie`: a server-side store (any `SESSION_STORE` value but `cookie`) for per-user epochs, so that "log out everywhere" and `MAX_SESSIONS_PER_USER=1` work |
//! | `PLAIN_HTTP` | `0` | `1`: served on plain HTTP locally, so the cookie is not `Secure` (it is by default, as behind HTTPS) |
//! | `SESSION_TABLE` | `sessions` | the table, for `postgres://`, `mysql://` and `sqlite://` |
//! | `MAX_SESSIONS_PER_USER` | none | cap per user; `1` makes a new login end the others |
//!
//! Besides the pages, a small JSON API: `GET /api/me`, `GET /api/prefs`,
//! `POST /api/prefs/{name}` (the body is the value) and `POST /api/visits` (an atomic
//! counter), each 401 when not logged in.
//!
//! The server closes a connection that takes over 10 s to send its headers, and
//! answers 408 to a request not answered within 30 s.

mod serve;

use std::env;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use session_kit::store::Backend;
use session_kit::{
    bind_credentials, safe_next, Credentials, LoggedIn, MemoryStore, RequireLoginLayer, Session,
    SessionError, SessionKey, SessionLayer, SessionStore,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The demo's users and their passwords. A real application keeps password hashes.
const USERS: [(&str, &str); 2] = [("alice", "wonderland"), ("bob", "builder")];

/// What sessions are tied to: a user's password as it is now (a real application
/// gives its password hash). A session made with a password that has changed since
/// ends on its next request.
struct Passwords;

#[session_kit::store::async_trait]
impl Credentials for Passwords {
    async fn fingerprint(&self, user_id: &str) -> Option<Vec<u8>> {
        USERS
            .iter()
            .find(|(user, _)| *user == user_id)
            .map(|(_, password)| password.as_bytes().to_vec())
    }
}

#[derive(Clone)]
struct AppState {
    server_id: Arc<str>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();

    let port: u16 = env::var("PORT").unwrap_or_else(|_| "3000".into()).parse()?;
    let server_id = env::var("SERVER_ID").unwrap_or_else(|_| "server-1".into());
    let store_spec = env::var("SESSION_STORE").unwrap_or_else(|_| "memory".into());

    let mut layer = SessionLayer::builder(open_store(&store_spec).await?)
        .with_cookie_name("admin_session")
        .with_secure(secure_cookie(env::var("PLAIN_HTTP").ok().as_deref()));
    if let Ok(cap) = env::var("MAX_SESSIONS_PER_USER") {
        layer = layer.with_max_sessions_per_user(cap.parse()?);
    }

    let app = app(layer.build()?, server_id.clone());
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, server_id, store = store_spec, "admin example listening");
    serve::serve(
        listener,
        app,
        serve::Timeouts::PRODUCTION,
        shutdown_signal(),
    )
    .await;
    Ok(())
}

/// Whether the cookie is `Secure`: always, unless `PLAIN_HTTP=1` says the example is
/// served on plain HTTP (locally; a browser would not send a `Secure` cookie back).
fn secure_cookie(plain_http: Option<&str>) -> bool {
    plain_http != Some("1")
}

/// The store named by `SESSION_STORE`.
async fn open_store(spec: &str) -> Result<Backend, BoxError> {
    #[cfg(feature = "cookie")]
    if spec == "cookie" {
        let store = cookie_store(
            env::var("SESSION_KEY").ok(),
            env::var("SESSION_EPOCHS").ok(),
        );
        return Ok(store.await?.into());
    }
    Ok(open_server_store(spec).await?.into())
}

/// `SESSION_STORE=cookie`: the keys from `SESSION_KEY`, the epochs (if any) in the
/// store named by `SESSION_EPOCHS`.
#[cfg(feature = "cookie")]
async fn cookie_store(
    keys: Option<String>,
    epochs: Option<String>,
) -> Result<session_kit::CookieStore, BoxError> {
    const HOW: &str = "SESSION_STORE=cookie needs SESSION_KEY: at least 32 random bytes in \
                       base64 (`head -c 32 /dev/urandom | base64` makes one)";
    let keys = keys.ok_or(HOW)?;
    let mut keys = keys.split(',').map(|key| {
        session_kit::CookieKey::from_base64(key).map_err(|error| format!("{HOW}: {error}"))
    });
    let current = keys.next().ok_or(HOW)??;
    let mut store = session_kit::CookieStore::new(current);
    for old in keys {
        store = store.with_old_key(old?);
    }
    if let Some(spec) = epochs {
        // Epochs must outlive the sessions they refuse: the 30-minute idle timeout.
        let retention = std::time::Duration::from_secs(3600);
        store = store.with_user_epochs(open_server_store(&spec).await?, retention);
    }
    Ok(store)
}

/// A server-side store: every `SESSION_STORE` value but `cookie`.
async fn open_server_store(spec: &str) -> Result<Arc<dyn SessionStore>, BoxError> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "redis")]
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return Ok(Arc::new(session_kit::RedisStore::connect(spec).await?));
    }
    #[cfg(feature = "postgres")]
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return Ok(Arc::new(
            sql_store::<session_kit::sqlx::Postgres>(spec).await?,
        ));
    }
    #[cfg(feature = "mysql")]
    if spec.starts_with("mysql://") || spec.starts_with("mariadb://") {
        let url = spec.replacen("mariadb://", "mysql://", 1);
        return Ok(Arc::new(sql_store::<session_kit::sqlx::MySql>(&url).await?));
    }
    #[cfg(feature = "sqlite")]
    if spec.starts_with("sqlite:") {
        return Ok(Arc::new(
            sql_store::<session_kit::sqlx::Sqlite>(spec).await?,
        ));
    }
    #[cfg(feature = "tiered")]
    if let Some(central) = spec.strip_prefix("tiered+") {
        return tiered_store(central, false).await;
    }
    #[cfg(feature = "tiered")]
    if let Some(central) = spec.strip_prefix("tiered-strict+") {
        return tiered_store(central, true).await;
    }
    #[cfg(feature = "redis")]
    if let Some(nodes) = spec.strip_prefix("redis-cluster://") {
        let urls = nodes.split(',').map(|node| format!("redis://{node}"));
        return Ok(Arc::new(
            session_kit::RedisStore::connect_cluster(urls).await?,
        ));
    }
    #[cfg(feature = "redis")]
    if let Some(sentinels) = spec.strip_prefix("redis-sentinel://") {
        let (urls, master) = sentinel_spec(sentinels)?;
        return Ok(Arc::new(
            session_kit::RedisStore::connect_sentinel(urls, master).await?,
        ));
    }
    let mut supported = vec!["memory"];
    if cfg!(feature = "redis") {
        supported.extend([
            "redis://…",
            "redis-cluster://…",
            "redis-sentinel://…/master",
        ]);
    }
    if cfg!(feature = "postgres") {
        supported.push("postgres://…");
    }
    if cfg!(feature = "mysql") {
        supported.push("mysql://…");
    }
    if cfg!(feature = "sqlite") {
        supported.push("sqlite://path");
    }
    if cfg!(feature = "cookie") {
        supported.push("cookie");
    }
    if cfg!(feature = "tiered") {
        supported.extend(["tiered+redis://…", "tiered+redis-sentinel://…/master"]);
        if cfg!(feature = "postgres") {
            supported.push("tiered+postgres://…");
        }
        supported.push("tiered-strict+…");
    }
    let supported = format!(
        "{} (the features redis, postgres, mysql, sqlite, cookie and tiered add the others)",
        supported.join(", ")
    );
    Err(
        format!("SESSION_STORE={spec:?} is not a store this build knows; supported: {supported}")
            .into(),
    )
}

/// The Sentinels' URLs and the master's name from `host:port,…/master_name`.
#[cfg(feature = "redis")]
fn sentinel_spec(spec: &str) -> Result<(Vec<String>, &str), BoxError> {
    let (nodes, master) = spec
        .rsplit_once('/')
        .ok_or("SESSION_STORE=redis-sentinel://host:port,…/master_name needs the master's name")?;
    let urls = nodes
        .split(',')
        .map(|node| format!("redis://{node}"))
        .collect();
    Ok((urls, master))
}

/// Sessions cached in each server, in front of the Redis or PostgreSQL (`central`)
/// every server shares, which also carries the invalidations: Redis pub/sub, or the
/// same database's `NOTIFY`.
#[cfg(feature = "tiered")]
async fn tiered_store(central: &str, strict: bool) -> Result<Arc<dyn SessionStore>, BoxError> {
    #[cfg(feature = "postgres")]
    if central.starts_with("postgres://") || central.starts_with("postgresql://") {
        let channel = "session_kit_invalidate";
        let store = sql_store::<session_kit::sqlx::Postgres>(central)
            .await?
            .with_invalidation_channel(channel)?;
        let builder = session_kit::TieredStore::builder(store).published_by_central();
        let builder = if strict { builder.strict() } else { builder };
        let channel = session_kit::PostgresChannel::connect(central, channel).await?;
        return Ok(Arc::new(builder.connect(channel).await?));
    }
    // The central store publishes each write's invalidation inside the write, here
    // and over PostgreSQL: one round trip per write, nothing left unannounced by a
    // crash. Over Sentinel it must: the tiered store publishes none of its own there.
    let channel = "session-kit:invalidate";
    if let Some(sentinels) = central.strip_prefix("redis-sentinel://") {
        let (urls, master) = sentinel_spec(sentinels)?;
        let store = session_kit::RedisStore::connect_sentinel(&urls, master)
            .await?
            .with_invalidation_channel(channel);
        let builder = session_kit::TieredStore::builder(store).published_by_central();
        let builder = if strict { builder.strict() } else { builder };
        let channel = session_kit::RedisChannel::sentinel(&urls, master, channel)?;
        return Ok(Arc::new(builder.connect(channel).await?));
    }
    let store = session_kit::RedisStore::connect(central)
        .await?
        .with_invalidation_channel(channel);
    let builder = session_kit::TieredStore::builder(store).published_by_central();
    let builder = if strict { builder.strict() } else { builder };
    let channel = session_kit::RedisChannel::connect(central, channel).await?;
    Ok(Arc::new(builder.connect(channel).await?))
}

/// A SQL store on `url`, in `SESSION_TABLE` (default `sessions`), migrated, with
/// expired rows deleted every five minutes for as long as the process lives.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn sql_store<DB: session_kit::SqlDialect>(
    url: &str,
) -> Result<session_kit::SqlStore<DB>, BoxError> {
    let mut store = session_kit::SqlStore::<DB>::connect(url).await?;
    if let Ok(table) = env::var("SESSION_TABLE") {
        store = store.with_table(&table)?;
    }
    store.migrate().await?;
    std::mem::forget(store.spawn_cleanup(std::time::Duration::from_secs(300)));
    Ok(store)
}

fn app(layer: SessionLayer, server_id: String) -> Router {
    // Every page but the login page needs a login: a page asked for without one goes
    // to the login page and back after it; the API answers 401.
    let logged_in = Router::new()
        .route("/", get(dashboard))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/api/prefs", get(prefs))
        .route("/api/prefs/{name}", post(set_pref))
        .route("/api/visits", post(visit))
        .route_layer(
            RequireLoginLayer::new("/login")
                .with_api_prefix("/api/")
                .with_credentials(Passwords),
        );
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        // Answers with or without a login, and says which server answered.
        .route("/api/me", get(me))
        .route("/healthz", get(|| async { "ok" }))
        .merge(logged_in)
        .layer(layer)
        .with_state(AppState {
            server_id: server_id.into(),
        })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Compares without stopping at the first difference, so that timing does not tell
/// how much of a password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_password(username: &str, password: &str) -> bool {
    USERS.iter().any(|(user, expected)| {
        constant_time_eq(user.as_bytes(), username.as_bytes())
            & constant_time_eq(expected.as_bytes(), password.as_bytes())
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(server_id: &str, title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · admin</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}\
         .server{{color:#666}}</style></head><body>\
         <h1>{title}</h1>{body}<p class=\"server\">Served by <b id=\"server\">{server}</b></p>\
         </body></html>",
        server = escape(server_id),
    ))
}

/// Where to go after the login: the page that sent the visitor here, if it is one of
/// this site's.
#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

impl Next {
    fn path(&self) -> &str {
        self.next.as_deref().and_then(safe_next).unwrap_or("/")
    }
}

async fn login_form(State(state): State<AppState>, Query(next): Query<Next>) -> Html<String> {
    let action = match next.path() {
        "/" => "/login".to_owned(),
        path => format!("/login?next={}", escape(&urlencode(path))),
    };
    let form = format!(
        "<form method=\"post\" action=\"{action}\">\
         <label>User <input name=\"username\" autocomplete=\"username\"></label> \
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label> \
         <button type=\"submit\">Log in</button></form>"
    );
    page(&state.server_id, "Log in", &form)
}

/// `text` as a query parameter's value.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    Query(next): Query<Next>,
    Form(credentials): Form<LoginForm>,
) -> Result<Response, SessionError> {
    if !check_password(&credentials.username, &credentials.password) {
        let body =
            "<p id=\"error\">Wrong user or password.</p><p><a href=\"/login\">Try again</a></p>";
        let page = page(&state.server_id, "Log in", body);
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    // `login` binds the user and gives the session a new id, against fixation.
    session.login(&credentials.username).await?;
    bind_credentials(&session, credentials.password.as_bytes()).await?;
    Ok(Redirect::to(next.path()).into_response())
}

async fn dashboard(State(state): State<AppState>, LoggedIn(user): LoggedIn) -> Html<String> {
    let body = format!(
        "<p>Logged in as <b id=\"user\">{user}</b>.</p>\
         <p><a href=\"/sessions\">Your sessions</a></p>\
         <form method=\"post\" action=\"/logout\"><button>Log out</button></form>\
         <form method=\"post\" action=\"/logout-everywhere\">\
         <button>Log out everywhere</button></form>",
        user = escape(&user)
    );
    page(&state.server_id, "Dashboard", &body)
}

async fn me(State(state): State<AppState>, session: Session) -> Result<Response, SessionError> {
    let server = &*state.server_id;
    Ok(match session.user_id().await? {
        Some(user) => Json(json!({"user": user, "server": server})).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "not logged in", "server": server})),
        )
            .into_response(),
    })
}

/// The logged-in user's preferences: every key of the session set by `set_pref`.
async fn prefs(session: Session) -> Result<Response, SessionError> {
    let names: Vec<String> = session.get("pref_names").await?.unwrap_or_default();
    let mut prefs = serde_json::Map::new();
    for name in names {
        let value: Option<String> = session.get(&format!("pref:{name}")).await?;
        prefs.insert(name, value.into());
    }
    Ok(Json(prefs).into_response())
}

/// Sets one preference (the request body is its value). Requests that set different
/// preferences of one session at the same time, on any servers, all keep theirs: each
/// writes only its own key, and the list of names is updated atomically.
async fn set_pref(
    session: Session,
    Path(name): Path<String>,
    value: String,
) -> Result<Response, SessionError> {
    session.insert(&format!("pref:{name}"), value).await?;
    session
        .update("pref_names", |names: Option<Vec<String>>| {
            let mut names = names.unwrap_or_default();
            if !names.contains(&name) {
                names.push(name.clone());
            }
            names
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Counts this session's visits, atomically: concurrent requests never lose one.
async fn visit(session: Session) -> Result<Response, SessionError> {
    let visits = session
        .update("visits", |n: Option<u64>| n.unwrap_or(0) + 1)
        .await?;
    Ok(Json(json!({ "visits": visits })).into_response())
}

async fn sessions(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, SessionError> {
    let current = session.key().await?;
    let mut rows = String::new();
    for other in session.user_sessions().await? {
        let is_current = Some(other.key) == current;
        rows.push_str(&format!(
            "<li class=\"session\">started {started}s ago{marker} \
             <form method=\"post\" action=\"/sessions/revoke\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"key\" value=\"{key}\"><button>Revoke</button></form></li>",
            started = session_kit::Timestamp::now()
                .saturating_since(other.meta.created_at)
                .as_secs(),
            marker = if is_current { " (this one)" } else { "" },
            key = escape(&other.key.to_string()),
        ));
    }
    let body = format!("<ul id=\"sessions\">{rows}</ul><p><a href=\"/\">Back</a></p>");
    Ok(page(&state.server_id, "Your sessions", &body).into_response())
}

#[derive(Deserialize)]
struct Revoke {
    key: String,
}

async fn revoke(session: Session, Form(revoke): Form<Revoke>) -> Result<Response, SessionError> {
    let Some(key) = SessionKey::parse(&revoke.key) else {
        return Ok((StatusCode::BAD_REQUEST, "not a session key").into_response());
    };
    // Only the user's own sessions can be ended this way.
    session.end_user_session(&key).await?;
    Ok(Redirect::to("/sessions").into_response())
}

async fn logout(session: Session) -> Redirect {
    session.destroy().await;
    Redirect::to("/login")
}

async fn logout_everywhere(session: Session) -> Result<Redirect, SessionError> {
    let ended = session.logout_everywhere().await?;
    tracing::info!(ended, "logged out everywhere");
    Ok(Redirect::to("/login"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn test_app() -> Router {
        let layer = SessionLayer::builder(MemoryStore::new())
            .with_cookie_name("admin_session")
            .build()
            .expect("valid layer");
        app(layer, "test-server".into())
    }

    async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderPair, String) {
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, cookie, String::from_utf8_lossy(&body).into_owned())
    }

    type HeaderPair = Option<String>;

    fn login_request(user: &str, password: &str) -> Request<Body> {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("username={user}&password={password}")))
            .expect("request")
    }

    fn get_with(path: &str, cookie: &str) -> Request<Body> {
        Request::get(path)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .expect("request")
    }

    /// The cookie is `Secure` unless the example is told it runs on plain HTTP.
    #[test]
    fn the_cookie_is_secure_unless_on_plain_http() {
        assert!(secure_cookie(None));
        assert!(secure_cookie(Some("0")));
        assert!(!secure_cookie(Some("1")));
    }

    /// A page asked for without a login leads to the login page and, after it, back
    /// to that page; a `next` that would leave the site leads home.
    #[tokio::test]
    async fn a_protected_page_leads_through_the_login_and_back() {
        let app = test_app();
        let response = app
            .clone()
            .oneshot(Request::get("/sessions").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "/login?next=/sessions"
        );
        let (_, _, form) = call(&app, get_with("/login?next=/sessions", "")).await;
        assert!(form.contains("action=\"/login?next=/sessions\""), "{form}");
        for (next, lands) in [("/sessions", "/sessions"), ("//evil.example/", "/")] {
            let mut request = login_request("alice", "wonderland");
            *request.uri_mut() = format!("/login?next={next}").parse().unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
            assert_eq!(response.headers()[header::LOCATION], lands, "{next}");
        }
    }

    #[tokio::test]
    async fn login_dashboard_api_and_logout() {
        let app = test_app();
        let (status, cookie, _) = call(&app, login_request("alice", "wonderland")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let cookie = cookie.expect("a session cookie");

        let (status, _, body) = call(&app, get_with("/", &cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<b id=\"user\">alice</b>") && body.contains("test-server"));

        let (status, _, body) = call(&app, get_with("/api/me", &cookie)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"server":"test-server","user":"alice"}"#);

        let (_, _, body) = call(&app, get_with("/sessions", &cookie)).await;
        assert_eq!(body.matches("class=\"session\"").count(), 1);
        assert!(body.contains("(this one)"));

        let logout = Request::post("/logout")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request");
        let (status, removal, _) = call(&app, logout).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(removal.as_deref(), Some("admin_session="));
        let (status, _, body) = call(&app, get_with("/api/me", &cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"not logged in","server":"test-server"}"#);
    }

    /// A value past the layer's size limit is refused with 413 and not kept; the
    /// session goes on.
    #[tokio::test]
    async fn a_megabyte_preference_is_refused() {
        let app = test_app();
        let (_, cookie, _) = call(&app, login_request("alice", "wonderland")).await;
        let cookie = cookie.expect("a session cookie");
        for (size, expected) in [
            (1 << 20, StatusCode::PAYLOAD_TOO_LARGE),
            (5, StatusCode::NO_CONTENT),
        ] {
            let request = Request::post("/api/prefs/theme")
                .header(header::COOKIE, &cookie)
                .body(Body::from("x".repeat(size)))
                .unwrap();
            let (status, _, _) = call(&app, request).await;
            assert_eq!(status, expected, "{size} bytes");
        }
        let (_, _, prefs) = call(&app, get_with("/api/prefs", &cookie)).await;
        assert_eq!(prefs, r#"{"theme":"xxxxx"}"#);
    }

    #[tokio::test]
    async fn wrong_passwords_are_refused_without_a_session() {
        let app = test_app();
        for (user, password) in [("alice", "builder"), ("bob", "wonderlan"), ("eve", "x")] {
            let (status, cookie, body) = call(&app, login_request(user, password)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{user}");
            assert_eq!(cookie, None);
            assert!(body.contains("Wrong user or password"));
        }
        let (status, ..) = call(&app, login_request("bob", "builder")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }

    #[tokio::test]
    async fn revoking_another_session_and_logging_out_everywhere() {
        let app = test_app();
        let (_, first, _) = call(&app, login_request("bob", "builder")).await;
        let (_, second, _) = call(&app, login_request("bob", "builder")).await;
        let (first, second) = (first.expect("cookie"), second.expect("cookie"));
        let (_, _, page) = call(&app, get_with("/sessions", &first)).await;
        assert_eq!(page.matches("class=\"session\"").count(), 2);

        // Revoke the second session from the first.
        let second_id =
            session_kit::store::SessionId::parse(second.split_once('=').expect("pair").1)
                .expect("an id");
        let revoke = Request::post("/sessions/revoke")
            .header(header::COOKIE, &first)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("key={}", second_id.key())))
            .expect("request");
        assert_eq!(call(&app, revoke).await.0, StatusCode::SEE_OTHER);
        assert_eq!(
            call(&app, get_with("/api/me", &second)).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, get_with("/api/me", &first)).await.0,
            StatusCode::OK
        );

        let (_, third, _) = call(&app, login_request("bob", "builder")).await;
        let everywhere = Request::post("/logout-everywhere")
            .header(header::COOKIE, &first)
            .body(Body::empty())
            .expect("request");
        call(&app, everywhere).await;
        for cookie in [first, third.expect("cookie")] {
            assert_eq!(
                call(&app, get_with("/api/me", &cookie)).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
    }

    #[cfg(feature = "cookie")]
    #[tokio::test]
    async fn cookie_keys_are_checked_at_start_up() {
        for keys in [None, Some(""), Some("c2hvcnQ="), Some("not base64!")] {
            let error = cookie_store(keys.map(str::to_owned), None)
                .await
                .expect_err("an error");
            assert!(error.to_string().contains("head -c 32"), "{error}");
        }
        let two = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,//////////////////////////////////////////8=";
        assert!(
            cookie_store(Some(two.to_owned()), Some("memory".to_owned()))
                .await
                .is_ok()
        );
    }

    /// `SESSION_STORE=sqlite://path` makes the file; a login survives a restart on it.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_sessions_survive_a_restart() {
        let directory = std::env::temp_dir().join(format!("admin-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let spec = format!("sqlite://{}", directory.join("sessions.db").display());
        let started = |spec: String| async move {
            let layer = SessionLayer::builder(open_store(&spec).await.expect("opens"))
                .with_cookie_name("admin_session")
                .build()
                .expect("valid layer");
            app(layer, "test-server".into())
        };
        let (_, cookie, _) = call(
            &started(spec.clone()).await,
            login_request("alice", "wonderland"),
        )
        .await;
        let restarted = started(spec).await;
        let (status, _, body) =
            call(&restarted, get_with("/api/me", &cookie.expect("cookie"))).await;
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"server":"test-server","user":"alice"}"#);
    }

    /// A Sentinel spec needs the master's name; one with no Sentinel behind it fails at
    /// start up rather than at the first request.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn sentinel_specs_are_checked_at_start_up() {
        let error = open_store("redis-sentinel://127.0.0.1:1")
            .await
            .expect_err("an error");
        assert!(error.to_string().contains("master's name"), "{error}");
        assert!(open_store("redis-sentinel://127.0.0.1:1/mymaster")
            .await
            .is_err());
        #[cfg(feature = "tiered")]
        {
            let error = open_store("tiered+redis-sentinel://127.0.0.1:1")
                .await
                .expect_err("an error");
            assert!(error.to_string().contains("master's name"), "{error}");
        }
    }

    #[tokio::test]
    async fn unknown_stores_are_a_clear_error() {
        let error = open_store("cassandra://x").await.expect_err("an error");
        assert!(error.to_string().contains("supported: memory"));
    }
}
