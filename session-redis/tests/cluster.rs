//! `RedisStore` against a three-master Redis Cluster on loopback that this test binary
//! starts, and stops when it exits: the whole store contract, with sessions and user
//! indexes spread over every master.

mod common;

use std::sync::OnceLock;

use common::Cluster;
use session_core::SessionStore;
use session_redis::RedisStore;

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

async fn cluster_store() -> RedisStore {
    let cluster = tokio::task::block_in_place(|| CLUSTER.get_or_init(Cluster::start));
    RedisStore::connect_cluster(cluster.urls())
        .await
        .expect("the test cluster is reachable")
        .with_prefix(format!("test:{}:", &session_testkit::random_token()[..16]))
}

session_testkit::conformance_tests!(cluster_store().await);

/// On a cluster, pushing a session's expiry back moves its user's index entry too,
/// though the index lives in another slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_touch_moves_the_user_index_on_a_cluster() {
    use std::time::Duration;
    let store = cluster_store().await;
    let now = session_core::Timestamp::now();
    let user = session_testkit::random_user();
    let mut meta = session_core::Meta::new(now, now.saturating_add(Duration::from_secs(600)));
    meta.user_id = Some(user.clone());
    let key = session_testkit::random_key();
    let record = session_core::store::Record {
        data: Default::default(),
        meta: meta.clone(),
    };
    store.create(&key, &record).await.unwrap();
    meta.expires_at = now.saturating_add(Duration::from_secs(1800));
    assert_eq!(
        store.touch(&key, &meta).await.unwrap(),
        session_core::store::Saved::Applied
    );
    let listed = store.user_sessions(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.expires_at, meta.expires_at);
    store.delete_user_sessions(&user).await.unwrap();
}

/// Sessions land on every master (so the contract above really crossed slots), and a
/// user's index, in its own slot, still finds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_every_master() {
    let store = cluster_store().await;
    let cluster = CLUSTER.get().unwrap();
    let user = session_testkit::random_user();
    for _ in 0..60 {
        let mut meta = session_core::Meta::new(
            session_core::Timestamp::now(),
            session_core::Timestamp::now().saturating_add(std::time::Duration::from_secs(60)),
        );
        meta.user_id = Some(user.clone());
        let record = session_core::store::Record {
            data: Default::default(),
            meta,
        };
        store
            .create(&session_testkit::random_key(), &record)
            .await
            .unwrap();
    }
    for port in &cluster.ports {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "dbsize"])
            .output()
            .unwrap();
        let keys: u64 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        assert!(keys > 0, "master on {port} holds no session");
    }
    assert_eq!(store.user_sessions(&user).await.unwrap().len(), 60);
    assert_eq!(store.delete_user_sessions(&user).await.unwrap(), 60);
    assert!(store.user_sessions(&user).await.unwrap().is_empty());
}

/// An invalidation channel does nothing on a cluster (a message published on one
/// master reaches the others in no order with those published elsewhere): the writes
/// go through, and publish nothing, so a tiered store checking the channel sees none
/// and publishes its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_publishes_no_invalidations() {
    use futures_util::StreamExt;
    use std::time::Duration;

    let channel = format!("test:invalidate:{}", &session_testkit::random_token()[..16]);
    let store = cluster_store()
        .await
        .with_invalidation_channel(channel.clone());
    let mut subscriptions = Vec::new();
    for url in tokio::task::block_in_place(|| CLUSTER.get().unwrap().urls()) {
        let mut subscription = redis::Client::open(url)
            .unwrap()
            .get_async_pubsub()
            .await
            .unwrap();
        subscription.subscribe(&channel).await.unwrap();
        subscriptions.push(subscription);
    }
    let now = session_core::Timestamp::now();
    let meta = session_core::Meta::new(now, now.saturating_add(Duration::from_secs(600)));
    let record = session_core::store::Record {
        data: Default::default(),
        meta: meta.clone(),
    };
    let key = session_testkit::random_key();
    store.create(&key, &record).await.unwrap();
    assert_eq!(
        store.touch(&key, &meta).await.unwrap(),
        session_core::store::Saved::Applied
    );
    store.delete(&key).await.unwrap();
    assert!(store.load(&key).await.unwrap().is_none());
    for subscription in &mut subscriptions {
        let mut messages = subscription.on_message();
        let heard = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
        assert!(heard.is_err(), "a cluster store published an invalidation");
    }
}
