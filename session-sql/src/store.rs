//! [`SqlStore`]: the store operations, written once for every dialect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_core::store::{
    async_trait, save_unloaded_by_loading, Changes, Created, Record, Refresh, Saved, UpdateFn,
    Updated,
};
use session_core::{
    Meta, SessionKey, SessionStore, StoreError, StoreErrorKind, Timestamp, UserSession,
};
use sqlx::{AssertSqlSafe, Connection, Pool};

use crate::batch::Loads;
use crate::dialect::{sealed, Dialect, Save, SaveUnloaded, Statements};
use crate::endpoint::Endpoint;
use crate::held::Held;
use crate::{corrupt_as_absent, delete_in_batches, unavailable, validate_table, Cleanup};
use crate::{stored_document, ConfigError, Row};

/// A session store in a SQL table: one row per session, keyed by the hash of its id,
/// the data as a JSON document. Use it through its aliases, [`PostgresStore`],
/// [`MySqlStore`] and [`SqliteStore`].
///
/// Every write is one statement that merges the changed keys into the stored document
/// in the server, and touches only a live row, so a session ended elsewhere is never
/// re-created. `update` holds the row (`SELECT … FOR UPDATE`; SQLite: an immediate
/// transaction) for its read-modify-write, so concurrent increments are all kept.
/// Expired rows are never returned; [`spawn_cleanup`](Self::spawn_cleanup) deletes
/// them.
///
/// [`PostgresStore`]: crate::PostgresStore
/// [`MySqlStore`]: crate::MySqlStore
/// [`SqliteStore`]: crate::SqliteStore
pub struct SqlStore<DB: Dialect> {
    pool: Pool<DB>,
    /// The pool's server, to tell at once when it refuses connections.
    endpoint: Option<Arc<Endpoint>>,
    statements: Arc<Statements>,
    loads: Arc<Loads<DB>>,
    /// Where writes announce the sessions they change (PostgreSQL only).
    channel: Option<Arc<str>>,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            endpoint: self.endpoint.clone(),
            statements: self.statements.clone(),
            loads: self.loads.clone(),
            channel: self.channel.clone(),
        }
    }
}

impl<DB: Dialect> fmt::Debug for SqlStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(DB::STORE_NAME)
            .field("table", &self.statements.table)
            .finish_non_exhaustive()
    }
}

