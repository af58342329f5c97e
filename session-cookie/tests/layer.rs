//! `CookieStore` behind the layer: the docs/security.md items a client-side store answers
//! for (20–25, 28), and the parts of the store contract that apply to it.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{CACHE_CONTROL, COOKIE};
use http::{Request, StatusCode};
use proptest::prelude::*;
use session_cookie::{CookieStore, Key};
use session_core::{ConfigError, SessionLayer};
use session_memory::MemoryStore;
use session_testkit::{
    app, concurrent_logins, random_user, send, App, Client, InstrumentedStore, MockClock, Reply,
};
use tower::ServiceExt;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).expect("key")
}

fn cookie_app(store: CookieStore) -> App {
    app(SessionLayer::new(store), None)
}

fn clocked_app(store: CookieStore, clock: &MockClock, absolute: Option<Duration>) -> App {
    let mut builder = SessionLayer::builder(store).with_clock(clock.now_fn());
    if let Some(absolute) = absolute {
        builder = builder.with_absolute_timeout(absolute);
    }
    app(builder.build().expect("valid"), None)
}

/// A client already holding `cookie`.
fn holding(app: &App, cookie: &str) -> Client {
    let mut client = Client::new(app);
    client.cookie = Some(cookie.to_owned());
    client
}

/// `GET path` with a raw `Cookie` header.
async fn get_with_cookie_header(app: &App, header: &str, path: &str) -> Reply {
    send(app, "GET", path, Some(header)).await
}

#[tokio::test]
async fn sessions_live_in_the_cookie_alone() {
    let app = cookie_app(CookieStore::new(key(1)));
    let mut client = Client::new(&app);
    client.post("/set/theme/dark").await;
    client.post("/set/lang/fr").await;
    let cookie = client.cookie.clone().expect("a cookie");
    assert!(!cookie.contains("dark"), "the data shows through");

    // Another app (another server) with the same key serves it.
    let other_server = cookie_app(CookieStore::new(key(1)));
    let mut elsewhere = holding(&other_server, &cookie);
    assert_eq!(elsewhere.get("/get/theme").await.body, "\"dark\"");
    let reply = elsewhere.get("/get/lang").await;
    assert_eq!(reply.body, "\"fr\"");
    assert!(reply.set_cookies().is_empty(), "a read re-sent the cookie");

    let reply = client.post("/remove/theme").await;
    assert_eq!(reply.set_cookies().len(), 1);
    assert_eq!(reply.headers[CACHE_CONTROL], "no-store");
    assert_eq!(client.get("/get/theme").await.body, "null");
    assert_eq!(client.get("/get/lang").await.body, "\"fr\"");
}

#[tokio::test]
async fn login_logout_and_the_user_list() {
    let app = cookie_app(CookieStore::new(key(1)));
    let mut client = Client::new(&app);
    client.post("/set/cart/3").await;
    let before = client.cookie.clone();
    client.post("/login/alice").await;
    assert_ne!(client.cookie, before, "login did not cycle the session");
    assert_eq!(client.get("/user").await.body, "alice");
    assert_eq!(client.get("/get/cart").await.body, "\"3\"");
    // Only the session at hand is known.
    assert_eq!(client.get("/sessions").await.body, "1");

    let reply = client.post("/logout").await;
    let removal = reply.set_cookies()[0].to_ascii_lowercase();
    assert!(removal.contains("max-age=0"), "{removal}");
    assert_eq!(client.cookie, None);
    assert_eq!(client.get("/user").await.body, "");
}

/// docs/security.md 20: any single-byte change of the envelope, through the layer, gives
/// a fresh session (never a panic, never the session).
/// docs/security.md 29 in the cookie: a login into a session sealed for another user
/// starts empty; an anonymous cart and the same user's data carry over.
#[tokio::test]
async fn a_login_of_another_user_starts_clean() {
    let app = cookie_app(CookieStore::new(key(13)));
    let mut client = Client::new(&app);
    client.post("/set/cart/3").await;
    client.post("/login/bob").await;
    assert_eq!(client.get("/get/cart").await.body, "\"3\"");
    client.post("/set/theme/planted-by-bob").await;
    client.post("/login/bob").await;
    assert_eq!(client.get("/get/theme").await.body, "\"planted-by-bob\"");
    client.post("/login/alice").await;
    assert_eq!(client.get("/user").await.body, "alice");
    assert_eq!(client.get("/get/theme").await.body, "null");
    assert_eq!(client.get("/get/cart").await.body, "null");
}

