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

mod backend;
mod client;
mod data;
mod error;
mod expiry;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod id;
mod invalidation;
mod layer;
mod login;
mod on_store_error;
mod record;
mod service;
mod session;
mod session_store;
mod storable;
mod transport;

pub use error::{ConfigError, SessionError, StoreError, StoreErrorKind};
pub use expiry::{Expiry, Timestamp};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::MissingSessionLayer;
pub use future::ResponseFuture;
pub use id::SessionKey;
pub use layer::{SessionLayer, SessionLayerBuilder};
pub use login::LoginData;
pub use on_store_error::{DefaultOnStoreError, OnStoreError};
pub use record::Meta;
pub use service::SessionService;
pub use session::Session;
pub use session_store::{SessionStore, UserSession};
pub use storable::Refusal;

/// The `cookie` crate, whose [`SameSite`](cookie::SameSite) and [`Key`](cookie::Key)
/// appear in the builder.
pub use cookie;
/// The `serde_json` crate, whose `Value` sessions hold.
pub use serde_json;

pub mod store {
    //! What a store author needs: the [`SessionStore`] trait and the types of its
    //! methods, the client-side [`ClientStore`] trait, and the invalidation protocol
    //! that keeps in-process copies coherent across servers.
    //!
    //! # Writing a store
    //!
    //! A store is a type that implements [`SessionStore`] with `#[async_trait]`
    //! (re-exported here). The layer hands it [`SessionKey`]s (hashes of the ids
    //! clients hold: never store or log anything else as the session's name),
    //! [`Record`]s to create, [`Changes`] to apply, and asks it to list and end a
    //! user's sessions. The trait's documentation is the contract; in short:
    //!
    //! 1. **Changes, not snapshots.** `save` applies one request's changes on top of
    //!    whatever other requests wrote, atomically; `update` is a compare-and-set (or
    //!    a lock) on one field, never lost under concurrency.
    //! 2. **Create is not update.** `create` never overwrites a live record
    //!    ([`Created::Collision`]), and `save`, `save_unloaded`, `update` and `touch`
    //!    never create one ([`Saved::Missing`], [`Updated::Missing`]): a session ended
    //!    by one request is not brought back by another's stale write.
    //! 3. **Expiry is the store's.** A record past [`Meta::expires_at`] is never
    //!    returned, and is removed eventually without a request (a TTL, a sweep).
    //! 4. **Users can be found**: `user_sessions` and `delete_user_sessions` by
    //!    [`Meta::user_id`].
    //! 5. **Errors are values**: [`StoreError`] with a [`StoreErrorKind`] and the
    //!    driver's error as its source; a record that does not decode is absent, not
    //!    an error that would fail every request of that session.
    //!
    //! `save_unloaded` and `load_without_waiting` have defaults; override them when
    //! the store can save without reading in one round trip, or answer from memory.
    //!
    //! # Checking a store
    //!
    //! The `session-testkit` crate holds the contract as tests. In a test file of the
    //! store's crate, with a Tokio runtime:
    //!
    //! ```text
    //! session_testkit::conformance_tests!(MyStore::connect(URL).await.unwrap());
    //! ```
    //!
    //! runs every rule of the contract, each as a test of its own, against a fresh
    //! store from the expression per test (evaluated inside the test's async body). A store that talks to a server
    //! should run them against the real server, with a key prefix or table of its own
    //! per test.
    //!
    //! # Invalidations
    //!
    //! A central store that other servers cache in process (a tiered store) may
    //! publish an [`Invalidation`] inside each write, in the same atomic step, on the
    //! channel an [`InvalidationChannel`] subscribes to; or a tiered store publishes
    //! them itself through the channel.
    //!
    //! ```
    //! use session_core::store::{
    //!     async_trait, Changes, Created, Meta, Record, Saved, SessionKey, SessionStore,
    //!     StoreError, UpdateFn, Updated, UserSession,
    //! };
    //! use std::collections::HashMap;
    //! use std::sync::Mutex;
    //!
    //! /// A toy store: one lock around a map (the memory store shards it, and expires
    //! /// records without requests).
    //! #[derive(Default)]
    //! struct MapStore(Mutex<HashMap<SessionKey, Record>>);
    //!
    //! impl MapStore {
    //!     fn live(&self, key: &SessionKey) -> Option<Record> {
    //!         let map = self.0.lock().unwrap();
    //!         let now = session_core::Timestamp::now();
    //!         map.get(key).filter(|r| !r.meta.is_expired(now)).cloned()
    //!     }
    //! }
    //!
    //! #[async_trait]
    //! impl SessionStore for MapStore {
    //!     async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
    //!         Ok(self.live(key))
    //!     }
    //!     async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
    //!         if self.live(key).is_some() {
    //!             return Ok(Created::Collision);
    //!         }
    //!         self.0.lock().unwrap().insert(*key, record.clone());
    //!         Ok(Created::Written)
    //!     }
    //!     async fn save(&self, key: &SessionKey, changes: &Changes, meta: &Meta) -> Result<Saved, StoreError> {
    //!         if self.live(key).is_none() {
    //!             return Ok(Saved::Missing);
    //!         }
    //!         let mut map = self.0.lock().unwrap();
    //!         let record = map.get_mut(key).expect("live");
    //!         changes.apply_to(&mut record.data);
    //!         record.meta = meta.clone();
    //!         Ok(Saved::Applied)
    //!     }
    //!     async fn update(
    //!         &self, key: &SessionKey, field: &str, f: &UpdateFn<'_>, meta: &Meta,
    //!     ) -> Result<Updated, StoreError> {
    //!         if self.live(key).is_none() {
    //!             return Ok(Updated::Missing);
    //!         }
    //!         let mut map = self.0.lock().unwrap();
    //!         let record = map.get_mut(key).expect("live");
    //!         let Some(new) = f(record.data.get(field)) else {
    //!             return Ok(Updated::Kept(record.data.get(field).cloned()));
    //!         };
    //!         record.data.insert(field.to_owned(), new.clone());
    //!         record.meta = meta.clone();
    //!         Ok(Updated::Stored(new))
    //!     }
    //!     async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
    //!         if self.live(key).is_none() {
    //!             return Ok(Saved::Missing);
    //!         }
    //!         let mut map = self.0.lock().unwrap();
    //!         map.get_mut(key).expect("live").meta.expires_at = meta.expires_at;
    //!         Ok(Saved::Applied)
    //!     }
    //!     async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
    //!         self.0.lock().unwrap().remove(key);
    //!         Ok(())
    //!     }
    //!     async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
    //!         let now = session_core::Timestamp::now();
    //!         let map = self.0.lock().unwrap();
    //!         Ok(map
    //!             .iter()
    //!             .filter(|(_, r)| r.meta.user_id.as_deref() == Some(user_id) && !r.meta.is_expired(now))
    //!             .map(|(key, r)| UserSession { key: *key, meta: r.meta.clone() })
    //!             .collect())
    //!     }
    //!     async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
    //!         let mut map = self.0.lock().unwrap();
    //!         let before = map.len();
    //!         map.retain(|_, r| r.meta.user_id.as_deref() != Some(user_id));
    //!         Ok(before - map.len())
    //!     }
    //! }
    //!
    //! let layer = session_core::SessionLayer::new(MapStore::default());
    //! # let _ = layer;
    //! ```

    pub use crate::backend::Backend;
    pub use crate::client::{ClientStore, Opened};
    pub use crate::data::Data;
    pub use crate::error::{BoxError, StoreError, StoreErrorKind};
    pub use crate::expiry::{Refresh, Timestamp};
    pub use crate::id::{KeyHash, KeyHasher, SessionId, SessionKey};
    pub use crate::invalidation::{
        own_topic, Heard, Invalidation, InvalidationChannel, Subscription,
    };
    pub use crate::login::LoginOrder;
    pub use crate::record::{Changes, Meta, Record};
    pub use crate::session_store::{
        save_unloaded_by_loading, Created, Saved, SessionStore, UpdateFn, Updated, UserSession,
        USER_SESSIONS_LIMIT,
    };
    /// The `async_trait` macro that [`SessionStore`] implementations need.
    pub use async_trait::async_trait;
}
