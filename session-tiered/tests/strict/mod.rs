//! Strict mode's promise, checked the same way over every channel.

use std::future::Future;
use std::time::Duration;

use serde_json::json;
use session_core::store::{Changes, Record};
use session_core::{Meta, SessionKey, SessionStore, Timestamp};
use session_testkit::{random_key, random_user, InstrumentedStore};

async fn value(store: &impl SessionStore, key: &SessionKey) -> Option<i64> {
    let record = store.load(key).await.unwrap()?;
    record.data.get("a").and_then(|value| value.as_i64())
}

/// Two strict servers over `central`, `a` and `b`, each made by `connect`: whatever
/// `a` has acknowledged, `b`'s very next read reflects, with no pause in between: a
/// change, a logout, and a log out everywhere, 100 times each. Warm reads on `b` still
/// cost the central store nothing.
pub(crate) async fn reads_follow_every_acknowledged_write<S, T, Fut>(
    central: S,
    connect: impl Fn(InstrumentedStore<S>) -> Fut,
) where
    S: SessionStore + Clone,
    T: SessionStore,
    Fut: Future<Output = T>,
{
    let b_central = InstrumentedStore::new(central.clone());
    let (a, b) = (
        connect(InstrumentedStore::new(central)).await,
        connect(b_central.clone()).await,
    );
    let (a, b) = (&a, &b);
    for trial in 0..100 {
        let now = Timestamp::now();
        let user = random_user();
        let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(600)));
        meta.user_id = Some(user.clone());
        let record = Record {
            data: [("a".to_owned(), json!(1))].into_iter().collect(),
            meta: meta.clone(),
        };
        let (key, other) = (random_key(), random_key());
        for key in [&key, &other] {
            a.create(key, &record).await.unwrap();
            assert_eq!(value(b, key).await, Some(1), "trial {trial}: not created");
        }

        let two = Changes {
            set: [("a".to_owned(), json!(2))].into_iter().collect(),
            ..Default::default()
        };
        a.save(&key, &two, &meta).await.unwrap();
        assert_eq!(
            value(b, &key).await,
            Some(2),
            "trial {trial}: a stale copy after a save"
        );

        a.delete(&key).await.unwrap();
        assert_eq!(
            value(b, &key).await,
            None,
            "trial {trial}: served after a logout"
        );

        assert_eq!(a.delete_user_sessions(&user).await.unwrap(), 1);
        assert_eq!(
            value(b, &other).await,
            None,
            "trial {trial}: served after a log out everywhere"
        );
    }

    let key = random_key();
    let now = Timestamp::now();
    let record = Record {
        data: [("a".to_owned(), json!(1))].into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    };
    a.create(&key, &record).await.unwrap();
    assert_eq!(value(b, &key).await, Some(1));
    b_central.reset_counts();
    for _ in 0..100 {
        assert_eq!(value(b, &key).await, Some(1));
    }
    assert_eq!(
        b_central.total(),
        0,
        "strict warm reads reached the central store"
    );
}