#[tokio::test]
async fn every_single_byte_change_gives_a_fresh_session() {
    let app = cookie_app(CookieStore::new(key(2)));
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let cookie = client.cookie.clone().expect("a cookie");
    let envelope = URL_SAFE_NO_PAD.decode(&cookie).expect("base64url");
    for position in 0..envelope.len() {
        let mut tampered = envelope.clone();
        tampered[position] ^= 0x01;
        let mut forger = holding(&app, &URL_SAFE_NO_PAD.encode(&tampered));
        let reply = forger.get("/user").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "", "byte {position} changed and still accepted");
    }
    assert_eq!(holding(&app, &cookie).get("/user").await.body, "alice");
}

/// docs/security.md 20: the cookie's name is bound: a value sealed for one cookie does not
/// open as another.
#[tokio::test]
async fn a_value_moved_to_another_cookie_is_refused() {
    let store = CookieStore::new(key(3));
    let other = app(
        SessionLayer::builder(store.clone())
            .with_cookie_name("other")
            .build()
            .expect("valid"),
        None,
    );
    let mut client = Client::new(&cookie_app(store));
    client.post("/login/alice").await;
    let value = client.cookie.clone().expect("a cookie");
    let reply = get_with_cookie_header(&other, &format!("other={value}"), "/user").await;
    assert_eq!(reply.body, "", "a value sealed for `id` opened as `other`");
}

/// docs/security.md 21: with keys configured, nothing unsealed is ever read: a forged
/// plaintext session, a server-side id, or an envelope of another version gives a
/// fresh session.
#[tokio::test]
async fn forged_and_legacy_cookies_give_a_fresh_session() {
    let app = cookie_app(CookieStore::new(key(4)));
    let payload = r#"{"i":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","m":{"e":99999999999999,"c":0,"u":"admin"},"v":{}}"#;
    let mut genuine = Client::new(&app);
    genuine.post("/login/alice").await;
    let mut envelope = URL_SAFE_NO_PAD
        .decode(genuine.cookie.as_deref().expect("a cookie"))
        .expect("base64url");
    envelope[0] = 2;
    let forgeries = [
        URL_SAFE_NO_PAD.encode(payload),
        payload.replace('"', "%22"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        URL_SAFE_NO_PAD.encode(&envelope),
        URL_SAFE_NO_PAD.encode([1u8; 46]),
    ];
    for forged in forgeries {
        let reply = holding(&app, &forged).get("/user").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "", "{forged} was accepted");
    }
}

/// docs/security.md 22: the three phases of a key rotation.
#[tokio::test]
async fn three_phase_rotation() {
    let (old, new) = (key(5), key(6));
    // Before: the old key seals.
    let before = cookie_app(CookieStore::new(old.clone()));
    let mut client = Client::new(&before);
    client.post("/set/a/1").await;
    let sealed_by_old = client.cookie.clone().expect("a cookie");

    // Phase 1: the new key is deployed as an old key: it opens, nothing changes.
    let phase1 = cookie_app(CookieStore::new(old.clone()).with_old_key(new.clone()));
    let reply = holding(&phase1, &sealed_by_old).get("/get/a").await;
    assert_eq!(reply.body, "\"1\"");
    assert!(reply.set_cookies().is_empty());

    // Phase 2: the new key seals; the old one still opens, and its cookies are
    // sealed again under the new key on their next response, even a read.
    let phase2 = cookie_app(CookieStore::new(new.clone()).with_old_key(old.clone()));
    let mut returning = holding(&phase2, &sealed_by_old);
    let reply = returning.get("/get/a").await;
    assert_eq!(reply.body, "\"1\"");
    assert_eq!(reply.set_cookies().len(), 1, "not re-sealed");
    let resealed = returning.cookie.clone().expect("a cookie");
    assert_ne!(resealed, sealed_by_old);
    assert!(returning.get("/get/a").await.set_cookies().is_empty());

    // Phase 3: the old key is gone; what it sealed no longer opens.
    let phase3 = cookie_app(CookieStore::new(new));
    assert_eq!(
        holding(&phase3, &resealed).get("/get/a").await.body,
        "\"1\""
    );
    let mut stale = holding(&phase3, &sealed_by_old);
    let reply = stale.get("/get/a").await;
    assert_eq!(reply.body, "null");
    // A cookie the layer cannot open is no session, and none of its to remove: a
    // sibling domain's cookie of the same name would not open either.
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
}

