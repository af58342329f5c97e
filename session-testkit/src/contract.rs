//! The store contract, one function per rule. [`conformance_tests!`](crate::conformance_tests)
//! runs them all; each panics with a message naming the rule it checks.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use session_core::{
    Changes, Created, Data, Meta, Record, Refresh, Saved, SessionKey, SessionLayer, SessionStore,
    Timestamp, Updated,
};

use crate::app::{app, Client, Pause};
use crate::{random_key, random_token, random_user, InstrumentedStore, MockClock};

/// A record with `data`, expiring `ttl` from now.
fn record(data: Value, ttl: Duration) -> Record {
    let now = Timestamp::now();
    Record {
        data: serde_json::from_value::<Data>(data).expect("an object"),
        meta: Meta::new(now, now.saturating_add(ttl)),
    }
}

fn data_of(record: &Record) -> Value {
    serde_json::to_value(&record.data).expect("data serialises")
}

const HOUR: Duration = Duration::from_secs(3600);

fn changes(set: Value, removed: &[&str], cleared: bool) -> Changes {
    Changes {
        cleared,
        removed: removed.iter().map(|k| (*k).to_owned()).collect(),
        set: serde_json::from_value(set).expect("an object"),
    }
}

/// Loading a key nobody wrote gives nothing.
pub async fn load_of_unknown_key_is_none<S: SessionStore>(store: S) {
    assert_eq!(store.load(&random_key()).await.expect("load"), None);
}

/// A created record loads back as it was written: data and metadata.
pub async fn create_then_load_round_trips<S: SessionStore>(store: S) {
    let key = random_key();
    let mut written = record(
        json!({"s": "text", "n": 42, "f": 1.5, "b": true, "o": {"nested": [1, 2, null]}, "e": ""}),
        HOUR,
    );
    written.meta.user_id = Some(random_user());
    written.meta.deadline = Some(written.meta.expires_at);
    written.meta.expiry =
        Some(session_core::Expiry::on_inactivity(Duration::from_secs(90)).persistent());
    assert_eq!(
        store.create(&key, &written).await.expect("create"),
        Created::Created
    );
    let loaded = store
        .load(&key)
        .await
        .expect("load")
        .expect("record present");
    assert_eq!(data_of(&loaded), data_of(&written));
    assert_eq!(loaded.meta, written.meta);
    store.delete(&key).await.expect("delete");
}

/// A store that answers a load without waiting gives what `load` gives, judged at the
/// time it is handed: never a record that has expired by then, nor one deleted.
pub async fn load_without_waiting_agrees_with_load<S: SessionStore>(store: S) {
    let absent = |answer: Option<Result<Option<Record>, _>>, when: &str| match answer {
        None | Some(Ok(None)) => {}
        Some(other) => panic!("load without waiting {when}: {other:?}"),
    };
    let key = random_key();
    let now = Timestamp::now();
    absent(store.load_without_waiting(&key, now), "of an unknown key");
    let written = record(json!({"a": 1}), HOUR);
    store.create(&key, &written).await.expect("create");
    let loaded = store.load(&key).await.expect("load");
    if let Some(answer) = store.load_without_waiting(&key, now) {
        assert_eq!(answer.expect("load without waiting"), loaded);
    }
    absent(
        store.load_without_waiting(&key, written.meta.expires_at),
        "at the record's expiry",
    );
    store.delete(&key).await.expect("delete");
    absent(store.load_without_waiting(&key, now), "after delete");
}

/// SECURITY.md 5: creating under the key of a live record writes nothing and says so.
pub async fn create_never_overwrites<S: SessionStore>(store: S) {
    let key = random_key();
    let original = record(json!({"owner": "victim"}), HOUR);
    assert_eq!(
        store.create(&key, &original).await.expect("create"),
        Created::Created
    );
    let intruder = record(json!({"owner": "attacker"}), HOUR);
    assert_eq!(
        store.create(&key, &intruder).await.expect("create"),
        Created::Collision,
        "a create over a live record must report a collision"
    );
    let loaded = store.load(&key).await.expect("load").expect("still there");
    assert_eq!(
        data_of(&loaded),
        json!({"owner": "victim"}),
        "the existing record changed"
    );
    store.delete(&key).await.expect("delete");
}

