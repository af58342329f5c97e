//! The contract through the layer: each rule drives a `SessionLayer` over the store
//! with an in-process client, as requests would.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use session_core::{LoginData, SessionLayer, SessionStore};

use crate::app::{app, send, App, Client, Pause};
use crate::{
    concurrent_logins, random_key, random_token, random_user, InstrumentedStore, MockClock,
};

use super::{data_of, record, HOUR};

fn layer<S: SessionStore>(store: S) -> SessionLayer {
    SessionLayer::new(store)
}

/// docs/security.md 2: an attacker-chosen, well-formed id is never adopted.
pub async fn attacker_chosen_id_is_never_adopted<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    let chosen = random_token();
    let chosen_key = session_core::store::SessionId::parse(&chosen)
        .expect("well-formed")
        .key();
    client.cookie = Some(chosen.clone());
    // A write that does not read finds no session under the id, and is dropped.
    let reply = client.post("/set/planted/yes").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(client.cookie.as_deref(), Some(chosen.as_str()));
    assert_eq!(store.load(&chosen_key).await.expect("load"), None);
    // A write that reads first starts a session, under a new id.
    let reply = client.post("/incr/planted").await;
    assert_eq!(reply.body, "1");
    let issued = client.cookie.clone().expect("a new id was issued");
    assert_ne!(issued, chosen, "the attacker's id was adopted");
    assert_eq!(store.load(&chosen_key).await.expect("load"), None);
    assert_eq!(client.get("/get/planted").await.body, "1");
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 3: what the store keeps is not the id, and is no use as a cookie.
pub async fn stored_key_is_not_a_cookie<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let user = random_user();
    let mut client = Client::new(&app);
    client.post(&format!("/login/{user}")).await;
    let token = client.cookie.clone().expect("logged in");
    let listed = store.user_sessions(&user).await.expect("list");
    assert_eq!(listed.len(), 1);
    let stored = listed[0].key.to_string();
    assert!(!stored.contains(&token), "the raw id is stored");
    let mut thief = Client::new(&app);
    thief.cookie = Some(stored);
    assert_eq!(
        thief.get("/user").await.body,
        "",
        "the stored key worked as a cookie"
    );
    store.delete_user_sessions(&user).await.expect("clean up");
}

/// docs/security.md 4: `cycle_id` keeps the data under a new id and ends the old one.
pub async fn cycle_id_keeps_data_and_ends_the_old_id<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    let old = client.clone();
    client.post("/cycle").await;
    assert_ne!(client.cookie, old.cookie, "the id did not change");
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    assert_eq!(
        store.load(&old.key().expect("key")).await.expect("load"),
        None
    );
    let mut replay = old.clone();
    assert_eq!(
        replay.get("/get/a").await.body,
        "null",
        "the old id still works"
    );
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 4 and 5, through the layer: when the id generator repeats a live id,
/// the layer draws another and the existing record is untouched.
pub async fn forced_collision_never_overwrites<S: SessionStore>(store: S) {
    let store = InstrumentedStore::new(Arc::new(store));
    let victim = random_key();
    store
        .inner()
        .create(&victim, &record(json!({"owner": "victim"}), HOUR))
        .await
        .expect("create");
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    store.collide_next_with(victim);
    assert_eq!(
        client.post("/set/owner/intruder").await.status,
        StatusCode::OK
    );
    assert!(
        !store.is_collision_pending(),
        "the forced collision was not tried"
    );
    assert_eq!(
        store.count("create"),
        2,
        "the layer did not draw a second id"
    );
    let kept = store
        .inner()
        .load(&victim)
        .await
        .expect("load")
        .expect("victim present");
    assert_eq!(
        data_of(&kept),
        json!({"owner": "victim"}),
        "the existing record changed"
    );
    assert_ne!(client.key(), Some(victim));
    assert_eq!(client.get("/get/owner").await.body, "\"intruder\"");
    store.inner().delete(&victim).await.expect("delete");
    store
        .inner()
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 6: a slow request that changed the session before a logout finishes
/// after it, and writes nothing: the old cookie yields an empty session.
pub async fn stale_save_after_logout_does_not_resurrect<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let pause = Arc::new(Pause::default());
    let app = app(layer(store.clone()), Some(pause.clone()));
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    let old_key = client.key().expect("key");
    let mut slow = client.clone();
    let slow_request = tokio::spawn(async move { slow.post("/paused-set/cart/full").await });
    pause.arrived.wait().await;
    let mut logout = client.clone();
    assert_eq!(logout.post("/logout").await.status, StatusCode::OK);
    assert_eq!(logout.cookie, None, "logout did not remove the cookie");
    pause.proceed.wait().await;
    let slow_reply = slow_request.await.expect("task");
    assert_eq!(slow_reply.status, StatusCode::OK);
    assert_eq!(
        store.load(&old_key).await.expect("load"),
        None,
        "the session was resurrected"
    );
    let mut replay = client.clone();
    assert_eq!(replay.get("/get/a").await.body, "null");
    assert_eq!(replay.get("/get/cart").await.body, "null");
}

