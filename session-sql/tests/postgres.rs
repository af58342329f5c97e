//! `PostgresStore` against the machine's PostgreSQL (`POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test works in a temporary table of
//! its own connection, so nothing outlives it in the shared database.

#![cfg(feature = "postgres")]

#[macro_use]
mod common;

use std::time::Duration;

use serde_json::json;
use session_core::store::{Created, Record};
use session_core::{Meta, SessionStore, Timestamp};
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

struct Fixture {
    store: PostgresStore,
    table: String,
}

async fn fixture() -> Fixture {
    let table = temporary_table();
    let store = PostgresStore::new(single_connection().await)
        .with_table(&table)
        .expect("a valid table name");
    store.migrate().await.expect("migrate");
    Fixture { store, table }
}

session_testkit::conformance_tests!(fixture().await.store);
sql_store_tests!(
    "UPDATE {table} SET {column} = $1::jsonb WHERE key = $2",
    unread_write_queries = 1.0
);

#[tokio::test]
async fn migrate_is_idempotent_and_matches_the_shipped_sql() {
    let store = fixture().await.store;
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
        Created::Written
    );
    assert_eq!(
        from_file.load(&key).await.unwrap().unwrap().data,
        record.data
    );
}

/// The whole contract again, on a store whose writes announce their sessions.
mod with_an_invalidation_channel {
    session_testkit::conformance_tests!(crate::fixture()
        .await
        .store
        .with_invalidation_channel("test_invalidate")
        .expect("a valid channel name"));
}

/// With an invalidation channel, each write that changes or ends a session sends
/// `NOTIFY` with `k<key>` from its own statement (the testkit's rule). The channel
/// outlives a change of table; a name `LISTEN` cannot take is refused.
#[tokio::test]
async fn writes_announce_their_sessions_on_the_invalidation_channel() {
    use session_sql::sqlx::postgres::PgListener;

    let channel = format!("test_{}", session_testkit::random_user().replace('-', "_"));
    let mut listener = PgListener::connect(&postgres_url()).await.unwrap();
    listener.listen(&channel).await.unwrap();
    let (forward, mut announced) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(notification) = listener.recv().await {
            if forward.send(notification.payload().to_owned()).is_err() {
                break;
            }
        }
    });

    let store = PostgresStore::new(single_connection().await)
        .with_invalidation_channel(&channel)
        .unwrap()
        .with_table(&temporary_table())
        .unwrap();
    store.migrate().await.unwrap();
    session_testkit::announcements::writes_announce_their_sessions(store, &mut announced).await;

    for invalid in ["", "bad-name", "x'; DROP TABLE t; --", &"c".repeat(47)] {
        let refused = fixture().await.store.with_invalidation_channel(invalid);
        assert!(refused.is_err(), "{invalid:?} accepted");
    }
}

/// docs/security.md 36: servers started together on a table that does not exist yet
/// all start (PostgreSQL failed with a duplicate `pg_type` or `pg_class` row in 18 of
/// 30 starts of three servers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_a_new_table_all_migrate() {
    for _ in 0..10 {
        let name = common::own_table_name();
        let _table = common::Table::postgres(name.clone(), &postgres_url());
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(
                common::store_in::<session_sql::sqlx::Postgres>(&postgres_url(), &name).await,
            );
        }
        common::migrate_together(stores).await;
    }
}

/// docs/security.md 34: "log out everywhere" of 100,000 sessions of one user, one
/// statement, while logins of that user keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_of_100_000_sessions_wins_against_a_login_storm() {
    let name = common::own_table_name();
    let _table = common::Table::postgres(name.clone(), &postgres_url());
    let store = common::store_in::<session_sql::sqlx::Postgres>(&postgres_url(), &name).await;
    store.migrate().await.unwrap();
    let user = session_testkit::random_user();
    let (meta, expires_at) = common::many_sessions_of(&user);
    let inserted = session_sql::sqlx::query(session_sql::sqlx::AssertSqlSafe(format!(
        "INSERT INTO {name} (key, data, meta, user_id, expires_at)
         SELECT 'bulk-' || i, '{{}}', $1::jsonb, $2, $3 FROM generate_series(1, $4) AS i"
    )))
    .bind(meta)
    .bind(&user)
    .bind(expires_at)
    .bind(common::MANY)
    .execute(store.pool())
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), common::MANY as u64);
    common::log_out_everywhere_of_many(store, &user).await;
}
