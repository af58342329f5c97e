//! SQL servers out of reach: each store reaches its server through a TCP proxy that
//! the test owns and cuts, in a table of the test's own.

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use std::time::{Duration, Instant};

use session_sql::sqlx;
use session_testkit::outage;
use session_testkit::proxy::{server_address, url_via, CuttableProxy};
use session_testkit::Client;

#[cfg(feature = "postgres")]
fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[cfg(feature = "mysql")]
fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_closed_and_recovers() {
    let url = postgres_url();
    let mut proxy = common::Proxy::start(server_address(&url)).await;
    let table = common::Table::postgres(format!("session_kit_test_fault_{}", proxy.port), &url);
    let store =
        common::store_in::<sqlx::Postgres>(&common::through(&url, &proxy), &table.name).await;
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    session_testkit::outage::fails_closed_and_recovers(&app, &mut proxy).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mysql_fails_closed_and_recovers() {
    let url = mysql_url();
    let mut proxy = common::Proxy::start(server_address(&url)).await;
    let table = common::Table::mysql(format!("session_kit_test_fault_{}", proxy.port), &url).await;
    let store = common::store_in::<sqlx::MySql>(&common::through(&url, &proxy), &table.name).await;
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    session_testkit::outage::fails_closed_and_recovers(&app, &mut proxy).await;
}

/// With the server refusing connections (nothing listens on its port), requests fail
/// closed at once, not after the store timeout: sqlx's pool retries a refused
/// connection until its acquire timeout, and every request waited out the layer's
/// second where Redis fails in about 2 ms.
async fn refused_connections_fail_fast<DB: session_sql::Dialect>(
    url: &str,
    table: &str,
    proxy: &mut common::Proxy,
) {
    let store = common::store_in::<DB>(&common::through(url, proxy), table).await;
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    let mut client = Client::new(&app);
    client.post("/login/refused-user").await;
    proxy.cut();
    let mut slowest = Duration::ZERO;
    for path in ["/user", "/user", "/set/a/1", "/incr/n", "/user"] {
        let started = Instant::now();
        let reply = if path == "/user" {
            client.get(path).await
        } else {
            client.post(path).await
        };
        outage::assert_failed_closed(&reply, started.elapsed());
        slowest = slowest.max(started.elapsed());
    }
    // The store timeout is a second; a refusal is known in a few milliseconds.
    assert!(
        slowest < Duration::from_millis(250),
        "a request took {slowest:?}"
    );
    eprintln!("refused: the slowest request took {slowest:?}");
    proxy.restore().await;
    outage::until_ok(&mut client, "/user", Duration::from_secs(10)).await;
    assert_eq!(client.get("/user").await.body, "refused-user");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_refuses_connections_fails_fast() {
    let url = postgres_url();
    let mut proxy = common::Proxy::start(server_address(&url)).await;
    let table = common::Table::postgres(format!("session_kit_test_refused_{}", proxy.port), &url);
    refused_connections_fail_fast::<sqlx::Postgres>(&url, &table.name, &mut proxy).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_that_refuses_connections_fails_fast() {
    let url = mysql_url();
    let mut proxy = common::Proxy::start(server_address(&url)).await;
    let table =
        common::Table::mysql(format!("session_kit_test_refused_{}", proxy.port), &url).await;
    refused_connections_fail_fast::<sqlx::MySql>(&url, &table.name, &mut proxy).await;
}

/// A table-name suffix of the test's own.
fn silent_suffix() -> String {
    session_testkit::random_token()[..12]
        .to_lowercase()
        .replace('-', "_")
}

/// An app on a store of `table` that reaches `url`'s server through a proxy.
async fn app_through_proxy<DB: session_sql::Dialect>(
    url: &str,
    table: &str,
) -> (CuttableProxy, session_testkit::App) {
    let proxy = CuttableProxy::start(server_address(url)).await.unwrap();
    let store = common::store_in::<DB>(&url_via(url, proxy.address()), table).await;
    store.migrate().await.unwrap();
    let app = session_testkit::app(session_core::SessionLayer::new(store), None);
    (proxy, app)
}

/// Every pooled connection gone silent at once (a partition, a NAT or load balancer
/// that forgot the flows: what is sent is lost, nothing answers, nothing closes), some
/// with queries in flight: requests that meet one fail closed within the store
/// timeout, and the pool's next connections, made anew, serve again with the session
/// intact.
async fn a_pool_gone_silent_recovers<DB: session_sql::Dialect>(url: &str, table: &str) {
    let (proxy, app) = app_through_proxy::<DB>(url, table).await;
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

/// A lock that holds every query of a table until released, taken on a connection of
/// its own.
enum TableLock {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlConnection),
}

impl TableLock {
    #[cfg(feature = "postgres")]
    async fn postgres(url: &str, table: &str) -> Self {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let mut transaction = pool.begin().await.unwrap();
        let lock = format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
            .execute(&mut *transaction)
            .await
            .unwrap();
        Self::Postgres(transaction)
    }

    #[cfg(feature = "mysql")]
    async fn mysql(url: &str, table: &str) -> Self {
        use sqlx::Connection;
        let mut connection = sqlx::MySqlConnection::connect(url).await.unwrap();
        let lock = format!("LOCK TABLES {table} WRITE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
            .execute(&mut connection)
            .await
            .unwrap();
        Self::MySql(connection)
    }

    async fn release(self) {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(transaction) => transaction.rollback().await.unwrap(),
            #[cfg(feature = "mysql")]
            Self::MySql(mut connection) => {
                sqlx::raw_sql("UNLOCK TABLES")
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
        }
    }
}

/// What the held-up requests do: reads fill the four batch slots of loads, writes
/// every connection of the pool.
#[derive(Clone, Copy)]
enum HeldUp {
    Reads,
    Writes,
}

/// Requests held up on the server (by `lock`, taken once a user is logged in) when
/// the store's connections go silent: their answers never come. The requests fail
/// closed at the store timeout, the statements cut short close their connections
/// rather than go back to the pool (where sqlx's test of them would wait until TCP
/// gave up), and new statements run on new connections.
async fn statements_caught_by_a_silence_are_given_up<DB: session_sql::Dialect>(
    url: &str,
    table: &str,
    lock: impl std::future::Future<Output = TableLock>,
    held_up_by: HeldUp,
) {
    let (proxy, app) = app_through_proxy::<DB>(url, table).await;
    let mut client = Client::new(&app);
    client.post("/login/held-up-user").await;
    let lock = lock.await;
    let mut held_up = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let mut client = client.clone();
        held_up.spawn(async move {
            match held_up_by {
                HeldUp::Reads => client.get("/user").await,
                HeldUp::Writes => client.post("/set/n/1").await,
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    lock.release().await;
    let started = Instant::now();
    for reply in held_up.join_all().await {
        outage::assert_failed_closed(&reply, started.elapsed());
    }
    outage::until_ok(&mut client, "/user", Duration::from_secs(20)).await;
    assert_eq!(client.get("/user").await.body, "held-up-user");
    eprintln!("back {:?} after the cut", started.elapsed());
}

#[cfg(feature = "postgres")]
async fn postgres_caught_by_a_silence(held_up_by: HeldUp) {
    let url = postgres_url();
    let table = common::Table::postgres(format!("session_kit_test_held_{}", silent_suffix()), &url);
    let lock = TableLock::postgres(&url, &table.name);
    statements_caught_by_a_silence_are_given_up::<sqlx::Postgres>(
        &url,
        &table.name,
        lock,
        held_up_by,
    )
    .await;
}

#[cfg(feature = "mysql")]
async fn mysql_caught_by_a_silence(held_up_by: HeldUp) {
    let url = mysql_url();
    let table =
        common::Table::mysql(format!("session_kit_test_held_{}", silent_suffix()), &url).await;
    let lock = TableLock::mysql(&url, &table.name);
    statements_caught_by_a_silence_are_given_up::<sqlx::MySql>(&url, &table.name, lock, held_up_by)
        .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_caught_by_a_silence_are_given_up() {
    postgres_caught_by_a_silence(HeldUp::Reads).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_caught_by_a_silence_are_given_up() {
    postgres_caught_by_a_silence(HeldUp::Writes).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_reads_caught_by_a_silence_are_given_up() {
    mysql_caught_by_a_silence(HeldUp::Reads).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_writes_caught_by_a_silence_are_given_up() {
    mysql_caught_by_a_silence(HeldUp::Writes).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_pool_gone_silent_recovers() {
    let url = postgres_url();
    let table =
        common::Table::postgres(format!("session_kit_test_silent_{}", silent_suffix()), &url);
    a_pool_gone_silent_recovers::<sqlx::Postgres>(&url, &table.name).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_pool_gone_silent_recovers() {
    let url = mysql_url();
    let table =
        common::Table::mysql(format!("session_kit_test_silent_{}", silent_suffix()), &url).await;
    a_pool_gone_silent_recovers::<sqlx::MySql>(&url, &table.name).await;
}
