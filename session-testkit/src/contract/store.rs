//! The contract at the store: each rule calls a store's methods directly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use session_core::store::{Created, Record, Refresh, Saved, Updated, USER_SESSIONS_LIMIT};
use session_core::{SessionKey, SessionStore, Timestamp};

use crate::{random_key, random_user};

use super::{changes, data_of, record, HOUR};

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
        Created::Written
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

/// docs/security.md 5: creating under the key of a live record writes nothing and says so.
pub async fn create_never_overwrites<S: SessionStore>(store: S) {
    let key = random_key();
    let original = record(json!({"owner": "victim"}), HOUR);
    assert_eq!(
        store.create(&key, &original).await.expect("create"),
        Created::Written
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
        Saved::Applied
    );
    assert_eq!(
        store.save(&key, &second, &meta).await.expect("save"),
        Saved::Applied
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

/// docs/security.md 6, at the store: save, update and touch never create a record.
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

/// docs/security.md 6 and 13, at the store: `save_unloaded` writes nothing to a record that
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

/// docs/security.md 14, at the store: a deleted record is gone and stays gone.
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

/// docs/security.md 13, at the store: a record past its `expires_at` is never returned, and
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
        Created::Written
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
        Saved::Applied
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

/// Binding a session to its user and listing it is atomic with "log out everywhere":
/// logins (creates bound to the user) racing a loop that ends all the user's sessions
/// leave no session alive that the index does not list, which a later "log out
/// everywhere" would then miss. Released together by a barrier, round after round.
pub async fn a_login_racing_log_out_everywhere_is_never_lost<S: SessionStore>(store: S) {
    const ROUNDS: usize = 5;
    const LOGINS: usize = 40;
    let store = Arc::new(store);
    let mut lost = 0;
    for _ in 0..ROUNDS {
        let user = random_user();
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ending = tokio::spawn({
            let (store, start, done, user) =
                (store.clone(), start.clone(), done.clone(), user.clone());
            async move {
                start.wait().await;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    store.delete_user_sessions(&user).await.expect("end all");
                }
            }
        });
        let mut r = record(json!({}), HOUR);
        r.meta.user_id = Some(user.clone());
        let keys: Vec<SessionKey> = (0..LOGINS).map(|_| random_key()).collect();
        start.wait().await;
        for key in &keys {
            store.create(key, &r).await.expect("create");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        ending.await.expect("the ending task ran");
        let listed = store.user_sessions(&user).await.expect("list");
        for key in &keys {
            let live = store.load(key).await.expect("load").is_some();
            if live && !listed.iter().any(|s| s.key == *key) {
                lost += 1;
            }
        }
        store.delete_user_sessions(&user).await.expect("end all");
        for key in &keys {
            assert_eq!(
                store.load(key).await.expect("load"),
                None,
                "a session outlived log out everywhere"
            );
        }
    }
    assert_eq!(
        lost, 0,
        "{lost} sessions live but not listed under their user"
    );
}

/// A user with more sessions than [`USER_SESSIONS_LIMIT`]: the list holds the limit,
/// the sessions that expire last; "log out everywhere" ends every one of them.
pub async fn a_user_with_many_sessions_is_listed_up_to_the_limit_and_all_end<S: SessionStore>(
    store: S,
) {
    let user = random_user();
    let count = USER_SESSIONS_LIMIT + 10;
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let key = random_key();
        // Later sessions expire later.
        let mut r = record(json!({}), HOUR + Duration::from_millis(10 * i as u64));
        r.meta.user_id = Some(user.clone());
        store.create(&key, &r).await.expect("create");
        keys.push(key);
    }
    let listed: std::collections::HashSet<SessionKey> = store
        .user_sessions(&user)
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed.len(), USER_SESSIONS_LIMIT);
    assert!(
        keys[..10].iter().all(|key| !listed.contains(key)),
        "the list holds sessions that expire before others left out"
    );
    assert_eq!(
        store.delete_user_sessions(&user).await.expect("end all"),
        count
    );
    assert!(store.user_sessions(&user).await.expect("list").is_empty());
    for key in keys.iter().step_by(50) {
        assert_eq!(store.load(key).await.expect("load"), None);
    }
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