/// Saves apply changes on top of what other requests wrote: disjoint keys all
/// survive, the later write of one key wins, removals and clears apply.
pub async fn save_applies_changes_not_snapshots<S: SessionStore>(store: S) {
    let key = random_key();
    let created = record(json!({"a": 1, "b": 2, "c": 3}), HOUR);
    let meta = created.meta.clone();
    store.create(&key, &created).await.expect("create");

    // Two requests that loaded the same record save their own changes.
    let first = changes(json!({"x": "from first", "same": 1}), &["a"], false);
    let second = changes(json!({"y": "from second", "same": 2}), &["b"], false);
    assert_eq!(
        store.save(&key, &first, &meta).await.expect("save"),
        Saved::Saved
    );
    assert_eq!(
        store.save(&key, &second, &meta).await.expect("save"),
        Saved::Saved
    );
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        data_of(&loaded),
        json!({"c": 3, "x": "from first", "y": "from second", "same": 2}),
        "a save lost another request's change"
    );

    let cleared = changes(json!({"fresh": true}), &[], true);
    store.save(&key, &cleared, &meta).await.expect("save");
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(data_of(&loaded), json!({"fresh": true}));
    store.delete(&key).await.expect("delete");
}

/// A save also stores the metadata it carries (the pushed-back expiry).
pub async fn save_stores_metadata<S: SessionStore>(store: S) {
    let key = random_key();
    let created = record(json!({"a": 1}), HOUR);
    store.create(&key, &created).await.expect("create");
    let mut meta = created.meta.clone();
    meta.expires_at = meta.expires_at.saturating_add(HOUR);
    meta.expiry = Some(session_core::Expiry::on_inactivity(Duration::from_secs(
        7200,
    )));
    store
        .save(&key, &changes(json!({"b": 2}), &[], false), &meta)
        .await
        .expect("save");
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(loaded.meta, meta);
    store.delete(&key).await.expect("delete");
}

/// SECURITY.md 6, at the store: save, update and touch never create a record.
pub async fn writes_never_create<S: SessionStore>(store: S) {
    let key = random_key();
    let meta = record(json!({}), HOUR).meta;
    let set = changes(json!({"k": "v"}), &[], false);
    assert_eq!(
        store.save(&key, &set, &meta).await.expect("save"),
        Saved::Missing
    );
    let increment = |_: Option<&Value>| Some(json!(1));
    assert_eq!(
        store
            .update(&key, "n", &increment, &meta)
            .await
            .expect("update"),
        Updated::Missing
    );
    assert_eq!(
        store.touch(&key, &meta).await.expect("touch"),
        Saved::Missing
    );
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "a write re-created a record"
    );
}

/// `save_unloaded` applies changes to a record nobody loaded, restarts its idle
/// timeout by the layer's rule on the stored metadata (the session's own idle timeout,
/// capped by its deadline), leaves the rest of the metadata, keeps the user index,
/// and returns the metadata as it was.
pub async fn save_unloaded_restarts_the_idle_timeout<S: SessionStore>(store: S) {
    let now = Timestamp::now();
    let refresh = Refresh {
        now,
        idle_timeout: 2 * HOUR,
    };
    let user = random_user();
    let own_idle = session_core::Expiry::on_inactivity(3 * HOUR).persistent();
    let cases = [
        (None, None, now.saturating_add(2 * HOUR)),
        (Some(own_idle), None, now.saturating_add(3 * HOUR)),
        (
            Some(own_idle),
            Some(now.saturating_add(Duration::from_secs(90 * 60))),
            now.saturating_add(Duration::from_secs(90 * 60)),
        ),
    ];
    for (expiry, deadline, expected) in cases {
        let key = random_key();
        let mut written = record(json!({"a": 1, "b": 2}), HOUR);
        written.meta.user_id = Some(user.clone());
        written.meta.expiry = expiry;
        written.meta.deadline = deadline;
        store.create(&key, &written).await.expect("create");
        let set = changes(json!({"c": {"deep": [3]}}), &["b"], false);
        let previous = store
            .save_unloaded(&key, &set, &refresh)
            .await
            .expect("save_unloaded");
        assert_eq!(
            previous.as_ref(),
            Some(&written.meta),
            "not the metadata before"
        );
        let loaded = store.load(&key).await.expect("load").expect("present");
        assert_eq!(data_of(&loaded), json!({"a": 1, "c": {"deep": [3]}}));
        let mut meta = written.meta.clone();
        meta.expires_at = expected;
        assert_eq!(loaded.meta, meta, "expiry not restarted by the rule");
        let listed = store.user_sessions(&user).await.expect("list");
        let indexed = listed.iter().find(|s| s.key == key).expect("still indexed");
        assert_eq!(indexed.meta.expires_at, expected);
    }
    store.delete_user_sessions(&user).await.expect("clean up");
}

