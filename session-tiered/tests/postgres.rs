//! `TieredStore` over `PostgresStore`, with PostgreSQL `LISTEN`/`NOTIFY` as the
//! invalidation channel, on the machine's PostgreSQL (`POSTGRES_URL`): each test in a
//! temporary table of its own connection, on a channel of its own.

use std::time::{Duration, Instant};

use serde_json::json;
use session_core::store::{Changes, Record};
use session_core::{Meta, SessionKey, SessionStore, Timestamp};
use session_sql::sqlx::postgres::{PgPool, PgPoolOptions};
use session_sql::{PostgresChannel, PostgresStore};
use session_testkit::proxy::{server_address, url_via, CuttableProxy};
use session_testkit::{random_key, random_user, InstrumentedStore};
use session_tiered::TieredStore;

mod busy;
mod silent;
mod strict;

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One connection that lives as long as the pool: its temporary table goes with it.
async fn single_connection() -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect(&postgres_url())
        .await
        .expect("PostgreSQL on POSTGRES_URL; scripts/test starts it")
}

async fn central(pool: PgPool) -> PostgresStore {
    let table = format!("pg_temp.sessions_{}", random_user().replace('-', "_"));
    let store = PostgresStore::new(pool).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    store
}

fn channel() -> String {
    format!("invalidate_{}", random_user().replace('-', "_"))
}

/// A PostgreSQL channel at `url`, which must be up.
async fn pg_channel(url: &str, name: &str) -> PostgresChannel {
    PostgresChannel::connect(url, name)
        .await
        .expect("PostgreSQL on POSTGRES_URL; scripts/test starts it")
}

/// The channel's connections carry `application_name`, so that a test can end them.
fn channel_url(name: &str) -> String {
    format!("{}?application_name={name}", postgres_url())
}

async fn tiered<S: SessionStore>(central: S, channel: &str) -> TieredStore<S> {
    let store = TieredStore::builder(central)
        .connect(pg_channel(&channel_url(channel), channel).await)
        .await
        .expect("the channel connects");
    assert!(store.is_coherent(), "not listening within 2 s");
    store
}

async fn store() -> TieredStore<PostgresStore> {
    tiered(central(single_connection().await).await, &channel()).await
}

session_testkit::conformance_tests!(store().await);

fn record() -> Record {
    let now = Timestamp::now();
    Record {
        data: [("a".to_owned(), json!(1))].into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(600))),
    }
}

fn set(value: i64) -> Changes {
    Changes {
        set: [("a".to_owned(), json!(value))].into_iter().collect(),
        ..Default::default()
    }
}

/// Polls `load` until the value of `a` is `expected`, for at most a second.
async fn until_loaded(store: &impl SessionStore, key: &SessionKey, expected: Option<i64>) {
    let started = Instant::now();
    loop {
        let loaded = store.load(key).await.unwrap();
        let value = loaded.and_then(|record| record.data.get("a").and_then(|v| v.as_i64()));
        if value == expected {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still {value:?}, not {expected:?}, after a second"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Two servers on one table: what one writes or deletes, the other stops serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_server_reach_the_others_cache() {
    let central = central(single_connection().await).await;
    let channel = channel();
    let a = tiered(central.clone(), &channel).await;
    let b = tiered(central.clone(), &channel).await;
    let (key, _) = a_save_on_a_reaches_b(&a, &b).await;
    a.delete(&key).await.unwrap();
    until_loaded(&b, &key, None).await;
}

/// A session made on `a` and cached on `b`, then saved on `a`: `b` serves the change.
async fn a_save_on_a_reaches_b<S: SessionStore>(
    a: &TieredStore<S>,
    b: &TieredStore<S>,
) -> (SessionKey, Record) {
    let key = random_key();
    let first = record();
    a.create(&key, &first).await.unwrap();
    until_loaded(b, &key, Some(1)).await;
    a.save(&key, &set(2), &first.meta).await.unwrap();
    until_loaded(b, &key, Some(2)).await;
    (key, first)
}

/// Strict mode: no coherence window. What one server acknowledged, another's next read
/// reflects at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_follow_every_acknowledged_write() {
    let central = central(single_connection().await).await;
    let channel = channel();
    strict::reads_follow_every_acknowledged_write(central, |central| {
        let channel = channel.clone();
        async move {
            TieredStore::builder(central)
                .strict()
                .connect(pg_channel(&channel_url(&channel), &channel).await)
                .await
                .expect("the channel connects")
        }
    })
    .await;
}

/// The listening connection ended by the server (`pg_terminate_backend`): no stale
/// read, and the cache serves again once it listens anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_never_serves_stale_sessions() {
    let central = InstrumentedStore::new(central(single_connection().await).await);
    let channel = channel();
    let store = tiered(central.clone(), &channel).await;
    let key = random_key();
    let first = record();
    store.create(&key, &first).await.unwrap();
    until_loaded(&store, &key, Some(1)).await;

    let admin = single_connection().await;
    session_sql::sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&channel)
    .execute(&admin)
    .await
    .unwrap();
    // A write the store cannot hear of, made at once.
    central
        .inner()
        .save(&key, &set(2), &first.meta)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while store.is_coherent() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!store.is_coherent(), "the lost listener went unnoticed");
    until_loaded(&store, &key, Some(2)).await;

    let deadline = Instant::now() + Duration::from_secs(3);
    while !store.is_coherent() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(store.is_coherent(), "not listening again after 3 s");
    until_loaded(&store, &key, Some(2)).await;
    central.reset_counts();
    for _ in 0..5 {
        until_loaded(&store, &key, Some(2)).await;
    }
    assert_eq!(central.count("load"), 0, "the cache is not serving again");
}

