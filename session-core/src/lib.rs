//! The core of session-kit: the [`Session`] type, the [`SessionStore`] trait and the
//! tower [`SessionLayer`]. It knows no backend; a store is written against this crate
//! alone, and checked with the `session-testkit` crate.
//!
//! Applications usually depend on the `session-kit` facade, which re-exports all of
//! this together with the stores.
//!
//! # One request
//!
//! 1. The layer reads the session id from the cookie (or header). A missing, malformed
//!    or badly signed id gives the request a fresh, empty session. Nothing is written
//!    anywhere for a visitor whose session stays empty.
//! 2. The handler gets a [`Session`]. The store is asked only when the handler first
//!    reads it: a route that never touches the session costs no store round trip, and
//!    one that only writes costs one, the write
//!    ([`SessionStore::save_unloaded`]).
//! 3. After the handler the layer does the least that keeps the store right: changed →
//!    save the changes (not a snapshot); destroyed → delete, and expire the cookie; id
//!    cycled → store under the new id, delete the old; untouched → push the idle
//!    timeout back, but only once a quarter of it has passed. These writes run to
//!    the end even if the response is dropped first (a client that closed its
//!    connection): what cannot finish at once finishes in a task of its own, so a
//!    logout is never cancelled halfway.
//! 4. `Set-Cookie` is sent only when the cookie must change, with
//!    `Cache-Control: no-store`.
//!
//! ```
//! use http::{header, Request, Response};
//! use session_core::{Session, SessionLayer};
//! use session_memory::MemoryStore;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Any tower service works; with axum, `Session` is an extractor.
//! let app = SessionLayer::new(MemoryStore::new()).layer(service_fn(
//!     |request: Request<String>| async move {
//!         let session = request.extensions().get::<Session>().unwrap().clone();
//!         let visits = session.update("visits", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
//!         Ok::<_, session_core::SessionError>(Response::new(format!("visit {visits}")))
//!     },
//! ));
//!
//! let response = app.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(response.body(), "visit 1");
//! let cookie = response.headers()[header::SET_COOKIE].to_str()?;
//! assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
//!
//! let (pair, _) = cookie.split_once(';').unwrap();
//! let again = Request::builder().header(header::COOKIE, pair).body(String::new())?;
//! let response = app.oneshot(again).await?;
//! assert_eq!(response.body(), "visit 2");
//! assert!(response.headers().get(header::SET_COOKIE).is_none());
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Concurrent requests** of one session that change different keys all keep their
//!   changes; [`Session::update`] is atomic in the store.
//! - **A session ended elsewhere stays ended**: a slow request that saves after a
//!   logout or an id change writes nothing.
//! - **Store failures are not "no session"**: a failing or slow store (see
//!   [`SessionLayerBuilder::with_store_timeout`]) gives the error policy's response,
//!   by default 503 with `Retry-After`, and the client's cookie is left alone.
//! - **Ids** carry 192 random bits from the OS; stores see only a hash of them; they
//!   never appear in `Debug` output or logs.
//!
//! # Features
//!
//! | feature | what it adds |
//! | --- | --- |
//! | `axum` | `Session` and `Option<Session>` as axum extractors |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod deadline;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod id;
mod layer;
mod on_store_error;
mod record;
mod service;
mod session;
mod store;
mod transport;

pub use client::{Backend, ClientStore, Opened};
pub use error::{BoxError, ConfigError, SessionError, StoreError, StoreErrorKind};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::MissingSessionLayer;
pub use future::ResponseFuture;
pub use id::{KeyHasher, SessionId, SessionKey};
pub use layer::{SessionLayer, SessionLayerBuilder};
pub use on_store_error::{DefaultOnStoreError, OnStoreError};
pub use record::{Changes, Data, Expiry, Meta, Record, Refresh, Timestamp};
pub use service::SessionService;
pub use session::Session;
pub use store::{
    save_unloaded_by_loading, Created, Saved, SessionStore, UpdateFn, Updated, UserSession,
};

/// The `async_trait` macro that [`SessionStore`] implementations need.
pub use async_trait::async_trait;
/// The `cookie` crate, whose [`SameSite`](cookie::SameSite) and [`Key`](cookie::Key)
/// appear in the builder.
pub use cookie;
/// The `serde_json` crate, whose `Value` sessions hold.
pub use serde_json;
