//! The contract between the layer and a storage backend.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::StoreError;
use crate::expiry::{Refresh, Timestamp};
use crate::id::SessionKey;
use crate::record::{Changes, Meta, Record};

/// How [`SessionStore::update`] computes a field's new value from its current one:
/// `None` in means the field is absent; `None` out leaves it as it is. It may be called
/// more than once, so it must not have side effects.
pub type UpdateFn<'a> = dyn Fn(Option<&Value>) -> Option<Value> + Send + Sync + 'a;

/// The most sessions [`SessionStore::user_sessions`] lists: a "your devices" page
/// needs far fewer, and the cap of sessions per user may not exceed it.
pub const USER_SESSIONS_LIMIT: usize = 1000;

/// The outcome of [`SessionStore::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The record was written.
    Written,
    /// A live record already has this key; nothing was written.
    Collision,
}

/// The outcome of a write to an existing session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The write was applied.
    Applied,
    /// The session does not exist (deleted, expired, or never created); nothing was
    /// written, and in particular the session was not re-created.
    Missing,
}

/// The outcome of [`SessionStore::update`].
#[derive(Clone, Debug, PartialEq)]
pub enum Updated {
    /// The function's value was stored.
    Stored(Value),
    /// The function declined to change the field, whose current value this is.
    Kept(Option<Value>),
    /// The session does not exist; nothing was written.
    Missing,
}

/// One session of a user, as the user index lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSession {
    /// The session's key.
    pub key: SessionKey,
    /// Its metadata (creation and expiry times, among others).
    pub meta: Meta,
}

/// A place to keep sessions: the contract every backend keeps.
///
/// Stores see [`SessionKey`]s, hashes of the ids clients hold, never the ids.
///
/// - **Changes, not snapshots.** [`save`](Self::save) applies what one request changed,
///   atomically, on top of whatever other requests wrote: requests that change
///   different keys of one session all survive; on the same key the later write wins.
/// - **Create is not update.** [`create`](Self::create) never overwrites a live record,
///   and `save`, `update` and `touch` never create one, so a session deleted by one
///   request or server is never brought back by another's stale write.
/// - **Expiry is the store's.** A record whose `meta.expires_at` has passed is never
///   returned and is eventually removed without any request asking for it.
/// - **Users can be found.** Records whose `meta.user_id` is set are listed by
///   [`user_sessions`](Self::user_sessions) and ended by
///   [`delete_user_sessions`](Self::delete_user_sessions).
/// - **Errors are values.** A store that is down, slow or returns garbage gives a
///   [`StoreError`], never a panic.
///
/// The `session-testkit` crate checks all of this against a store with one macro call.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The live record under `key`, if any.
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError>;

    /// What [`load`](Self::load) would return, if the store can tell without waiting
    /// for anything (it holds the session in memory); `None` sends the caller to
    /// `load`. `now` is the time of the request, which the store judges expiry by
    /// instead of reading the clock again.
    ///
    /// The layer asks it first: a store that answers from memory saves each read the
    /// allocation and polling of `load`'s future. The default answers `None`.
    fn load_without_waiting(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Option<Result<Option<Record>, StoreError>> {
        let _ = (key, now);
        None
    }

    /// Writes a new record under `key`, unless a live one is there already.
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError>;

    /// Applies `changes` to the live record under `key` and replaces its metadata with
    /// `meta`, atomically.
    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError>;

    /// Applies `changes` to the live record under `key` that the caller has not
    /// loaded, restarting its idle timeout by `refresh` ([`Refresh::expires_at`] of the
    /// stored metadata), atomically; the rest of the metadata stays. Returns the
    /// metadata as it was before, or `None` if no record is live at `refresh.now`
    /// ([`Refresh::is_live`]): then nothing is written.
    ///
    /// The layer calls it for a request that changed its session without reading it,
    /// so that the write is the request's only store call. The default loads and
    /// saves (two calls, not atomic between them, as a layer that loads first would
    /// be); a store overrides it to do it in one round trip.
    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        save_unloaded_by_loading(self, key, changes, refresh).await
    }

    /// Atomically replaces `field` of the live record under `key` with what `f`
    /// computes from its current value, and sets the record's metadata to `meta` if
    /// it does; concurrent updates of one field are never lost.
    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError>;

    /// Moves the expiry of the live record under `key` to `meta.expires_at`, and
    /// nothing else; the rest of `meta` (its user, say) is there for stores whose
    /// indexes must follow the expiry.
    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError>;

    /// Deletes the record under `key`, if there is one.
    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// The live sessions bound to `user_id`: at most [`USER_SESSIONS_LIMIT`], those
    /// that expire last (the most recently active), so that a user with many
    /// sessions never makes a request that grows without bound.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError>;

    /// Deletes every session bound to `user_id`, however many, returning how many
    /// there were. Bounded in round trips (a store does it in batches, or in the
    /// server), and final against logins racing it: once it returns, no session
    /// of the user created before it began is alive.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError>;
}

/// What [`SessionStore::save_unloaded`] does by default: [`load`](SessionStore::load),
/// then [`save`](SessionStore::save) with the expiry restarted. For a store that does
/// it in one round trip only in some configurations, to fall back on.
pub async fn save_unloaded_by_loading<S: SessionStore + ?Sized>(
    store: &S,
    key: &SessionKey,
    changes: &Changes,
    refresh: &Refresh,
) -> Result<Option<Meta>, StoreError> {
    let Some(record) = store.load(key).await? else {
        return Ok(None);
    };
    if !refresh.is_live(&record.meta) {
        return Ok(None);
    }
    let previous = record.meta;
    let meta = Meta {
        expires_at: refresh.expires_at(&previous),
        ..previous.clone()
    };
    Ok(match store.save(key, changes, &meta).await? {
        Saved::Applied => Some(previous),
        Saved::Missing => None,
    })
}

/// A shared store is a store: an application can keep its store in an `Arc` (one
/// picked from configuration, say, as `Arc<dyn SessionStore>`) and give the layer a
/// clone.
#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }

    fn load_without_waiting(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Option<Result<Option<Record>, StoreError>> {
        (**self).load_without_waiting(key, now)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        (**self).create(key, record).await
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        (**self).save(key, changes, meta).await
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        (**self).save_unloaded(key, changes, refresh).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        (**self).update(key, field, f, meta).await
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        (**self).touch(key, meta).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        (**self).delete(key).await
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        (**self).user_sessions(user_id).await
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        (**self).delete_user_sessions(user_id).await
    }
}
