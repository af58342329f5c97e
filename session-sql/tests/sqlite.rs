//! `SqliteStore` on a file and in memory. Each test has a database file of its own
//! under Cargo's temporary directory for tests (removed with the next run), or an
//! in-memory database that ends with the test.

#![cfg(feature = "sqlite")]

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use session_core::store::{Created, Record};
use session_core::{Meta, SessionLayer, SessionStore, Timestamp};
use session_sql::SqliteStore;
use session_testkit::{random_key, random_user};

/// This run's directory: one per test process; those of finished runs are removed.
fn run_directory() -> &'static PathBuf {
    static DIRECTORY: OnceLock<PathBuf> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-tests");
        if let Ok(entries) = std::fs::read_dir(&parent) {
            for entry in entries.flatten() {
                let pid = entry.file_name().to_string_lossy().into_owned();
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let directory = parent.join(std::process::id().to_string());
        std::fs::create_dir_all(&directory).unwrap();
        directory
    })
}

fn file_url() -> String {
    let file = run_directory().join(format!("{}.db", random_user()));
    format!("sqlite://{}", file.display())
}

struct Fixture {
    store: SqliteStore,
    table: String,
}

async fn fixture_at(url: &str) -> Fixture {
    let table = format!("sessions_{}", random_user().replace('-', "_"));
    let store = SqliteStore::connect(url)
        .await
        .unwrap()
        .with_table(&table)
        .unwrap();
    store.migrate().await.unwrap();
    Fixture { store, table }
}

mod file {
    use super::*;

    async fn fixture() -> Fixture {
        fixture_at(&file_url()).await
    }

    session_testkit::conformance_tests!(fixture().await.store);
    sql_store_tests!(
        "UPDATE {table} SET {column} = ? WHERE \"key\" = ?",
        unread_write_queries = 2.0
    );
}

mod in_memory {
    use super::*;

    async fn fixture() -> Fixture {
        fixture_at("sqlite::memory:").await
    }

    session_testkit::conformance_tests!(fixture().await.store);
    sql_store_tests!(
        "UPDATE {table} SET {column} = ? WHERE \"key\" = ?",
        unread_write_queries = 2.0
    );
}

/// Sessions outlive the process that wrote them: a store opened again on the same
/// file, as after a restart, finds them.
#[tokio::test]
async fn sessions_survive_a_restart() {
    let url = file_url();
    let fixture = fixture_at(&url).await;
    let app = session_testkit::app(SessionLayer::new(fixture.store), None);
    let mut client = session_testkit::Client::new(&app);
    client.post("/set/a/kept").await;
    drop(app);

    let reopened = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_table(&fixture.table)
        .unwrap();
    let record = reopened
        .load(&client.key().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.data.get("a"), Some(&json!("kept")));
}

/// Two stores on one file, as two processes of one server would have: each sees the
/// other's writes, and increments through both are all kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_keep_every_increment() {
    let url = file_url();
    let first = fixture_at(&url).await;
    let second = SqliteStore::connect(&url)
        .await
        .unwrap()
        .with_table(&first.table)
        .unwrap();
    let key = random_key();
    let now = Timestamp::now();
    let meta = Meta::new(now, now.saturating_add(Duration::from_secs(60)));
    let record = Record {
        data: Default::default(),
        meta: meta.clone(),
    };
    assert_eq!(
        first.store.create(&key, &record).await.unwrap(),
        Created::Written
    );
    let increment =
        |n: Option<&serde_json::Value>| Some(json!(n.and_then(|v| v.as_u64()).unwrap_or(0) + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let store = if i % 2 == 0 {
            first.store.clone()
        } else {
            second.clone()
        };
        let meta = meta.clone();
        tasks.spawn(async move { store.update(&key, "n", &increment, &meta).await.unwrap() });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let data = second.load(&key).await.unwrap().unwrap().data;
    assert_eq!(data.get("n"), Some(&json!(100)));
}

/// The shipped SQL makes a table the store works with, and `migrate` is idempotent.
#[tokio::test]
async fn migrate_is_idempotent_and_matches_the_shipped_sql() {
    let fixture = fixture_at(&file_url()).await;
    fixture.store.migrate().await.unwrap();

    let pool = fixture.store.pool();
    for statement in include_str!("../migrations/sqlite.sql").split(';') {
        let sql: String = statement
            .lines()
            .map(|line| line.split(" -- ").next().unwrap_or(line))
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if !sql.trim().is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
        }
    }
    let from_file = SqliteStore::new(pool.clone());
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

/// docs/security.md 36: servers started together on a table that does not exist yet
/// all start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_a_new_table_all_migrate() {
    for _ in 0..10 {
        let url = file_url();
        let name = format!("sessions_{}", random_user().replace('-', "_"));
        let mut stores = Vec::new();
        for _ in 0..3 {
            let store = SqliteStore::connect(&url).await.unwrap();
            stores.push(store.with_table(&name).unwrap());
        }
        common::migrate_together(stores).await;
    }
}

/// docs/security.md 34: "log out everywhere" of 100,000 sessions of one user, one
/// statement, while logins of that user keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_of_100_000_sessions_wins_against_a_login_storm() {
    let fixture = fixture_at(&file_url()).await;
    let user = random_user();
    let (meta, expires_at) = common::many_sessions_of(&user);
    let inserted = session_sql::sqlx::query(session_sql::sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO {} (\"key\", data, meta, user_id, expires_at)
         SELECT 'bulk-' || i, '{{}}', ?, ?, ? FROM n",
        fixture.table
    )))
    .bind(common::MANY)
    .bind(meta)
    .bind(&user)
    .bind(expires_at)
    .execute(fixture.store.pool())
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), common::MANY as u64);
    common::log_out_everywhere_of_many(fixture.store, &user).await;
}
