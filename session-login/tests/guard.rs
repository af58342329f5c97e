//! The login guard and the `LoggedIn` extractor through a real router.

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use session_core::{Session, SessionError, SessionLayer};
use session_login::{LoggedIn, RequireLoginLayer};
use session_memory::MemoryStore;
use session_testkit::{random_user, InstrumentedStore};
use tower::ServiceExt;

type Store = InstrumentedStore<MemoryStore>;

async fn login(
    session: Session,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Result<(), SessionError> {
    session.login(user).await
}

async fn whoami(LoggedIn(user): LoggedIn) -> String {
    user
}

fn app(store: &Store) -> Router {
    let protected = Router::new()
        .route("/reports", get(whoami))
        .route("/reports/export", post(whoami))
        .route("/api/me", get(whoami))
        .route_layer(RequireLoginLayer::new("/login").with_api_prefix("/api/"));
    Router::new()
        .route("/login", get(|| async { "the login form" }))
        .route("/login/{user}", post(login))
        .route("/unguarded", get(whoami))
        .merge(protected)
        .layer(SessionLayer::new(store.clone()))
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    content_type: Option<String>,
    cookie: Option<String>,
    body: String,
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(http::HeaderName, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (location, content_type) = (header(LOCATION), header(CONTENT_TYPE));
    let cookie = header(SET_COOKIE).map(|c| c.split(';').next().unwrap().to_owned());
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        content_type,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn a_page_without_a_login_goes_to_the_login_page_and_keeps_where_it_was() {
    let store = InstrumentedStore::new(MemoryStore::new());
    let app = app(&store);
    let reply = send(&app, "GET", "/reports?year=2026&q=a%20b", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reply.location.as_deref(),
        Some("/login?next=/reports%3Fyear%3D2026%26q%3Da%2520b")
    );
    // A form posted without a login is sent to the login page, with no `next` (the
    // post could not be replayed by a redirect).
    let reply = send(&app, "POST", "/reports/export", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/login"));
    // No store call for a visitor without a cookie, and no session made.
    assert_eq!(store.total(), 0);
    assert_eq!(reply.cookie, None);
}

#[tokio::test]
async fn an_api_request_without_a_login_gets_401_with_json() {
    let app = app(&InstrumentedStore::new(MemoryStore::new()));
    for (path, headers) in [
        ("/api/me", vec![]),
        ("/reports", vec![(ACCEPT, "application/json")]),
    ] {
        let reply = send(&app, "GET", path, &headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert_eq!(reply.body, r#"{"error":"login required"}"#);
    }
    // A browser accepts HTML (and anything else): a page's answer.
    let browser = [(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")];
    let reply = send(&app, "GET", "/reports", &browser).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_logged_in_session_passes_and_its_user_is_at_hand() {
    let app = app(&InstrumentedStore::new(MemoryStore::new()));
    let user = random_user();
    let cookie = send(&app, "POST", &format!("/login/{user}"), &[])
        .await
        .cookie
        .expect("a cookie");
    for path in ["/reports", "/api/me", "/unguarded"] {
        let reply = send(&app, "GET", path, &[(COOKIE, &cookie)]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, user.as_str()),
            "{path}"
        );
    }
}

/// A request for `//host/…` (which a browser would read as another site) does not
/// become the `next` of the redirect: the login page alone.
#[tokio::test]
async fn a_path_that_would_leave_the_site_is_not_kept_as_next() {
    let guarded = Router::new()
        .fallback(get(whoami))
        .layer(RequireLoginLayer::new("/login"))
        .layer(SessionLayer::new(MemoryStore::new()));
    let reply = send(&guarded, "GET", "//evil.example/x", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/login"));
}

#[tokio::test]
async fn the_extractor_without_the_guard_rejects_as_the_guard_would() {
    let app = app(&InstrumentedStore::new(MemoryStore::new()));
    let reply = send(&app, "GET", "/unguarded", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/login?next=/unguarded"));
    let reply = send(&app, "GET", "/unguarded", &[(ACCEPT, "application/json")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_store_that_fails_gets_the_error_policy_not_a_login_page() {
    let store = InstrumentedStore::new(MemoryStore::new());
    let app = app(&store);
    let cookie = send(&app, "POST", &format!("/login/{}", random_user()), &[])
        .await
        .cookie
        .expect("a cookie");
    store.set_failing(true);
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &cookie)]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.location, None);
    assert_eq!(reply.cookie, None);
}

#[tokio::test]
async fn the_guard_without_a_session_layer_says_what_is_missing() {
    let app = Router::new()
        .route("/reports", get(|| async { "reports" }))
        .route_layer(RequireLoginLayer::new("/login"));
    let reply = send(&app, "GET", "/reports", &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
}

/// Passwords by user: the credentials whose hash a session is tied to.
#[derive(Clone, Default)]
struct Passwords(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>);

impl Passwords {
    fn set(&self, user: &str, password: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(user.to_owned(), password.to_owned());
    }
}

#[session_core::store::async_trait]
impl session_login::Credentials for Passwords {
    async fn fingerprint(&self, user_id: &str) -> Option<Vec<u8>> {
        self.0
            .lock()
            .unwrap()
            .get(user_id)
            .map(|p| p.clone().into_bytes())
    }
}

/// A session tied to the password it was made with ends on its first request after
/// the password changes (and a removal cookie is sent); a login with the new
/// password holds; a session made without binding is left alone.
#[tokio::test]
async fn a_password_change_ends_the_sessions_made_with_the_old_one() {
    let passwords = Passwords::default();
    let user = random_user();
    passwords.set(&user, "old");
    let bound = {
        let passwords = passwords.clone();
        move |session: Session, axum::extract::Path(user): axum::extract::Path<String>| {
            let passwords = passwords.clone();
            async move {
                session.login(&user).await?;
                let password = passwords.0.lock().unwrap().get(&user).cloned();
                let password = password.unwrap_or_default();
                session_login::bind_credentials(&session, password.as_bytes()).await
            }
        }
    };
    let protected = Router::new()
        .route("/reports", get(whoami))
        .route_layer(RequireLoginLayer::new("/login").with_credentials(passwords.clone()));
    let app = Router::new()
        .route("/login/{user}", post(bound))
        .route("/unbound/{user}", post(login))
        .merge(protected)
        .layer(SessionLayer::new(MemoryStore::new()));

    let old = send(&app, "POST", &format!("/login/{user}"), &[])
        .await
        .cookie
        .unwrap();
    let unbound = send(&app, "POST", &format!("/unbound/{user}"), &[])
        .await
        .cookie
        .unwrap();
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &old)]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, user.as_str())
    );

    passwords.set(&user, "new");
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &old)]).await;
    assert_eq!(
        reply.status,
        StatusCode::SEE_OTHER,
        "the old password's session held"
    );
    assert!(
        reply.cookie.is_some_and(|c| c.ends_with('=')),
        "no removal cookie"
    );
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &old)]).await;
    assert_eq!(
        reply.status,
        StatusCode::SEE_OTHER,
        "the ended session came back"
    );

    let new = send(&app, "POST", &format!("/login/{user}"), &[])
        .await
        .cookie
        .unwrap();
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &new)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(&app, "GET", "/reports", &[(COOKIE, &unbound)]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a session made without binding was ended"
    );
}
