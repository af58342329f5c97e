//! The layer through axum, driven with `oneshot`: cookies, writes, failures, logs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use session_kit::cookie::{Key, SameSite};
use session_kit::store::SessionId;
use session_kit::{
    ConfigError, Expiry, MemoryStore, Session, SessionError, SessionLayer, SessionLayerBuilder,
    SessionStore,
};
use session_testkit::{send, InstrumentedStore, MockClock, Reply};
use tower::ServiceExt;

type Store = InstrumentedStore<MemoryStore>;

fn store() -> Store {
    InstrumentedStore::new(MemoryStore::new())
}

async fn get_value(session: Session, Path(key): Path<String>) -> Result<String, SessionError> {
    let value: Option<serde_json::Value> = session.get(&key).await?;
    Ok(value.unwrap_or_default().to_string())
}

async fn set_value(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<(), SessionError> {
    session.insert(&key, value).await
}

/// Reads the key before setting it, as a handler that checks first does.
async fn read_then_set(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<(), SessionError> {
    session.get::<serde_json::Value>(&key).await?;
    session.insert(&key, value).await
}

async fn login(session: Session, Path(user): Path<String>) -> Result<(), SessionError> {
    session.login(user).await
}

async fn logout(session: Session) {
    session.destroy().await;
}

/// Sets a key and removes it again: the session ends the request empty.
async fn set_and_unset(session: Session) -> Result<(), SessionError> {
    session.insert("tmp", 1).await?;
    session.remove("tmp").await?;
    Ok(())
}

async fn remember_me(session: Session) -> Result<(), SessionError> {
    session.login("remembered").await?;
    session
        .set_expiry(Expiry::on_inactivity(Duration::from_secs(3600)).persistent())
        .await
}

fn routes() -> Router {
    Router::new()
        .route("/get/{key}", get(get_value))
        .route("/set/{key}/{value}", post(set_value))
        .route("/read-set/{key}/{value}", post(read_then_set))
        .route("/login/{user}", post(login))
        .route("/logout", post(logout))
        .route("/set-and-unset", post(set_and_unset))
        .route("/remember-me", post(remember_me))
        .route("/static", get(|| async { "no session here" }))
}

fn app(layer: SessionLayer) -> Router {
    routes().layer(layer)
}

/// The routes above and `handler` at `path` (a `POST`), over an instrumented
/// `MemoryStore`.
fn app_with<H, T>(path: &str, handler: H) -> (Store, Router)
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let store = store();
    let app = Router::new()
        .route(path, post(handler))
        .merge(routes())
        .layer(SessionLayer::new(store.clone()));
    (store, app)
}

/// docs/security.md 10: the default cookie, exactly.
#[tokio::test]
async fn default_cookie_is_secure() {
    let app = app(SessionLayer::new(MemoryStore::new()));
    let reply = send(&app, "POST", "/set/a/1", None).await;
    let cookie = &reply.set_cookies()[0];
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("id=")
        .unwrap();
    assert!(SessionId::parse(value).is_some(), "not an id: {value}");
    assert_eq!(
        cookie.replace(value, "<id>"),
        "id=<id>; HttpOnly; SameSite=Lax; Secure; Path=/"
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
}

/// docs/security.md 11: `__Host-` and `__Secure-` rules fail when the layer is built.
#[test]
fn cookie_prefixes_are_validated_at_build_time() {
    let builder = || SessionLayer::builder(MemoryStore::new()).with_cookie_name("__Host-id");
    let error = |b: SessionLayerBuilder| b.build().map(|_| ()).unwrap_err();
    assert_eq!(
        error(builder().with_domain("example.com")),
        ConfigError::HostPrefixWithDomain
    );
    assert_eq!(
        error(builder().with_secure(false)),
        ConfigError::PrefixWithoutSecure
    );
    assert_eq!(
        error(builder().with_path("/app")),
        ConfigError::HostPrefixWithPath
    );
    assert!(builder().build().is_ok());
    let secure = SessionLayer::builder(MemoryStore::new())
        .with_cookie_name("__Secure-id")
        .with_secure(false);
    assert_eq!(error(secure), ConfigError::PrefixWithoutSecure);
    // Browsers match the prefixes in any case.
    let upper = SessionLayer::builder(MemoryStore::new()).with_cookie_name("__HOST-id");
    assert_eq!(
        error(upper.with_domain("example.com")),
        ConfigError::HostPrefixWithDomain
    );
    let lower = SessionLayer::builder(MemoryStore::new())
        .with_cookie_name("__secure-id")
        .with_secure(false);
    assert_eq!(error(lower), ConfigError::PrefixWithoutSecure);
    for bad in ["", "a b", "a;b", "a=b", "é"] {
        let b = SessionLayer::builder(MemoryStore::new()).with_cookie_name(bad);
        assert!(
            matches!(error(b), ConfigError::InvalidCookieName(_)),
            "{bad:?}"
        );
    }
    for bad in ["app", "/a;b", "/a b"] {
        let b = SessionLayer::builder(MemoryStore::new()).with_path(bad);
        assert_eq!(error(b), ConfigError::InvalidCookiePath(bad.into()));
    }
    let domain = SessionLayer::builder(MemoryStore::new()).with_domain("a;b");
    assert_eq!(
        error(domain),
        ConfigError::InvalidCookieDomain("a;b".into())
    );
    let zero = SessionLayer::builder(MemoryStore::new()).with_max_sessions_per_user(0);
    assert_eq!(error(zero), ConfigError::ZeroSessionCap);
    let limit = session_kit::store::USER_SESSIONS_LIMIT;
    let past_the_list =
        SessionLayer::builder(MemoryStore::new()).with_max_sessions_per_user(limit + 1);
    assert_eq!(error(past_the_list), ConfigError::SessionCapTooLarge);
    let at_the_list = SessionLayer::builder(MemoryStore::new()).with_max_sessions_per_user(limit);
    assert!(at_the_list.build().is_ok());
    let header = SessionLayer::builder(MemoryStore::new()).with_header("bad header");
    assert!(matches!(error(header), ConfigError::InvalidHeaderName(_)));
}

fn attributes(set_cookie: &str) -> Vec<String> {
    let mut attributes: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.starts_with("Max-Age") && !a.starts_with("Expires"))
        .collect();
    attributes.sort();
    attributes
}

/// docs/security.md 12: logout and expiry send a removal cookie with the issuing cookie's
/// name, Path, Domain, Secure and SameSite, and `Max-Age=0`. The expiry is one the
/// layer finds by the stored times (the store here answers on its own clock, which
/// lags the layer's): a session the store no longer returns is, to the layer, one it
/// did not find, and gets no removal (docs/security.md 31 and 32).
#[tokio::test]
async fn removal_cookie_matches_the_issued_one() {
    let clock = MockClock::new();
    let layer = SessionLayer::builder(store())
        .with_cookie_name("admin_session")
        .with_path("/")
        .with_domain("example.test")
        .with_same_site(SameSite::Strict)
        .with_clock(clock.now_fn())
        .build()
        .unwrap();
    let app = app(layer);
    let issued = send(&app, "POST", "/login/alice", None).await;
    let issued_cookie = issued.set_cookies()[0].to_owned();
    let pair = issued.cookie_pair();

    for removal in [send(&app, "POST", "/logout", Some(&pair)).await, {
        let again = send(&app, "POST", "/login/alice", None).await;
        clock.set_ahead(Duration::from_secs(31 * 60));
        send(&app, "GET", "/get/x", Some(&again.cookie_pair())).await
    }] {
        let removal_cookie = &removal.set_cookies()[0];
        assert!(
            removal_cookie.starts_with("admin_session=;"),
            "{removal_cookie}"
        );
        assert!(removal_cookie.contains("Max-Age=0"), "{removal_cookie}");
        assert_eq!(attributes(removal_cookie), attributes(&issued_cookie));
        clock.set_ahead(Duration::ZERO);
    }
}

/// docs/security.md 8: requests that only read write nothing and set no cookie.
#[tokio::test]
async fn read_only_requests_do_not_write() {
    let store = store();
    let app = app(SessionLayer::new(store.clone()));
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    store.reset_counts();
    for _ in 0..100 {
        let reply = send(&app, "GET", "/get/a", Some(&pair)).await;
        assert_eq!(reply.body, "\"1\"");
        assert!(reply.set_cookies().is_empty());
    }
    assert_eq!(store.writes(), 0);
    assert_eq!(store.count("load"), 100);
    // Writing a value the request has read already is no write either.
    send(&app, "POST", "/read-set/a/1", Some(&pair)).await;
    assert_eq!(store.writes(), 0);
    // A route that never touches the session does not even load it.
    send(&app, "GET", "/static", Some(&pair)).await;
    assert_eq!(store.count("load"), 101);
}

/// A store that holds sessions in memory answers reads without a future: the layer
/// never asks it to `load`, also for a session that has expired by the layer's clock.
#[tokio::test]
async fn reads_a_store_answers_at_once_never_wait_on_load() {
    let store = store();
    store.set_answering_without_waiting(true);
    let clock = MockClock::new();
    let layer = SessionLayer::builder(store.clone())
        .with_clock(clock.now_fn())
        .with_expiry(Expiry::on_inactivity(Duration::from_secs(60)))
        .build()
        .expect("a valid layer");
    let app = app(layer);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    store.reset_counts();
    let reply = send(&app, "GET", "/get/a", Some(&pair)).await;
    assert_eq!(reply.body, "\"1\"");
    // Past its idle timeout by the layer's clock: a fresh session.
    clock.set_ahead(Duration::from_secs(61));
    let reply = send(&app, "GET", "/get/a", Some(&pair)).await;
    assert_eq!(reply.body, "null");
    assert_eq!(
        (store.count("load_without_waiting"), store.count("load")),
        (2, 0)
    );
}

/// A write to an existing session that the request never read is one store call,
/// the save; after a read it is the load and the save. Neither sets a cookie.
#[tokio::test]
async fn a_write_costs_one_store_call_and_two_after_a_read() {
    let store = store();
    let app = app(SessionLayer::new(store.clone()));
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    store.reset_counts();
    let reply = send(&app, "POST", "/set/b/2", Some(&pair)).await;
    assert!(reply.set_cookies().is_empty());
    assert_eq!((store.count("save_unloaded"), store.total()), (1, 1));
    store.reset_counts();
    let reply = send(&app, "POST", "/read-set/c/3", Some(&pair)).await;
    assert!(reply.set_cookies().is_empty());
    assert_eq!(
        (store.count("load"), store.count("save"), store.total()),
        (1, 1, 2)
    );
    for (key, value) in [("a", "\"1\""), ("b", "\"2\""), ("c", "\"3\"")] {
        let path = format!("/get/{key}");
        assert_eq!(send(&app, "GET", &path, Some(&pair)).await.body, value);
    }
}

/// What a request writes before its first read shows in that read, on top of what
/// the store holds, and is saved with it.
#[tokio::test]
async fn a_write_before_the_first_read_shows_in_it() {
    async fn write_then_read(session: Session) -> Result<String, SessionError> {
        session.insert("b", "new").await?;
        let a: Option<String> = session.get("a").await?;
        let b: Option<String> = session.get("b").await?;
        session.insert("c", "after").await?;
        Ok(format!("{a:?} {b:?}"))
    }
    let (store, app) = app_with("/write-then-read", write_then_read);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    send(&app, "POST", "/set/b/old", Some(&pair)).await;
    store.reset_counts();
    let reply = send(&app, "POST", "/write-then-read", Some(&pair)).await;
    assert_eq!(reply.body, "Some(\"1\") Some(\"new\")");
    assert_eq!((store.count("load"), store.count("save")), (1, 1));
    for (key, value) in [("a", "\"1\""), ("b", "\"new\""), ("c", "\"after\"")] {
        let path = format!("/get/{key}");
        assert_eq!(send(&app, "GET", &path, Some(&pair)).await.body, value);
    }
}

/// A write that never read its session drops it with `destroy`, and a failed store
/// fails it at the end of the request: nothing is written in either case.
#[tokio::test]
async fn an_unread_write_follows_destroy_and_store_failures() {
    async fn write_then_destroy(session: Session) -> Result<(), SessionError> {
        session.insert("b", 2).await?;
        session.destroy().await;
        Ok(())
    }
    let (store, app) = app_with("/write-then-destroy", write_then_destroy);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    let id = SessionId::parse(pair.strip_prefix("id=").unwrap()).unwrap();
    store.set_failing(true);
    let failed = send(&app, "POST", "/set/a/2", Some(&pair)).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(failed.set_cookies().is_empty());
    store.set_failing(false);
    assert_eq!(send(&app, "GET", "/get/a", Some(&pair)).await.body, "\"1\"");
    store.reset_counts();
    let ended = send(&app, "POST", "/write-then-destroy", Some(&pair)).await;
    assert!(ended.set_cookies()[0].contains("Max-Age=0"));
    assert_eq!((store.count("delete"), store.writes()), (1, 1));
    assert!(store.load(&id.key()).await.unwrap().is_none());
}

/// docs/security.md 9: ten thousand cookie-less requests make no store call, and a
/// session that ends its request empty is never stored.
#[tokio::test]
async fn cookieless_requests_cost_nothing() {
    let store = store();
    let app = app(SessionLayer::new(store.clone()));
    for i in 0..10_000 {
        let path = if i % 2 == 0 {
            "/get/a"
        } else {
            "/set-and-unset"
        };
        let reply = send(&app, if i % 2 == 0 { "GET" } else { "POST" }, path, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.set_cookies().is_empty());
    }
    assert_eq!(store.total(), 0);
    assert!(store.inner().is_empty());
}

/// Uses of one session that overlap within a request (a handler that joins futures)
/// take turns: the first loads the record while the others wait for it, so the store
/// is asked once, each read sees the record, and the write made meanwhile is saved.
#[tokio::test]
async fn overlapping_uses_of_one_session_take_turns() {
    async fn overlapping(session: Session) -> Result<String, SessionError> {
        let (first, second, ()) = tokio::try_join!(
            session.get::<String>("a"),
            session.get::<String>("a"),
            session.insert("b", "2"),
        )?;
        Ok(format!("{first:?} {second:?}"))
    }
    let (store, app) = app_with("/overlapping", overlapping);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    store.reset_counts();
    // The load waits in the store, holding the session, while the others queue.
    store.set_hanging(true);
    let request = tokio::spawn({
        let (app, pair) = (app.clone(), pair.clone());
        async move { send(&app, "POST", "/overlapping", Some(&pair)).await }
    });
    while store.count("load") == 0 {
        tokio::task::yield_now().await;
    }
    store.set_hanging(false);
    let reply = request.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "Some(\"1\") Some(\"1\")");
    assert_eq!((store.count("load"), store.count("save")), (1, 1));
    assert_eq!(send(&app, "GET", "/get/b", Some(&pair)).await.body, "\"2\"");
}

