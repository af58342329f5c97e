//! The rule for a store that announces, on an invalidation channel, the sessions its
//! writes change or end (`RedisStore` and `PostgresStore` with
//! `with_invalidation_channel`): what a tiered store in front of it relies on.

use std::time::Duration;

use serde_json::json;
use session_core::store::{Changes, Data, Record, Refresh};
use session_core::{Meta, SessionStore, Timestamp};
use tokio::sync::mpsc;

use crate::{random_key, random_user};

async fn next(announced: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(2), announced.recv())
        .await
        .expect("no announcement within 2 s")
        .expect("the subscription ended")
}

/// Each write that changes or ends a session announces `k<key>` (a save, a save of
/// an unread session, an update, a touch, a delete; "log out everywhere" that, or
/// `u<user>` for all the user's sessions at once), a delete
/// even of a missing session (a tiered store checks the channel that way); creating
/// a session, which no server can have a copy of, announces nothing, nor does a write
/// to a session that is gone.
///
/// `announced` yields the payloads as they arrive on the channel: the test forwards
/// them from its subscription, which it opened before calling this.
pub async fn writes_announce_their_sessions<S: SessionStore>(
    store: S,
    announced: &mut mpsc::UnboundedReceiver<String>,
) {
    let now = Timestamp::now();
    let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(600)));
    meta.user_id = Some(random_user());
    let record = Record {
        data: Data::new(),
        meta: meta.clone(),
    };
    let changes = Changes {
        set: [("a".to_owned(), json!(1))].into_iter().collect(),
        ..Default::default()
    };
    let refresh = Refresh {
        now,
        idle_timeout: Duration::from_secs(600),
    };
    let key = random_key();
    let expected = format!("k{key}");

    store.create(&key, &record).await.unwrap();
    store.save(&key, &changes, &meta).await.unwrap();
    assert_eq!(
        next(announced).await,
        expected,
        "save (and nothing from create)"
    );
    store.save_unloaded(&key, &changes, &refresh).await.unwrap();
    assert_eq!(next(announced).await, expected, "save_unloaded");
    let increment = |n: Option<&serde_json::Value>| {
        Some(json!(
            n.and_then(serde_json::Value::as_i64).unwrap_or(0) + 1
        ))
    };
    store.update(&key, "a", &increment, &meta).await.unwrap();
    assert_eq!(next(announced).await, expected, "update");
    store.touch(&key, &meta).await.unwrap();
    assert_eq!(next(announced).await, expected, "touch");
    store.delete(&key).await.unwrap();
    assert_eq!(next(announced).await, expected, "delete");

    // A write to a session that is gone announces nothing; a delete does.
    store.save(&key, &changes, &meta).await.unwrap();
    let missing = random_key();
    store.delete(&missing).await.unwrap();
    assert_eq!(
        next(announced).await,
        format!("k{missing}"),
        "delete of a missing session"
    );

    // Log out everywhere: each of the user's sessions, or the user at once.
    let user = meta.user_id.clone().unwrap();
    let mine = random_key();
    store.create(&mine, &record).await.unwrap();
    assert_eq!(store.delete_user_sessions(&user).await.unwrap(), 1);
    let heard = next(announced).await;
    assert!(
        heard == format!("k{mine}") || heard == format!("u{user}"),
        "delete_user_sessions announced {heard:?}"
    );
}
