//! `TieredStore` over `RedisStore`, with Redis pub/sub as the invalidation channel:
//! the conformance suite on the shared Redis (`REDIS_URL`, each test under its own
//! prefix and channel), coherence between two stores as two servers would have them,
//! and the loss of the channel on a redis-server of the test's own.

mod busy;
mod silent;
mod strict;

use std::time::{Duration, Instant};

use serde_json::json;
use session_core::store::{Changes, Created, Record, Updated};
use session_core::{Meta, SessionLayer, SessionStore, Timestamp};
use session_redis::{RedisChannel, RedisStore};
use session_testkit::proxy::CuttableProxy;
use session_testkit::redis_servers;
use session_testkit::{app, random_key, Client, InstrumentedStore};
use session_tiered::TieredStore;

async fn tiered<S: SessionStore>(central: S, url: &str, channel: &str) -> TieredStore<S> {
    let store = TieredStore::builder(central)
        .connect(redis_channel(url, channel).await)
        .await
        .expect("the channel connects");
    assert!(store.is_coherent(), "not subscribed within 2 s");
    store
}

/// A store on the shared Redis under a prefix no other test uses, and the prefix.
async fn shared_store_with_prefix() -> (RedisStore, String) {
    let connect = |url: String| async move { RedisStore::connect(&url).await };
    let store = redis_servers::on_shared_server(connect).await;
    let prefix = redis_servers::unique_prefix();
    (store.with_prefix(prefix.clone()), prefix)
}

async fn shared_store() -> RedisStore {
    shared_store_with_prefix().await.0
}

/// A Redis channel at `url`, which must be up.
async fn redis_channel(url: &str, name: &str) -> RedisChannel {
    RedisChannel::connect(url, name)
        .await
        .expect("Redis on the test's URL")
}

fn channel() -> String {
    format!("test:invalidate:{}", &session_testkit::random_token()[..16])
}

async fn store() -> TieredStore<RedisStore> {
    tiered(
        shared_store().await,
        &redis_servers::redis_url(),
        &channel(),
    )
    .await
}

session_testkit::conformance_tests!(store().await);

fn record(data: serde_json::Value) -> Record {
    let now = Timestamp::now();
    Record {
        data: data.as_object().unwrap().clone().into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    }
}

fn set(key: &str, value: serde_json::Value) -> Changes {
    Changes {
        set: [(key.to_owned(), value)].into_iter().collect(),
        ..Default::default()
    }
}

/// Polls `load` until `expected`, for at most a second; returns how long it took.
async fn until_loaded(
    store: &impl SessionStore,
    key: &session_core::SessionKey,
    expected: Option<serde_json::Value>,
) -> Duration {
    let started = Instant::now();
    loop {
        let loaded = store.load(key).await.unwrap();
        let value = loaded.map(|record| json!(record.data.get("a").cloned()));
        if value == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still {value:?}, not {expected:?}, after a second"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A warm read-only request costs the central store nothing; a session is warm from
/// its creation on, and again once a read has loaded it after a change.
#[tokio::test]
async fn warm_reads_cost_no_central_round_trip() {
    let central = InstrumentedStore::new(shared_store().await);
    let store = tiered(central.clone(), &redis_servers::redis_url(), &channel()).await;
    let app = app(SessionLayer::new(store), None);
    let mut client = Client::new(&app);
    client.post("/set/a/1").await;
    central.reset_counts();
    for _ in 0..100 {
        assert_eq!(client.get("/get/a").await.body, "\"1\"");
    }
    assert_eq!(central.total(), 0, "warm reads reached the central store");
    client.post("/set/a/2").await;
    central.reset_counts();
    for _ in 0..100 {
        assert_eq!(client.get("/get/a").await.body, "\"2\"", "a stale read");
    }
    // The first read after the change loads the session again. The change's own
    // invalidation also comes back to this server through the channel (as it must:
    // it is what drops a copy cached while a write that timed out was still running),
    // and when it arrives during or after that read, it drops the new copy once more:
    // one more load, and no third, since nothing else changes the session.
    let loads = central.count("load");
    assert!(
        (1..=2).contains(&loads),
        "{loads} loads for 100 reads after a change"
    );
    assert_eq!(
        central.total(),
        loads,
        "reads after a change did more than load"
    );
}

/// A record gone from the central store without an announcement (an eviction, a
/// manual `DEL`): once an `update` finds it missing, this server stops serving its
/// copy, as it does after a save, a touch or a delete.
#[tokio::test]
async fn an_update_that_finds_the_session_gone_drops_the_copy() {
    let central = shared_store().await;
    let store = tiered(central.clone(), &redis_servers::redis_url(), &channel()).await;
    let key = random_key();
    let record = record(json!({"a": 1}));
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Written);
    assert!(store.load(&key).await.unwrap().is_some());
    // Behind the tiered store's back: nothing is announced.
    central.delete(&key).await.unwrap();
    assert!(
        store.load(&key).await.unwrap().is_some(),
        "the copy is served until something tells this server"
    );
    let increment =
        |n: Option<&serde_json::Value>| Some(json!(n.and_then(|n| n.as_i64()).unwrap_or(0) + 1));
    let updated = store
        .update(&key, "a", &increment, &record.meta)
        .await
        .unwrap();
    assert_eq!(updated, Updated::Missing);
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "the copy outlived the session"
    );
}