/// docs/security.md 6 and 31, for a request that never read its session: it changes
/// it, the session is logged out, the request ends; the old record stays gone, and
/// the request's write is dropped, without a cookie: a new session would have given
/// the browser a cookie in place of whatever the other request set.
pub async fn stale_unread_save_after_logout_does_not_resurrect<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let pause = Arc::new(Pause::default());
    let app = app(layer(store.clone()), Some(pause.clone()));
    let mut client = Client::new(&app);
    client.post(&format!("/login/{}", random_user())).await;
    client.post("/set/a/1").await;
    let old_key = client.key().expect("key");
    let mut slow = client.clone();
    let slow_request = tokio::spawn(async move {
        let reply = slow.post("/paused-put/cart/full").await;
        (reply.status, slow)
    });
    pause.arrived.wait().await;
    let mut logout = client.clone();
    assert_eq!(logout.post("/logout").await.status, StatusCode::OK);
    pause.proceed.wait().await;
    let (status, slow) = slow_request.await.expect("task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        store.load(&old_key).await.expect("load"),
        None,
        "the session was resurrected"
    );
    assert_eq!(
        slow.key(),
        Some(old_key),
        "the stale request changed the client's cookie"
    );
    let mut replay = client.clone();
    assert_eq!(replay.get("/get/a").await.body, "null");
    assert_eq!(replay.get("/get/cart").await.body, "null");
}

/// docs/security.md 31: a slow request of the session a login replaces (one that read
/// it, and one that only wrote it) finishes after the login and sends no cookie: the
/// browser keeps the login's.
pub async fn requests_overlapping_a_login_leave_its_cookie<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    for path in ["/paused-set/cart/full", "/paused-put/cart/full"] {
        let pause = Arc::new(Pause::default());
        let app = app(layer(store.clone()), Some(pause.clone()));
        let user = random_user();
        let mut browser = Client::new(&app);
        browser.post("/set/theme/dark").await;
        let mut slow = browser.clone();
        let slow_request = tokio::spawn(async move { slow.post(path).await });
        pause.arrived.wait().await;
        browser.post(&format!("/login/{user}")).await;
        pause.proceed.wait().await;
        let slow_reply = slow_request.await.expect("task");
        assert_eq!(slow_reply.status, StatusCode::OK, "{path}");
        assert_eq!(
            slow_reply.set_cookies(),
            Vec::<&str>::new(),
            "{path}: a request the login overlapped changed the browser's cookie"
        );
        assert_eq!(browser.get("/user").await.body, user, "{path}");
        store.delete_user_sessions(&user).await.expect("clean up");
    }
}

/// docs/security.md 32: of several cookies with the session's name, the one that
/// names a live session wins, whatever its place, for reads and for writes that do
/// not read; ids the layer did not find get no removal cookie.
pub async fn a_shadowing_cookie_does_not_hide_the_session<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let user = random_user();
    let mut client = Client::new(&app);
    client.post(&format!("/login/{user}")).await;
    let real = format!("id={}", client.cookie.clone().expect("a cookie"));
    let planted = format!("id={}", random_token());
    for cookies in [format!("{planted}; {real}"), format!("{real}; {planted}")] {
        let read = send(&app, "GET", "/user", Some(&cookies)).await;
        assert_eq!(read.body, user, "{cookies}");
        assert_eq!(read.set_cookies(), Vec::<&str>::new(), "{cookies}");
        let write = send(&app, "POST", "/set/shadowed/no", Some(&cookies)).await;
        assert_eq!(write.set_cookies(), Vec::<&str>::new(), "{cookies}");
        assert_eq!(
            client.get("/get/shadowed").await.body,
            "\"no\"",
            "{cookies}"
        );
        client.post("/remove/shadowed").await;
    }
    let unknown = send(&app, "GET", "/user", Some(&planted)).await;
    assert_eq!(
        unknown.set_cookies(),
        Vec::<&str>::new(),
        "an id the layer did not find got a removal cookie"
    );
    store.delete_user_sessions(&user).await.expect("clean up");
}