/// docs/security.md 16: a store that hangs gets a 503 with `Retry-After` once the store
/// timeout passes (virtual time), and no cookie is set or cleared.
#[tokio::test(start_paused = true)]
async fn a_hanging_store_fails_closed_after_the_timeout() {
    let store = store();
    let layer = SessionLayer::builder(store.clone())
        .with_store_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let app = app(layer);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    store.set_hanging(true);
    let started = tokio::time::Instant::now();
    let reply = send(&app, "GET", "/get/a", Some(&pair)).await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers[header::RETRY_AFTER], "1");
    assert!(reply.set_cookies().is_empty());
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    store.set_hanging(false);
    assert_eq!(send(&app, "GET", "/get/a", Some(&pair)).await.body, "\"1\"");
}

/// A client that goes away while its session is being written (its response future
/// dropped: hyper does that when the connection closes) does not cancel the writes:
/// the value is saved, and a logout ends the session, all the same.
#[tokio::test]
async fn a_request_dropped_while_its_session_is_written_still_writes_it() {
    let store = store();
    let app = app(SessionLayer::new(store.clone()));
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    let dropped_while_writing = |path: &'static str| {
        let (app, store, pair) = (app.clone(), store.clone(), pair.clone());
        async move {
            store.set_hanging(true);
            let request = send(&app, "POST", path, Some(&pair));
            let gone = tokio::time::timeout(Duration::from_millis(50), request).await;
            assert!(gone.is_err(), "{path} was answered while the store hung");
            store.set_hanging(false);
        }
    };
    let eventually = |expected: &'static str| {
        let (app, pair) = (app.clone(), pair.clone());
        async move {
            for _ in 0..100 {
                if send(&app, "GET", "/get/a", Some(&pair)).await.body == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the session never read {expected}");
        }
    };

    dropped_while_writing("/set/a/2").await;
    eventually("\"2\"").await;
    dropped_while_writing("/logout").await;
    eventually("null").await;
    assert!(
        store.inner().is_empty(),
        "the logged-out session is still stored"
    );
}

