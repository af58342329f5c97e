//! Client-side sessions for session-kit: [`CookieStore`] keeps the whole session in
//! the client's cookie, encrypted and authenticated, so that no server keeps
//! anything and any server can serve any request.
//!
//! Handlers do not change: the layer takes a `CookieStore` where it takes any other
//! store, and `Session` works as with a server-side store, with the differences
//! listed below.
//!
//! ```
//! use http::{header, Request, Response};
//! use session_cookie::{CookieStore, Key};
//! use session_core::{Session, SessionLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // In production the key comes from configuration: `head -c 32 /dev/urandom | base64`.
//! let store = CookieStore::new(Key::generate());
//! let app = SessionLayer::new(store).layer(service_fn(|request: Request<String>| async move {
//!     let session = request.extensions().get::<Session>().unwrap().clone();
//!     let visits = session.update("visits", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
//!     Ok::<_, session_core::SessionError>(Response::new(format!("visit {visits}")))
//! }));
//!
//! let response = app.clone().oneshot(Request::new(String::new())).await?;
//! let cookie = response.headers()[header::SET_COOKIE].to_str()?;
//! let (pair, _) = cookie.split_once(';').unwrap();
//! assert!(!pair.contains("visits"), "the cookie is encrypted");
//!
//! let again = Request::builder().header(header::COOKIE, pair).body(String::new())?;
//! assert_eq!(app.oneshot(again).await?.body(), "visit 2");
//! # Ok(()) }
//! ```
//!
//! # The cookie
//!
//! The value is a versioned envelope sealed with XChaCha20-Poly1305: a version byte,
//! a flags byte, the id of the key that sealed it, a random 192-bit nonce, then the
//! ciphertext and its tag. The envelope's header and the cookie's name are bound as
//! associated data, so a value moved to another cookie (or changed in any byte) is
//! refused. Inside the ciphertext are the session's data, a random session id, its
//! user, and its expiry and creation times: idle and absolute timeouts hold without
//! any server state, and a captured cookie stops working when they pass.
//!
//! A cookie that does not open, for any reason (tampered, forged, another format, a
//! key no longer in the ring), is treated like an unknown session id: the request
//! gets a fresh session. There is no fallback to reading an unsealed value.
//!
//! # Keys and rotation
//!
//! The store seals under its current key and opens with that key and any old keys
//! ([`CookieStore::with_old_key`]). A cookie sealed under an old key is sealed again
//! under the current one on the response to its next request. Rotation in three
//! phases: deploy the new key as an old key everywhere (it opens but does not seal
//! yet); make it current, the former key old; once every session sealed under the
//! former key has expired or been re-sealed, remove it, and whatever it sealed stops
//! opening.
//!
//! # Size
//!
//! A browser keeps at most 4096 bytes of a cookie, counting its name, value and
//! attributes. A session that would make the cookie longer is not sent: the layer's
//! error policy answers with a [`StoreErrorKind::TooLarge`](session_core::StoreErrorKind)
//! error, by default a 500, and the client keeps the cookie it had, so nothing it
//! held is lost. To measure a session: the value is the base64 of
//! `46 + 80 + u + d` bytes, where `u` is the user id's length and `d` the length of
//! the data as JSON (`serde_json::to_vec(&value)?.len()` for each value, plus its key
//! and 6 bytes of punctuation), about `4/3 × (126 + u + d)`; the default attributes
//! (`Path=/; Secure; HttpOnly; SameSite=Lax`) add about 45. That leaves room for
//! about 2,900 bytes of JSON. [`CookieStore::with_compression`] deflates larger
//! sessions first, which helps repetitive data. Compressing secrets next to data an
//! attacker chooses can leak them through the cookie's length, so it is off by
//! default.
//!
//! # What a client-side store cannot do
//!
//! - **Revoke a single cookie.** Logging out sends a removal cookie, but a copy of the
//!   old cookie taken earlier keeps working until it expires. With
//!   [`CookieStore::with_user_epochs`], the store keeps per user the time before which
//!   that user's sessions are refused, in any `SessionStore`: "log out everywhere"
//!   and a cap of one session per user then work, at the price of one store read per
//!   request of a logged-in user.
//! - **Be atomic across concurrent requests.** Each request carries the same old
//!   cookie and the last response wins: `Session::update` computes on the request's
//!   copy, and of two concurrent requests that change the session, one change is lost.
//!   Keep counters and anything written concurrently in a server-side store.
//! - **List a user's sessions.** `Session::user_sessions` lists only the current one.
//! - **Carry much.** Every request sends the whole cookie.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod envelope;
mod epochs;
mod key;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::store::{Backend, ClientStore, LoginOrder, Opened};
use session_core::{SessionStore, StoreError};