impl<DB: Dialect> SqlStore<DB> {
    /// Connects a pool to `url`, with the table `sessions`: `postgres://user@host/db`,
    /// `mysql://user@host/db`, or `sqlite://path` (the file is created if missing;
    /// `sqlite::memory:` keeps the sessions in this process, on one connection).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self::new(DB::connect(url).await.map_err(unavailable)?))
    }

    /// A store over a pool of the application's, with the table `sessions`.
    pub fn new(pool: Pool<DB>) -> Self {
        let statements = Arc::new(DB::statements("sessions"));
        let endpoint = DB::address(&pool).map(|address| Arc::new(Endpoint::new(address)));
        Self {
            loads: Arc::new(Loads::new(
                pool.clone(),
                endpoint.clone(),
                statements.clone(),
            )),
            pool,
            endpoint,
            statements,
            channel: None,
        }
    }

    /// The store's pool, for the application's own queries.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Keeps sessions in `table` instead: letters, digits and `_`, optionally after a
    /// schema (PostgreSQL), database (MySQL) or attached database (SQLite) and a dot,
    /// as in `auth.sessions`.
    pub fn with_table(mut self, table: &str) -> Result<Self, ConfigError> {
        validate_table(table)?;
        self.set_statements(DB::statements(table));
        Ok(self)
    }

    fn set_statements(&mut self, statements: Statements) {
        let statements = match &self.channel {
            Some(channel) => DB::announcing(statements, channel),
            None => statements,
        };
        self.statements = Arc::new(statements);
        self.loads = Arc::new(Loads::new(
            self.pool.clone(),
            self.endpoint.clone(),
            self.statements.clone(),
        ));
    }

    /// Creates the table and its indexes if they are not there; safe to run at every
    /// start, from any number of servers at once (they take turns under a lock of
    /// the database: an advisory lock in PostgreSQL, a named lock in MySQL, the write
    /// lock in SQLite). The same SQL ships in the crate's `migrations/` for other
    /// tools.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let statements = &self.statements;
        let mut connection = self.connection().await?;
        for statement in statements
            .migrate_lock
            .iter()
            .chain(&statements.schema)
            .chain(&statements.migrate_unlock)
        {
            sqlx::query(AssertSqlSafe(statement.as_str()))
                .execute(DB::on_connection(connection.connection()))
                .await
                // Dropped unreleased, the connection closes: lock and transaction end.
                .map_err(unavailable)?;
        }
        connection.release();
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
        delete_in_batches(|batch| {
            let query = self
                .query(&self.statements.delete_expired)
                .bind(int::<DB>(now.unix_millis()))
                .bind(int::<DB>(batch));
            self.execute(query)
        })
        .await
    }

    fn query<'q>(&self, sql: &'q str) -> sqlx::query::Query<'q, DB, DB::Arguments> {
        sqlx::query(AssertSqlSafe(sql))
    }

    /// A connection for one call's statements: closed, not put back, if the call is
    /// cut short (see [`Held`]).
    async fn connection(&self) -> Result<Held<DB>, StoreError> {
        Held::acquire(&self.pool, self.endpoint.as_deref())
            .await
            .map_err(unavailable)
    }

    /// Runs a statement; returns the rows it changed.
    async fn execute(
        &self,
        query: sqlx::query::Query<'_, DB, DB::Arguments>,
    ) -> Result<u64, StoreError> {
        let mut connection = self.connection().await?;
        let result = query
            .execute(DB::on_connection(connection.connection()))
            .await;
        connection.release();
        Ok(DB::rows_affected(&result.map_err(unavailable)?))
    }

    /// `update`'s transaction, on `connection`.
    async fn update_on(
        &self,
        connection: &mut DB::Connection,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let mut transaction = connection
            .begin_with(DB::BEGIN_UPDATE)
            .await
            .map_err(unavailable)?;
        let current: Option<DB::FieldRow> =
            sqlx::query_as(AssertSqlSafe(self.statements.lock_field.as_str()))
                .bind(text::<DB>(self.field(field)))
                .bind(text::<DB>(key.to_string()))
                .bind(int::<DB>(Timestamp::now().unix_millis()))
                .fetch_optional(DB::on_connection(&mut transaction))
                .await
                .map_err(unavailable)?;
        let Some((current,)) = current.map(Into::into) else {
            return Ok(Updated::Missing);
        };
        let current = current
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(StoreError::corrupt)?;
        // The row is held until the commit: `f` runs once, on the value that is there.
        let Some(new) = f(current.as_ref()) else {
            return Ok(Updated::Kept(current));
        };
        self.query(&self.statements.set_field)
            .bind(text::<DB>(self.field(field)))
            .bind(text::<DB>(new.to_string()))
            .bind(text::<DB>(meta_json(meta)?))
            .bind(int::<DB>(meta.expires_at.unix_millis()))
            .bind(text::<DB>(key.to_string()))
            .execute(DB::on_connection(&mut transaction))
            .await
            .map_err(unavailable)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(Updated::Stored(new))
    }

    /// A plain insert: `false` when the key is taken.
    async fn insert(&self, key: &SessionKey, record: &Record) -> Result<bool, StoreError> {
        let insert = self
            .query(&self.statements.insert)
            .bind(text::<DB>(key.to_string()))
            .bind(text::<DB>(self.document(record)?))
            .bind(text::<DB>(meta_json(&record.meta)?))
            .bind(DB::OptionalText::from(record.meta.user_id.clone()))
            .bind(int::<DB>(record.meta.expires_at.unix_millis()));
        let mut connection = self.connection().await?;
        let inserted = insert
            .execute(DB::on_connection(connection.connection()))
            .await;
        connection.release();
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(false),
            Err(error) => Err(unavailable(error)),
        }
    }

    fn document(&self, record: &Record) -> Result<String, StoreError> {
        if DB::ENCODES_KEYS {
            Ok(stored_document(&record.data))
        } else {
            serde_json::to_string(&record.data).map_err(encoding)
        }
    }

    /// A field's parameter in `lock_field` and `set_field`.
    fn field(&self, name: &str) -> String {
        if DB::ENCODES_KEYS {
            crate::json_path(name)
        } else {
            name.to_owned()
        }
    }
}

fn meta_json(meta: &Meta) -> Result<String, StoreError> {
    serde_json::to_string(meta).map_err(encoding)
}

fn encoding(error: serde_json::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Other, error)
}

fn saved_if(rows: u64) -> Saved {
    if rows == 1 {
        Saved::Applied
    } else {
        Saved::Missing
    }
}

