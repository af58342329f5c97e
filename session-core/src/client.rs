//! Where a layer keeps sessions: a [`SessionStore`] on the server, or a
//! [`ClientStore`] that seals each session into the client's cookie.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreErrorKind};
use crate::id::SessionId;
use crate::record::{Data, Meta, Record, Timestamp};
use crate::store::SessionStore;

/// A store that keeps no session on the server: the layer serialises each session
/// (its data, its times, its user and a random id) and the store seals it into the
/// cookie value; the next request's cookie is opened again.
///
/// The layer owns the plaintext format and the size limit; the store owns the
/// cryptography. Implement it only for a new sealing scheme: the `session-cookie`
/// crate's `CookieStore` is the one to use.
///
/// Client-side sessions cannot be ended by deleting a record. A store that
/// [`revokes_users`](Self::revokes_users) keeps, per user, a time before which that
/// user's sessions are refused: it makes "log out everywhere" and a cap of one
/// session per user work.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    /// Seals `plaintext` into a cookie value for the cookie (or header) named `name`.
    /// The value must be made of cookie-safe characters.
    fn seal(&self, name: &str, plaintext: &[u8]) -> String;

    /// Opens a value sealed for `name`. Anything this store did not seal for that
    /// name, with a key it still holds, is `None`.
    fn open(&self, name: &str, sealed: &str) -> Option<Opened>;

    /// Whether [`revoke_user`](Self::revoke_user) works.
    fn revokes_users(&self) -> bool {
        false
    }

    /// The time before which sessions of `user_id` are refused, if any.
    async fn revoked_before(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        let _ = user_id;
        Ok(None)
    }

    /// Refuses, from now on, every session of `user_id` created before `at`.
    async fn revoke_user(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let _ = (user_id, at);
        Err(StoreError::new(
            StoreErrorKind::Other,
            "this client-side store cannot revoke users",
        ))
    }
}

/// What [`ClientStore::open`] found in a cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// What was sealed.
    pub plaintext: Vec<u8>,
    /// Whether it was sealed under a key other than the current one: the layer then
    /// seals it again, under the current key, on this request's response.
    pub stale: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("plaintext_len", &self.plaintext.len())
            .field("stale", &self.stale)
            .finish()
    }
}

/// Where a [`SessionLayer`](crate::SessionLayer) keeps its sessions. Any
/// [`SessionStore`] converts into one; client-side stores provide their own
/// conversion (through [`Backend::client`]).
#[derive(Clone)]
pub struct Backend(pub(crate) Kind);

#[derive(Clone)]
pub(crate) enum Kind {
    Server(Arc<dyn SessionStore>),
    Client(Arc<dyn ClientStore>),
}

impl Backend {
    /// Sessions sealed into the cookie by `store`.
    pub fn client(store: impl ClientStore) -> Self {
        Self(Kind::Client(Arc::new(store)))
    }
}

impl<S: SessionStore> From<S> for Backend {
    fn from(store: S) -> Self {
        Self(Kind::Server(Arc::new(store)))
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Server(_) => "Backend::Server",
            Kind::Client(_) => "Backend::Client",
        })
    }
}

/// The plaintext a client-side store seals: JSON with the session's id, metadata
/// and data.
#[derive(Serialize)]
struct PayloadRef<'a> {
    i: &'a str,
    m: &'a Meta,
    v: &'a Data,
}

#[derive(Deserialize)]
struct Payload {
    i: String,
    m: Meta,
    v: Data,
}

pub(crate) fn encode(id: &SessionId, meta: &Meta, data: &Data) -> Vec<u8> {
    let payload = PayloadRef {
        i: &id.encode(),
        m: meta,
        v: data,
    };
    // Maps with string keys of JSON values always serialise.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The session in a plaintext, if it is one: an authentic cookie of a different
/// version or layout is treated like any other bad cookie.
pub(crate) fn decode(plaintext: &[u8]) -> Option<(SessionId, Record)> {
    let payload: Payload = serde_json::from_slice(plaintext).ok()?;
    let id = SessionId::parse(&payload.i)?;
    Some((
        id,
        Record {
            data: payload.v,
            meta: payload.m,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_rejects_garbage() {
        let id = SessionId::generate();
        let mut meta = Meta::new(Timestamp::now(), Timestamp::now());
        meta.user_id = Some("alice".to_owned());
        let data: Data = [("theme".to_owned(), serde_json::json!("dark"))]
            .into_iter()
            .collect();
        let record = Record { data, meta };
        let (decoded_id, decoded) =
            decode(&encode(&id, &record.meta, &record.data)).expect("decodes");
        assert_eq!(decoded_id, id);
        assert_eq!(decoded, record);
        for garbage in [
            &b""[..],
            b"{}",
            b"null",
            b"{\"i\":\"short\",\"m\":{},\"v\":{}}",
        ] {
            assert!(decode(garbage).is_none());
        }
    }
}
