//! `TieredStore` over a `RedisStore` on Redis Sentinel, its channel following the
//! master: the conformance suite; two servers through a crash of the master and
//! through a master that stops answering, where the subscription must leave the old
//! master for the new one before any write there could be missed.

use std::time::{Duration, Instant};

use serde_json::json;
use session_core::store::{Created, Record};
use session_core::{Meta, SessionKey, SessionStore, Timestamp};
use session_redis::{RedisChannel, RedisStore};
use session_testkit::random_key;
use session_testkit::redis_servers::{self as common, SentinelGroup, SENTINEL_MASTER};
use session_tiered::TieredStore;

/// A server's store on `group`: sessions under `prefix`, invalidations on `channel`,
/// published by the central store.
async fn tiered_on(group: &SentinelGroup, prefix: &str, channel: &str) -> TieredStore<RedisStore> {
    let central = RedisStore::connect_sentinel(group.sentinel_urls(), SENTINEL_MASTER)
        .await
        .expect("the test Sentinel names a reachable master")
        .with_prefix(prefix)
        .with_invalidation_channel(channel);
    let store = TieredStore::builder(central)
        .published_by_central()
        .connect(RedisChannel::sentinel(group.sentinel_urls(), SENTINEL_MASTER, channel).unwrap())
        .await
        .expect("the channel connects");
    assert!(store.is_coherent(), "not subscribed within 2 s");
    store
}

fn names() -> (String, String) {
    let token = &session_testkit::random_token()[..16];
    (format!("test:{token}:"), format!("test:invalidate:{token}"))
}

async fn store() -> TieredStore<RedisStore> {
    let (prefix, channel) = names();
    tiered_on(common::shared_sentinel_group(), &prefix, &channel).await
}

session_testkit::conformance_tests!(store().await);

fn record(value: i64) -> Record {
    let now = Timestamp::now();
    Record {
        data: [("a".to_owned(), json!(value))].into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    }
}

/// Polls `until` for at most `limit`.
async fn eventually(what: &str, limit: Duration, mut until: impl FnMut() -> bool) {
    let started = Instant::now();
    while !until() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads `key` from `store` until it is `expected` (the value of `a`), giving each
/// attempt a second, as the layer's store timeout would, for at most `limit`.
async fn until_loaded(
    store: &TieredStore<RedisStore>,
    key: &SessionKey,
    expected: Option<i64>,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        // `None` for an attempt that failed; the value of `a` (`None`: no session) else.
        let value = match tokio::time::timeout(Duration::from_secs(1), store.load(key)).await {
            Ok(Ok(record)) => Some(record.and_then(|r| r.data.get("a").and_then(|v| v.as_i64()))),
            _ => None,
        };
        if value == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "still {value:?}, not {expected:?}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Loads a logged-out `key` from `store` until an attempt succeeds (a store still on
/// the lost master times out, as the layer's timeout would cut it off): it must find
/// nothing. A copy served from the cache is the stale session this test is about.
async fn refused(store: &TieredStore<RedisStore>, key: &SessionKey) {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.load(key)).await {
            Ok(Ok(None)) => return,
            Ok(Ok(Some(_))) => panic!("a logged-out session was served"),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no load went through"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes `key` through `store`, retrying while the master is out of reach.
async fn delete_eventually(store: &TieredStore<RedisStore>, key: &SessionKey) {
    let started = Instant::now();
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), store.delete(key)).await {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no delete went through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers, a session cached on the second; then the master fails in `how`. The
/// second server stops serving its copy, follows the new master, and hears the
/// first's logout there.
async fn a_logout_after_a_failover_reaches_the_other_server(freeze: bool) {
    let mut group = common::own_sentinel_group();
    let (prefix, channel) = names();
    let a = tiered_on(&group, &prefix, &channel).await;
    let b = tiered_on(&group, &prefix, &channel).await;
    let key = random_key();
    assert_eq!(a.create(&key, &record(1)).await.unwrap(), Created::Written);
    until_loaded(&b, &key, Some(1), Duration::from_secs(1)).await; // cached on b

    let old = tokio::task::block_in_place(|| {
        if freeze {
            group.freeze_master()
        } else {
            group.kill_master()
        }
    });
    tokio::task::block_in_place(|| group.wait_for_failover(old));
    // A frozen master closes nothing: the Sentinel's announcement of the new one is
    // what must take the second server off it.
    eventually(
        "the second server back on the new master",
        Duration::from_secs(15),
        || b.is_coherent(),
    )
    .await;
    delete_eventually(&a, &key).await;
    refused(&b, &key).await;

    // Sessions made after the failover are cached and invalidated as before.
    let key = random_key();
    assert_eq!(a.create(&key, &record(2)).await.unwrap(), Created::Written);
    until_loaded(&b, &key, Some(2), Duration::from_secs(1)).await;
    a.delete(&key).await.unwrap();
    until_loaded(&b, &key, None, Duration::from_secs(1)).await;
    if freeze {
        group.thaw(old);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_after_the_master_crashed_reaches_the_other_server() {
    a_logout_after_a_failover_reaches_the_other_server(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_after_the_master_froze_reaches_the_other_server() {
    a_logout_after_a_failover_reaches_the_other_server(true).await;
}

/// Over Sentinel this store publishes nothing of its own: without a central store
/// that does, `connect` refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_store_that_does_not_publish_is_refused() {
    let group = common::shared_sentinel_group();
    let central = RedisStore::connect_sentinel(group.sentinel_urls(), SENTINEL_MASTER)
        .await
        .unwrap();
    let built = TieredStore::builder(central)
        .connect(
            RedisChannel::sentinel(
                group.sentinel_urls(),
                SENTINEL_MASTER,
                "test:invalidate:none",
            )
            .unwrap(),
        )
        .await;
    let error = built.expect_err("refused");
    assert!(
        format!("{error:?}").contains("published_by_central"),
        "{error:?}"
    );
}
