//! What differs between the databases: each implements [`Dialect`] in its own module,
//! with the SQL text for one table and the few steps that cannot be written once.

use std::future::Future;

use session_core::store::Changes;
use session_core::SessionKey;
use sqlx::query::Query;
use sqlx::query::QueryAs;
use sqlx::{Encode, Executor, FromRow, IntoArguments, Pool, Type};

use crate::endpoint::Address;

/// A database [`SqlStore`](crate::SqlStore) can keep sessions in: `sqlx::Postgres`,
/// `sqlx::MySql` and `sqlx::Sqlite`, each behind its Cargo feature. Sealed.
pub trait Dialect: sealed::Dialect {}

impl<DB: sealed::Dialect> Dialect for DB {}

pub(crate) mod sealed {
    use super::*;

    /// The dialect's side of every store operation. Documents are bound and read as
    /// JSON text in every dialect, so the store's code is shared; the SQL casts.
    ///
    /// The associated types restate, as bounds the compiler carries along, what sqlx
    /// provides each database: they are `String`, `i64`, the row tuples and the
    /// database's own arguments, so that `SqlStore<DB>` needs no bound but `Dialect`.
    pub trait Dialect: sqlx::Database<Arguments = <Self as Dialect>::Args> {
        type Args: IntoArguments<Self>;
        type Text: for<'t> Encode<'t, Self> + Type<Self> + From<String> + Send;
        type OptionalText: for<'t> Encode<'t, Self> + Type<Self> + From<Option<String>> + Send;
        type Int: for<'t> Encode<'t, Self> + Type<Self> + From<i64> + Send;
        /// key, meta, user id, expiry (`user_sessions`).
        type SessionRow: for<'r> FromRow<'r, Self::Row>
            + Into<(String, String, Option<String>, i64)>
            + Send
            + Unpin;
        /// key, data, meta, user id, expiry (`load_query`).
        type KeyedRow: for<'r> FromRow<'r, Self::Row>
            + Into<(String, String, String, Option<String>, i64)>
            + Send
            + Unpin;
        /// A field's value as JSON text (`lock_field`).
        type FieldRow: for<'r> FromRow<'r, Self::Row> + Into<(Option<String>,)> + Send + Unpin;

        /// The store's name in `Debug` output.
        const STORE_NAME: &'static str;
        /// Whether document keys are percent-encoded (see `crate::stored_key`):
        /// dialects that address keys by JSON path cannot quote every character.
        const ENCODES_KEYS: bool;
        /// How `update` begins the transaction that holds the row.
        const BEGIN_UPDATE: &'static str;

        /// Every fixed statement for `table` (already validated).
        fn statements(table: &str) -> Statements;

        /// The live rows of `keys` (distinct, at most a few dozen), each with its key.
        fn load_query<'q>(
            statements: &'q Statements,
            keys: &[&str],
            now: i64,
        ) -> QueryAs<'q, Self, Self::KeyedRow, Self::Arguments>;

