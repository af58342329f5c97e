//! The contract between the layer and a storage backend.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::StoreError;
use crate::id::SessionKey;
use crate::record::{Changes, Meta, Record, Timestamp};

/// How [`SessionStore::update`] computes a field's new value from its current one:
/// `None` in means the field is absent; `None` out leaves it as it is. It may be called
/// more than once, so it must not have side effects.
pub type UpdateFn<'a> = dyn Fn(Option<&Value>) -> Option<Value> + Send + Sync + 'a;

/// The outcome of [`SessionStore::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The record was written.
    Created,
    /// A live record already has this key; nothing was written.
    Collision,
}

/// The outcome of a write to an existing session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The write was applied.
    Saved,
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

/// When a load should also push a session's expiry back: the layer's rule, handed to
/// stores that can apply it in the same round trip as the load.
///
/// ```
/// use std::time::Duration;
/// use session_core::{Meta, Refresh, Timestamp};
///
/// let now = Timestamp::from_unix_millis(1_000_000_000);
/// let refresh = Refresh { now, idle_timeout: Duration::from_secs(1800) };
/// // Expires in 25 minutes: pushing it to 30 would gain less than a quarter of 30.
/// let fresh = Meta::new(now, now.saturating_add(Duration::from_secs(25 * 60)));
/// assert_eq!(refresh.due(&fresh), None);
/// // Expires in 20 minutes: push it to 30.
/// let stale = Meta::new(now, now.saturating_add(Duration::from_secs(20 * 60)));
/// assert_eq!(refresh.due(&stale), Some(now.saturating_add(Duration::from_secs(1800))));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The time of the request.
    pub now: Timestamp,
    /// The idle timeout of sessions whose metadata sets none.
    pub idle_timeout: Duration,
}

impl Refresh {
    /// The session's idle timeout: its own, or the layer's.
    pub fn idle_timeout_of(&self, meta: &Meta) -> Duration {
        meta.expiry.map_or(self.idle_timeout, |e| e.idle_timeout())
    }

    /// When a session written now expires: after its idle timeout, but never past its
    /// absolute deadline.
    pub fn expires_at(&self, meta: &Meta) -> Timestamp {
        let idle_end = self.now.saturating_add(self.idle_timeout_of(meta));
        meta.deadline
            .map_or(idle_end, |deadline| idle_end.min(deadline))
    }

    /// The expiry to push `meta` to, if pushing is due: only when it would gain at
    /// least a quarter of the idle timeout, so that most reads write nothing.
    pub fn due(&self, meta: &Meta) -> Option<Timestamp> {
        let target = self.expires_at(meta);
        let gain = target.saturating_since(meta.expires_at);
        (gain >= self.idle_timeout_of(meta) / 4).then_some(target)
    }
}

/// A record as [`SessionStore::load_refreshed`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The record, with its expiry as it is now in the store.
    pub record: Record,
    /// Whether the load also pushed the expiry back.
    pub refreshed: bool,
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

    /// Loads the live record under `key` and, when [`Refresh::due`] says so, pushes its
    /// expiry back in the same step (the user index following, like `touch`). This is
    /// what the layer calls. The default only loads, and the layer then pushes the
    /// expiry with [`touch`](Self::touch) when the request ends; a store that can do
    /// both in one round trip overrides it.
    async fn load_refreshed(
        &self,
        key: &SessionKey,
        refresh: &Refresh,
    ) -> Result<Option<Loaded>, StoreError> {
        let _ = refresh;
        Ok(self.load(key).await?.map(|record| Loaded {
            record,
            refreshed: false,
        }))
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

    /// The live sessions bound to `user_id`.
    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError>;

    /// Deletes every session bound to `user_id`, returning how many there were.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError>;
}

#[async_trait]
impl<S: SessionStore + ?Sized> SessionStore for Arc<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }

    async fn load_refreshed(
        &self,
        key: &SessionKey,
        refresh: &Refresh,
    ) -> Result<Option<Loaded>, StoreError> {
        (**self).load_refreshed(key, refresh).await
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