/// Two servers: what one writes or deletes, the other stops serving from its cache
/// once the invalidation arrives (well within a second on loopback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_server_reach_the_others_cache() {
    let (central, _) = shared_store_with_prefix().await;
    let channel = channel();
    let a = tiered(central.clone(), &redis_servers::redis_url(), &channel).await;
    let b = tiered(central.clone(), &redis_servers::redis_url(), &channel).await;
    let key = random_key();
    let mut first = record(json!({"a": 1}));
    first.meta.user_id = Some(session_testkit::random_user());
    assert_eq!(a.create(&key, &first).await.unwrap(), Created::Written);
    until_loaded(&b, &key, Some(json!(1))).await; // cached on b now
    let meta = first.meta.clone();
    a.save(&key, &set("a", json!(2)), &meta).await.unwrap();
    until_loaded(&b, &key, Some(json!(2))).await;
    a.delete(&key).await.unwrap();
    until_loaded(&b, &key, None).await;

    // Log out everywhere: every cached session of the user goes.
    let user = first.meta.user_id.clone().unwrap();
    let keys = [random_key(), random_key()];
    for key in &keys {
        a.create(key, &first).await.unwrap();
        until_loaded(&b, key, Some(json!(1))).await;
    }
    assert_eq!(a.delete_user_sessions(&user).await.unwrap(), 2);
    for key in &keys {
        until_loaded(&b, key, None).await;
    }
}

/// Runs `write` with `central` hanging, and gives up on it after 50 ms.
async fn cut_short<S, T>(
    central: &InstrumentedStore<S>,
    write: impl std::future::Future<Output = T>,
) {
    central.set_hanging(true);
    let outcome = tokio::time::timeout(Duration::from_millis(50), write).await;
    central.set_hanging(false);
    assert!(outcome.is_err(), "the hanging write returned");
}

/// A write whose answer never came back (the central store slower than the layer's
/// timeout, a request cancelled) or came back as an error may still have reached the
/// central store: the other servers drop their copies all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_short_still_reaches_the_others_cache() {
    let (central, _) = shared_store_with_prefix().await;
    let channel = channel();
    let unreliable = InstrumentedStore::new(central.clone());
    let a = tiered(unreliable.clone(), &redis_servers::redis_url(), &channel).await;
    let b = tiered(central.clone(), &redis_servers::redis_url(), &channel).await;
    let mut first = record(json!({"a": 1}));
    first.meta.user_id = Some(session_testkit::random_user());
    let cached_on_b = |key| {
        let (a, b, first) = (a.clone(), b.clone(), first.clone());
        async move {
            assert_eq!(a.create(&key, &first).await.unwrap(), Created::Written);
            until_loaded(&b, &key, Some(json!(1))).await;
        }
    };

    // A delete that landed, but timed out on the way back.
    let key = random_key();
    cached_on_b(key).await;
    central.delete(&key).await.unwrap();
    cut_short(&unreliable, a.delete(&key)).await;
    until_loaded(&b, &key, None).await;

    // A save that landed, but whose answer was an error.
    let key = random_key();
    cached_on_b(key).await;
    central
        .save(&key, &set("a", json!(2)), &first.meta)
        .await
        .unwrap();
    unreliable.set_failing(true);
    assert!(a
        .save(&key, &set("a", json!(2)), &first.meta)
        .await
        .is_err());
    unreliable.set_failing(false);
    until_loaded(&b, &key, Some(json!(2))).await;

    // Log out everywhere, timed out on the way back.
    let user = first.meta.user_id.clone().unwrap();
    let key = random_key();
    cached_on_b(key).await;
    central.delete_user_sessions(&user).await.unwrap();
    cut_short(&unreliable, a.delete_user_sessions(&user)).await;
    until_loaded(&b, &key, None).await;
}

