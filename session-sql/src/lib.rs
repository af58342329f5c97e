//! SQL session stores for session-kit, over [sqlx](https://docs.rs/sqlx).
//!
//! | feature | store |
//! | --- | --- |
//! | `postgres` | [`PostgresStore`] |
//! | `mysql` | [`MySqlStore`], for MySQL and MariaDB |
//!
//! One row per session, keyed by the hash of its id, with the data as a JSON
//! document, the metadata, the user (indexed) and the expiry (Unix milliseconds,
//! indexed). `migrate()` creates the table; the same SQL ships in `migrations/` for
//! applications with a migration tool of their own.
//!
//! | request | queries |
//! | --- | --- |
//! | no cookie, or a handler that never touches the session | 0 |
//! | reads the session | 1; 2 when the idle timeout is due to be pushed back (at most once per quarter of it) |
//! | writes the session | 2: the load, then one `UPDATE` that merges the changed keys in the server |
//! | `Session::update` | the load, then a transaction that locks the row |
//!
//! A row whose document does not decode is treated as no session, and logged: the
//! client gets a new session, never an error page.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use session_core::{Data, Meta, Record, StoreError, StoreErrorKind, Timestamp};

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
/// The sqlx crate, whose pools the stores take.
pub use sqlx;

/// A store configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A table name must be letters, digits and `_` (not starting with a digit),
    /// optionally after a schema name and a dot, at most 63 characters each.
    InvalidTableName(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::InvalidTableName(name) => write!(f, "invalid table name {name:?}"),
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
    /// A row of a dialect that keeps documents as text, with percent-encoded keys
    /// (see [`stored_key`]).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    fn from_text(
        data: &str,
        meta: &str,
        user_id: Option<String>,
        expires_at: i64,
    ) -> Result<Row, serde_json::Error> {
        let stored: serde_json::Map<String, Value> = serde_json::from_str(data)?;
        let data = stored
            .into_iter()
            .map(|(key, value)| (unstored_key(&key), value))
            .collect();
        Ok(Row {
            data: Value::Object(data),
            meta: serde_json::from_str(meta)?,
            user_id,
            expires_at,
        })
    }
}

/// A key as MySQL, MariaDB and SQLite documents keep it: `%`, `"` and `\`
/// percent-encoded, because their JSON paths cannot quote those characters.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
fn stored_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.contains(['%', '"', '\\']) {
        return key.into();
    }
    key.replace('%', "%25")
        .replace('"', "%22")
        .replace('\\', "%5C")
        .into()
}

#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
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
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
fn json_path(key: &str) -> String {
    format!("$.\"{}\"", stored_key(key))
}

/// A session's data as a stored document, keys encoded.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
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
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
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
