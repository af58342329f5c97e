//! SQL servers out of reach: each store reaches its server through a TCP proxy that
//! the test owns and cuts, in a table of the test's own.

mod common;

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