/// Strict mode: no coherence window. What one server acknowledged, another's next read
/// reflects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_follow_every_acknowledged_write() {
    let (central, _) = shared_store_with_prefix().await;
    let channel = channel();
    strict::reads_follow_every_acknowledged_write(central, |central| {
        let channel = channel.clone();
        async move {
            TieredStore::builder(central)
                .strict()
                .connect(redis_channel(&redis_servers::redis_url(), &channel).await)
                .await
                .expect("the channel connects")
        }
    })
    .await;
}

/// The channel lost, on a redis-server of the test's own that carries only the
/// channel: no server serves what it cached before, neither while the channel is down
/// (every read goes to the central store) nor after it is back (the cache starts
/// empty, since messages were lost in between).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_channel_never_serves_stale_sessions() {
    let mut server = redis_servers::OwnRedis::start();
    let central = InstrumentedStore::new(shared_store().await);
    let store = tiered(central.clone(), &server.url(), "invalidate").await;
    let key = random_key();
    store.create(&key, &record(json!({"a": 1}))).await.unwrap();
    until_loaded(&store, &key, Some(json!(1))).await;
    let meta = central.load(&key).await.unwrap().unwrap().meta;
    let unpublished = |value| {
        let (central, meta) = (central.inner().clone(), meta.clone());
        async move {
            central
                .save(&key, &set("a", json!(value)), &meta)
                .await
                .unwrap()
        }
    };
    let wait_until = |coherent: bool| {
        let store = store.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(3);
            while store.is_coherent() != coherent && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(store.is_coherent(), coherent, "still not so after 3 s");
        }
    };

    // The subscription killed, and a write it would have announced made at once.
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    unpublished(2).await;
    until_loaded(&store, &key, Some(json!(2))).await;
    wait_until(true).await;

    // The channel's server gone: reads bypass the cache.
    server.kill();
    wait_until(false).await;
    unpublished(3).await;
    central.reset_counts();
    for _ in 0..5 {
        until_loaded(&store, &key, Some(json!(3))).await;
    }
    assert_eq!(central.count("load"), 5, "reads did not bypass the cache");

    // Back: a fresh cache serves again.
    server.restart();
    wait_until(true).await;
    until_loaded(&store, &key, Some(json!(3))).await;
    central.reset_counts();
    for _ in 0..5 {
        until_loaded(&store, &key, Some(json!(3))).await;
    }
    assert_eq!(central.count("load"), 0, "the cache is not serving again");
}

/// Two servers on the shared Redis and one channel: `a` through `proxy`, `b` directly.
async fn one_through(proxy: &CuttableProxy) -> (TieredStore<RedisStore>, TieredStore<RedisStore>) {
    let (central, _) = shared_store_with_prefix().await;
    let channel = channel();
    let a = tiered(central.clone(), &proxy.redis_url(), &channel).await;
    let b = tiered(central, &redis_servers::redis_url(), &channel).await;
    (a, b)
}

/// A channel whose connection goes silent (its server frozen or cut off, a NAT that
/// forgot the flow: nothing closes, nothing arrives) is noticed by the `PING` a quiet
/// subscription sends: the server stops serving its copies within about two seconds,
/// and hears again once subscribed anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_gone_silent_stops_serving_copies_within_two_seconds() {
    let proxy = CuttableProxy::start(redis_servers::redis_address())
        .await
        .unwrap();
    let (a, b) = one_through(&proxy).await;
    let key = random_key();
    a.create(&key, &record(json!({"a": 1}))).await.unwrap();
    until_loaded(&a, &key, Some(json!(1))).await;
    silent::a_silent_channel_stops_serving(&proxy, &a, &b, &key).await;

    let again = random_key();
    let first = record(json!({"a": 1}));
    b.create(&again, &first).await.unwrap();
    until_loaded(&a, &again, Some(json!(1))).await;
    b.save(&again, &set("a", json!(2)), &first.meta)
        .await
        .unwrap();
    until_loaded(&a, &again, Some(json!(2))).await;
}

/// A publishing connection gone silent swallows no invalidation: a publish that goes
/// unanswered is sent again on a new connection, and the write returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gone_silent_is_replaced_and_the_invalidation_arrives() {
    let proxy = CuttableProxy::start(redis_servers::redis_address())
        .await
        .unwrap();
    let (a, b) = one_through(&proxy).await;
    let key = random_key();
    let first = record(json!({"a": 1}));
    a.create(&key, &first).await.unwrap();
    until_loaded(&b, &key, Some(json!(1))).await;

    proxy.cut();
    let saved = tokio::time::timeout(
        Duration::from_secs(3),
        a.save(&key, &set("a", json!(2)), &first.meta),
    )
    .await
    .expect("the save waited on the silent connection");
    assert!(saved.is_ok());
    until_loaded(&b, &key, Some(json!(2))).await;
}