/// docs/security.md 23: the times are inside the ciphertext, so a captured cookie stops
/// working at its idle timeout and at its absolute timeout, however it is replayed.
#[tokio::test]
async fn a_captured_cookie_expires() {
    let clock = MockClock::new();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let app = clocked_app(CookieStore::new(key(7)), &clock, Some(minutes(60)));

    let mut idle = Client::new(&app);
    idle.post("/login/alice").await;
    let captured = idle.cookie.clone().expect("a cookie");
    clock.set_ahead(minutes(29));
    assert_eq!(holding(&app, &captured).get("/user").await.body, "alice");
    clock.set_ahead(minutes(31));
    assert_eq!(holding(&app, &captured).get("/user").await.body, "");

    // Kept alive by requests, it still ends at the absolute timeout; and the copy
    // captured at login ends with it (and at its own idle timeout, long before).
    clock.set_ahead(Duration::ZERO);
    let mut busy = Client::new(&app);
    busy.post("/login/bob").await;
    let captured = busy.cookie.clone().expect("a cookie");
    for step in 1..=2 {
        clock.set_ahead(minutes(20 * step));
        assert_eq!(busy.get("/user").await.body, "bob", "ended early");
    }
    let refreshed = busy.cookie.clone().expect("a cookie");
    assert_ne!(
        refreshed, captured,
        "the idle timeout was never pushed back"
    );
    clock.set_ahead(minutes(61));
    assert_eq!(holding(&app, &refreshed).get("/user").await.body, "");
    assert_eq!(holding(&app, &captured).get("/user").await.body, "");
}

/// docs/security.md 23: an epoch bump ("log out everywhere") refuses every earlier cookie
/// of the user, on every server sharing the epoch store, and no other user's.
#[tokio::test]
async fn log_out_everywhere_refuses_earlier_cookies() {
    let epochs = MemoryStore::new();
    let server = |epochs: &MemoryStore| {
        cookie_app(CookieStore::new(key(8)).with_user_epochs(epochs.clone(), DAY))
    };
    let (a, b) = (server(&epochs), server(&epochs));
    let user = random_user();
    let mut devices = Vec::new();
    for app in [&a, &b, &a] {
        let mut device = Client::new(app);
        device.post(&format!("/login/{user}")).await;
        devices.push(device);
    }
    let mut bystander = Client::new(&b);
    bystander.post(&format!("/login/{}", random_user())).await;
    let captured: Vec<String> = devices.iter().filter_map(|d| d.cookie.clone()).collect();

    let reply = devices[1].post("/logout-everywhere").await;
    assert_eq!(reply.status, StatusCode::OK);
    for cookie in &captured {
        for app in [&a, &b] {
            assert_eq!(holding(app, cookie).get("/user").await.body, "");
        }
    }
    assert_ne!(bystander.get("/user").await.body, "");
    // Logging in again works.
    devices[0].post(&format!("/login/{user}")).await;
    assert_eq!(devices[0].get("/user").await.body, user);
}

/// A login just after "log out everywhere" holds, even when the server that revoked
/// runs ahead of the one the user logs in on again (clock skew between servers).
#[tokio::test]
async fn a_login_after_log_out_everywhere_holds_across_clock_skew() {
    let epochs = MemoryStore::new();
    let store = || CookieStore::new(key(10)).with_user_epochs(epochs.clone(), DAY);
    let ahead = MockClock::new();
    ahead.set_ahead(Duration::from_secs(60));
    let (a, b) = (clocked_app(store(), &ahead, None), cookie_app(store()));
    let user = random_user();
    let mut device = Client::new(&a);
    device.post(&format!("/login/{user}")).await;
    let revoked = device.cookie.clone().expect("a cookie");
    assert_eq!(
        device.post("/logout-everywhere").await.status,
        StatusCode::OK
    );

    let mut again = Client::new(&b);
    again.post(&format!("/login/{user}")).await;
    assert_eq!(
        again.get("/user").await.body,
        user,
        "refused on the server behind"
    );
    let cookie = again.cookie.clone().expect("a cookie");
    assert_eq!(holding(&a, &cookie).get("/user").await.body, user);
    // The revoked cookie stays refused on both.
    for app in [&a, &b] {
        assert_eq!(holding(app, &revoked).get("/user").await.body, "");
    }
}