/// A request that only writes its session costs one store call, and what it wrote
/// is there for the next request.
pub async fn an_unread_write_is_one_store_call<S: SessionStore>(store: S) {
    let store = InstrumentedStore::new(Arc::new(store));
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    store.reset_counts();
    assert_eq!(client.post("/set/b/2").await.status, StatusCode::OK);
    assert_eq!((store.count("save_unloaded"), store.total()), (1, 1));
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    assert_eq!(client.get("/get/b").await.body, "\"2\"");
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 7: 50 parallel requests of one session each set a distinct key; all
/// 50 keys are there afterwards.
pub async fn parallel_requests_keep_disjoint_keys<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/start/0").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { client.post(&format!("/set/key{i}/{i}")).await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    let record = store
        .load(&client.key().expect("key"))
        .await
        .expect("load")
        .expect("present");
    for i in 0..50 {
        assert_eq!(
            record.data.get(&format!("key{i}")),
            Some(&json!(i.to_string())),
            "key{i} was lost"
        );
    }
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// `Session::update` through the layer: 100 concurrent requests that add 1 end at
/// exactly +100.
pub async fn concurrent_increments_are_not_lost<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    assert_eq!(client.post("/incr/n").await.body, "1");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.post("/incr/n").await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    assert_eq!(
        client.get("/get/n").await.body,
        "101",
        "increments were lost"
    );
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 13: idle and absolute timeouts hold from the stored times, with a
/// clock the test moves.
pub async fn timeouts_follow_stored_times<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let clock = MockClock::new();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let layer = SessionLayer::builder(store.clone())
        .with_absolute_timeout(Duration::from_secs(3600))
        .with_clock(clock.now_fn())
        .build()
        .expect("valid");
    let app = app(layer, None);

    // Idle: 30 minutes without a request end the session.
    let mut idle = Client::new(&app);
    idle.post(&format!("/login/{}", random_user())).await;
    let idle_key = idle.key().expect("key");
    clock.set_ahead(minutes(29));
    assert_ne!(
        idle.get("/user").await.body,
        "",
        "ended before the idle timeout"
    );
    clock.set_ahead(minutes(29 + 31));
    let reply = idle.get("/user").await;
    assert_eq!(reply.body, "", "a session past its idle timeout was served");

    // Absolute: requests every 20 minutes keep it alive until the hour is up.
    clock.set_ahead(Duration::ZERO);
    let mut busy = Client::new(&app);
    busy.post(&format!("/login/{}", random_user())).await;
    let busy_key = busy.key().expect("key");
    for step in 1..=2 {
        clock.set_ahead(minutes(20 * step));
        assert_ne!(
            busy.get("/user").await.body,
            "",
            "ended early at {} min",
            20 * step
        );
    }
    clock.set_ahead(minutes(61));
    assert_eq!(
        busy.get("/user").await.body,
        "",
        "served past the absolute timeout"
    );
    store.delete(&idle_key).await.expect("delete");
    store.delete(&busy_key).await.expect("delete");
}

/// docs/security.md 14: logout deletes the record and a replayed cookie is anonymous.
pub async fn logout_ends_the_session_everywhere<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post(&format!("/login/{}", random_user())).await;
    let captured = client.clone();
    let key = client.key().expect("key");
    client.post("/logout").await;
    assert_eq!(client.cookie, None);
    assert_eq!(store.load(&key).await.expect("load"), None);
    let mut replay = captured.clone();
    assert_eq!(
        replay.get("/user").await.body,
        "",
        "a replayed cookie was served"
    );
}

/// docs/security.md 15: three clients of one user log in; "log out everywhere" from one
/// ends all three.
pub async fn logout_everywhere_ends_every_session_of_the_user<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let user = random_user();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::new(&app);
        client.post(&format!("/login/{user}")).await;
        clients.push(client);
    }
    let mut bystander = Client::new(&app);
    bystander.post(&format!("/login/{}", random_user())).await;
    assert_eq!(clients[0].get("/sessions").await.body, "3");
    assert_eq!(clients[0].post("/logout-everywhere").await.body, "3");
    for client in &mut clients {
        let mut replay = client.clone();
        assert_eq!(replay.get("/user").await.body, "", "a session survived");
    }
    assert_ne!(
        bystander.get("/user").await.body,
        "",
        "another user was logged out"
    );
    store
        .delete(&bystander.key().expect("key"))
        .await
        .expect("delete");
}