/// The whole contract on a tiered store whose central store publishes its writes'
/// invalidations itself.
mod published_by_central {
    async fn store() -> session_tiered::TieredStore<session_redis::RedisStore> {
        let channel = super::channel();
        let central = crate::shared_store()
            .await
            .with_invalidation_channel(channel.clone());
        session_tiered::TieredStore::builder(central)
            .published_by_central()
            .connect(crate::redis_channel(&crate::redis_servers::redis_url(), &channel).await)
            .await
            .expect("the central store publishes on the channel")
    }

    session_testkit::conformance_tests!(store().await);

    /// Strict mode keeps its guarantee: the script's `PUBLISH` goes out before the
    /// write's reply, so before any marker sent after it, on the same server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strict_reads_follow_every_acknowledged_write() {
        let channel = super::channel();
        let central = crate::shared_store()
            .await
            .with_invalidation_channel(channel.clone());
        crate::strict::reads_follow_every_acknowledged_write(central, |central| {
            let channel = channel.clone();
            async move {
                session_tiered::TieredStore::builder(central)
                    .published_by_central()
                    .strict()
                    .connect(
                        crate::redis_channel(&crate::redis_servers::redis_url(), &channel).await,
                    )
                    .await
                    .expect("the central store publishes on the channel")
            }
        })
        .await;
    }
}

/// With a central store that publishes inside its writes, the tiered store publishes
/// nothing: every invalidation comes from a script (no client's last command is a
/// `PUBLISH`), so a write is one round trip. And a write made through the central
/// store alone, as by a server that died before it could have published, still
/// reaches the other servers' cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_store_that_publishes_makes_a_write_one_round_trip() {
    let server = redis_servers::OwnRedis::start();
    let central = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .with_invalidation_channel("invalidate");
    let url = server.url();
    let connect = || async {
        TieredStore::builder(central.clone())
            .published_by_central()
            .connect(redis_channel(&url, "invalidate").await)
            .await
    };
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    assert!(format!("{a:?}").contains("published_by_central: true"));
    let key = random_key();
    let first = record(json!({"a": 1}));
    assert_eq!(a.create(&key, &first).await.unwrap(), Created::Written);
    until_loaded(&b, &key, Some(json!(1))).await;

    let published = server.command_calls("publish");
    for value in 2..12 {
        a.save(&key, &set("a", json!(value)), &first.meta)
            .await
            .unwrap();
        until_loaded(&b, &key, Some(json!(value))).await;
    }
    assert_eq!(server.command_calls("publish") - published, 10);
    let clients = server.cli(&["CLIENT", "LIST"]);
    assert!(
        !clients.contains("cmd=publish"),
        "a client published:\n{clients}"
    );

    central
        .save(&key, &set("a", json!(99)), &first.meta)
        .await
        .unwrap();
    until_loaded(&b, &key, Some(json!(99))).await;
    central.delete(&key).await.unwrap();
    until_loaded(&b, &key, None).await;
}

/// `published_by_central` is checked when connecting: a central store that does not
/// publish on the channel, or publishes on another, is an error, not a store that
/// would leave other servers' copies stale.
#[tokio::test]
async fn a_central_store_that_does_not_publish_is_refused() {
    let channel = channel();
    let silent = shared_store().await;
    let elsewhere = shared_store()
        .await
        .with_invalidation_channel(format!("{channel}:other"));
    for central in [silent, elsewhere] {
        let refused = TieredStore::builder(central)
            .published_by_central()
            .connect(redis_channel(&redis_servers::redis_url(), &channel).await)
            .await
            .unwrap_err();
        let reason = std::error::Error::source(&refused).map(ToString::to_string);
        assert!(
            reason.is_some_and(|reason| reason.contains("published no invalidation")),
            "{refused:?}"
        );
    }
}

/// #28 item 7: a logout reaches a server busy with reads within the bound a broken
/// channel cannot meet (the window's percentiles are printed; BENCHMARKS.md has them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_reach_a_busy_server() {
    let central = shared_store().await;
    let channel = channel();
    let url = redis_servers::redis_url();
    let servers = [
        tiered(central.clone(), &url, &channel).await,
        tiered(central.clone(), &url, &channel).await,
        tiered(central, &url, &channel).await,
    ];
    busy::logouts_reach_a_busy_server(servers).await;
}
