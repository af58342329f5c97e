//! `MySqlStore` against the machine's MariaDB (`MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Each test works in a temporary table of its
//! own connection, made from the shipped `migrations/mysql.sql`, so nothing outlives
//! it in the shared database.

#![cfg(feature = "mysql")]

#[macro_use]
mod common;

use std::time::Duration;

use session_core::store::{Created, Record};
use session_core::{Meta, SessionStore, Timestamp};
use session_sql::sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use session_sql::MySqlStore;
use session_testkit::random_key;

fn mysql_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// One connection that lives as long as the pool: its temporary tables go with it.
async fn single_connection() -> MySqlPool {
    let url = mysql_url();
    MySqlPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "MySQL/MariaDB at {url} is not reachable ({error}). Start it with \
                 `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`, \
                 set MYSQL_URL, or run scripts/test, which starts it"
            )
        })
}

/// A temporary table made from the shipped SQL, on `pool`'s one connection.
async fn temporary_table(pool: &MySqlPool) -> String {
    let name = format!(
        "sessions_{}",
        session_testkit::random_user().replace('-', "_")
    );
    let sql = include_str!("../migrations/mysql.sql")
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .map(|line| line.split(" -- ").next().unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("sessions_expires_at", &format!("{name}_expires_at"))
        .replace("sessions_user_id", &format!("{name}_user_id"))
        .replace(
            "CREATE TABLE IF NOT EXISTS sessions",
            &format!("CREATE TEMPORARY TABLE {name}"),
        );
    sqlx::query(sqlx::AssertSqlSafe(
        sql.trim_end().trim_end_matches(';').to_owned(),
    ))
    .execute(pool)
    .await
    .expect("the shipped SQL creates the table");
    name
}

struct Fixture {
    store: MySqlStore,
    table: String,
}

async fn fixture() -> Fixture {
    let pool = single_connection().await;
    let table = temporary_table(&pool).await;
    let store = MySqlStore::new(pool)
        .with_table(&table)
        .expect("a valid table name");
    Fixture { store, table }
}

session_testkit::conformance_tests!(fixture().await.store);
sql_store_tests!(
    "UPDATE {table} SET {column} = ? WHERE `key` = ?",
    unread_write_queries = 2.0
);

/// `migrate` makes a real table (dropped again when the test ends, however it ends),
/// and is idempotent.
#[tokio::test]
async fn migrate_is_idempotent() {
    let name = format!(
        "session_kit_test_{}",
        session_testkit::random_user().replace('-', "_")
    );
    let table = common::Table::mysql(name, &mysql_url()).await;
    let store = MySqlStore::new(single_connection().await)
        .with_table(&table.name)
        .unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let key = random_key();
    let now = Timestamp::now();
    let record = Record {
        data: Default::default(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
    };
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Written);
}

/// docs/security.md 36: servers started together on a table that does not exist yet
/// all start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_a_new_table_all_migrate() {
    for _ in 0..10 {
        let name = common::own_table_name();
        let _table = common::Table::mysql(name.clone(), &mysql_url()).await;
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(common::store_in::<session_sql::sqlx::MySql>(&mysql_url(), &name).await);
        }
        common::migrate_together(stores).await;
    }
}

/// docs/security.md 34: "log out everywhere" of 100,000 sessions of one user, one
/// statement, while logins of that user keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_of_100_000_sessions_wins_against_a_login_storm() {
    let name = common::own_table_name();
    let _table = common::Table::mysql(name.clone(), &mysql_url()).await;
    let store = common::store_in::<session_sql::sqlx::MySql>(&mysql_url(), &name).await;
    store.migrate().await.unwrap();
    let user = session_testkit::random_user();
    let (meta, expires_at) = common::many_sessions_of(&user);
    // Five columns of digits make the 100,000 rows (no sequence table in MySQL).
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    let inserted = session_sql::sqlx::query(session_sql::sqlx::AssertSqlSafe(format!(
        "INSERT INTO {name} (`key`, data, meta, user_id, expires_at)
         SELECT CONCAT('bulk-', a.d, b.d, c.d, e.d, f.d), '{{}}', ?, ?, ?
         FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f"
    )))
    .bind(meta)
    .bind(&user)
    .bind(expires_at)
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), common::MANY as u64);
    common::log_out_everywhere_of_many(store, &user).await;
}
