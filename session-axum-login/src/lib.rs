//! [axum-login](https://docs.rs/axum-login)'s backends on session-kit. An application
//! written for axum-login keeps its `AuthUser`, `AuthnBackend` and `AuthzBackend`
//! impls (they are axum-login's own traits, re-exported here), its handlers taking
//! [`AuthSession`], and its routes behind [`login_required!`], [`permission_required!`]
//! and [`predicate_required!`]; it changes its imports and the layer setup, and gets
//! session-kit's sessions: consistent across servers, with nothing lost under
//! concurrency.
//!
//! What session-kit adds to the same calls:
//!
//! - [`AuthSession::login`] is session-kit's login: a new session id (against session
//!   fixation), the session listed under its user so that "log out everywhere" and
//!   the layer's cap of sessions per user apply (concurrent logins keep exactly the
//!   newest `cap`), and a session of another user started empty.
//! - The session is tied to the user's `session_auth_hash` (kept hashed, compared in
//!   constant time): after a password change, the sessions made with the old one end
//!   on their next request, on every server.
//! - [`AuthSession::logout`] deletes the session from the store, so it ends on every
//!   server at once; [`AuthSession::logout_everywhere`] ends all the user's sessions.
//! - A store failure is the session layer's 503 (with `Retry-After`), never a
//!   logged-out user.
//!
//! # Moving an axum-login application over
//!
//! The imports of axum-login's items and of the session layer change; the layer is a
//! session-kit `SessionLayer` (its builder takes the expiry and cookie settings that
//! tower-sessions' `SessionManagerLayer` took). Nothing else does:
//!
//! ```text
//!  // Cargo.toml
//! -axum-login = "0.18"
//! -tower-sessions = "0.14"
//! +axum-login = "0.18"            # still the traits' home; keep it if you name it
//! +session-kit = { version = "0.1", features = ["axum-login", "sqlite"] }
//!
//!  // the backend: unchanged
//!  use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};
//!
//!  // the web layer
//! -use axum_login::{login_required, permission_required, AuthManagerLayerBuilder, AuthSession};
//! -use tower_sessions::{Expiry, MemoryStore, SessionManagerLayer};
//! +use session_kit::axum_login::{login_required, permission_required, AuthManagerLayerBuilder, AuthSession};
//! +use session_kit::{Expiry, SessionLayer, SqliteStore};
//!
//! -let session_layer = SessionManagerLayer::new(MemoryStore::default())
//! -    .with_secure(false)
//! -    .with_expiry(Expiry::OnInactivity(Duration::days(1)));
//! +let session_layer = SessionLayer::builder(SqliteStore::connect("sqlite://sessions.db").await?)
//! +    .with_secure(false)
//! +    .with_expiry(Expiry::on_inactivity(Duration::from_secs(24 * 3600)))
//! +    .build()?;
//!  let auth_layer = AuthManagerLayerBuilder::new(backend, session_layer).build();
//!
//!  // handlers and routes: unchanged
//!  async fn logout(mut auth_session: AuthSession) -> impl IntoResponse {
//!      match auth_session.logout().await { … }
//!  }
//!  let app = protected::router()
//!      .route_layer(login_required!(Backend, login_url = "/login"))
//!      .merge(auth::router())
//!      .layer(auth_layer);
//! ```
//!
//! One change is worth making while there: a login handler that redirects to the
//! `next` it was given checks it with [`safe_next`](session_login::safe_next)
//! first, or the login page is an open redirect.
//!
//! The facade's `examples/axum-login` is an application in axum-login's shape (users,
//! groups and permissions in SQLite, password login, a protected page, a restricted
//! page, logout) on session-kit.
//!
//! # Differences
//!
//! - `AuthManagerLayerBuilder::with_data_key` is gone: session-kit keeps the user in
//!   the session's own metadata, not in its data.
//! - The user's id is stored as a string (the one `Session::user_id` and the session
//!   list show): an id that serialises as a string is that string, a number its
//!   digits, anything else its JSON. An id whose serde form does not read back as
//!   itself fails at login.
//! - A guard's redirect carries the page asked for only when it is a path on this
//!   site.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth_session;
mod guards;
mod layer;
mod user_id;

pub use auth_session::{AuthSession, Error};
pub use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};
pub use layer::{AuthManager, AuthManagerLayer, AuthManagerLayerBuilder};

// For the guards' expansions.
#[doc(hidden)]
pub use axum;
#[doc(hidden)]
pub use guards::login_redirect as __login_redirect;
#[doc(hidden)]
pub use tracing;