        /// The one statement that merges `changes` into a live row's document.
        /// Parameters as the dialect needs them; `meta` is JSON text.
        fn save_query<'q>(
            statements: &'q Statements,
            save: Save<'_>,
        ) -> Query<'q, Self, Self::Arguments>;

        /// The one statement of a save the caller has not loaded
        /// ([`SessionStore::save_unloaded`](session_core::SessionStore::save_unloaded)),
        /// where the database can return the row as it was; `None` where it cannot,
        /// and the store loads first.
        fn save_unloaded_query<'q>(
            statements: &'q Statements,
            save: SaveUnloaded<'q>,
        ) -> Option<QueryAs<'q, Self, Self::SessionRow, Self::Arguments>> {
            let _ = (statements, save);
            None
        }

        /// `statements` rewritten so that each write that changes or ends a session
        /// also announces it on `channel` (a validated identifier), in the same
        /// statement; where the database has no such notification, unchanged (no
        /// public method asks for it there).
        fn announcing(statements: Statements, channel: &str) -> Statements {
            let _ = channel;
            statements
        }

        /// How many rows a statement changed.
        fn rows_affected(result: &Self::QueryResult) -> u64;

        /// A connection (a pooled one, or a transaction's), as an executor.
        fn on_connection(connection: &mut Self::Connection) -> impl Executor<'_, Database = Self>;

        /// A pool for `url`, with the dialect's settings.
        fn connect(url: &str) -> impl Future<Output = Result<Pool<Self>, sqlx::Error>> + Send;

        /// Where `pool`'s server listens, for a database that has a server.
        fn address(pool: &Pool<Self>) -> Option<Address> {
            let _ = pool;
            None
        }
    }

    /// A save's parameters: `meta` is JSON text; times are Unix milliseconds.
    pub struct Save<'a> {
        pub key: &'a SessionKey,
        pub changes: &'a Changes,
        pub meta: String,
        pub expires_at: i64,
        pub now: i64,
    }

    /// A save of a session the caller has not loaded: the statement restarts the idle
    /// timeout (`idle_timeout`, or the session's own) from `now`, the layer's time,
    /// capped by the session's deadline; `store_now` is the store's time, by which a
    /// row must be live too. Times are Unix milliseconds.
    pub struct SaveUnloaded<'a> {
        pub key: &'a SessionKey,
        pub changes: &'a Changes,
        pub now: i64,
        pub idle_timeout: i64,
        pub store_now: i64,
    }

    /// The SQL text for one table. Parameters, in this order:
    ///
    /// | statement | parameters | returns |
    /// | --- | --- | --- |
    /// | `load` | keys (as the dialect binds a list), now | key, data, meta (JSON text), user id, expiry |
    /// | `insert` | key, data, meta, user id, expiry | |
    /// | `delete_if_expired` | key, now | |
    /// | `lock_field` | field (a path where keys are encoded), key, now | the value as JSON text, or NULL |
    /// | `set_field` | field, value (JSON text), meta, expiry, key | |
    /// | `touch` | expiry, key, now | |
    /// | `delete` | key | |
    /// | `user_sessions` | user id, now | key, meta, user id, expiry |
    /// | `delete_user_sessions` | user id, now | |
    /// | `delete_expired` | now, limit | |
    pub struct Statements {
        pub table: String,
        pub schema: Vec<String>,
        /// Run before `schema`, on the same connection, to keep other servers'
        /// `migrate` out until `migrate_unlock`: two servers creating one table at
        /// once fail in PostgreSQL (a duplicate `pg_type` row).
        pub migrate_lock: Vec<String>,
        /// Run after `schema`. A `migrate` that fails closes its connection instead,
        /// which releases the lock and rolls back.
        pub migrate_unlock: Vec<String>,
        pub load: String,
        pub insert: String,
        pub delete_if_expired: String,
        pub lock_field: String,
        pub set_field: String,
        pub touch: String,
        pub delete: String,
        pub user_sessions: String,
        pub delete_user_sessions: String,
        pub delete_expired: String,
        /// The dialect's fixed save, where it has one.
        pub save: String,
        /// The dialect's fixed save of a session not loaded first, where it has one.
        pub save_unloaded: String,
    }
}

pub(crate) use sealed::{Save, SaveUnloaded, Statements};

/// For dialects that merge with JSON paths (MySQL, SQLite): an `UPDATE` written for
/// these changes (cleared, then removed keys, then set keys), and its parameters.
/// `value` is the dialect's SQL for a parameter read as a JSON value.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) fn path_save_query<DB: sealed::Dialect>(
    table: &str,
    key_column: &str,
    value: &str,
    save: Save<'_>,
) -> Query<'static, DB, DB::Arguments> {
    let text = |value: String| DB::Text::from(value);
    let int = |value: i64| DB::Int::from(value);
    // SQLite caps a function's arguments (127 in many builds): nest the calls.
    const PER_CALL: usize = 50;
    let changes = save.changes;
    let mut document = String::from(if changes.cleared { "'{}'" } else { "data" });
    for chunk in changes.removed.chunks(PER_CALL) {
        let paths = vec!["?"; chunk.len()].join(", ");
        document = format!("JSON_REMOVE({document}, {paths})");
    }
    let set: Vec<_> = changes.set.iter().collect();
    for chunk in set.chunks(PER_CALL) {
        let pairs = vec![format!("?, {value}"); chunk.len()].join(", ");
        document = format!("JSON_SET({document}, {pairs})");
    }
    let sql = format!(
        "UPDATE {table} SET data = {document}, meta = ?, expires_at = ?
         WHERE {key_column} = ? AND expires_at > ?"
    );
    let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql));
    for name in &changes.removed {
        query = query.bind(text(crate::json_path(name)));
    }
    for (name, value) in set {
        query = query
            .bind(text(crate::json_path(name)))
            .bind(text(value.to_string()));
    }
    query
        .bind(text(save.meta))
        .bind(int(save.expires_at))
        .bind(text(save.key.to_string()))
        .bind(int(save.now))
}

/// The dialect steps that read the same for every database: sqlx provides each of them
/// per database, not as a bound the generic store could name, so every dialect
/// restates them; this writes them once. Arguments: the database's query result and
/// connection types.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
macro_rules! sqlx_executors {
    ($result:ty, $connection:ty) => {
        fn rows_affected(result: &$result) -> u64 {
            result.rows_affected()
        }

        fn on_connection(connection: &mut $connection) -> impl sqlx::Executor<'_, Database = Self> {
            connection
        }
    };
}
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub(crate) use sqlx_executors;
