//! The contract through the layer: each rule drives a `SessionLayer` over the store
//! with an in-process client, as requests would.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use session_core::{SessionLayer, SessionStore};

use crate::app::{app, Client, Pause};
use crate::{random_key, random_token, random_user, InstrumentedStore, MockClock};

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
    client.cookie = Some(chosen.clone());
    let reply = client.post("/set/planted/yes").await;
    assert_eq!(reply.status, StatusCode::OK);
    let issued = client.cookie.clone().expect("a new id was issued");
    assert_ne!(issued, chosen, "the attacker's id was adopted");
    let chosen_key = session_core::store::SessionId::parse(&chosen)
        .expect("well-formed")
        .key();
    assert_eq!(store.load(&chosen_key).await.expect("load"), None);
    assert_eq!(client.get("/get/planted").await.body, "\"yes\"");
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

/// docs/security.md 6, for a request that never read its session: it changes it, the
/// session is logged out, the request ends; the old record stays gone, and the
/// request's write starts a new anonymous session, as it would have had it read the
/// session after the logout.
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
    let (status, mut slow) = slow_request.await.expect("task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        store.load(&old_key).await.expect("load"),
        None,
        "the session was resurrected"
    );
    let new_key = slow.key().expect("a new session");
    assert_ne!(new_key, old_key);
    assert_eq!(
        slow.get("/user").await.body,
        "",
        "the new session has a user"
    );
    assert_eq!(slow.get("/get/a").await.body, "null");
    assert_eq!(slow.get("/get/cart").await.body, "\"full\"");
    let mut replay = client.clone();
    assert_eq!(replay.get("/get/a").await.body, "null");
    store.delete(&new_key).await.expect("delete");
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
    assert_eq!(
        idle.cookie, None,
        "no removal cookie for an expired session"
    );

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
