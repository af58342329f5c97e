//! [`PostgresStore`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use session_core::{
    async_trait, Changes, Created, Meta, Record, Saved, SessionKey, SessionStore, StoreError,
    Timestamp, UpdateFn, Updated, UserSession,
};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::AssertSqlSafe;

use crate::{
    corrupt_as_absent, delete_in_batches, unavailable, validate_table, Cleanup, ConfigError, Row,
};

/// The statements for one table, written once when the store is made.
struct Statements {
    schema: Vec<String>,
    load: Arc<str>,
    create: Arc<str>,
    save: Arc<str>,
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
        // An index name cannot carry a schema: `pg_temp.sessions` indexes as `sessions_…`.
        let index = table.rsplit('.').next().unwrap_or(table);
        let s = |sql: String| Arc::<str>::from(sql);
        Self {
            schema: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {table} (
                        key TEXT PRIMARY KEY,
                        data JSONB NOT NULL,
                        meta JSONB NOT NULL,
                        user_id TEXT,
                        expires_at BIGINT NOT NULL
                    )"
                ),
                format!("CREATE INDEX IF NOT EXISTS {index}_expires_at ON {table} (expires_at)"),
                format!(
                    "CREATE INDEX IF NOT EXISTS {index}_user_id ON {table} (user_id) \
                     WHERE user_id IS NOT NULL"
                ),
            ],
            load: s(format!(
                "SELECT data, meta, user_id, expires_at FROM {table} WHERE key = $1 AND expires_at > $2"
            )),
            // A live row is never replaced; an expired one (not yet cleaned up) is.
            create: s(format!(
                "INSERT INTO {table} (key, data, meta, user_id, expires_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data, meta = EXCLUDED.meta,
                     user_id = EXCLUDED.user_id, expires_at = EXCLUDED.expires_at
                 WHERE {table}.expires_at <= $6"
            )),
            // The changes merge into the stored document in the server: cleared, then
            // removed keys, then set keys; only a live row is touched.
            save: s(format!(
                "UPDATE {table} SET
                     data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE data END - $3::text[]) || $4,
                     meta = $5, expires_at = $6
                 WHERE key = $1 AND expires_at > $7"
            )),
            lock_field: s(format!(
                "SELECT data -> $2 FROM {table} WHERE key = $1 AND expires_at > $3 FOR UPDATE"
            )),
            set_field: s(format!(
                "UPDATE {table} SET data = jsonb_set(data, ARRAY[$2], $3), meta = $4, expires_at = $5
                 WHERE key = $1"
            )),
            touch: s(format!(
                "UPDATE {table} SET expires_at = $2 WHERE key = $1 AND expires_at > $3"
            )),
            delete: s(format!("DELETE FROM {table} WHERE key = $1")),
            user_sessions: s(format!(
                "SELECT key, meta, user_id, expires_at FROM {table} WHERE user_id = $1 AND expires_at > $2"
            )),
            delete_user_sessions: s(format!(
                "DELETE FROM {table} WHERE user_id = $1 AND expires_at > $2"
            )),
            delete_expired: s(format!(
                "DELETE FROM {table} WHERE key IN
                     (SELECT key FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            )),
        }
    }
}

/// A session store in a PostgreSQL table: one row per session, the data as `jsonb`.
///
/// Every write is one statement that merges the changed keys into the stored document
/// in the server, and touches only a live row, so a session ended elsewhere is never
/// re-created. `update` locks the row (`SELECT … FOR UPDATE`) for its
/// read-modify-write. Expired rows are never returned; [`spawn_cleanup`] deletes them.
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
///
/// [`spawn_cleanup`]: Self::spawn_cleanup
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    table: Arc<str>,
    statements: Arc<Statements>,
}

impl PostgresStore {
    /// Connects a pool to `url` (`postgres://user@host/database`), with the table
    /// `sessions`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(unavailable)?;
        Ok(Self::new(pool))
    }

    /// A store over a pool of the application's, with the table `sessions`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            table: Arc::from("sessions"),
            statements: Arc::new(Statements::new("sessions")),
        }
    }

    /// Keeps sessions in `table` instead (letters, digits and `_`, optionally
    /// schema-qualified: `auth.sessions`).
    pub fn with_table(mut self, table: &str) -> Result<Self, ConfigError> {
        validate_table(table)?;
        self.table = Arc::from(table);
        self.statements = Arc::new(Statements::new(table));
        Ok(self)
    }

    /// Creates the table and its indexes if they are not there; safe to run at every
    /// start. The same SQL ships as `migrations/postgres.sql` for other tools.
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
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn key_text(key: &SessionKey) -> String {
    key.to_string()
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        let row: Option<(Json<Value>, Json<Value>, Option<String>, i64)> =
            sqlx::query_as(AssertSqlSafe(self.statements.load.clone()))
                .bind(key_text(key))
                .bind(Timestamp::now().unix_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.and_then(|(data, meta, user_id, expires_at)| {
            corrupt_as_absent(
                Row {
                    data: data.0,
                    meta: meta.0,
                    user_id,
                    expires_at,
                }
                .decode(),
            )
        }))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        let created = sqlx::query(AssertSqlSafe(self.statements.create.clone()))
            .bind(key_text(key))
            .bind(Json(&record.data))
            .bind(Json(&record.meta))
            .bind(record.meta.user_id.as_deref())
            .bind(record.meta.expires_at.unix_millis())
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(if created.rows_affected() == 1 {
            Created::Created
        } else {
            Created::Collision
        })
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let saved = sqlx::query(AssertSqlSafe(self.statements.save.clone()))
            .bind(key_text(key))
            .bind(changes.cleared)
            .bind(&changes.removed)
            .bind(Json(&changes.set))
            .bind(Json(meta))
            .bind(meta.expires_at.unix_millis())
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
        let mut transaction = self.pool.begin().await.map_err(unavailable)?;
        let current: Option<(Option<Json<Value>>,)> =
            sqlx::query_as(AssertSqlSafe(self.statements.lock_field.clone()))
                .bind(key_text(key))
                .bind(field)
                .bind(Timestamp::now().unix_millis())
                .fetch_optional(&mut *transaction)
                .await
                .map_err(unavailable)?;
        let Some((current,)) = current else {
            return Ok(Updated::Missing);
        };
        let current = current.map(|json| json.0);
        // The row is locked until the commit: `f` runs once, on the value that is there.
        let Some(new) = f(current.as_ref()) else {
            return Ok(Updated::Kept(current));
        };
        sqlx::query(AssertSqlSafe(self.statements.set_field.clone()))
            .bind(key_text(key))
            .bind(field)
            .bind(Json(&new))
            .bind(Json(meta))
            .bind(meta.expires_at.unix_millis())
            .execute(&mut *transaction)
            .await
            .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(Updated::Stored(new))
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let touched = sqlx::query(AssertSqlSafe(self.statements.touch.clone()))
            .bind(key_text(key))
            .bind(meta.expires_at.unix_millis())
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(saved_if(touched.rows_affected()))
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.statements.delete.clone()))
            .bind(key_text(key))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let rows: Vec<(String, Json<Value>, Option<String>, i64)> =
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
                let row = Row {
                    data: Value::Object(Default::default()),
                    meta: meta.0,
                    user_id,
                    expires_at,
                };
                let record = corrupt_as_absent(row.decode())?;
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