/// The same over a real connection: hyper drops a request's future when its client
/// closes the connection, and the logout's delete still happens.
#[tokio::test]
async fn a_logout_whose_client_hung_up_still_ends_the_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let store = store();
    let app = app(SessionLayer::builder(store.clone())
        .with_secure(false)
        .build()
        .unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let request = |path: &str, cookie: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nCookie: {cookie}\r\nContent-Length: 0\r\n\r\n"
        )
    };

    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    connection
        .write_all(request("/set/a/1", "").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let read = connection.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    let pair = answer
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .expect("a session cookie")
        .to_owned();
    assert!(!store.inner().is_empty());

    store.set_hanging(true);
    connection
        .write_all(request("/logout", &pair).as_bytes())
        .await
        .unwrap();
    while store.count("delete") == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(connection);
    // Time for hyper to see the connection closed and drop the request.
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.set_hanging(false);
    for _ in 0..100 {
        if store.inner().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the session outlived its logout");
}

/// docs/security.md 17: a store that fails never leads to a new session or a cleared
/// cookie, even for a handler that ignores the error.
#[tokio::test]
async fn store_errors_never_become_new_sessions() {
    async fn ignores_errors(session: Session) -> &'static str {
        let _ = session.get::<String>("user").await;
        let _ = session.insert("user", "guest").await;
        "handler ran"
    }
    let (store, app) = app_with("/careless", ignores_errors);
    let pair = send(&app, "POST", "/set/user/alice", None)
        .await
        .cookie_pair();
    store.set_failing(true);
    for cookie in [Some(pair.as_str()), None] {
        let reply = send(&app, "POST", "/careless", cookie).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
        assert_ne!(reply.body, "handler ran");
    }
    store.set_failing(false);
    assert_eq!(
        send(&app, "GET", "/get/user", Some(&pair)).await.body,
        "\"alice\""
    );
    assert_eq!(store.inner().len(), 1);
}

