//! SQL servers out of reach: each store reaches its server through a TCP proxy that
//! the test owns and cuts, in a table of the test's own.

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::time::{Duration, Instant};

use session_testkit::outage;
use session_testkit::proxy::CuttableProxy;
use session_testkit::Client;

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_closed_and_recovers() {
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut proxy = common::Proxy::start(common::server_address(&url).await).await;
    let table = common::Table::postgres(format!("session_kit_test_fault_{}", proxy.port), &url);
    let store = session_sql::PostgresStore::connect(&common::through(&url, &proxy))
        .await
        .unwrap()
        .with_table(&table.name)
        .unwrap();
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    session_testkit::outage::fails_closed_and_recovers(&app, &mut proxy).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mysql_fails_closed_and_recovers() {
    let url = std::env::var("MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let mut proxy = common::Proxy::start(common::server_address(&url).await).await;
    let table = common::Table::mysql(format!("session_kit_test_fault_{}", proxy.port), &url).await;
    let store = session_sql::MySqlStore::connect(&common::through(&url, &proxy))
        .await
        .unwrap()
        .with_table(&table.name)
        .unwrap();
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    session_testkit::outage::fails_closed_and_recovers(&app, &mut proxy).await;
}

/// A table-name suffix of the test's own.
fn silent_suffix() -> String {
    session_testkit::random_token()[..12]
        .to_lowercase()
        .replace('-', "_")
}

/// Every pooled connection gone silent at once (a partition, a NAT or load balancer
/// that forgot the flows: what is sent is lost, nothing answers, nothing closes), some
/// with queries in flight: requests that meet one fail closed within the store
/// timeout, and the pool's next connections, made anew, serve again with the session
/// intact. The store reaches `url`'s server through a proxy, in `table`.
async fn a_pool_gone_silent_recovers<DB: session_sql::Dialect>(url: &str, table: &str) {
    let proxy = CuttableProxy::start(common::server_address(url).await)
        .await
        .unwrap();
    let store = session_sql::SqlStore::<DB>::connect(&common::via(url, proxy.address()))
        .await
        .unwrap()
        .with_table(table)
        .unwrap();
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    let mut client = Client::new(&app);
    client.post("/login/cut-off-user").await;
    // Concurrent reads and writes, so that the pool holds several connections and
    // every batch of loads has one in flight when they all go silent.
    let burst = |client: &Client| {
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..16 {
            let mut client = client.clone();
            requests.spawn(async move {
                if i % 4 == 0 {
                    client.post("/set/n/1").await
                } else {
                    client.get("/user").await
                }
            });
        }
        requests.join_all()
    };
    for reply in burst(&client).await {
        assert_eq!(reply.status, http::StatusCode::OK);
    }
    // Cut while requests are in flight: a query sent whose answer never comes.
    let in_flight = burst(&client);
    tokio::time::sleep(Duration::from_millis(2)).await;
    proxy.cut();
    let started = Instant::now();
    for reply in in_flight.await {
        if reply.status != http::StatusCode::OK {
            outage::assert_failed_closed(&reply, started.elapsed());
        }
    }
    // Those that met a silent connection fail closed; any that opened a new one pass.
    for reply in burst(&client).await {
        if reply.status != http::StatusCode::OK {
            outage::assert_failed_closed(&reply, started.elapsed());
        }
    }
    outage::until_ok(&mut client, "/user", Duration::from_secs(20)).await;
    assert_eq!(client.get("/user").await.body, "cut-off-user");
    eprintln!("back {:?} after the cut", started.elapsed());
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_pool_gone_silent_recovers() {
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let table =
        common::Table::postgres(format!("session_kit_test_silent_{}", silent_suffix()), &url);
    a_pool_gone_silent_recovers::<sqlx::Postgres>(&url, &table.name).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_pool_gone_silent_recovers() {
    let url = std::env::var("MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    let table =
        common::Table::mysql(format!("session_kit_test_silent_{}", silent_suffix()), &url).await;
    a_pool_gone_silent_recovers::<sqlx::MySql>(&url, &table.name).await;
}