/// With a cap of one session per user, a new login ends the older session.
pub async fn session_cap_ends_older_sessions<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let layer = SessionLayer::builder(store.clone())
        .with_max_sessions_per_user(1)
        .build()
        .expect("valid");
    let app = app(layer, None);
    let user = random_user();
    let mut first = Client::new(&app);
    first.post(&format!("/login/{user}")).await;
    let mut second = Client::new(&app);
    second.post(&format!("/login/{user}")).await;
    assert_eq!(
        first.get("/user").await.body,
        "",
        "the older session survived the cap"
    );
    assert_eq!(second.get("/user").await.body, user);
    assert_eq!(store.user_sessions(&user).await.expect("list").len(), 1);
    store.delete_user_sessions(&user).await.expect("clean up");
}

/// docs/security.md 17: a store error on load is not "no session": 503, no cookie set or
/// cleared, and the session intact once the store is back.
pub async fn load_error_is_not_no_session<S: SessionStore>(store: S) {
    let store = InstrumentedStore::new(Arc::new(store));
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    let cookie = client.cookie.clone();
    store.set_failing(true);
    let reply = client.post("/set/b/2").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.contains_key(http::header::RETRY_AFTER));
    assert!(
        reply.set_cookies().is_empty(),
        "a cookie was set or cleared"
    );
    assert_eq!(client.cookie, cookie);
    store.set_failing(false);
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    assert_eq!(
        client.get("/get/b").await.body,
        "null",
        "a failed request wrote"
    );
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 29: a login into a session bound to another user starts empty
/// (new id, none of the old data); an anonymous session's data carries over into a
/// login, and a login of the same user keeps its data. With
/// `LoginData::StartEmpty`, nothing carries over.
pub async fn login_of_another_user_starts_empty<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let (bob, alice) = (random_user(), random_user());
    let mut client = Client::new(&app);
    client.post("/set/cart/apple").await;
    client.post(&format!("/login/{bob}")).await;
    assert_eq!(
        client.get("/get/cart").await.body,
        "\"apple\"",
        "an anonymous session's data did not carry over into the login"
    );
    client.post("/set/theme/planted-by-bob").await;
    assert_eq!(client.post("/incr/visits").await.body, "1");
    client.post(&format!("/login/{bob}")).await;
    assert_eq!(
        client.get("/get/theme").await.body,
        "\"planted-by-bob\"",
        "a login of the same user lost its data"
    );
    let bobs = client.clone();
    client.post(&format!("/login/{alice}")).await;
    assert_ne!(client.cookie, bobs.cookie, "the id did not change");
    assert_eq!(client.get("/user").await.body, alice);
    assert_eq!(
        client.get("/get/theme").await.body,
        "null",
        "alice's session shows bob's data"
    );
    assert_eq!(client.post("/incr/visits").await.body, "1");
    assert_eq!(
        store.load(&bobs.key().expect("key")).await.expect("load"),
        None,
        "bob's session outlived the login"
    );

    let empty = SessionLayer::builder(store.clone())
        .with_login_data(LoginData::StartEmpty)
        .build()
        .expect("valid");
    let empty_app = crate::app(empty, None);
    let mut shared_terminal = Client::new(&empty_app);
    shared_terminal.post("/set/cart/pear").await;
    shared_terminal.post(&format!("/login/{bob}")).await;
    assert_eq!(shared_terminal.get("/get/cart").await.body, "null");
    store.delete_user_sessions(&bob).await.expect("clean up");
    store.delete_user_sessions(&alice).await.expect("clean up");
}

/// docs/security.md 30: with a cap of one session per user, logins that overlap (20
/// released together, across three servers) leave exactly one live session, the
/// newest in the order every server agrees on; with a cap of N, exactly N. Repeated,
/// so that the race is met.
pub async fn capped_concurrent_logins_leave_exactly_the_cap<S: SessionStore>(store: S) {
    const LOGINS: usize = 20;
    // Calls that give the runtime a turn, as a network store's do, so that the
    // logins interleave between their store calls even over an in-process store.
    let store = Arc::new(InstrumentedStore::new(store));
    store.set_yielding(true);
    for (round, cap) in [1, 1, 1, 3, 1, 3].into_iter().enumerate() {
        let servers: Vec<App> = (0..3)
            .map(|_| {
                let layer = SessionLayer::builder(store.clone())
                    .with_max_sessions_per_user(cap)
                    .build()
                    .expect("valid");
                app(layer, None)
            })
            .collect();
        let user = random_user();
        let logged_in = concurrent_logins(&servers, &user, LOGINS).await;
        let listed = store.user_sessions(&user).await.expect("list");
        store.delete_user_sessions(&user).await.expect("clean up");
        assert_eq!(
            (logged_in, listed.len()),
            (cap, cap),
            "round {round}: {logged_in} clients logged in and {} sessions listed, with a cap of {cap}",
            listed.len()
        );
    }
}