/// docs/security.md 27: a thousand concurrent users each see only their own data, and
/// every response that sets the cookie says `Cache-Control: no-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_users_see_only_their_own_sessions() {
    let app = app(SessionLayer::new(MemoryStore::new()));
    let users: Vec<_> = (0..1000)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let reply = send(&app, "POST", &format!("/set/marker/user{i}"), None).await;
                assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
                let pair = reply.cookie_pair();
                for _ in 0..3 {
                    let reply = send(&app, "GET", "/get/marker", Some(&pair)).await;
                    assert_eq!(reply.body, format!("\"user{i}\""));
                    tokio::task::yield_now().await;
                }
                pair
            })
        })
        .collect();
    let mut cookies = std::collections::HashSet::new();
    for user in users {
        assert!(cookies.insert(user.await.unwrap()), "two users got one id");
    }
}

/// docs/security.md 28: malformed, oversized and duplicate cookies give a fresh session.
#[tokio::test]
async fn hostile_cookies_give_a_fresh_session() {
    let store = store();
    let app = app(SessionLayer::new(store.clone()));
    let good = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    let good_value = good.strip_prefix("id=").unwrap();
    let huge = format!("id={}", "A".repeat(100_000));
    let cases = [
        "id=".to_owned(),
        "id".to_owned(),
        "=".to_owned(),
        ";;;".to_owned(),
        "id=%00%ff".to_owned(),
        format!("id={}", &good_value[..31]),
        format!("id={good_value}x"),
        format!("id=\"{good_value}\""),
        huge,
        format!("id={}", "/".repeat(32)),
    ];
    for cookie in &cases {
        let reply = send(&app, "GET", "/get/a", Some(cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{cookie:.40}");
        assert_eq!(reply.body, "null", "{cookie:.40}");
    }
    // A valid id among junk and duplicates is found; the first valid one wins.
    let dup = format!(
        "other=1; id=garbage; id={good_value}; id={}",
        session_testkit::random_token()
    );
    assert_eq!(send(&app, "GET", "/get/a", Some(&dup)).await.body, "\"1\"");
    // Bytes that are not valid UTF-8 in the header value.
    let mut request = Request::get("/get/a").body(Body::empty()).unwrap();
    request.headers_mut().insert(
        header::COOKIE,
        header::HeaderValue::from_bytes(b"id=\xff\xfe").unwrap(),
    );
    let response = Reply::read(app.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (StatusCode::OK, "null")
    );
    assert_eq!(store.inner().len(), 1, "hostile input changed the store");
}

/// Other cookies of the site may hold bytes that are not visible ASCII (browsers send
/// a script's `document.cookie = "name=José"` as raw UTF-8): the session's cookie
/// beside them still names the session, signed or not.
#[tokio::test]
async fn a_cookie_beside_non_ascii_cookies_still_names_the_session() {
    let signed = SessionLayer::builder(MemoryStore::new()).with_signing_key(Key::from(&[42; 64]));
    let layers = [
        ("unsigned", SessionLayer::new(MemoryStore::new())),
        ("signed", signed.build().unwrap()),
    ];
    for (kind, layer) in layers {
        let app = app(layer);
        let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
        let mut cookies = "name=Jos\u{e9}; ".as_bytes().to_vec();
        cookies.extend_from_slice(pair.as_bytes());
        cookies.extend_from_slice(b"; city=K\xf6ln");
        let mut request = Request::get("/get/a").body(Body::empty()).unwrap();
        request.headers_mut().insert(
            header::COOKIE,
            header::HeaderValue::from_bytes(&cookies).unwrap(),
        );
        let response = Reply::read(app.clone().oneshot(request).await.unwrap()).await;
        assert_eq!(response.body, "\"1\"", "{kind}: the session was not found");
    }
}

mod cookie_parsing {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// docs/security.md 28: no `Cookie` header, however odd, panics or fails the
        /// request; a write under it always gets a new, well-formed id.
        #[test]
        fn any_cookie_header_gives_a_well_formed_outcome(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            prefix in prop_oneof![Just(""), Just("id="), Just("id=; id="), Just("a=b; id=")],
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let app = app(SessionLayer::new(MemoryStore::new()));
                let mut bytes = prefix.as_bytes().to_vec();
                bytes.extend(raw.iter().copied().filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)));
                let mut request = Request::post("/set/k/v").body(Body::empty()).unwrap();
                request.headers_mut().insert(header::COOKIE, header::HeaderValue::from_bytes(&bytes).unwrap());
                let response = Reply::read(app.clone().oneshot(request).await.unwrap()).await;
                prop_assert_eq!(response.status, StatusCode::OK);
                let pair = response.cookie_pair();
                let value = pair.strip_prefix("id=").unwrap();
                prop_assert!(SessionId::parse(value).is_some());
                prop_assert!(!String::from_utf8_lossy(&bytes).contains(value));
                Ok(())
            })?;
        }
    }
}

