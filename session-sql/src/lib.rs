//! SQL session stores for session-kit, over [sqlx](https://docs.rs/sqlx).
//!
//! | feature | store |
//! | --- | --- |
//! | `postgres` | [`PostgresStore`] |
//! | `mysql` | [`MySqlStore`], for MySQL and MariaDB |
//! | `sqlite` | [`SqliteStore`], a file or in-memory, nothing to install |
//!
//! All three are [`SqlStore`] over a different database: one code path, with what
//! differs (SQL text, how a changed key is merged into the document) in one place per
//! database. One row per session, keyed by the hash of its id, with the data as a JSON
//! document (`jsonb` in PostgreSQL, `JSON` in MySQL, text in SQLite), the metadata, the
//! user (indexed) and the expiry (Unix milliseconds, indexed). `migrate()` creates the
//! table; the same SQL ships in `migrations/` for applications with a migration tool of
//! their own.
//!
//! | request | queries |
//! | --- | --- |
//! | no cookie, or a handler that never touches the session | 0 |
//! | reads the session | 1, shared with the loads in flight beside it (below); 2 when the idle timeout is due to be pushed back (at most once per quarter of it) |
//! | writes the session without reading it | PostgreSQL 1: one `UPDATE` that merges the changed keys and restarts the idle timeout from the stored metadata, returning the row as it was; MySQL and SQLite 2, as below |
//! | reads, then writes the session | 2: the load, then one `UPDATE` that merges the changed keys in the server |
//! | `Session::update` | the load, then a transaction that holds the row |
//!
//! Loads that arrive while others are in flight share one query: a few batches run at
//! once (four, each on a pooled connection), and whoever finds a free slot takes every
//! load queued so far, up to 64 keys (`WHERE key = ANY(…)` in PostgreSQL, `IN (…)` in
//! MySQL, `json_each(…)` in SQLite). Nothing waits on a timer, so a lone read is one
//! query as soon as it comes; under load, the database answers many reads with one
//! statement, which is where a primary-key lookup spends most of its time.
//!
//! A row whose document does not decode is treated as no session, and logged: the
//! client gets a new session, never an error page.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use session_sql::SqliteStore;
//!
//! let store = SqliteStore::connect("sqlite::memory:").await?;
//! store.migrate().await?;
//! let layer = session_core::SessionLayer::new(store);
//! # let _ = layer;
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
#[cfg(feature = "postgres")]
mod channel;
mod dialect;
mod endpoint;
mod held;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use session_core::store::{Data, Record};
use session_core::{Meta, StoreError, StoreErrorKind, Timestamp};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use channel::PostgresChannel;
pub use dialect::Dialect;
/// The sqlx crate, whose pools the stores take.
pub use sqlx;
pub use store::SqlStore;

/// Sessions in PostgreSQL, the data as `jsonb`, merged with `jsonb` operators.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use session_sql::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://localhost/app").await?;
/// store.migrate().await?;
/// let cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let layer = session_core::SessionLayer::new(store);
/// # let _ = (layer, cleanup);
/// # Ok(()) }
/// ```
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub type PostgresStore = SqlStore<sqlx::Postgres>;

/// Sessions in MySQL or MariaDB, the data as `JSON`, merged with `JSON_SET` and
/// `JSON_REMOVE`. Keys are stored with `%`, `"` and `\` percent-encoded, because JSON
/// paths cannot quote them; reading decodes them.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use session_sql::MySqlStore;
///
/// let store = MySqlStore::connect("mysql://root@localhost/app").await?;
/// store.migrate().await?;
/// let cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let layer = session_core::SessionLayer::new(store);
/// # let _ = (layer, cleanup);
/// # Ok(()) }
/// ```
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub type MySqlStore = SqlStore<sqlx::MySql>;