#[tokio::test]
async fn a_cap_of_one_session_per_user_holds() {
    let epochs = MemoryStore::new();
    let store = CookieStore::new(key(9)).with_user_epochs(epochs, DAY);
    let layer = SessionLayer::builder(store)
        .with_max_sessions_per_user(1)
        .build()
        .expect("valid");
    let app = app(layer, None);
    let user = random_user();
    let mut first = Client::new(&app);
    first.post(&format!("/login/{user}")).await;
    // Within the same millisecond or not, the later login is the newer one.
    let mut second = Client::new(&app);
    second.post(&format!("/login/{user}")).await;
    assert_eq!(second.get("/user").await.body, user);
    assert_eq!(
        first.get("/user").await.body,
        "",
        "the older session survived"
    );
}

/// docs/security.md 30 with epochs: 20 logins of one user released together across
/// three servers, with a cap of one, leave exactly one cookie that opens a logged-in
/// session, round after round (with epochs of milliseconds, logins of the same
/// millisecond all counted as current).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_concurrent_logins_leave_one_cookie() {
    const LOGINS: usize = 20;
    let epochs = MemoryStore::new();
    let servers: Vec<App> = (0..3)
        .map(|_| {
            let store = CookieStore::new(key(12)).with_user_epochs(epochs.clone(), DAY);
            let layer = SessionLayer::builder(store)
                .with_max_sessions_per_user(1)
                .build()
                .expect("valid");
            app(layer, None)
        })
        .collect();
    for round in 0..10 {
        let user = random_user();
        let logged_in = concurrent_logins(&servers, &user, LOGINS).await;
        assert_eq!(logged_in, 1, "round {round}: {logged_in} cookies logged in");
    }
}

#[tokio::test]
async fn revocation_without_epochs_is_refused_clearly() {
    let store = CookieStore::new(key(10));
    for cap in [1, 2] {
        let error = SessionLayer::builder(store.clone())
            .with_max_sessions_per_user(cap)
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::ClientSideCap);
    }
    let epochs = CookieStore::new(key(10)).with_user_epochs(MemoryStore::new(), DAY);
    let error = SessionLayer::builder(epochs)
        .with_max_sessions_per_user(2)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::ClientSideCap);

    // `logout_everywhere` is `SessionError::Unsupported` (the test app makes it a 500)
    // and the session is untouched.
    let app = cookie_app(store);
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let cookie = client.cookie.clone();
    let reply = client.post("/logout-everywhere").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(client.cookie, cookie);
    assert_eq!(client.get("/user").await.body, "alice");
}

/// docs/security.md 16–17 for the epoch store: a failing or hanging epoch store fails the
/// request closed (503, no cookie set or cleared), and the session is intact after.
#[tokio::test]
async fn an_epoch_store_outage_fails_closed() {
    let epochs = InstrumentedStore::new(Arc::new(MemoryStore::new()));
    let store = CookieStore::new(key(11)).with_user_epochs(epochs.clone(), DAY);
    let layer = SessionLayer::builder(store)
        .with_store_timeout(Duration::from_millis(200))
        .build()
        .expect("valid");
    let app = app(layer, None);
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let cookie = client.cookie.clone();
    for outage in [0, 1] {
        epochs.set_failing(outage == 0);
        epochs.set_hanging(outage == 1);
        let reply = client.post("/set/a/1").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            reply.set_cookies().is_empty(),
            "a cookie was set or cleared"
        );
        assert_eq!(client.cookie, cookie);
    }
    epochs.set_failing(false);
    epochs.set_hanging(false);
    assert_eq!(client.get("/user").await.body, "alice");
    // Anonymous sessions never ask the epoch store.
    epochs.set_failing(true);
    let mut visitor = Client::new(&app);
    assert_eq!(visitor.post("/set/a/1").await.status, StatusCode::OK);
    assert_eq!(visitor.get("/get/a").await.body, "\"1\"");
}

/// docs/security.md 24: a session past 4096 bytes of cookie is a 500 with no `Set-Cookie`;
/// the client keeps its previous cookie and loses nothing. Compression lets a
/// compressible one fit.
#[tokio::test]
async fn a_5kb_session_is_refused_whole() {
    let big = "x".repeat(5 * 1024);
    let app = cookie_app(CookieStore::new(key(12)));
    let mut client = Client::new(&app);
    client.post("/set/small/1").await;
    let before = client.cookie.clone();
    let reply = client.post(&format!("/set/big/{big}")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty(), "a cookie was sent");
    assert_eq!(client.cookie, before);
    assert_eq!(client.get("/get/small").await.body, "\"1\"");

    let compressing = cookie_app(CookieStore::new(key(12)).with_compression(1024));
    let mut client = Client::new(&compressing);
    assert_eq!(
        client.post(&format!("/set/big/{big}")).await.status,
        StatusCode::OK
    );
    assert_eq!(client.get("/get/big").await.body.len(), big.len() + 2);
}

