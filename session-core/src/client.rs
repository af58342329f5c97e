//! Sessions kept by the client: the [`ClientStore`] trait, which seals each session
//! into the client's cookie, the plaintext it seals, and the sessions opened
//! recently.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::data::Data;
use crate::error::{StoreError, StoreErrorKind};
use crate::id::SessionId;
use crate::login::LoginOrder;
use crate::record::{Meta, Record};

/// A store that keeps no session on the server: the layer serialises each session
/// (its data, its times, its user and a random id) and the store seals it into the
/// cookie value; the next request's cookie is opened again.
///
/// The layer owns the plaintext format and the size limit; the store owns the
/// cryptography. Implement it only for a new sealing scheme: the `session-cookie`
/// crate's `CookieStore` is the one to use.
///
/// Client-side sessions cannot be ended by deleting a record. A store that
/// [`revokes_users`](Self::revokes_users) keeps, per user, a place in the order of
/// the user's logins ([`LoginOrder`]) before which that user's sessions are refused:
/// it makes "log out everywhere" and a cap of one session per user work.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    /// Seals `plaintext` into a cookie value for the cookie (or header) named `name`.
    /// The value must be made of cookie-safe characters.
    fn seal(&self, name: &str, plaintext: &[u8]) -> String;

    /// Opens a value sealed for `name`. Anything this store did not seal for that
    /// name, with a key it still holds, is `None`.
    fn open(&self, name: &str, sealed: &str) -> Option<Opened>;

    /// How many opened sessions the layer keeps, by their sealed value, so that a
    /// cookie that comes back unchanged is not opened and decoded again. None by
    /// default.
    fn open_cache_entries(&self) -> usize {
        0
    }

    /// Whether [`revoke_user`](Self::revoke_user) works.
    fn revokes_users(&self) -> bool {
        false
    }

    /// The place in the order of logins before which sessions of `user_id` are
    /// refused, if any.
    async fn revoked_before(&self, user_id: &str) -> Result<Option<LoginOrder>, StoreError> {
        let _ = user_id;
        Ok(None)
    }

    /// Refuses, from now on, every session of `user_id` before `before` in the order
    /// of logins; never moves the user's revocation back.
    async fn revoke_user(&self, user_id: &str, before: LoginOrder) -> Result<(), StoreError> {
        let _ = (user_id, before);
        Err(StoreError::new(
            StoreErrorKind::Other,
            "this client-side store cannot revoke users",
        ))
    }
}

/// What [`ClientStore::open`] found in a cookie.
#[derive(Clone)]
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

/// A client-side store and the sessions it opened recently.
pub(crate) struct ClientSide {
    pub(crate) store: Box<dyn ClientStore>,
    opened: OpenCache,
}

impl ClientSide {
    pub(crate) fn new(store: impl ClientStore) -> Self {
        let opened = OpenCache::new(store.open_cache_entries());
        Self {
            store: Box::new(store),
            opened,
        }
    }
}

impl ClientSide {
    /// Seals a session for the cookie (or header) `name`, and remembers it as opened:
    /// the client's next request carries this value.
    pub(crate) fn seal(&self, name: &str, id: &SessionId, meta: &Meta, data: &Data) -> String {
        let value = self.store.seal(name, &encode(id, meta, data));
        let record = Record {
            data: data.clone(),
            meta: meta.clone(),
        };
        self.opened.insert(&value, &(id.clone(), record, false));
        value
    }

    /// The first of a request's sealed values that opens and decodes, as its id, its
    /// record and whether it must be sealed again.
    pub(crate) fn open_first(
        &self,
        name: &str,
        values: &[String],
    ) -> Option<(SessionId, Record, bool)> {
        values.iter().find_map(|value| {
            if let Some(opened) = self.opened.get(value) {
                return Some(opened);
            }
            let opened = self.store.open(name, value)?;
            let (id, record) = decode(&opened.plaintext)?;
            let session = (id, record, opened.stale);
            self.opened.insert(value, &session);
            Some(session)
        })
    }
}

/// Opened sessions by sealed value: bounded and sharded; a full shard drops an
/// arbitrary entry. A value is found only by itself, compared in constant time: the
/// sealed value is the client's credential.
struct OpenCache {
    shards: Box<[Mutex<HashMap<u64, Cached>>]>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

struct Cached {
    value: Box<str>,
    id: SessionId,
    record: Record,
    stale: bool,
}

const SHARDS: usize = 16;

impl OpenCache {
    fn new(entries: usize) -> Self {
        let shards = if entries == 0 { 0 } else { SHARDS };
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard: entries.div_ceil(SHARDS),
            hasher: Default::default(),
        }
    }

    fn shard(&self, hash: u64) -> Option<&Mutex<HashMap<u64, Cached>>> {
        (!self.shards.is_empty()).then(|| &self.shards[hash as usize % self.shards.len()])
    }

    fn get(&self, value: &str) -> Option<(SessionId, Record, bool)> {
        let hash = self.hasher.hash_one(value);
        let shard = self.shard(hash)?.lock().unwrap_or_else(|e| e.into_inner());
        let cached = shard.get(&hash)?;
        let same = cached.value.len() == value.len()
            && bool::from(cached.value.as_bytes().ct_eq(value.as_bytes()));
        same.then(|| (cached.id.clone(), cached.record.clone(), cached.stale))
    }

    fn insert(&self, value: &str, (id, record, stale): &(SessionId, Record, bool)) {
        let hash = self.hasher.hash_one(value);
        let Some(shard) = self.shard(hash) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard {
            // Any entry will do: a cache miss costs one open, not correctness.
            if let Some(&victim) = shard.keys().next() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            hash,
            Cached {
                value: value.into(),
                id: id.clone(),
                record: record.clone(),
                stale: *stale,
            },
        );
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
    use crate::expiry::Timestamp;

    #[test]
    fn the_open_cache_finds_only_the_same_value_and_stays_bounded() {
        let session = (
            SessionId::generate(),
            Record {
                data: Data::new(),
                meta: Meta::new(Timestamp::now(), Timestamp::now()),
            },
            false,
        );
        let cache = OpenCache::new(32);
        cache.insert("sealed-value", &session);
        assert!(cache
            .get("sealed-value")
            .is_some_and(|found| found.0 == session.0));
        assert!(cache.get("sealed-valuf").is_none());
        assert!(cache.get("sealed-value-").is_none());
        for i in 0..1000 {
            cache.insert(&format!("value-{i}"), &session);
        }
        let held: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= 32, "{held} entries held");
        let off = OpenCache::new(0);
        off.insert("sealed-value", &session);
        assert!(off.get("sealed-value").is_none());
    }

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
