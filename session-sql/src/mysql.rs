//! [`MySqlStore`], for MySQL and MariaDB.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_core::{
    async_trait, Changes, Created, Meta, Record, Saved, SessionKey, SessionStore, StoreError,
    Timestamp, UpdateFn, Updated, UserSession,
};
use sqlx::mysql::{MySql, MySqlPool, MySqlPoolOptions};
use sqlx::AssertSqlSafe;

use crate::{
    corrupt_as_absent, delete_in_batches, json_path, stored_document, unavailable, validate_table,
    Cleanup, ConfigError, Row,
};

/// The statements for one table, written once when the store is made; `save` is
/// written per call, for the number of keys it changes.
struct Statements {
    table: String,
    schema: Vec<String>,
    load: Arc<str>,
    insert: Arc<str>,
    delete_if_expired: Arc<str>,
    lock_field: Arc<str>,
    set_field: Arc<str>,
    touch: Arc<str>,
    delete: Arc<str>,
    user_sessions: Arc<str>,
    delete_user_sessions: Arc<str>,
    delete_expired: Arc<str>,
}

impl Statements {
    fn new(table: &str) -> Self {
        let index = table.rsplit('.').next().unwrap_or(table);
        let s = |sql: String| Arc::<str>::from(sql);
        Self {
            table: table.to_owned(),
            schema: vec![format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    `key` VARCHAR(64) NOT NULL PRIMARY KEY,
                    data JSON NOT NULL,
                    meta JSON NOT NULL,
                    user_id VARCHAR(255) NULL,
                    expires_at BIGINT NOT NULL,
                    INDEX {index}_expires_at (expires_at),
                    INDEX {index}_user_id (user_id)
                )"
            )],
            load: s(format!(
                "SELECT CAST(data AS CHAR), CAST(meta AS CHAR), user_id, expires_at FROM {table}
                 WHERE `key` = ? AND expires_at > ?"
            )),
            insert: s(format!(
                "INSERT INTO {table} (`key`, data, meta, user_id, expires_at) VALUES (?, ?, ?, ?, ?)"
            )),
            delete_if_expired: s(format!(
                "DELETE FROM {table} WHERE `key` = ? AND expires_at <= ?"
            )),
            lock_field: s(format!(
                "SELECT CAST(JSON_EXTRACT(data, ?) AS CHAR) FROM {table}
                 WHERE `key` = ? AND expires_at > ? FOR UPDATE"
            )),
            set_field: s(format!(
                "UPDATE {table} SET data = JSON_SET(data, ?, JSON_EXTRACT(?, '$')), meta = ?,
                     expires_at = ?
                 WHERE `key` = ?"
            )),
            touch: s(format!(
                "UPDATE {table} SET expires_at = ? WHERE `key` = ? AND expires_at > ?"
            )),
            delete: s(format!("DELETE FROM {table} WHERE `key` = ?")),
            user_sessions: s(format!(
                "SELECT `key`, CAST(meta AS CHAR), user_id, expires_at FROM {table}
                 WHERE user_id = ? AND expires_at > ?"
            )),
            delete_user_sessions: s(format!(
                "DELETE FROM {table} WHERE user_id = ? AND expires_at > ?"
            )),
            delete_expired: s(format!("DELETE FROM {table} WHERE expires_at <= ? LIMIT ?")),
        }
    }

    /// The save for these changes: cleared, then removed keys, then set keys, merged
    /// into the stored document in the server, on a live row only.
    fn save(&self, changes: &Changes) -> String {
        let mut document = String::from(if changes.cleared { "'{}'" } else { "data" });
        if !changes.removed.is_empty() {
            let paths = vec!["?"; changes.removed.len()].join(", ");
            document = format!("JSON_REMOVE({document}, {paths})");
        }
        if !changes.set.is_empty() {
            let pairs = vec!["?, JSON_EXTRACT(?, '$')"; changes.set.len()].join(", ");
            document = format!("JSON_SET({document}, {pairs})");
        }
        format!(
            "UPDATE {} SET data = {document}, meta = ?, expires_at = ?
             WHERE `key` = ? AND expires_at > ?",
            self.table
        )
    }
}

/// A session store in a MySQL or MariaDB table: one row per session, the data as a
/// JSON document.
///
/// Every write is one statement that merges the changed keys into the stored document
/// in the server (`JSON_REMOVE`, `JSON_SET`) and touches only a live row, so a session
/// ended elsewhere is never re-created. `update` locks the row (`SELECT … FOR
/// UPDATE`). Keys are stored with `%`, `"` and `\` percent-encoded, because JSON paths
/// cannot quote them; reading decodes them.
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
#[derive(Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
    statements: Arc<Statements>,
}