/// SECURITY.md 6 and 13, at the store: `save_unloaded` writes nothing to a record that
/// is not there, was deleted, or is expired or past its deadline at the layer's time.
pub async fn save_unloaded_never_creates_or_revives<S: SessionStore>(store: S) {
    let set = changes(json!({"k": "v"}), &[], false);
    let at = |ahead: Duration| Refresh {
        now: Timestamp::now().saturating_add(ahead),
        idle_timeout: HOUR,
    };
    let unknown = random_key();
    assert_eq!(
        store
            .save_unloaded(&unknown, &set, &at(Duration::ZERO))
            .await
            .expect("save"),
        None
    );
    assert_eq!(store.load(&unknown).await.expect("load"), None, "created");

    let deleted = random_key();
    store
        .create(&deleted, &record(json!({"a": 1}), HOUR))
        .await
        .expect("create");
    store.delete(&deleted).await.expect("delete");
    assert_eq!(
        store
            .save_unloaded(&deleted, &set, &at(Duration::ZERO))
            .await
            .expect("save"),
        None
    );
    assert_eq!(store.load(&deleted).await.expect("load"), None, "revived");

    // Live by the store's clock, but expired (or past its deadline) at the layer's.
    let mut deadlined = record(json!({"a": 1}), HOUR);
    deadlined.meta.deadline = Some(Timestamp::now().saturating_add(Duration::from_secs(60)));
    for (written, ahead) in [
        (record(json!({"a": 1}), HOUR), 2 * HOUR),
        (deadlined, Duration::from_secs(120)),
    ] {
        let key = random_key();
        store.create(&key, &written).await.expect("create");
        assert_eq!(
            store
                .save_unloaded(&key, &set, &at(ahead))
                .await
                .expect("save"),
            None,
            "a write to a session over at the layer's time"
        );
        let loaded = store.load(&key).await.expect("load").expect("present");
        assert_eq!(loaded, written, "written although over");
        store.delete(&key).await.expect("delete");
    }
}

/// SECURITY.md 14, at the store: a deleted record is gone and stays gone.
pub async fn delete_removes_the_record<S: SessionStore>(store: S) {
    let key = random_key();
    store
        .create(&key, &record(json!({"a": 1}), HOUR))
        .await
        .expect("create");
    store.delete(&key).await.expect("delete");
    assert_eq!(store.load(&key).await.expect("load"), None);
    store.delete(&key).await.expect("deleting twice is fine");
}

/// SECURITY.md 13, at the store: a record past its `expires_at` is never returned, and
/// writes to it do nothing.
pub async fn expired_records_are_never_returned<S: SessionStore>(store: S) {
    let key = random_key();
    let short = record(json!({"a": 1}), Duration::from_millis(1500));
    let meta = short.meta.clone();
    store.create(&key, &short).await.expect("create");
    assert!(store.load(&key).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        store.load(&key).await.expect("load"),
        None,
        "expired record returned"
    );
    let set = changes(json!({"b": 2}), &[], false);
    assert_eq!(
        store.save(&key, &set, &meta).await.expect("save"),
        Saved::Missing
    );
    let mut later = meta.clone();
    later.expires_at = Timestamp::now().saturating_add(HOUR);
    assert_eq!(
        store.touch(&key, &later).await.expect("touch"),
        Saved::Missing
    );
    assert_eq!(store.load(&key).await.expect("load"), None);
    // The key is free again.
    let again = record(json!({"new": true}), HOUR);
    assert_eq!(
        store.create(&key, &again).await.expect("create"),
        Created::Created
    );
    store.delete(&key).await.expect("delete");
}

