//! Sessions for tower and axum that stay consistent when the application runs on many
//! servers behind a load balancer.
//!
//! Wrap a router with [`SessionLayer`] over a [`SessionStore`] and take [`Session`] in
//! handlers. The store is picked by a Cargo feature and a constructor; handlers never
//! change when it does.
//!
//! ```
//! use axum::{routing::get, Router};
//! use session_kit::{MemoryStore, Session, SessionLayer};
//!
//! async fn visits(session: Session) -> Result<String, session_kit::SessionError> {
//!     let n = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//!     Ok(format!("visit number {n}"))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(visits))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! # let _ = app;
//! ```
//!
//! See [`session_core`] for how a request flows and what is guaranteed under
//! concurrency and failure.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `memory` | yes | [`MemoryStore`], in-process: one server, and tests |
//! | `axum` | yes | [`Session`] as an axum extractor |
//! | `login` | yes | [`RequireLoginLayer`], which lets only logged-in sessions through, and [`LoggedIn`] (an axum extractor with `axum`) |
//! | `axum-login` | no | [`axum_login`]: axum-login's backends on session-kit, so that an axum-login application moves over by changing its imports and its layer |
//! | `redis` | no | [`RedisStore`], for a Redis server or a Redis Cluster |
//! | `postgres` | no | [`PostgresStore`], a table in PostgreSQL |
//! | `mysql` | no | [`MySqlStore`], a table in MySQL or MariaDB |
//! | `sqlite` | no | [`SqliteStore`], a table in a SQLite file (bundled) or in memory |
//! | `cookie` | no | [`CookieStore`], the whole session in an encrypted cookie |
//! | `tiered` | no | [`TieredStore`], sessions cached in process in front of a central store, coherent across servers over an invalidation channel: [`RedisChannel`] (pub/sub), or [`PostgresChannel`] (`NOTIFY`, with `postgres`) |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use session_core::MissingSessionLayer;
pub use session_core::{
    cookie, serde_json, ConfigError, DefaultOnStoreError, Expiry, LoginData, Meta, OnStoreError,
    Refusal, ResponseFuture, Session, SessionError, SessionKey, SessionLayer, SessionLayerBuilder,
    SessionService, SessionStore, StoreError, StoreErrorKind, Timestamp, UserSession,
};

/// For store authors: the [`SessionStore`] trait's types, the client-side store trait
/// and the invalidation protocol (see the module's guide to writing a store).
pub use session_core::store;

#[cfg(feature = "axum-login")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum-login")))]
pub use session_axum_login as axum_login;
#[cfg(feature = "cookie")]
#[cfg_attr(docsrs, doc(cfg(feature = "cookie")))]
pub use session_cookie::{CookieStore, Key as CookieKey, KeyError as CookieKeyError};
#[cfg(feature = "login")]
#[cfg_attr(docsrs, doc(cfg(feature = "login")))]
pub use session_login::{bind_credentials, safe_next, Credentials, LoggedIn, RequireLoginLayer};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use session_memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use session_redis::{redis, RedisChannel, RedisStore};
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use session_sql::MySqlStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use session_sql::SqliteStore;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite")))
)]
pub use session_sql::{
    sqlx, Cleanup, ConfigError as SqlConfigError, Dialect as SqlDialect, SqlStore,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use session_sql::{PostgresChannel, PostgresStore};
#[cfg(feature = "tiered")]
#[cfg_attr(docsrs, doc(cfg(feature = "tiered")))]
pub use session_tiered::{TieredStore, TieredStoreBuilder};
