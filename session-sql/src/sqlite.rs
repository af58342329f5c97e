//! SQLite: documents as JSON text, merged by JSON path.

use std::str::FromStr;
use std::time::Duration;

use session_core::store::USER_SESSIONS_LIMIT;
use sqlx::query::Query;
use sqlx::query::QueryAs;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Pool};

use crate::dialect::{path_save_query, sealed, Save, Statements};

impl sealed::Dialect for Sqlite {
    type Args = sqlx::sqlite::SqliteArguments;
    type Text = String;
    type OptionalText = Option<String>;
    type Int = i64;
    type SessionRow = (String, String, Option<String>, i64);
    type KeyedRow = (String, String, String, Option<String>, i64);
    type FieldRow = (Option<String>,);
    const STORE_NAME: &'static str = "SqliteStore";
    const ENCODES_KEYS: bool = true;
    // Takes the write lock at once: a deferred transaction that reads and then writes
    // would fail, not wait, when another connection wrote in between.
    const BEGIN_UPDATE: &'static str = "BEGIN IMMEDIATE";

    fn statements(table: &str) -> Statements {
        // An index lives in its table's database: `aux.sessions` indexes as
        // `aux.sessions_…` on `sessions`.
        let (index, on) = match table.split_once('.') {
            Some((schema, name)) => (format!("{schema}.{name}"), name),
            None => (table.to_owned(), table),
        };
        Statements {
            table: table.to_owned(),
            schema: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        \"key\" TEXT NOT NULL PRIMARY KEY,
                        data TEXT NOT NULL,
                        meta TEXT NOT NULL,
                        user_id TEXT,
                        expires_at INTEGER NOT NULL
                    )"
                ),
                format!("CREATE INDEX IF NOT EXISTS {index}_expires_at ON {on} (expires_at)"),
                format!(
                    "CREATE INDEX IF NOT EXISTS {index}_user_id ON {on} (user_id) \
                     WHERE user_id IS NOT NULL"
                ),
            ],
            // The database's write lock, taken at once.
            migrate_lock: vec!["BEGIN IMMEDIATE".to_owned()],
            migrate_unlock: vec!["COMMIT".to_owned()],
            // The keys come as one JSON array, so one statement serves any number.
            load: format!(
                "SELECT \"key\", data, meta, user_id, expires_at FROM {table}
                 WHERE \"key\" IN (SELECT value FROM json_each(?)) AND expires_at > ?"
            ),
            insert: format!(
                "INSERT INTO {table} (\"key\", data, meta, user_id, expires_at) VALUES (?, ?, ?, ?, ?)"
            ),
            delete_if_expired: format!("DELETE FROM {table} WHERE \"key\" = ? AND expires_at <= ?"),
            // `->` gives the value as JSON text (NULL when the key is absent), where
            // `json_extract` would give a JSON string as bare SQL text.
            lock_field: format!(
                "SELECT data -> ? FROM {table} WHERE \"key\" = ? AND expires_at > ?"
            ),
            set_field: format!(
                "UPDATE {table} SET data = json_set(data, ?, json(?)), meta = ?, expires_at = ?
                 WHERE \"key\" = ?"
            ),
            touch: format!(
                "UPDATE {table} SET expires_at = ? WHERE \"key\" = ? AND expires_at > ?"
            ),
            delete: format!("DELETE FROM {table} WHERE \"key\" = ?"),
            user_sessions: format!(
                "SELECT \"key\", meta, user_id, expires_at FROM {table}
                 WHERE user_id = ? AND expires_at > ?
                 ORDER BY expires_at DESC LIMIT {USER_SESSIONS_LIMIT}"
            ),
            delete_user_sessions: format!(
                "DELETE FROM {table} WHERE user_id = ? AND expires_at > ?"
            ),
            // SQLite's DELETE takes no LIMIT in its usual builds.
            delete_expired: format!(
                "DELETE FROM {table} WHERE \"key\" IN
                     (SELECT \"key\" FROM {table} WHERE expires_at <= ? LIMIT ?)"
            ),
            save: String::new(),
            save_unloaded: String::new(),
        }
    }

    fn load_query<'q>(
        statements: &'q Statements,
        keys: &[&str],
        now: i64,
    ) -> QueryAs<'q, Self, Self::KeyedRow, Self::Arguments> {
        // Keys are hex digests and a version prefix: nothing in them needs escaping,
        // but serde_json writes the array so that holds by construction.
        let keys = serde_json::to_string(keys).unwrap_or_default();
        sqlx::query_as(AssertSqlSafe(statements.load.as_str()))
            .bind(keys)
            .bind(now)
    }

    fn save_query<'q>(
        statements: &'q Statements,
        save: Save<'_>,
    ) -> Query<'q, Self, Self::Arguments> {
        path_save_query(&statements.table, "\"key\"", "json(?)", save)
    }

    crate::dialect::sqlx_executors!(SqliteQueryResult, sqlx::sqlite::SqliteConnection);

    async fn connect(url: &str) -> Result<Pool<Self>, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no data on a crash of the application, only the
            // last commits on a power loss: the trade every session store makes.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new().acquire_timeout(Duration::from_secs(2));
        let pool = if in_memory {
            // The database lives as long as a connection to it: keep exactly one.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool
        };
        pool.connect_with(options).await
    }
}