/// `touch` moves the expiry: a record touched past its first expiry is still there.
pub async fn touch_extends_expiry<S: SessionStore>(store: S) {
    let key = random_key();
    let short = record(json!({"a": 1}), Duration::from_millis(1500));
    store.create(&key, &short).await.expect("create");
    let mut later = short.meta.clone();
    later.expires_at = Timestamp::now().saturating_add(HOUR);
    // Only the expiry moves, whatever else the metadata says.
    let mut claims_other_user = later.clone();
    claims_other_user.user_id = Some(random_user());
    assert_eq!(
        store.touch(&key, &claims_other_user).await.expect("touch"),
        Saved::Saved
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let loaded = store
        .load(&key)
        .await
        .expect("load")
        .expect("touched record expired");
    assert_eq!(loaded.meta, later);
    assert_eq!(data_of(&loaded), json!({"a": 1}));
    store.delete(&key).await.expect("delete");
}

/// `update` is atomic: 100 concurrent increments of one field end at exactly +100.
pub async fn update_is_atomic<S: SessionStore>(store: S) {
    let store = Arc::new(store);
    let key = random_key();
    let created = record(json!({"n": 0}), HOUR);
    let meta = created.meta.clone();
    store.create(&key, &created).await.expect("create");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let meta = meta.clone();
            tokio::spawn(async move {
                let increment =
                    |n: Option<&Value>| Some(json!(n.and_then(Value::as_u64).unwrap_or(0) + 1));
                store.update(&key, "n", &increment, &meta).await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(
            task.await.expect("task").expect("update"),
            Updated::Stored(_)
        ));
    }
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(
        loaded.data.get("n"),
        Some(&json!(100)),
        "increments were lost"
    );
    store.delete(&key).await.expect("delete");
}

/// An update whose function declines writes nothing and reports the current value.
pub async fn update_can_decline<S: SessionStore>(store: S) {
    let key = random_key();
    let created = record(json!({"n": 7}), HOUR);
    let meta = created.meta.clone();
    store.create(&key, &created).await.expect("create");
    let decline = |_: Option<&Value>| None;
    assert_eq!(
        store
            .update(&key, "n", &decline, &meta)
            .await
            .expect("update"),
        Updated::Kept(Some(json!(7)))
    );
    let keep_absent = |_: Option<&Value>| None;
    assert_eq!(
        store
            .update(&key, "missing", &keep_absent, &meta)
            .await
            .expect("update"),
        Updated::Kept(None)
    );
    let loaded = store.load(&key).await.expect("load").expect("present");
    assert_eq!(data_of(&loaded), json!({"n": 7}));
    store.delete(&key).await.expect("delete");
}

/// The user index lists a user's live sessions and ends them all, and only them.
pub async fn user_index_lists_and_ends_sessions<S: SessionStore>(store: S) {
    let (alice, bob) = (random_user(), random_user());
    let mut alice_keys = Vec::new();
    for _ in 0..3 {
        let key = random_key();
        let mut r = record(json!({}), HOUR);
        r.meta.user_id = Some(alice.clone());
        store.create(&key, &r).await.expect("create");
        alice_keys.push(key);
    }
    let bob_key = random_key();
    let mut r = record(json!({}), HOUR);
    r.meta.user_id = Some(bob.clone());
    store.create(&bob_key, &r).await.expect("create");

    let mut listed: Vec<SessionKey> = store
        .user_sessions(&alice)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    listed.sort();
    alice_keys.sort();
    assert_eq!(listed, alice_keys);

    // A deleted session leaves the index.
    store.delete(&alice_keys[0]).await.expect("delete");
    assert_eq!(store.user_sessions(&alice).await.expect("list").len(), 2);

    assert_eq!(
        store.delete_user_sessions(&alice).await.expect("end all"),
        2
    );
    for key in &alice_keys {
        assert_eq!(store.load(key).await.expect("load"), None);
    }
    assert!(store.user_sessions(&alice).await.expect("list").is_empty());
    assert!(
        store.load(&bob_key).await.expect("load").is_some(),
        "another user's session ended"
    );
    assert_eq!(store.user_sessions(&bob).await.expect("list").len(), 1);
    store.delete(&bob_key).await.expect("delete");
}

/// Expired sessions are not listed as a user's sessions.
pub async fn user_index_skips_expired_sessions<S: SessionStore>(store: S) {
    let user = random_user();
    let key = random_key();
    let mut r = record(json!({}), Duration::from_millis(1500));
    r.meta.user_id = Some(user.clone());
    store.create(&key, &r).await.expect("create");
    assert_eq!(store.user_sessions(&user).await.expect("list").len(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.user_sessions(&user).await.expect("list").is_empty());
    assert_eq!(store.delete_user_sessions(&user).await.expect("end all"), 0);
}

fn layer<S: SessionStore>(store: S) -> SessionLayer {
    SessionLayer::new(store)
}

/// SECURITY.md 2: an attacker-chosen, well-formed id is never adopted.
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
    let chosen_key = session_core::SessionId::parse(&chosen)
        .expect("well-formed")
        .key();
    assert_eq!(store.load(&chosen_key).await.expect("load"), None);
    assert_eq!(client.get("/get/planted").await.body, "\"yes\"");
    store
        .delete(&client.key().expect("key"))
        .await
        .expect("delete");
}

/// SECURITY.md 3: what the store keeps is not the id, and is no use as a cookie.
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

/// SECURITY.md 4: `cycle_id` keeps the data under a new id and ends the old one.
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

/// SECURITY.md 4 and 5, through the layer: when the id generator repeats a live id,
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

/// SECURITY.md 6: a slow request that changed the session before a logout finishes
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

/// SECURITY.md 6, for a request that never read its session: it changes it, the
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

/// SECURITY.md 7: 50 parallel requests of one session each set a distinct key; all
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

/// SECURITY.md 13: idle and absolute timeouts hold from the stored times, with a
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

/// SECURITY.md 14: logout deletes the record and a replayed cookie is anonymous.
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

/// SECURITY.md 15: three clients of one user log in; "log out everywhere" from one
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

/// SECURITY.md 17: a store error on load is not "no session": 503, no cookie set or
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
