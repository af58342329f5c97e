//! The users, their groups and permissions, in SQLite; the backend that axum-login's
//! traits ask for. This file names only axum-login: it is the same before and after
//! the move to session-kit.

use std::collections::HashSet;

use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};
use serde::Deserialize;
use session_kit::sqlx::{self, Row, SqlitePool};
use tokio::task;

#[derive(Clone)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) username: String,
    password: String,
}

// The password hash stays out of logs.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> Self::Id {
        self.id
    }

    // A new password ends the sessions made with the old one.
    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// What the login form sends; `next` is the page to go back to.
#[derive(Clone, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) next: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    TaskJoin(#[from] task::JoinError),
}

#[derive(Debug, Clone)]
pub(crate) struct Backend {
    db: SqlitePool,
}

impl Backend {
    pub(crate) fn new(db: SqlitePool) -> Self {
        Self { db }
    }

    /// Creates the tables and the demo's users: `ferris` (password `hunter42`) and
    /// `admin` (password `admin-password`), who is in the group `superusers`, whose
    /// members may read the restricted page.
    pub(crate) async fn migrate(&self) -> Result<(), Error> {
        const SCHEMA: [&str; 6] = [
            "CREATE TABLE IF NOT EXISTS users (
                 id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, password TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
            "CREATE TABLE IF NOT EXISTS permissions (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
            "CREATE TABLE IF NOT EXISTS users_groups (
                 user_id INTEGER REFERENCES users(id), group_id INTEGER REFERENCES groups(id),
                 PRIMARY KEY (user_id, group_id))",
            "CREATE TABLE IF NOT EXISTS groups_permissions (
                 group_id INTEGER REFERENCES groups(id),
                 permission_id INTEGER REFERENCES permissions(id),
                 PRIMARY KEY (group_id, permission_id))",
            "INSERT OR IGNORE INTO groups (id, name) VALUES (1, 'superusers')",
        ];
        for statement in SCHEMA {
            sqlx::query(statement).execute(&self.db).await?;
        }
        sqlx::query("INSERT OR IGNORE INTO permissions (id, name) VALUES (1, 'restricted.read')")
            .execute(&self.db)
            .await?;
        sqlx::query(
            "INSERT OR IGNORE INTO groups_permissions (group_id, permission_id) VALUES (1, 1)",
        )
        .execute(&self.db)
        .await?;
        for (id, username, password, groups) in [
            (1, "ferris", "hunter42", &[][..]),
            (2, "admin", "admin-password", &[1][..]),
        ] {
            let hash = task::spawn_blocking(move || password_auth::generate_hash(password)).await?;
            sqlx::query("INSERT OR IGNORE INTO users (id, username, password) VALUES (?, ?, ?)")
                .bind(id)
                .bind(username)
                .bind(hash)
                .execute(&self.db)
                .await?;
            for group in groups {
                sqlx::query("INSERT OR IGNORE INTO users_groups (user_id, group_id) VALUES (?, ?)")
                    .bind(id)
                    .bind(group)
                    .execute(&self.db)
                    .await?;
            }
        }
        Ok(())
    }

    async fn user_named(&self, username: &str) -> Result<Option<User>, Error> {
        let row = sqlx::query("SELECT id, username, password FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.map(|row| user_from(&row)))
    }
}

fn user_from(row: &sqlx::sqlite::SqliteRow) -> User {
    User {
        id: row.get("id"),
        username: row.get("username"),
        password: row.get("password"),
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = Error;

    async fn authenticate(
        &self,
        creds: Self::Credentials,
    ) -> Result<Option<Self::User>, Self::Error> {
        let user = self.user_named(&creds.username).await?;
        // Argon2 is slow on purpose: off the async workers.
        task::spawn_blocking(|| {
            Ok(user.filter(|user| {
                password_auth::verify_password(creds.password, &user.password).is_ok()
            }))
        })
        .await?
    }

    async fn get_user(&self, user_id: &UserId<Self>) -> Result<Option<Self::User>, Self::Error> {
        let row = sqlx::query("SELECT id, username, password FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&self.db)
            .await?;
        Ok(row.map(|row| user_from(&row)))
    }
}

/// A permission's name, such as `restricted.read`.
#[derive(Debug, Clone, Eq, PartialEq, Hash)]
pub(crate) struct Permission {
    pub(crate) name: String,
}

impl From<&str> for Permission {
    fn from(name: &str) -> Self {
        Permission {
            name: name.to_owned(),
        }
    }
}

impl AuthzBackend for Backend {
    type Permission = Permission;

    async fn get_group_permissions(
        &self,
        user: &Self::User,
    ) -> Result<HashSet<Self::Permission>, Self::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT permissions.name FROM users
             JOIN users_groups ON users.id = users_groups.user_id
             JOIN groups_permissions ON users_groups.group_id = groups_permissions.group_id
             JOIN permissions ON groups_permissions.permission_id = permissions.id
             WHERE users.id = ?",
        )
        .bind(user.id)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .iter()
            .map(|row| Permission {
                name: row.get("name"),
            })
            .collect())
    }
}