/// The size formula in the crate docs: `4/3 × (126 + u + d)` for the value, about 45
/// for the default attributes.
#[tokio::test]
async fn the_documented_size_formula_holds() {
    let app = cookie_app(CookieStore::new(key(13)));
    let user = "alice";
    for len in [0usize, 100, 1000, 2800] {
        let mut client = Client::new(&app);
        client.post(&format!("/login/{user}")).await;
        let value = "v".repeat(len);
        let reply = client.post(&format!("/set/k/{value}")).await;
        let set_cookie = reply.set_cookies()[0].len();
        // The data's JSON: {"k":"vvv…"}.
        let data = len + 8;
        let predicted = (126 + user.len() + data) * 4 / 3 + 45;
        let error = set_cookie.abs_diff(predicted);
        assert!(
            error <= 24,
            "{len}: predicted {predicted}, got {set_cookie}"
        );
        assert!(set_cookie <= 4096, "{len} bytes did not fit");
    }
}

/// docs/security.md 28: duplicate cookies (the first that opens wins), oversized and
/// malformed ones: never a panic, never a 500.
#[tokio::test]
async fn duplicate_and_oversized_cookies() {
    let app = cookie_app(CookieStore::new(key(14)));
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let good = client.cookie.clone().expect("a cookie");
    for header in [
        format!("id=garbage; id={good}"),
        format!("id={good}; id=garbage"),
        format!("other=1; id=; id={good}"),
    ] {
        let reply = get_with_cookie_header(&app, &header, "/user").await;
        assert_eq!(reply.body, "alice", "{header}");
    }
    for header in [
        format!("id={}", "A".repeat(8000)),
        format!("id={}", "%".repeat(100)),
        "id".to_owned(),
        "=".repeat(50),
    ] {
        let reply = get_with_cookie_header(&app, &header, "/user").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "");
    }
}

/// Other cookies of the site may hold bytes that are not visible ASCII (browsers send
/// a script's `document.cookie = "name=José"` as raw UTF-8): the sealed cookie beside
/// them still opens.
#[tokio::test]
async fn a_cookie_beside_non_ascii_cookies_still_opens() {
    let app = cookie_app(CookieStore::new(key(17)));
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let good = client.cookie.clone().expect("a cookie");
    let cookies = [
        "name=Jos\u{e9}; id=".as_bytes(),
        good.as_bytes(),
        b"; city=K\xf6ln",
    ]
    .concat();
    let mut request = Request::get("/user").body(String::new()).expect("request");
    request.headers_mut().insert(
        COOKIE,
        http::HeaderValue::from_bytes(&cookies).expect("a header value"),
    );
    let response = app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.into_body(), "alice");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// docs/security.md 28: arbitrary cookie values through the layer.
    #[test]
    fn arbitrary_cookie_values_never_panic(value in "[ -~]{0,600}") {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let app = cookie_app(CookieStore::new(key(15)));
        let header = format!("id={}", value.replace(';', ""));
        if http::HeaderValue::from_str(&header).is_ok() {
            let reply = runtime.block_on(get_with_cookie_header(&app, &header, "/user"));
            prop_assert_eq!(reply.status, StatusCode::OK);
            prop_assert_eq!(reply.body, "");
        }
    }

    /// Arbitrary envelopes that decode from base64 and carry the right version and a
    /// known key id still never open.
    #[test]
    fn arbitrary_envelopes_never_open(body in proptest::collection::vec(any::<u8>(), 40..400)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let store = CookieStore::new(key(16));
        let app = cookie_app(store);
        let mut client = Client::new(&app);
        runtime.block_on(client.post("/set/a/1"));
        let genuine = URL_SAFE_NO_PAD.decode(client.cookie.expect("a cookie")).expect("base64");
        let mut forged = genuine[..6].to_vec();
        forged.extend_from_slice(&body);
        let header = format!("id={}", URL_SAFE_NO_PAD.encode(&forged));
        let reply = runtime.block_on(get_with_cookie_header(&app, &header, "/get/a"));
        prop_assert_eq!(reply.body, "null");
    }
}