impl MySqlStore {
    /// Connects a pool to `url` (`mysql://user@host/database`), with the table
    /// `sessions`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(unavailable)?;
        Ok(Self::new(pool))
    }

    /// A store over a pool of the application's, with the table `sessions`.
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            statements: Arc::new(Statements::new("sessions")),
        }
    }

    /// Keeps sessions in `table` instead (letters, digits and `_`, optionally
    /// database-qualified: `auth.sessions`).
    pub fn with_table(mut self, table: &str) -> Result<Self, ConfigError> {
        validate_table(table)?;
        self.statements = Arc::new(Statements::new(table));
        Ok(self)
    }

    /// Creates the table and its indexes if they are not there; safe to run at every
    /// start. The same SQL ships as `migrations/mysql.sql` for other tools.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for statement in &self.statements.schema {
            sqlx::query(AssertSqlSafe(statement.as_str()))
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Deletes expired rows every `period`, in batches, until the handle is dropped or
    /// stopped. Must be called inside a tokio runtime.
    pub fn spawn_cleanup(&self, period: Duration) -> Cleanup {
        let store = self.clone();
        Cleanup::spawn(period, move || {
            let store = store.clone();
            async move { store.delete_expired(Timestamp::now()).await }
        })
    }

    /// Deletes every row expired at `now`; returns how many.
    pub async fn delete_expired(&self, now: Timestamp) -> Result<u64, StoreError> {
        delete_in_batches(|batch| async move {
            let deleted = sqlx::query(AssertSqlSafe(self.statements.delete_expired.clone()))
                .bind(now.unix_millis())
                .bind(batch)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            Ok(deleted.rows_affected())
        })
        .await
    }

    async fn insert(&self, key: &SessionKey, record: &Record) -> Result<bool, StoreError> {
        let inserted = sqlx::query(AssertSqlSafe(self.statements.insert.clone()))
            .bind(key.to_string())
            .bind(stored_document(&record.data))
            .bind(meta_json(&record.meta)?)
            .bind(record.meta.user_id.as_deref())
            .bind(record.meta.expires_at.unix_millis())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }
}

fn meta_json(meta: &Meta) -> Result<String, StoreError> {
    serde_json::to_string(meta).map_err(|e| StoreError::new(session_core::StoreErrorKind::Other, e))
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.statements.table)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for MySqlStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        let row: Option<(String, String, Option<String>, i64)> =
            sqlx::query_as(AssertSqlSafe(self.statements.load.clone()))
                .bind(key.to_string())
                .bind(Timestamp::now().unix_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.and_then(|(data, meta, user_id, expires_at)| {
            corrupt_as_absent(
                Row::from_text(&data, &meta, user_id, expires_at).and_then(Row::decode),
            )
        }))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        if self.insert(key, record).await? {
            return Ok(Created::Created);
        }
        // The key is taken. A live row stays; an expired one (not yet cleaned up)
        // gives way, and the insert is tried once more.
        let freed = sqlx::query(AssertSqlSafe(self.statements.delete_if_expired.clone()))
            .bind(key.to_string())
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if freed.rows_affected() == 1 && self.insert(key, record).await? {
            return Ok(Created::Created);
        }
        Ok(Created::Collision)
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let sql = self.statements.save(changes);
        let mut query = sqlx::query::<MySql>(AssertSqlSafe(sql));
        for name in &changes.removed {
            query = query.bind(json_path(name));
        }
        for (name, value) in changes.set.iter() {
            query = query.bind(json_path(name)).bind(value.to_string());
        }
        let saved = query
            .bind(meta_json(meta)?)
            .bind(meta.expires_at.unix_millis())
            .bind(key.to_string())
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(saved_if(saved.rows_affected()))
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let path = json_path(field);
        let mut transaction = self.pool.begin().await.map_err(unavailable)?;
        let current: Option<(Option<String>,)> =
            sqlx::query_as(AssertSqlSafe(self.statements.lock_field.clone()))
                .bind(&path)
                .bind(key.to_string())
                .bind(Timestamp::now().unix_millis())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(unavailable)?;
        let Some((current,)) = current else {
            return Ok(Updated::Missing);
        };
        let current = current
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(StoreError::corrupt)?;
        // The row is locked until the commit: `f` runs once, on the value that is there.
        let Some(new) = f(current.as_ref()) else {
            return Ok(Updated::Kept(current));
        };
        sqlx::query(AssertSqlSafe(self.statements.set_field.clone()))
            .bind(&path)
            .bind(new.to_string())
            .bind(meta_json(meta)?)
            .bind(meta.expires_at.unix_millis())
            .bind(key.to_string())
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(Updated::Stored(new))
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let touched = sqlx::query(AssertSqlSafe(self.statements.touch.clone()))
            .bind(meta.expires_at.unix_millis())
            .bind(key.to_string())
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(saved_if(touched.rows_affected()))
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.statements.delete.clone()))
            .bind(key.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let rows: Vec<(String, String, Option<String>, i64)> =
            sqlx::query_as(AssertSqlSafe(self.statements.user_sessions.clone()))
                .bind(user_id)
                .bind(Timestamp::now().unix_millis())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, meta, user_id, expires_at)| {
                let key = SessionKey::parse(&key)?;
                let row = Row::from_text("{}", &meta, user_id, expires_at);
                let record = corrupt_as_absent(row.and_then(Row::decode))?;
                Some(UserSession {
                    key,
                    meta: record.meta,
                })
            })
            .collect())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let deleted = sqlx::query(AssertSqlSafe(self.statements.delete_user_sessions.clone()))
            .bind(user_id)
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(deleted.rows_affected() as usize)
    }
}

fn saved_if(rows: u64) -> Saved {
    if rows == 1 {
        Saved::Saved
    } else {
        Saved::Missing
    }
}
