//! `PostgresStore` against the machine's PostgreSQL (`POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a temporary table of
//! its own connection, so nothing outlives it in the shared database.

#![cfg(feature = "postgres")]

use std::time::Duration;

use serde_json::json;
use session_core::{Created, Meta, Record, SessionStore, Timestamp};
use session_sql::sqlx::postgres::{PgPool, PgPoolOptions};
use session_sql::PostgresStore;
use session_testkit::random_key;

fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One connection that lives as long as the pool: its temporary tables go with it.
async fn single_connection() -> PgPool {
    let url = postgres_url();
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL at {url} is not reachable ({error}). Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 set POSTGRES_URL, or run scripts/test, which starts it"
            )
        })
}

fn temporary_table() -> String {
    format!(
        "pg_temp.sessions_{}",
        session_testkit::random_user().replace('-', "_")
    )
}

async fn store() -> PostgresStore {
    let store = PostgresStore::new(single_connection().await)
        .with_table(&temporary_table())
        .expect("a valid table name");
    store.migrate().await.expect("migrate");
    store
}

session_testkit::conformance_tests!(store().await);

#[tokio::test]
async fn migrate_is_idempotent_and_matches_the_shipped_sql() {
    let store = store().await;
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();

    // The SQL file, applied to a table of its own, gives a table the store works with.
    let pool = single_connection().await;
    let table = temporary_table();
    let name = table.trim_start_matches("pg_temp.");
    let shipped = include_str!("../migrations/postgres.sql")
        .replace("sessions_expires_at", &format!("{name}_expires_at"))
        .replace("sessions_user_id", &format!("{name}_user_id"))
        .replace("EXISTS sessions ", &format!("EXISTS {table} "))
        .replace("ON sessions ", &format!("ON {table} "));
    for statement in shipped.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let sql: String = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if sql.trim().is_empty() {
            continue;
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let from_file = PostgresStore::new(pool).with_table(&table).unwrap();
    let key = random_key();
    let now = Timestamp::now();
    let record = Record {
        data: [("k".to_owned(), json!("v"))].into_iter().collect(),
        meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
    };
    assert_eq!(
        from_file.create(&key, &record).await.unwrap(),
        Created::Created
    );
    assert_eq!(
        from_file.load(&key).await.unwrap().unwrap().data,
        record.data
    );
}

/// SECURITY.md 28 for rows: a row whose documents do not decode as a session is no
/// session (and is logged), never a panic or an error.
#[tokio::test]
async fn corrupt_rows_are_treated_as_absent() {
    let pool = single_connection().await;
    let table = temporary_table();
    let store = PostgresStore::new(pool.clone()).with_table(&table).unwrap();
    store.migrate().await.unwrap();
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
        let sql = format!("UPDATE {table} SET {column} = $1::jsonb WHERE key = $2");
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

/// Expired rows are deleted in batches, by a call or by the cleanup task, without any
/// request; live rows stay.
#[tokio::test]
async fn expired_rows_are_cleaned_up() {
    let pool = single_connection().await;
    let table = temporary_table();
    let store = PostgresStore::new(pool.clone()).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    let rows = || {
        let (pool, sql) = (pool.clone(), format!("SELECT count(*) FROM {table}"));
        async move {
            let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap();
            count
        }
    };
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
    for _ in 0..2_500 {
        store.create(&random_key(), &record(300)).await.unwrap();
    }
    assert_eq!(rows().await, 2_501);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.delete_expired(Timestamp::now()).await.unwrap(), 2_500);
    assert_eq!(rows().await, 1);

    for _ in 0..10 {
        store.create(&random_key(), &record(100)).await.unwrap();
    }
    let cleanup = store.spawn_cleanup(Duration::from_millis(50));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rows().await > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cleanup.stop();
    assert_eq!(rows().await, 1, "the cleanup task left expired rows");
    assert!(store.load(&live).await.unwrap().is_some());
}