use crate::envelope::Compression;
use crate::epochs::UserEpochs;
pub use crate::key::{Key, KeyError, MIN_KEY_BYTES};

/// Sessions sealed into the client's cookie; see the [crate docs](crate).
///
/// ```
/// use std::time::Duration;
/// use session_cookie::{CookieStore, Key};
/// use session_memory::MemoryStore;
///
/// # let (current, previous) = (Key::generate(), Key::generate());
/// let store = CookieStore::new(current)
///     .with_old_key(previous)
///     .with_compression(1024)
///     .with_user_epochs(MemoryStore::new(), Duration::from_secs(30 * 24 * 3600));
/// let layer = session_core::SessionLayer::new(store);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CookieStore {
    /// The current key first, then the old ones.
    keys: Vec<Key>,
    compression: Compression,
    epochs: Option<UserEpochs>,
    open_cache_entries: usize,
}

/// Opened sessions a layer keeps by default (see [`CookieStore::with_open_cache`]).
pub const DEFAULT_OPEN_CACHE_ENTRIES: usize = 10_000;

impl CookieStore {
    /// A store that seals and opens with `key`.
    pub fn new(key: Key) -> Self {
        Self {
            keys: vec![key],
            compression: Compression { threshold: None },
            epochs: None,
            open_cache_entries: DEFAULT_OPEN_CACHE_ENTRIES,
        }
    }

    /// How many opened sessions the layer keeps, by their sealed value, so that a
    /// cookie that comes back unchanged (most requests only read) is neither
    /// decrypted nor decoded again: default 10,000, about 3 MB for small sessions;
    /// 0 turns it off. It is a cache, not state: expiry and epochs are checked on
    /// every request as without it, and a value is found only by itself.
    pub fn with_open_cache(mut self, entries: usize) -> Self {
        self.open_cache_entries = entries;
        self
    }

    /// Also opens cookies sealed under `key`, and seals them again under the current
    /// key when they come back.
    pub fn with_old_key(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Deflates sessions whose plaintext is at least `threshold` bytes before sealing
    /// them, when that makes them smaller. Off by default: see the crate docs on
    /// length leaks.
    pub fn with_compression(mut self, threshold: usize) -> Self {
        self.compression.threshold = Some(threshold);
        self
    }

    /// Keeps per-user epochs in `store` (any session store; Redis or SQL when several
    /// servers share them): sessions of a user created before the user's epoch are
    /// refused. "Log out everywhere" sets the epoch to now; a layer with
    /// `with_max_sessions_per_user(1)` sets it at every login. A login reads the
    /// epoch and starts its session no earlier, so that logging in again at once, or
    /// on a server whose clock is behind the one that revoked, holds.
    ///
    /// `retention` is how long an epoch is kept: at least the longest idle timeout any
    /// session gets, since a session that was not refreshed after the epoch expires
    /// within that time. Every request of a logged-in user reads its epoch: one store
    /// round trip.
    pub fn with_user_epochs(mut self, store: impl SessionStore, retention: Duration) -> Self {
        self.epochs = Some(UserEpochs::new(Arc::new(store), retention));
        self
    }
}

#[async_trait]
impl ClientStore for CookieStore {
    fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        envelope::seal(&self.keys[0], name, plaintext, self.compression)
    }

    fn open(&self, name: &str, sealed: &str) -> Option<Opened> {
        let (plaintext, key_index) = envelope::open(&self.keys, name, sealed)?;
        Some(Opened {
            plaintext,
            stale: key_index != 0,
        })
    }

    fn open_cache_entries(&self) -> usize {
        self.open_cache_entries
    }

    fn revokes_users(&self) -> bool {
        self.epochs.is_some()
    }

    async fn revoked_before(&self, user_id: &str) -> Result<Option<LoginOrder>, StoreError> {
        match &self.epochs {
            Some(epochs) => epochs.revoked_before(user_id).await,
            None => Ok(None),
        }
    }

    async fn revoke_user(&self, user_id: &str, before: LoginOrder) -> Result<(), StoreError> {
        match &self.epochs {
            Some(epochs) => epochs.revoke(user_id, before).await,
            None => Err(StoreError::new(
                session_core::StoreErrorKind::Other,
                "this CookieStore keeps no user epochs",
            )),
        }
    }
}

impl From<CookieStore> for Backend {
    fn from(store: CookieStore) -> Self {
        Backend::client(store)
    }
}

impl fmt::Debug for CookieStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieStore")
            .field("keys", &self.keys)
            .field("compression", &self.compression.threshold)
            .field("user_epochs", &self.epochs.is_some())
            .field("open_cache_entries", &self.open_cache_entries)
            .finish()
    }
}
