//! The tests every SQL store runs beyond the conformance suite, and the statement log
//! that counts the queries a request costs.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// How many statements sqlx ran on each watched table: every statement it runs is a
/// `sqlx::query` event carrying its text, on whichever thread ran it.
pub struct StatementLog;

static WATCHED: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();

impl StatementLog {
    /// Starts counting the statements that name `table`.
    pub fn watch(table: &str) -> Self {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(Counter);
            tracing::subscriber::set_global_default(subscriber)
                .expect("this test binary installs no other subscriber");
        });
        watched().insert(table.to_owned(), 0);
        StatementLog
    }

    /// The statements so far that named `table`.
    pub fn count(&self, table: &str) -> usize {
        watched()[table]
    }
}

fn watched() -> std::sync::MutexGuard<'static, HashMap<String, usize>> {
    WATCHED.get_or_init(Default::default).lock().unwrap()
}

struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut statement = Statement(String::new());
        event.record(&mut statement);
        for (table, count) in watched().iter_mut() {
            if statement.0.contains(table.as_str()) {
                *count += 1;
            }
        }
    }
}

struct Statement(String);

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "db.statement" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "db.statement" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The tests, for a test file that defines `fixture()` (a store in a table of the
/// test's own, as a `Fixture` with fields `store` and `table`), given the dialect's
/// statement that overwrites a row's document (`{table}`, `{column}`; binds the JSON
/// text, then the key).
#[allow(unused_macros)] // The fault tests share this module without these.
macro_rules! sql_store_tests {
    ($set_column:literal, unread_write_queries = $unread_write:literal) => {
        async fn set_column(
            fixture: &Fixture,
            column: &str,
            json: &str,
            key: &session_core::SessionKey,
        ) {
            let sql = format!($set_column, table = fixture.table, column = column);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(json.to_owned())
                .bind(key.to_string())
                .execute(fixture.store.pool())
                .await
                .unwrap();
        }

        async fn count_rows(fixture: &Fixture) -> i64 {
            let sql = format!("SELECT count(*) FROM {}", fixture.table);
            let (count,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_one(fixture.store.pool())
                .await
                .unwrap();
            count
        }

        /// Keys that JSON paths cannot quote survive every kind of write, read back as
        /// written.
        #[tokio::test]
        async fn any_key_survives_every_write() {
            use serde_json::json;
            use session_core::{Meta, SessionStore, Timestamp};
            use session_core::store::{Changes, Created, Record, Saved};
            let store = fixture().await.store;
            let key = session_testkit::random_key();
            let now = Timestamp::now();
            let meta = Meta::new(now, now.saturating_add(std::time::Duration::from_secs(60)));
            let names = ["q\"uote", "back\\slash", "100%", "%22", "a.b", "é", "$[0]", "'"];
            let record = Record {
                data: names.iter().map(|n| ((*n).to_owned(), json!(n))).collect(),
                meta: meta.clone(),
            };
            assert_eq!(store.create(&key, &record).await.unwrap(), Created::Written);
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
                Saved::Applied
            );
            let increment = |n: Option<&serde_json::Value>| {
                Some(json!(n.and_then(|v| v.as_u64()).unwrap_or(0) + 1))
            };
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

        /// One request may change hundreds of keys: one statement still merges them all.
        #[tokio::test]
        async fn a_save_of_many_keys_is_one_statement() {
            use serde_json::json;
            use session_core::{Meta, SessionStore, Timestamp};
            use session_core::store::{Changes, Created, Record, Saved};
            let fixture = fixture().await;
            let store = &fixture.store;
            let key = session_testkit::random_key();
            let now = Timestamp::now();
            let meta = Meta::new(now, now.saturating_add(std::time::Duration::from_secs(60)));
            let record = Record {
                data: (0..300).map(|i| (format!("old{i}"), json!(i))).collect(),
                meta: meta.clone(),
            };
            assert_eq!(store.create(&key, &record).await.unwrap(), Created::Written);
            let changes = Changes {
                removed: (0..300).map(|i| format!("old{i}")).collect(),
                set: (0..300).map(|i| (format!("new{i}"), json!([i]))).collect(),
                ..Default::default()
            };
            let log = common::sql::StatementLog::watch(&fixture.table);
            assert_eq!(
                store.save(&key, &changes, &meta).await.unwrap(),
                Saved::Applied
            );
            assert_eq!(log.count(&fixture.table), 1);
            let data = store.load(&key).await.unwrap().unwrap().data;
            assert_eq!(data.len(), 300);
            assert_eq!(data.get("new299"), Some(&json!([299])));
        }

        /// Loads that arrive together share queries, and each still gets its own
        /// answer: 100 sessions loaded twice each and 20 unknown keys, all at once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_loads_share_queries() {
            use serde_json::json;
            use session_core::{Meta, SessionStore, Timestamp};
            use session_core::store::{Record};
            let fixture = fixture().await;
            let now = Timestamp::now();
            let meta = Meta::new(now, now.saturating_add(std::time::Duration::from_secs(60)));
            let mut keys = Vec::new();
            for i in 0..100 {
                let key = session_testkit::random_key();
                let record = Record {
                    data: [("n".to_owned(), json!(i))].into_iter().collect(),
                    meta: meta.clone(),
                };
                fixture.store.create(&key, &record).await.unwrap();
                keys.push((key, Some(i)));
            }
            let twice = keys.clone();
            keys.extend(twice);
            keys.extend((0..20).map(|_| (session_testkit::random_key(), None)));
            let log = common::sql::StatementLog::watch(&fixture.table);
            let mut loads = tokio::task::JoinSet::new();
            for (key, expected) in keys {
                let store = fixture.store.clone();
                loads.spawn(async move {
                    let loaded = store.load(&key).await.unwrap();
                    let n = loaded.map(|record| record.data.get("n").unwrap().as_i64().unwrap());
                    assert_eq!(n, expected);
                });
            }
            while let Some(load) = loads.join_next().await {
                load.unwrap();
            }
            let queries = log.count(&fixture.table);
            assert!((1..220).contains(&queries), "{queries} queries for 220 loads");
        }

        /// docs/security.md 28 for rows: a row whose documents do not decode as a session is
        /// no session (and is logged), never a panic or an error.
        #[tokio::test]
        async fn corrupt_rows_are_treated_as_absent() {
            use serde_json::json;
            use session_core::{Meta, SessionStore, Timestamp};
            use session_core::store::{Record};
            let fixture = fixture().await;
            let now = Timestamp::now();
            for (column, garbage) in [
                ("data", "[1, 2]"),
                ("data", "\"text\""),
                ("meta", "{}"),
                ("meta", "null"),
                ("meta", r#"{"e": 1, "c": 1, "d": "soon"}"#),
                ("meta", r#"{"e": 1, "c": 1, "x": {"i": "long"}}"#),
                ("meta", r#"{"e": 1, "c": 1, "x": []}"#),
            ] {
                let key = session_testkit::random_key();
                let record = Record {
                    data: [("k".to_owned(), json!("v"))].into_iter().collect(),
                    meta: Meta::new(now, now.saturating_add(std::time::Duration::from_secs(60))),
                };
                fixture.store.create(&key, &record).await.unwrap();
                set_column(&fixture, column, garbage, &key).await;
                assert_eq!(
                    fixture.store.load(&key).await.unwrap(),
                    None,
                    "{column} = {garbage}"
                );
                // A write that did not read it finds no session either, and no
                // error.
                let refresh = session_core::store::Refresh {
                    now,
                    idle_timeout: std::time::Duration::from_secs(60),
                };
                let changes = session_core::store::Changes {
                    set: [("k".to_owned(), json!("w"))].into_iter().collect(),
                    ..Default::default()
                };
                assert_eq!(
                    fixture
                        .store
                        .save_unloaded(&key, &changes, &refresh)
                        .await
                        .unwrap(),
                    None,
                    "{column} = {garbage}"
                );
            }
        }

        /// Expired rows are deleted in batches, by a call or by the cleanup task,
        /// without any request; live rows stay.
        #[tokio::test]
        async fn expired_rows_are_cleaned_up() {
            use session_core::{Meta, SessionStore, Timestamp};
            use session_core::store::{Record};
            use std::time::Duration;
            let fixture = fixture().await;
            let store = &fixture.store;
            let now = Timestamp::now();
            let record = |expires_in: i64| Record {
                data: Default::default(),
                meta: Meta::new(
                    now,
                    Timestamp::from_unix_millis(now.unix_millis() + expires_in),
                ),
            };
            let live = session_testkit::random_key();
            store.create(&live, &record(60_000)).await.unwrap();
            for _ in 0..2_500 {
                store
                    .create(&session_testkit::random_key(), &record(500))
                    .await
                    .unwrap();
            }
            assert_eq!(count_rows(&fixture).await, 2_501);
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert_eq!(store.delete_expired(Timestamp::now()).await.unwrap(), 2_500);
            assert_eq!(count_rows(&fixture).await, 1);

            for _ in 0..10 {
                store
                    .create(&session_testkit::random_key(), &record(100))
                    .await
                    .unwrap();
            }
            let cleanup = store.spawn_cleanup(Duration::from_millis(50));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while count_rows(&fixture).await > 1 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cleanup.stop();
            assert_eq!(count_rows(&fixture).await, 1, "the cleanup task left expired rows");
            assert!(store.load(&live).await.unwrap().is_some());
        }

        /// Queries per request, counted as sqlx runs them: none without a cookie or for
        /// a handler that does not touch the session, one for a read, two for a read
        /// and a write, and for a write without a read what the dialect does it in
        /// (PostgreSQL one statement; the others load first).
        #[tokio::test]
        async fn requests_cost_the_fewest_queries() {
            let fixture = fixture().await;
            let log = common::sql::StatementLog::watch(&fixture.table);
            let app = session_testkit::app(
                session_core::SessionLayer::new(fixture.store.clone()),
                None,
            );
            let mut client = session_testkit::Client::new(&app);
            client.post("/set/a/1").await;
            let mut costs = Vec::new();
            let mut anonymous = session_testkit::Client::new(&app);
            for (request, path) in [
                ("no cookie", None),
                ("read", Some("/get/a")),
                ("write", Some("/set/b/2")),
                ("read and write", Some("/paused-set/b/2")),
                ("untouched", Some("/noop")),
            ] {
                let before = log.count(&fixture.table);
                for i in 0..50 {
                    match (request, path) {
                        (_, None) => assert_eq!(anonymous.get("/get/a").await.body, "null"),
                        ("write", Some(_)) => {
                            client.post(&format!("/set/b/{i}")).await;
                        }
                        ("read and write", Some(_)) => {
                            client.post(&format!("/paused-set/c/{i}")).await;
                        }
                        (_, Some(path)) => {
                            client.get(path).await;
                        }
                    }
                }
                costs.push((request, (log.count(&fixture.table) - before) as f64 / 50.0));
            }
            assert_eq!(
                costs,
                [
                    ("no cookie", 0.0),
                    ("read", 1.0),
                    ("write", $unread_write),
                    ("read and write", 2.0),
                    ("untouched", 0.0)
                ]
            );
            assert_eq!(client.get("/get/b").await.body, "\"49\"");
            assert_eq!(client.get("/get/c").await.body, "\"49\"");
        }
    };
}
