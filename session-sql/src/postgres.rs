//! PostgreSQL: documents in `jsonb`, merged with its operators, so the save is one
//! fixed statement.

use std::time::Duration;

use session_core::store::{Invalidation, USER_SESSIONS_LIMIT};
use sqlx::postgres::{PgPoolOptions, PgQueryResult, Postgres};
use sqlx::query::Query;
use sqlx::query::QueryAs;
use sqlx::{AssertSqlSafe, Pool};

use crate::dialect::{sealed, Save, SaveUnloaded, Statements};
use crate::endpoint::Address;

impl sealed::Dialect for Postgres {
    type Args = sqlx::postgres::PgArguments;
    type Text = String;
    type OptionalText = Option<String>;
    type Int = i64;
    type SessionRow = (String, String, Option<String>, i64);
    type KeyedRow = (String, String, String, Option<String>, i64);
    type FieldRow = (Option<String>,);
    const STORE_NAME: &'static str = "PostgresStore";
    const ENCODES_KEYS: bool = false;
    const BEGIN_UPDATE: &'static str = "BEGIN";

    fn statements(table: &str) -> Statements {
        // An index name cannot carry a schema: `pg_temp.sessions` indexes as `sessions_…`.
        let index = table.rsplit('.').next().unwrap_or(table);
        Statements {
            table: table.to_owned(),
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
            // Held until the transaction ends, however it ends.
            migrate_lock: vec![
                "BEGIN".to_owned(),
                format!("SELECT pg_advisory_xact_lock(hashtext('session-kit migrate {table}'))"),
            ],
            migrate_unlock: vec!["COMMIT".to_owned()],
            load: format!(
                "SELECT key, data::text, meta::text, user_id, expires_at FROM {table}
                 WHERE key = ANY($1) AND expires_at > $2"
            ),
            insert: format!(
                "INSERT INTO {table} (key, data, meta, user_id, expires_at)
                 VALUES ($1, $2::jsonb, $3::jsonb, $4, $5)"
            ),
            delete_if_expired: format!(
                "DELETE FROM {table} WHERE key = $1 AND expires_at <= $2"
            ),
            lock_field: format!(
                "SELECT (data -> $1)::text FROM {table}
                 WHERE key = $2 AND expires_at > $3 FOR UPDATE"
            ),
            set_field: format!(
                "UPDATE {table} SET data = jsonb_set(data, ARRAY[$1], $2::jsonb),
                     meta = $3::jsonb, expires_at = $4
                 WHERE key = $5"
            ),
            touch: format!("UPDATE {table} SET expires_at = $1 WHERE key = $2 AND expires_at > $3"),
            delete: format!("DELETE FROM {table} WHERE key = $1"),
            user_sessions: format!(
                "SELECT key, meta::text, user_id, expires_at FROM {table}
                 WHERE user_id = $1 AND expires_at > $2
                 ORDER BY expires_at DESC LIMIT {USER_SESSIONS_LIMIT}"
            ),
            delete_user_sessions: format!(
                "DELETE FROM {table} WHERE user_id = $1 AND expires_at > $2"
            ),
            delete_expired: format!(
                "DELETE FROM {table} WHERE key IN
                     (SELECT key FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            ),
            // Cleared, then removed keys, then set keys; only a live row is touched.
            save: format!(
                "UPDATE {table} SET
                     data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE data END - $3::text[]) || $4::jsonb,
                     meta = $5::jsonb, expires_at = $6
                 WHERE key = $1 AND expires_at > $7"
            ),
            // The same merge; the expiry restarts by `Refresh::expires_at`'s rule on
            // the stored metadata (its own idle timeout `x.i` in seconds, its deadline
            // `d`), in numeric so that no sum overflows. The locked sub-select gives
            // RETURNING the row as it was. A row whose documents are not objects, or
            // whose times are not numbers, is not written (`load` treats it as no
            // session, and so does the caller when nothing comes back).
            save_unloaded: format!(
                "UPDATE {table} AS s SET
                     data = (CASE WHEN $2 THEN '{{}}'::jsonb ELSE s.data END - $3::text[]) || $4::jsonb,
                     expires_at = LEAST(
                         $5::numeric + COALESCE((s.meta -> 'x' ->> 'i')::numeric * 1000, $6::numeric),
                         COALESCE((s.meta ->> 'd')::numeric, 9223372036854775807)
                     )::bigint
                 FROM (SELECT key, meta, user_id, expires_at FROM {table}
                       WHERE key = $1 FOR UPDATE) AS old
                 WHERE s.key = old.key AND s.expires_at > $5 AND s.expires_at > $7
                     AND jsonb_typeof(s.data) = 'object' AND jsonb_typeof(s.meta) = 'object'
                     AND jsonb_typeof(COALESCE(s.meta -> 'd', '0')) = 'number'
                     AND jsonb_typeof(COALESCE(s.meta -> 'x' -> 'i', '0')) = 'number'
                     AND COALESCE((s.meta ->> 'd')::numeric > $5, true)
                 RETURNING old.key, old.meta::text AS meta, old.user_id, old.expires_at"
            ),
        }
    }