/// With a signing key, only cookies this application signed are accepted.
#[tokio::test]
async fn signed_cookies_reject_tampering() {
    let store = MemoryStore::new();
    let signed_app = |key: [u8; 64]| {
        let layer = SessionLayer::builder(store.clone()).with_signing_key(Key::from(&key));
        app(layer.build().unwrap())
    };
    let app = signed_app([42; 64]);
    let pair = send(&app, "POST", "/set/a/1", None).await.cookie_pair();
    let value = pair.strip_prefix("id=").unwrap();
    assert!(value.len() > 32, "the cookie is not signed: {value}");
    assert_eq!(send(&app, "GET", "/get/a", Some(&pair)).await.body, "\"1\"");

    // Flip each character of the signature and of the id: every one is refused.
    for i in 0..value.len() {
        let mut tampered = value.as_bytes().to_vec();
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let cookie = format!("id={}", String::from_utf8(tampered).unwrap());
        assert_eq!(
            send(&app, "GET", "/get/a", Some(&cookie)).await.body,
            "null",
            "byte {i}"
        );
    }
    // The bare id, without its signature, is refused too.
    let bare = format!("id={}", &value[value.len() - 32..]);
    assert_eq!(send(&app, "GET", "/get/a", Some(&bare)).await.body, "null");
    // Another key does not accept it.
    let other = signed_app([7; 64]);
    assert_eq!(
        send(&other, "GET", "/get/a", Some(&pair)).await.body,
        "null"
    );
}