/// Two servers on one table and channel: `a`'s channel through a proxy, `b`'s not.
async fn one_through_proxy() -> (
    CuttableProxy,
    TieredStore<PostgresStore>,
    TieredStore<PostgresStore>,
) {
    let proxy = CuttableProxy::start(server_address(&postgres_url()))
        .await
        .unwrap();
    let central = central(single_connection().await).await;
    let channel = channel();
    let a = TieredStore::builder(central.clone())
        .connect(pg_channel(&url_via(&postgres_url(), proxy.address()), &channel).await)
        .await
        .expect("the channel connects through the proxy");
    assert!(a.is_coherent());
    let b = tiered(central, &channel).await;
    (proxy, a, b)
}

/// A listening connection gone silent (its server frozen or cut off, a NAT that
/// forgot the flow: nothing closes, nothing arrives) is noticed by the `SELECT 1` a
/// quiet listener sends: the server stops serving its copies within about two
/// seconds, and hears again once listening anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_gone_silent_stops_serving_copies_within_two_seconds() {
    let (proxy, a, b) = one_through_proxy().await;
    let key = random_key();
    a.create(&key, &record()).await.unwrap();
    until_loaded(&a, &key, Some(1)).await;
    silent::a_silent_channel_stops_serving(&proxy, &a, &b, &key).await;
    a_save_on_a_reaches_b(&b, &a).await;
}

/// A publishing connection gone silent swallows no invalidation: a `NOTIFY` that
/// goes unanswered is sent again on another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_gone_silent_is_replaced_and_the_notification_arrives() {
    let (proxy, a, b) = one_through_proxy().await;
    let key = random_key();
    let first = record();
    a.create(&key, &first).await.unwrap();
    until_loaded(&b, &key, Some(1)).await;

    proxy.cut();
    let saved = tokio::time::timeout(Duration::from_secs(5), a.save(&key, &set(2), &first.meta))
        .await
        .expect("the save waited on the silent connection");
    assert!(saved.is_ok());
    until_loaded(&b, &key, Some(2)).await;
}

/// A channel name PostgreSQL would cut short is refused up front, rather than
/// leaving strict reads waiting for markers that can never be published.
#[tokio::test]
async fn a_channel_name_too_long_for_postgres_is_refused() {
    let central = central(single_connection().await).await;
    let name = "c".repeat(47);
    let refused = PostgresChannel::connect(&postgres_url(), &name).await;
    assert!(refused.is_err(), "a 47-byte channel name was taken");
    let longest = "c".repeat(46);
    let store = TieredStore::builder(central)
        .connect(pg_channel(&postgres_url(), &longest).await)
        .await
        .expect("a 46-byte channel name is taken");
    assert!(store.is_coherent());
}

/// A central `PostgresStore` that sends the `NOTIFY` from inside each write: the
/// contract holds, a write made through the central store alone (as by a server that
/// died before it could have notified) still reaches the other servers' cache, and
/// strict mode keeps its guarantee (notifications arrive in commit order).
mod published_by_central {
    use super::*;

    async fn central_notifying(channel: &str) -> PostgresStore {
        central(single_connection().await)
            .await
            .with_invalidation_channel(channel)
            .expect("a valid channel name")
    }

    async fn tiered_over<S: SessionStore>(
        central: S,
        channel: &str,
        strict: bool,
    ) -> TieredStore<S> {
        let builder = TieredStore::builder(central).published_by_central();
        let builder = if strict { builder.strict() } else { builder };
        builder
            .connect(pg_channel(&channel_url(channel), channel).await)
            .await
            .expect("the central store notifies on the channel")
    }

    async fn store() -> TieredStore<PostgresStore> {
        let channel = channel();
        tiered_over(central_notifying(&channel).await, &channel, false).await
    }

    session_testkit::conformance_tests!(store().await);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_through_the_central_store_alone_reach_the_others_cache() {
        let channel = channel();
        let central = central_notifying(&channel).await;
        let a = tiered_over(central.clone(), &channel, false).await;
        let b = tiered_over(central.clone(), &channel, false).await;
        assert!(format!("{a:?}").contains("published_by_central: true"));
        let (key, first) = a_save_on_a_reaches_b(&a, &b).await;
        central.save(&key, &set(3), &first.meta).await.unwrap();
        until_loaded(&b, &key, Some(3)).await;
        central.delete(&key).await.unwrap();
        until_loaded(&b, &key, None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strict_reads_follow_every_acknowledged_write() {
        let channel = channel();
        let central = central_notifying(&channel).await;
        strict::reads_follow_every_acknowledged_write(central, |central| {
            let channel = channel.clone();
            async move { tiered_over(central, &channel, true).await }
        })
        .await;
    }
}

/// #28 item 7: a logout reaches a server busy with reads within the bound a broken
/// channel cannot meet (the window's percentiles are printed; BENCHMARKS.md has them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_reach_a_busy_server() {
    let central = central(single_connection().await).await;
    let channel = channel();
    let servers = [
        tiered(central.clone(), &channel).await,
        tiered(central.clone(), &channel).await,
        tiered(central, &channel).await,
    ];
    busy::logouts_reach_a_busy_server(servers).await;
}
