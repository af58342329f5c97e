//! Login on session-kit: a guard that lets only logged-in sessions through, and an
//! extractor of the logged-in user. Both build on `session_core::Session`, whose
//! `login` binds a user to the session (and gives it a new id), and whose
//! `destroy` ends it.
//!
//! - [`RequireLoginLayer`]: on the routes to protect, inside the `SessionLayer`. A
//!   page asked for without a login is sent to the login page with the page in a
//!   `next` parameter; an API request gets a 401 with a JSON body.
//! - [`LoggedIn`]: the user id, for handlers; without a login it rejects as the
//!   guard does.
//! - [`safe_next`]: checks the `next` a login handler redirects to, so that the
//!   login page is no open redirect.
//! - [`bind_credentials`] and [`Credentials`]: sessions tied to the credentials they
//!   were made with; when a password changes, the sessions made with the old one end
//!   on their next request (the guard checks, in constant time).
//!
//! ```
//! use axum::extract::Query;
//! use axum::response::Redirect;
//! use axum::routing::{get, post};
//! use axum::{Form, Router};
//! use session_core::{Session, SessionError, SessionLayer};
//! use session_login::{safe_next, LoggedIn, RequireLoginLayer};
//! use session_memory::MemoryStore;
//!
//! #[derive(serde::Deserialize)]
//! struct Next {
//!     next: Option<String>,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Credentials {
//!     username: String,
//! }
//!
//! async fn login(
//!     session: Session,
//!     Query(next): Query<Next>,
//!     Form(credentials): Form<Credentials>,
//! ) -> Result<Redirect, SessionError> {
//!     // … check the password …
//!     session.login(credentials.username).await?;
//!     let next = next.next.as_deref().and_then(safe_next).unwrap_or("/");
//!     Ok(Redirect::to(next))
//! }
//!
//! async fn reports(LoggedIn(user): LoggedIn) -> String {
//!     format!("{user}'s reports")
//! }
//!
//! let app: Router = Router::new()
//!     .route("/reports", get(reports))
//!     .route_layer(RequireLoginLayer::new("/login").with_api_prefix("/api/"))
//!     .route("/login", post(login))
//!     .layer(SessionLayer::new(MemoryStore::new()));
//! # let _ = app;
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `axum` | yes | [`LoggedIn`] as an axum extractor |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod credentials;
mod guard;
mod logged_in;
mod next;

pub use credentials::{bind_credentials, credentials_hold, Credentials};
pub use guard::{RequireLogin, RequireLoginLayer, ResponseFuture};
pub use logged_in::LoggedIn;
pub use next::{login_url, safe_next};
