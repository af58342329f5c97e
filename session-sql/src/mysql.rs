//! MySQL and MariaDB: documents in `JSON` columns, merged by JSON path.

use std::time::Duration;

use session_core::store::USER_SESSIONS_LIMIT;
use sqlx::mysql::{MySql, MySqlPoolOptions, MySqlQueryResult};
use sqlx::query::Query;
use sqlx::query::QueryAs;
use sqlx::{AssertSqlSafe, Pool};

use crate::dialect::{path_save_query, sealed, Save, Statements};
use crate::endpoint::Address;

impl sealed::Dialect for MySql {
    type Args = sqlx::mysql::MySqlArguments;
    type Text = String;
    type OptionalText = Option<String>;
    type Int = i64;
    type SessionRow = (String, String, Option<String>, i64);
    type KeyedRow = (String, String, String, Option<String>, i64);
    type FieldRow = (Option<String>,);
    const STORE_NAME: &'static str = "MySqlStore";
    const ENCODES_KEYS: bool = true;
    const BEGIN_UPDATE: &'static str = "BEGIN";

    fn statements(table: &str) -> Statements {
        let index = table.rsplit('.').next().unwrap_or(table);
        Statements {
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
            // A named lock of the connection, per database and table (a name is at
            // most 64 characters); DDL commits at once, so no transaction would hold.
            migrate_lock: vec![format!(
                "DO GET_LOCK(CONCAT('session-kit:', SHA1(CONCAT(DATABASE(), '.{table}'))), 3600)"
            )],
            migrate_unlock: vec![format!(
                "DO RELEASE_LOCK(CONCAT('session-kit:', SHA1(CONCAT(DATABASE(), '.{table}'))))"
            )],
            // MariaDB sends JSON columns as text already; MySQL needs the cast. The
            // keys' placeholders are written per query, for as many keys as it has.
            load: format!(
                "SELECT `key`, CAST(data AS CHAR), CAST(meta AS CHAR), user_id, expires_at
                 FROM {table} WHERE expires_at > ? AND `key` IN "
            ),
            insert: format!(
                "INSERT INTO {table} (`key`, data, meta, user_id, expires_at) VALUES (?, ?, ?, ?, ?)"
            ),
            delete_if_expired: format!("DELETE FROM {table} WHERE `key` = ? AND expires_at <= ?"),
            lock_field: format!(
                "SELECT CAST(JSON_EXTRACT(data, ?) AS CHAR) FROM {table}
                 WHERE `key` = ? AND expires_at > ? FOR UPDATE"
            ),
            set_field: format!(
                "UPDATE {table} SET data = JSON_SET(data, ?, JSON_EXTRACT(?, '$')), meta = ?,
                     expires_at = ?
                 WHERE `key` = ?"
            ),
            touch: format!("UPDATE {table} SET expires_at = ? WHERE `key` = ? AND expires_at > ?"),
            delete: format!("DELETE FROM {table} WHERE `key` = ?"),
            user_sessions: format!(
                "SELECT `key`, CAST(meta AS CHAR), user_id, expires_at FROM {table}
                 WHERE user_id = ? AND expires_at > ?
                 ORDER BY expires_at DESC LIMIT {USER_SESSIONS_LIMIT}"
            ),
            delete_user_sessions: format!(
                "DELETE FROM {table} WHERE user_id = ? AND expires_at > ?"
            ),
            delete_expired: format!("DELETE FROM {table} WHERE expires_at <= ? LIMIT ?"),
            save: String::new(),
            save_unloaded: String::new(),
        }
    }

    fn load_query<'q>(
        statements: &'q Statements,
        keys: &[&str],
        now: i64,
    ) -> QueryAs<'q, Self, Self::KeyedRow, Self::Arguments> {
        let sql = format!("{}({})", statements.load, vec!["?"; keys.len()].join(", "));
        let mut query = sqlx::query_as(AssertSqlSafe(sql)).bind(now);
        for key in keys {
            query = query.bind((*key).to_owned());
        }
        query
    }

    fn save_query<'q>(
        statements: &'q Statements,
        save: Save<'_>,
    ) -> Query<'q, Self, Self::Arguments> {
        // `JSON_EXTRACT(?, '$')`: MariaDB has no `CAST(? AS JSON)`.
        let value = "JSON_EXTRACT(?, '$')";
        path_save_query(&statements.table, "`key`", value, save)
    }

    crate::dialect::sqlx_executors!(MySqlQueryResult, sqlx::mysql::MySqlConnection);

    async fn connect(url: &str) -> Result<Pool<Self>, sqlx::Error> {
        MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
    }

    fn address(pool: &Pool<Self>) -> Option<Address> {
        let options = pool.connect_options();
        Some(match options.get_socket() {
            Some(socket) => Address::Unix(socket.clone()),
            None => Address::Tcp {
                host: options.get_host().to_owned(),
                port: options.get_port(),
            },
        })
    }
}
