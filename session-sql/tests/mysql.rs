//! `MySqlStore` against the machine's MariaDB (`MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`). Each test works in a temporary table of its
//! own connection, made from the shipped `migrations/mysql.sql`, so nothing outlives
//! it in the shared database.

#![cfg(feature = "mysql")]

use std::time::Duration;

use serde_json::json;
use session_core::{Changes, Created, Meta, Record, Saved, SessionStore, Timestamp};
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

async fn store() -> MySqlStore {
    let pool = single_connection().await;
    let table = temporary_table(&pool).await;
    MySqlStore::new(pool)
        .with_table(&table)
        .expect("a valid table name")
}

session_testkit::conformance_tests!(store().await);

/// Keys that JSON paths cannot quote are stored encoded and read back as written,
/// through every kind of write.
#[tokio::test]
async fn any_key_survives_every_write() {
    let store = store().await;
    let key = random_key();
    let now = Timestamp::now();
    let meta = Meta::new(now, now.saturating_add(Duration::from_secs(60)));
    let names = ["q\"uote", "back\\slash", "100%", "%22", "a.b", "é", "$[0]"];
    let record = Record {
        data: names.iter().map(|n| ((*n).to_owned(), json!(n))).collect(),
        meta: meta.clone(),
    };
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Created);
    assert_eq!(store.load(&key).await.unwrap().unwrap().data, record.data);
    let changes = Changes {
        removed: vec!["q\"uote".to_owned()],
        set: [("back\\slash".to_owned(), json!({"nested": [1, null]}))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        store.save(&key, &changes, &meta).await.unwrap(),
        Saved::Saved
    );
    let increment =
        |n: Option<&serde_json::Value>| Some(json!(n.and_then(|v| v.as_u64()).unwrap_or(0) + 1));
    store.update(&key, "100%", &increment, &meta).await.unwrap();
    let loaded = store.load(&key).await.unwrap().unwrap().data;
    assert_eq!(loaded.get("q\"uote"), None);
    assert_eq!(
        loaded.get("back\\slash"),
        Some(&json!({"nested": [1, null]}))
    );
    assert_eq!(loaded.get("100%"), Some(&json!(1)));
    assert_eq!(loaded.get("%22"), Some(&json!("%22")));
}

/// SECURITY.md 28 for rows: a row whose documents do not decode as a session is no
/// session (and is logged), never a panic or an error.
#[tokio::test]
async fn corrupt_rows_are_treated_as_absent() {
    let pool = single_connection().await;
    let table = temporary_table(&pool).await;
    let store = MySqlStore::new(pool.clone()).with_table(&table).unwrap();
    let now = Timestamp::now();
    for (column, garbage) in [
        ("data", "[1, 2]"),
        ("data", "\"text\""),
        ("meta", "{}"),
        ("meta", "null"),
    ] {
        let key = random_key();
        let record = Record {
            data: [("k".to_owned(), json!("v"))].into_iter().collect(),
            meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
        };
        store.create(&key, &record).await.unwrap();
        let sql = format!("UPDATE {table} SET {column} = ? WHERE `key` = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(garbage)
            .bind(key.to_string())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "{column} = {garbage}"
        );
    }
}

/// Expired rows are deleted in batches, without any request; live rows stay.
#[tokio::test]
async fn expired_rows_are_cleaned_up() {
    let pool = single_connection().await;
    let table = temporary_table(&pool).await;
    let store = MySqlStore::new(pool.clone()).with_table(&table).unwrap();
    let now = Timestamp::now();
    let record = |expires_in: i64| Record {
        data: Default::default(),
        meta: Meta::new(
            now,
            Timestamp::from_unix_millis(now.unix_millis() + expires_in),
        ),
    };
    let live = random_key();
    store.create(&live, &record(60_000)).await.unwrap();
    for _ in 0..1_500 {
        store.create(&random_key(), &record(300)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.delete_expired(Timestamp::now()).await.unwrap(), 1_500);
    assert!(store.load(&live).await.unwrap().is_some());
}

/// `migrate` makes a real table (dropped again when the test ends), and is idempotent.
#[tokio::test]
async fn migrate_is_idempotent() {
    struct Dropped(MySqlPool, String);
    let pool = single_connection().await;
    let table = format!(
        "session_kit_test_{}",
        session_testkit::random_user().replace('-', "_")
    );
    let guard = Dropped(pool.clone(), table.clone());
    let store = MySqlStore::new(pool.clone()).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let key = random_key();
    let now = Timestamp::now();
    let record = Record {
        data: Default::default(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
    };
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Created);
    let sql = format!("DROP TABLE {}", guard.1);
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&guard.0)
        .await
        .unwrap();
}