/// API clients can carry the id in a header instead of a cookie.
#[tokio::test]
async fn the_id_can_travel_in_a_header() {
    let app = app(SessionLayer::builder(MemoryStore::new())
        .with_header("x-session")
        .build()
        .unwrap());
    let response = app
        .clone()
        .oneshot(Request::post("/set/a/1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let id = response.headers()["x-session"].to_str().unwrap().to_owned();
    let request = Request::get("/get/a")
        .header("x-session", &id)
        .body(Body::empty())
        .unwrap();
    let read = Reply::read(app.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(read.body, "\"1\"");
    assert!(
        read.headers.get("x-session").is_none(),
        "an unchanged id was re-sent"
    );
    let request = Request::post("/logout")
        .header("x-session", &id)
        .body(Body::empty())
        .unwrap();
    let ended = Reply::read(app.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(ended.headers["x-session"], "");
}

/// A persistent expiry gives the cookie a `Max-Age`, re-sent when the expiry moves.
#[tokio::test]
async fn persistent_cookies_carry_max_age() {
    let clock = MockClock::new();
    let app = app(SessionLayer::builder(MemoryStore::new())
        .with_clock(clock.now_fn())
        .build()
        .unwrap());
    let plain = send(&app, "POST", "/set/a/1", None).await;
    assert!(!plain.set_cookies()[0].contains("Max-Age"));

    let remembered = send(&app, "POST", "/remember-me", None).await;
    let cookie = &remembered.set_cookies()[0];
    assert!(cookie.contains("Max-Age=3600"), "{cookie}");
    let pair = remembered.cookie_pair();
    // Soon after: nothing to re-send.
    clock.set_ahead(Duration::from_secs(60));
    assert!(send(&app, "GET", "/get/a", Some(&pair))
        .await
        .set_cookies()
        .is_empty());
    // Twenty minutes on, the expiry is pushed back and the cookie with it.
    clock.set_ahead(Duration::from_secs(20 * 60));
    let refreshed = send(&app, "GET", "/get/a", Some(&pair)).await;
    let cookie = &refreshed.set_cookies()[0];
    assert!(
        cookie.contains("Max-Age=3600") || cookie.contains("Max-Age=3599"),
        "{cookie}"
    );
    // The same for a write that never reads: soon after, nothing; much later, the
    // cookie again, with the session's own expiry.
    clock.set_ahead(Duration::from_secs(21 * 60));
    assert!(send(&app, "POST", "/set/b/2", Some(&pair))
        .await
        .set_cookies()
        .is_empty());
    clock.set_ahead(Duration::from_secs(45 * 60));
    let written = send(&app, "POST", "/set/b/3", Some(&pair)).await;
    let cookie = &written.set_cookies()[0];
    assert!(
        cookie.contains("Max-Age=3600") || cookie.contains("Max-Age=3599"),
        "{cookie}"
    );
    assert_eq!(written.cookie_pair(), pair);
}

/// The extractor explains a missing layer; `Option<Session>` is `None` there.
#[tokio::test]
async fn the_extractor_names_the_missing_layer() {
    let app = Router::new()
        .route("/needs", get(|_: Session| async { "unreachable" }))
        .route(
            "/optional",
            get(|session: Option<Session>| async move { session.is_some().to_string() }),
        );
    let reply = send(&app, "GET", "/needs", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
    assert_eq!(send(&app, "GET", "/optional", None).await.body, "false");
    let layered = app.layer(SessionLayer::new(MemoryStore::new()));
    assert_eq!(send(&layered, "GET", "/optional", None).await.body, "true");
}

/// The layer serves any tower service, not only axum.
#[tokio::test]
async fn the_layer_wraps_plain_tower_services() {
    use tower::Layer;
    let service = SessionLayer::new(MemoryStore::new()).layer(tower::service_fn(
        |request: http::Request<String>| async move {
            let session = request.extensions().get::<Session>().cloned().unwrap();
            let n = session
                .update("n", |n: Option<u32>| n.unwrap_or(0) + 1)
                .await?;
            Ok::<_, SessionError>(http::Response::new(n.to_string()))
        },
    ));
    let first = service
        .clone()
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let request = http::Request::builder()
        .header(header::COOKIE, pair)
        .body(String::new())
        .unwrap();
    let second = service.oneshot(request).await.unwrap();
    assert_eq!(second.body(), "2");
}

/// A session ended in the store before a request writes it is not re-created by that
/// request's write.
#[tokio::test]
async fn a_session_deleted_elsewhere_stays_deleted() {
    let store = MemoryStore::new();
    let app = app(SessionLayer::new(store.clone()));
    let pair = send(&app, "POST", "/login/alice", None).await.cookie_pair();
    let id = SessionId::parse(pair.strip_prefix("id=").unwrap()).unwrap();
    store.delete(&id.key()).await.unwrap();
    let reply = send(&app, "POST", "/set/a/1", Some(&pair)).await;
    // The write that did not read is dropped, and the client told nothing: its
    // cookie may by now be the one of whatever ended the session.
    assert_eq!(reply.set_cookies(), Vec::<&str>::new());
    assert!(store.load(&id.key()).await.unwrap().is_none());
    // A request that reads first starts a new session for its write.
    let reply = send(&app, "POST", "/read-set/a/1", Some(&pair)).await;
    assert_ne!(reply.cookie_pair(), pair);
}

/// A request reads its own writes: inserts, removals and clears show at once, on a
/// new session and on a stored one, and what it leaves is what the next request sees.
#[tokio::test]
async fn a_request_reads_its_own_writes() {
    async fn sequence(session: Session) -> Result<String, SessionError> {
        let mut seen = Vec::new();
        let mut look = |label: &str, value: Option<String>| seen.push(format!("{label}={value:?}"));
        look("start", session.get("a").await?);
        session.insert("a", "1").await?;
        session.insert("b", "2").await?;
        look("a", session.get("a").await?);
        session.remove("a").await?;
        look("a-removed", session.get("a").await?);
        look("b", session.get("b").await?);
        session.clear().await?;
        look("b-cleared", session.get("b").await?);
        let empty = session.is_empty().await?;
        session.insert("c", "3").await?;
        look("c", session.get("c").await?);
        seen.insert(seen.len() - 1, format!("empty={empty}"));
        Ok(seen.join(" "))
    }
    let app = Router::new()
        .route("/sequence", post(sequence))
        .merge(routes())
        .layer(SessionLayer::new(MemoryStore::new()));
    let expected =
        "a=Some(\"1\") a-removed=None b=Some(\"2\") b-cleared=None empty=true c=Some(\"3\")";
    let first = send(&app, "POST", "/sequence", None).await;
    assert_eq!(first.body, format!("start=None {expected}"));
    let pair = first.cookie_pair();
    assert_eq!(send(&app, "GET", "/get/c", Some(&pair)).await.body, "\"3\"");
    let second = send(&app, "POST", "/sequence", Some(&pair)).await;
    assert_eq!(second.body, format!("start=None {expected}"));
    for (key, value) in [("a", "null"), ("b", "null"), ("c", "\"3\"")] {
        assert_eq!(
            send(&app, "GET", &format!("/get/{key}"), Some(&pair))
                .await
                .body,
            value
        );
    }
}