#[cfg(feature = "postgres")]
impl SqlStore<sqlx::Postgres> {
    /// Announces, with `NOTIFY` on `channel`, every session this store changes or ends
    /// (a save, an update, a touch, a delete), from inside the write's own statement,
    /// so that the notification is sent when, and only if, the write commits: what a
    /// `TieredStore` listening on `channel` in the same database takes, when built
    /// with `published_by_central()`. The tiered store then sends no `NOTIFY` of its
    /// own: a write is one statement instead of two, and a server that dies between a
    /// write and its announcement cannot leave others serving a stale copy.
    ///
    /// `channel`: letters, digits and `_`, at most 46 of them.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = session_sql::PostgresStore::connect("postgres://localhost/app")
    ///     .await?
    ///     .with_invalidation_channel("app_invalidate")?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn with_invalidation_channel(mut self, channel: &str) -> Result<Self, ConfigError> {
        crate::channel::validate_channel(channel)?;
        self.channel = Some(Arc::from(channel));
        let table = self.statements.table.clone();
        self.set_statements(<sqlx::Postgres as sealed::Dialect>::statements(&table));
        Ok(self)
    }
}

#[async_trait]
impl<DB: Dialect> SessionStore for SqlStore<DB> {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        self.loads.load(key.to_string()).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        if self.insert(key, record).await? {
            return Ok(Created::Written);
        }
        // The key is taken. A live row stays; an expired one (not yet cleaned up)
        // gives way, and the insert is tried once more.
        let freed = self
            .execute(
                self.query(&self.statements.delete_if_expired)
                    .bind(text::<DB>(key.to_string()))
                    .bind(int::<DB>(Timestamp::now().unix_millis())),
            )
            .await?;
        if freed == 1 && self.insert(key, record).await? {
            return Ok(Created::Written);
        }
        Ok(Created::Collision)
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let save = Save {
            key,
            changes,
            meta: meta_json(meta)?,
            expires_at: meta.expires_at.unix_millis(),
            now: Timestamp::now().unix_millis(),
        };
        let query = <DB as sealed::Dialect>::save_query(&self.statements, save);
        Ok(saved_if(self.execute(query).await?))
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        let save = SaveUnloaded {
            key,
            changes,
            now: refresh.now.unix_millis(),
            idle_timeout: i64::try_from(refresh.idle_timeout.as_millis()).unwrap_or(i64::MAX),
            store_now: Timestamp::now().unix_millis(),
        };
        let Some(query) = <DB as sealed::Dialect>::save_unloaded_query(&self.statements, save)
        else {
            return save_unloaded_by_loading(self, key, changes, refresh).await;
        };
        let mut connection = self.connection().await?;
        let row = query
            .fetch_optional(DB::on_connection(connection.connection()))
            .await;
        connection.release();
        let Some((_, meta, user_id, expires_at)) = row.map_err(unavailable)?.map(Into::into) else {
            return Ok(None);
        };
        // A row whose metadata does not decode was written (as `save` would have) and
        // is treated as absent, as `load` treats it.
        let row = Row::from_text("{}", &meta, user_id, expires_at, false);
        Ok(corrupt_as_absent(row.and_then(Row::decode)).map(|record| record.meta))
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let mut connection = self.connection().await?;
        let updated = self
            .update_on(connection.connection(), key, field, f, meta)
            .await;
        // A transaction that ended without a commit has its rollback sent first.
        connection.release();
        updated
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let query = self
            .query(&self.statements.touch)
            .bind(int::<DB>(meta.expires_at.unix_millis()))
            .bind(text::<DB>(key.to_string()))
            .bind(int::<DB>(Timestamp::now().unix_millis()));
        Ok(saved_if(self.execute(query).await?))
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.execute(
            self.query(&self.statements.delete)
                .bind(text::<DB>(key.to_string())),
        )
        .await?;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let mut connection = self.connection().await?;
        let rows: Result<Vec<DB::SessionRow>, _> =
            sqlx::query_as(AssertSqlSafe(self.statements.user_sessions.as_str()))
                .bind(text::<DB>(user_id.to_owned()))
                .bind(int::<DB>(Timestamp::now().unix_millis()))
                .fetch_all(DB::on_connection(connection.connection()))
                .await;
        connection.release();
        let rows = rows.map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(Into::into)
            .filter_map(|(key, meta, user_id, expires_at)| {
                let key = SessionKey::parse(&key)?;
                let row = Row::from_text("{}", &meta, user_id, expires_at, false);
                let record = corrupt_as_absent(row.and_then(Row::decode))?;
                Some(UserSession {
                    key,
                    meta: record.meta,
                })
            })
            .collect())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let query = self
            .query(&self.statements.delete_user_sessions)
            .bind(text::<DB>(user_id.to_owned()))
            .bind(int::<DB>(Timestamp::now().unix_millis()));
        Ok(self.execute(query).await? as usize)
    }
}

fn text<DB: Dialect>(value: String) -> DB::Text {
    DB::Text::from(value)
}

fn int<DB: Dialect>(value: i64) -> DB::Int {
    DB::Int::from(value)
}