/// Sessions in SQLite, the data as JSON text, merged with `json_set` and
/// `json_remove`; keys stored with `%`, `"` and `\` percent-encoded, as in MySQL.
///
/// `connect("sqlite://sessions.db")` creates the file if it is missing and opens it
/// in WAL mode, so reads do not wait for writes; `update` runs in an immediate
/// transaction, which other writers wait for (up to 5 s). `connect("sqlite::memory:")`
/// keeps the sessions in this process only, on one connection that lives as long as
/// the store's pool.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use session_sql::SqliteStore;
///
/// let dir = std::env::temp_dir().join(format!("session-kit-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let url = format!("sqlite://{}", dir.join("sessions.db").display());
/// let store = SqliteStore::connect(&url).await?;
/// store.migrate().await?;
/// let cleanup = store.spawn_cleanup(std::time::Duration::from_secs(300));
/// let layer = session_core::SessionLayer::new(store);
/// # drop((layer, cleanup));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub type SqliteStore = SqlStore<sqlx::Sqlite>;

/// A store configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A table name must be letters, digits and `_` (not starting with a digit),
    /// optionally after a schema name and a dot, at most 63 characters each.
    InvalidTableName(String),
    /// An invalidation channel name must be letters, digits and `_`, at most 46 of
    /// them (what a tiered store's `LISTEN` takes).
    InvalidChannelName(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::InvalidTableName(name) => write!(f, "invalid table name {name:?}"),
            ConfigError::InvalidChannelName(name) => {
                write!(f, "invalid invalidation channel name {name:?}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Table names go into SQL text (they cannot be bound), so only plain identifiers are
/// accepted.
fn validate_table(table: &str) -> Result<(), ConfigError> {
    let identifier = |part: &str| {
        (1..=63).contains(&part.len())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !part.as_bytes()[0].is_ascii_digit()
    };
    let valid = match table.split_once('.') {
        Some((schema, name)) => identifier(schema) && identifier(name),
        None => identifier(table),
    };
    valid
        .then_some(())
        .ok_or_else(|| ConfigError::InvalidTableName(table.to_owned()))
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::unavailable(error)
}

/// A session row as read, before decoding.
struct Row {
    data: Value,
    meta: Value,
    user_id: Option<String>,
    expires_at: i64,
}

impl Row {
    /// The record; the columns `user_id` and `expires_at` are authoritative over the
    /// copies in the metadata document.
    fn decode(self) -> Result<Record, serde_json::Error> {
        let data: Data = serde_json::from_value(self.data)?;
        let mut meta: Meta = serde_json::from_value(self.meta)?;
        meta.user_id = self.user_id;
        meta.expires_at = Timestamp::from_unix_millis(self.expires_at);
        Ok(Record { data, meta })
    }
}

impl Row {
    /// A row as read: documents as JSON text, keys percent-encoded where the dialect
    /// encodes them (see [`stored_key`]).
    fn from_text(
        data: &str,
        meta: &str,
        user_id: Option<String>,
        expires_at: i64,
        encoded_keys: bool,
    ) -> Result<Row, serde_json::Error> {
        let mut data: Value = serde_json::from_str(data)?;
        if let (true, Value::Object(stored)) = (encoded_keys, &mut data) {
            *stored = std::mem::take(stored)
                .into_iter()
                .map(|(key, value)| (unstored_key(&key), value))
                .collect();
        }
        Ok(Row {
            data,
            meta: serde_json::from_str(meta)?,
            user_id,
            expires_at,
        })
    }
}

/// A key as MySQL, MariaDB and SQLite documents keep it: `%`, `"` and `\`
/// percent-encoded, because their JSON paths cannot quote those characters.
fn stored_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.contains(['%', '"', '\\']) {
        return key.into();
    }
    key.replace('%', "%25")
        .replace('"', "%22")
        .replace('\\', "%5C")
        .into()
}

fn unstored_key(stored: &str) -> String {
    if !stored.contains('%') {
        return stored.to_owned();
    }
    stored
        .replace("%22", "\"")
        .replace("%5C", "\\")
        .replace("%25", "%")
}

/// The JSON path of a session key in a stored document.
fn json_path(key: &str) -> String {
    format!("$.\"{}\"", stored_key(key))
}

/// A session's data as a stored document, keys encoded.
fn stored_document(data: &Data) -> String {
    let document: serde_json::Map<String, Value> = data
        .iter()
        .map(|(key, value)| (stored_key(key).into_owned(), value.clone()))
        .collect();
    Value::Object(document).to_string()
}

/// A row nobody can read is no session: the client gets a new one, the row expires.
fn corrupt_as_absent(decoded: Result<Record, serde_json::Error>) -> Option<Record> {
    decoded
        .map_err(|error| {
            let error = StoreError::new(StoreErrorKind::Corrupt, error);
            tracing::warn!(%error, "corrupt session row treated as absent");
        })
        .ok()
}

/// Runs `delete_batch(limit)` (a delete of at most `limit` expired rows) until a batch
/// comes back short, so that one cleanup never holds a long lock; returns the total.
async fn delete_in_batches<F, Fut>(mut delete_batch: F) -> Result<u64, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    const BATCH: i64 = 1000;
    let mut deleted = 0;
    loop {
        let done = delete_batch(BATCH).await?;
        deleted += done;
        if done < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// The running cleanup task of a store: deletes expired rows periodically until this
/// handle is dropped or [`stop`](Self::stop)ped.
#[derive(Debug)]
pub struct Cleanup {
    task: tokio::task::JoinHandle<()>,
}

impl Cleanup {
    fn spawn<F, Fut>(period: Duration, mut delete_expired: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, StoreError>> + Send,
    {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match delete_expired().await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "expired sessions deleted"),
                    Err(error) => tracing::warn!(%error, "session cleanup failed; will retry"),
                }
            }
        });
        Self { task }
    }

    /// Stops the task.
    pub fn stop(self) {}
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON document: what a row's columns could hold after anything wrote them.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// docs/security.md 28: whatever the columns hold (text that is no JSON, JSON
        /// of any shape, control characters, any user and expiry), a row decodes to
        /// a record or to "corrupt", never a panic.
        #[test]
        fn any_row_decodes_or_is_corrupt(
            data in prop_oneof![any::<String>(), any_json().prop_map(|v| v.to_string())],
            meta in prop_oneof![any::<String>(), any_json().prop_map(|v| v.to_string())],
            user_id in proptest::option::of(any::<String>()),
            expires_at in any::<i64>(),
            encoded_keys in any::<bool>(),
        ) {
            let decoded = Row::from_text(&data, &meta, user_id, expires_at, encoded_keys)
                .and_then(Row::decode);
            let _ = corrupt_as_absent(decoded);
        }

        /// Any data a session holds, keys with `%`, `"` and `\` included, reads
        /// back as it was written, in every dialect's stored form.
        #[test]
        fn any_data_round_trips(
            entries in prop::collection::btree_map(any::<String>(), any_json(), 0..8),
            encoded_keys in any::<bool>(),
        ) {
            let data: Data = entries.into_iter().collect();
            let document = if encoded_keys {
                stored_document(&data)
            } else {
                serde_json::to_string(&data).unwrap()
            };
            let now = Timestamp::now();
            let meta = serde_json::to_string(&Meta::new(now, now)).unwrap();
            let row = Row::from_text(&document, &meta, None, 1, encoded_keys).unwrap();
            prop_assert_eq!(row.decode().unwrap().data, data);
        }
    }

    /// An oversized row is a row like another: decoded, or corrupt.
    #[test]
    fn an_oversized_row_decodes() {
        let big = "x".repeat(8 << 20);
        let data = serde_json::json!({ "big": big }).to_string();
        let now = Timestamp::now();
        let meta = serde_json::to_string(&Meta::new(now, now)).unwrap();
        let record = Row::from_text(&data, &meta, None, 1, true)
            .and_then(Row::decode)
            .unwrap();
        assert_eq!(record.data.get("big"), Some(&Value::String(big)));
        assert!(Row::from_text(&data[..data.len() - 1], &meta, None, 1, true).is_err());
    }

    #[test]
    fn stored_keys_round_trip() {
        for key in [
            "plain",
            "a.b",
            "q\"uote",
            "back\\slash",
            "100%",
            "%22",
            "é ü",
            "",
        ] {
            assert_eq!(unstored_key(&stored_key(key)), key, "{key:?}");
            assert!(!stored_key(key).contains(['"', '\\']), "{key:?}");
        }
        assert_eq!(json_path("a\"b"), "$.\"a%22b\"");
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        for good in ["sessions", "auth.sessions", "_s1", "pg_temp.sessions_x"] {
            assert_eq!(validate_table(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1s",
            "a-b",
            "a;drop table x",
            "a.b.c",
            "a b",
            "s\"",
            &"x".repeat(64),
        ] {
            assert!(validate_table(bad).is_err(), "{bad:?}");
        }
    }
}