/// docs/security.md 35 and #28: an expiry past what a store can keep (an idle timeout
/// of `Duration::MAX`, "remember me forever") is cut to `Expiry::LONGEST` before any
/// store sees it: the login works, and the session still ends.
pub async fn an_endless_expiry_is_cut_to_the_longest<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let app = app(layer(store.clone()), None);
    let user = random_user();
    let mut client = Client::new(&app);
    client.post(&format!("/login/{user}")).await;
    let reply = client.post("/remember").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(client.get("/user").await.body, user);
    let record = store
        .load(&client.key().expect("key"))
        .await
        .expect("load")
        .expect("the session");
    let longest = session_core::Timestamp::now().saturating_add(session_core::Expiry::LONGEST);
    assert!(
        record.meta.expires_at <= longest,
        "expires at {:?}, past the longest",
        record.meta.expires_at
    );
    store.delete_user_sessions(&user).await.expect("clean up");
}

/// docs/security.md 35: keys and values that some store cannot hold (a control
/// character in a key, U+0000 in a value) are refused alike on every store, before
/// any store call, as the client's error (400 here), not an outage; the session and
/// what it held are intact.
pub async fn data_no_store_can_hold_is_refused_before_any_store_call<S: SessionStore>(store: S) {
    let store = Arc::new(InstrumentedStore::new(store));
    let app = app(layer(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    for path in [
        "/set/a%00b/1",
        "/set/a%0Ab/1",
        "/set/k/v%00w",
        "/incr/a%0Db",
    ] {
        store.reset_counts();
        let reply = client.post(path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.set_cookies(), Vec::<&str>::new(), "{path}");
        if !path.starts_with("/incr") {
            assert_eq!(store.total(), 0, "{path}: the store was asked");
        }
        assert_eq!(store.writes(), 0, "{path}: the store was written");
    }
    assert_eq!(client.get("/get/a").await.body, "\"1\"");
    assert_eq!(client.get("/get/k").await.body, "null");
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// docs/security.md 33: a value, or a session, past the layer's size limits is refused
/// before any store write (413 here; before any store call when the request has not
/// read the session), whether the request read the session first or not, and through
/// `update` too; nothing of it is kept, and the session and others are intact.
pub async fn oversized_data_is_refused_and_nothing_is_kept<S: SessionStore>(store: S) {
    let store = Arc::new(InstrumentedStore::new(store));
    let layer = SessionLayer::builder(store.clone())
        .with_max_value_size(100)
        .with_max_session_size(300)
        .build()
        .expect("a valid layer");
    let app = app(layer, None);
    let mut other = Client::new(&app);
    other.post("/set/o/1").await;
    let mut client = Client::new(&app);
    // Three keys of 1 + 90 bytes: 273 of the 300.
    let ninety = "x".repeat(88);
    for key in ["a", "b", "c"] {
        let reply = client.post(&format!("/set/{key}/{ninety}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}");
    }
    let too_long_key = "k".repeat(30);
    for path in [
        // A value of 101 bytes, unread and read.
        format!("/set/v/{}", "x".repeat(99)),
        format!("/paused-set/v/{}", "x".repeat(99)),
        // 273 + 1 + 90: past the session's limit, the session read first.
        format!("/paused-set/d/{ninety}"),
        // 273 + 30 + 1, through `update`.
        format!("/incr/{too_long_key}"),
    ] {
        store.reset_counts();
        let reply = client.post(&path).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(reply.set_cookies(), Vec::<&str>::new(), "{path}");
        if path.starts_with("/set") {
            assert_eq!(store.total(), 0, "{path}: the store was asked");
        }
        // `update` computes on the value the store holds, so the store is asked, and
        // the function declines; the other writes never reach it.
        if !path.starts_with("/incr") {
            assert_eq!(store.writes(), 0, "{path}: the store was written");
        }
    }
    for key in ["a", "b", "c"] {
        assert_eq!(
            client.get(&format!("/get/{key}")).await.body,
            format!("\"{ninety}\"")
        );
    }
    for key in ["v", "d", too_long_key.as_str()] {
        assert_eq!(
            client.get(&format!("/get/{key}")).await.body,
            "null",
            "{key}"
        );
    }
    assert_eq!(other.get("/get/o").await.body, "\"1\"");
    // Room made, the write goes through.
    client.post("/remove/a").await;
    let reply = client.post(&format!("/paused-set/d/{ninety}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    for client in [&client, &other] {
        store
            .delete(&client.key().expect("key"))
            .await
            .expect("delete");
    }
}