    fn announcing(mut statements: Statements, channel: &str) -> Statements {
        // `channel` is a plain identifier, safe in a literal; keys are hex.
        let tag = Invalidation::SESSION_TAG;
        let notify = |key: &str| format!("pg_notify('{channel}', '{tag}' || {key})");
        let returning_keys = |statement: &str, alias: &str| {
            format!(
                "WITH {alias} AS ({statement} RETURNING key)
                 SELECT {} FROM {alias}",
                notify(&format!("{alias}.key"))
            )
        };
        statements.save = returning_keys(&statements.save, "saved");
        statements.set_field = returning_keys(&statements.set_field, "set");
        statements.touch = returning_keys(&statements.touch, "touched");
        // One row per session ended, so that the count holds, but one notification:
        // PostgreSQL delivers identical ones of a transaction once. A user with
        // 100,000 sessions is one invalidation, not 100,000.
        statements.delete_user_sessions = format!(
            "WITH ended AS ({} RETURNING key)
             SELECT pg_notify('{channel}', '{}' || $1) FROM ended",
            statements.delete_user_sessions,
            Invalidation::USER_TAG
        );
        // Announced whether or not there was a row: a tiered store checks the channel
        // by deleting a key that holds no session.
        statements.delete = format!(
            "WITH ended AS ({}) SELECT {}",
            statements.delete,
            notify("$1")
        );
        // The row as it was, once announced.
        statements.save_unloaded = format!(
            "WITH saved AS ({})
             SELECT saved.key, saved.meta, saved.user_id, saved.expires_at
             FROM saved, LATERAL (SELECT {}) AS announced",
            statements.save_unloaded,
            notify("saved.key")
        );
        statements
    }

    fn load_query<'q>(
        statements: &'q Statements,
        keys: &[&str],
        now: i64,
    ) -> QueryAs<'q, Self, Self::KeyedRow, Self::Arguments> {
        let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        sqlx::query_as(AssertSqlSafe(statements.load.as_str()))
            .bind(keys)
            .bind(now)
    }

    fn save_query<'q>(
        statements: &'q Statements,
        save: Save<'_>,
    ) -> Query<'q, Self, Self::Arguments> {
        sqlx::query(AssertSqlSafe(statements.save.as_str()))
            .bind(save.key.to_string())
            .bind(save.changes.cleared)
            .bind(&save.changes.removed)
            .bind(sqlx::types::Json(&save.changes.set))
            .bind(save.meta)
            .bind(save.expires_at)
            .bind(save.now)
    }

    fn save_unloaded_query<'q>(
        statements: &'q Statements,
        save: SaveUnloaded<'q>,
    ) -> Option<QueryAs<'q, Self, Self::SessionRow, Self::Arguments>> {
        let query = sqlx::query_as(AssertSqlSafe(statements.save_unloaded.as_str()))
            .bind(save.key.to_string())
            .bind(save.changes.cleared)
            .bind(&save.changes.removed)
            .bind(sqlx::types::Json(&save.changes.set))
            .bind(save.now)
            .bind(save.idle_timeout)
            .bind(save.store_now);
        Some(query)
    }

    crate::dialect::sqlx_executors!(PgQueryResult, sqlx::postgres::PgConnection);

    async fn connect(url: &str) -> Result<Pool<Self>, sqlx::Error> {
        PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
    }

    fn address(pool: &Pool<Self>) -> Option<Address> {
        let options = pool.connect_options();
        Some(match options.get_socket() {
            // The socket's directory: the server names its socket after the port.
            Some(directory) => {
                Address::Unix(directory.join(format!(".s.PGSQL.{}", options.get_port())))
            }
            None => Address::Tcp {
                host: options.get_host().to_owned(),
                port: options.get_port(),
            },
        })
    }
}
