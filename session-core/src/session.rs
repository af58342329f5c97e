//! The per-request session handle.

use std::cmp::Reverse;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::lock::{Mutex, MutexGuard};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::client::{ClientStore, Kind};
use crate::error::{SessionError, StoreError, StoreErrorKind};
use crate::id::{SessionId, SessionKey};
use crate::layer::Shared;
use crate::record::{Changes, Data, Expiry, Meta, Record, Refresh, Timestamp};
use crate::store::{Created, Saved, SessionStore, Updated, UserSession};
use crate::transport::{IdUpdate, Incoming};

/// Ids drawn before a store that reports only collisions is declared broken. With
/// 192-bit ids a single real collision is already beyond belief.
const CREATE_ATTEMPTS: usize = 3;

/// The session of the current request.
///
/// Handlers get it from the request (the axum extractor, or the request's extensions
/// with plain tower). Clones share one state. Nothing is read from the store until
/// the first method that needs the data, and nothing is written until the response:
/// the layer then saves what changed, and only that.
///
/// Every method that touches the store can fail with [`SessionError::Store`]; the
/// layer then answers with its error policy (by default 503) whatever the handler
/// returns, and writes nothing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), session_core::SessionError> {
/// # let session = session_core::Session::detached(session_memory::MemoryStore::new());
/// // In a handler: `async fn handler(session: Session) { … }`
/// session.insert("theme", "dark").await?;
/// let theme: Option<String> = session.get("theme").await?;
/// assert_eq!(theme.as_deref(), Some("dark"));
///
/// // An atomic read-modify-write in the store: concurrent requests never lose one.
/// let visits = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
/// assert_eq!(visits, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Set by every method, so that the layer skips all work for requests whose
    /// handler never looked at the session.
    used: AtomicBool,
    state: Mutex<State>,
}

/// Whether a record stands behind this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stored {
    /// The client sent an id (or a sealed session), and nobody has asked the store
    /// about it (or opened it) yet.
    Unknown,
    /// No record: a new session, or the client's id named nothing (live).
    Absent,
    /// A live record under `State::id` (client-side: a live session in the cookie).
    Present,
}

struct State {
    /// The well-formed id (or the sealed sessions) the client sent, if any.
    incoming: Option<Incoming>,
    /// The id of the record this session reads and writes, when `Present`.
    id: Option<SessionId>,
    stored: Stored,
    /// The record's data as loaded (or, when `Absent`, what a new record will hold
    /// besides `changes`). What the request sees is `base` with `changes` on top.
    base: Data,
    /// The record's metadata (or, when `Absent`, the metadata a new record will get).
    meta: Meta,
    /// What this request changed, to be saved when `Present`.
    changes: Changes,
    meta_changed: bool,
    /// The client must be sent the session: its id was created by this request, or
    /// (client-side) the sealed session changed or was sealed under an old key.
    issued: bool,
    /// A login happened: the per-user cap applies when the request ends.
    logged_in: bool,
    /// Records this request ended (logout, id cycling), deleted when it ends.
    retired: Vec<SessionKey>,
    /// The first store failure of this request, if any.
    failed: Option<StoreErrorKind>,
    /// When the request started: the time every expiry decision of the request uses.
    now: Timestamp,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, incoming: Option<Incoming>) -> Self {
        let now = (shared.clock)();
        let stored = if incoming.is_some() {
            Stored::Unknown
        } else {
            Stored::Absent
        };
        let meta = fresh_meta(&shared, now);
        Self {
            inner: Arc::new(Inner {
                shared,
                used: AtomicBool::new(false),
                state: Mutex::new(State {
                    incoming,
                    id: None,
                    stored,
                    base: Data::new(),
                    meta,
                    changes: Changes::default(),
                    meta_changed: false,
                    issued: false,
                    logged_in: false,
                    retired: Vec::new(),
                    failed: None,
                    now,
                }),
            }),
        }
    }

    /// A new, empty session over `store` that belongs to no request: for examples and
    /// tests of code that takes a `Session`. Nothing it does reaches a client, and
    /// whatever it writes to `store` outlives it.
    pub fn detached(store: impl crate::SessionStore) -> Self {
        let layer = crate::SessionLayer::new(store);
        Self::new(layer.shared(), None)
    }

    /// The value under `key`, deserialised as `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.loaded().await?;
        state
            .view(key)
            .map(T::deserialize)
            .transpose()
            .map_err(SessionError::Value)
    }

    /// Sets `key` to `value`.
    ///
    /// It does not read the session: a request that only writes costs one store
    /// round trip, the write at its end, and a store failure there gives the request
    /// the error policy's response, as any failed save does. If the session turns out
    /// to be gone (expired, or ended by another request), the value starts a new one.
    /// Once the session was read, setting a key to the value it already has changes
    /// nothing and costs no write.
    pub async fn insert(&self, key: &str, value: impl Serialize) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(SessionError::Value)?;
        let mut state = self.writable().await?;
        if state.view(key) != Some(&value) {
            state.changes.insert(key, value);
        }
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub async fn remove(&self, key: &str) -> Result<Option<Value>, SessionError> {
        let mut state = self.loaded().await?;
        let old = state.view(key).cloned();
        if old.is_some() {
            state.changes.remove(key);
        }
        Ok(old)
    }

    /// Removes every key. The session itself, its id and its user stay.
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if !state.is_view_empty() {
            state.changes.clear();
        }
        Ok(())
    }

    /// Whether the session has no data.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        Ok(self.loaded().await?.is_view_empty())
    }

    /// Atomically replaces the value under `key` with `f(current)`, in the store, now,
    /// and returns the value stored.
    ///
    /// Unlike [`insert`](Self::insert), this is not deferred to the response: the
    /// store applies `f` to whatever value it holds at that moment, so concurrent
    /// requests of the session never lose each other's updates (100 concurrent
    /// increments end at +100). `f` may run more than once. Changes this request made
    /// before are saved first. A new session is created on the spot.
    pub async fn update<T, F>(&self, key: &str, f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync,
    {
        let failure = StdMutex::new(None);
        let compute = |current: Option<&Value>| -> Option<Value> {
            let result = current
                .map(T::deserialize)
                .transpose()
                .and_then(|current| serde_json::to_value(f(current)));
            match result {
                Ok(value) => Some(value),
                Err(error) => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                    None
                }
            }
        };
        let take_failure = || {
            let error = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
            SessionError::Value(error.unwrap_or_else(|| {
                serde::de::Error::custom("the update function produced no value")
            }))
        };

        let mut state = self.loaded().await?;
        let shared = &self.inner.shared;
        if let Kind::Server(store) = &shared.backend {
            if state.stored == Stored::Present && (!state.changes.is_empty() || state.meta_changed)
            {
                self.save_changes(store.as_ref(), &mut state, true).await?;
            }
            if state.stored == Stored::Present {
                let key_hash = state.key();
                let meta = state.meta_for_write(shared);
                let outcome = call(
                    shared,
                    "update",
                    store.update(&key_hash, key, &compute, &meta),
                )
                .await
                .map_err(|e| state.fail(e))?;
                match outcome {
                    Updated::Stored(value) => {
                        state.base.insert_str(key, value.clone());
                        state.meta = meta;
                        return T::deserialize(value).map_err(SessionError::Value);
                    }
                    Updated::Kept(_) => return Err(take_failure()),
                    Updated::Missing => state.lose(shared),
                }
            }
        }
        // No record (or a client-side session, which has no store to be atomic in):
        // compute on the local view, and create the session now if there is none.
        let Some(value) = compute(state.view(key)) else {
            return Err(take_failure());
        };
        state.changes.insert(key, value.clone());
        if state.stored != Stored::Present {
            self.create(&mut state).await?;
        }
        T::deserialize(value).map_err(SessionError::Value)
    }

    /// Gives the session a new id, keeping its data; the old id stops working when
    /// the response is sent. Call it whenever privileges change, against session
    /// fixation ([`login`](Self::login) does).
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        state.retire();
        Ok(())
    }

    /// Ends the session (logout): its record is deleted and the client told to
    /// forget its id. The handle then acts as a new, empty session.
    pub async fn destroy(&self) {
        self.inner.used.store(true, Ordering::Relaxed);
        let mut state = self.inner.state.lock().await;
        let shared = &self.inner.shared;
        if state.stored == Stored::Unknown {
            // No need to load what is being deleted.
            if let Some(Incoming::Id(id)) = &state.incoming {
                let key = id.key();
                state.retired.push(key);
            }
            state.stored = Stored::Absent;
        } else {
            state.retire();
        }
        state.base.clear();
        state.changes = Changes::default();
        state.meta = fresh_meta(shared, state.now);
        state.logged_in = false;
    }

    /// Binds the session to `user_id` and cycles its id. The absolute lifetime, if
    /// any, counts from now; if the layer caps sessions per user, the user's oldest
    /// sessions beyond the cap end when the response is sent.
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        let shared = &self.inner.shared;
        let now = state.now;
        state.retire();
        let user_id = user_id.into();
        state.meta.created_at = now;
        if let Kind::Client(client) = &shared.backend {
            if client.store.revokes_users() {
                // A session made in the millisecond of a "log out everywhere", or on a
                // server whose clock is behind the one that revoked, would be created
                // before the user's epoch and refused at once: it starts at the epoch.
                let revoked = call(
                    shared,
                    "revoked_before",
                    client.store.revoked_before(&user_id),
                )
                .await
                .map_err(|e| state.fail(e))?;
                state.meta.created_at = revoked.map_or(now, |at| at.max(now));
            }
        }
        state.meta.user_id = Some(user_id);
        state.meta.deadline = shared.absolute_timeout.map(|t| now.saturating_add(t));
        state.logged_in = true;
        Ok(())
    }

    /// The user the session is bound to.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        Ok(self.loaded().await?.meta.user_id.clone())
    }

    /// Gives this session its own expiry, for example a long one with a persistent
    /// cookie after "remember me".
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        if state.meta.expiry != Some(expiry) {
            state.meta.expiry = Some(expiry);
            state.meta_changed = true;
        }
        Ok(())
    }

    /// The key of the session's record, if it has one: the handle that
    /// [`user_sessions`](Self::user_sessions) lists. It is not the id and cannot be
    /// used as one.
    pub async fn key(&self) -> Result<Option<SessionKey>, SessionError> {
        let state = self.loaded().await?;
        Ok((state.stored == Stored::Present).then(|| state.key()))
    }

    /// The live sessions of this session's user, oldest first (none when no user is
    /// logged in).
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>, SessionError> {
        let mut state = self.loaded().await?;
        let Some(user) = state.meta.user_id.clone() else {
            return Ok(Vec::new());
        };
        let shared = &self.inner.shared;
        let mut sessions = match &shared.backend {
            Kind::Server(store) => call(shared, "user_sessions", store.user_sessions(&user))
                .await
                .map_err(|e| state.fail(e))?,
            // A client-side store knows only the session in this request's cookie.
            Kind::Client(_) => (state.stored == Stored::Present)
                .then(|| UserSession {
                    key: state.key(),
                    meta: state.meta.clone(),
                })
                .into_iter()
                .collect(),
        };
        sessions.sort_by_key(|s| s.meta.created_at);
        Ok(sessions)
    }

    /// Ends one session of this session's user, named by its key; keys of other
    /// users' sessions are refused. Returns whether a session was ended.
    pub async fn end_user_session(&self, key: &SessionKey) -> Result<bool, SessionError> {
        let sessions = self.user_sessions().await?;
        if !sessions.iter().any(|s| s.key == *key) {
            return Ok(false);
        }
        let mut state = self.inner.state.lock().await;
        let shared = &self.inner.shared;
        if state.stored == Stored::Present && state.key() == *key {
            state.retire();
            state.base.clear();
            state.meta = fresh_meta(shared, state.now);
            return Ok(true);
        }
        // Client-side, only the current session is ever listed.
        let Kind::Server(store) = &shared.backend else {
            return Ok(false);
        };
        call(shared, "delete", store.delete(key))
            .await
            .map_err(|e| state.fail(e))?;
        Ok(true)
    }

    /// Ends every session of this session's user, on every server, this one
    /// included ("log out everywhere"). Returns how many sessions ended; a
    /// client-side store, which cannot count them, says 1.
    ///
    /// A client-side store does this by refusing the user's sessions created until
    /// now, and fails with [`SessionError::Unsupported`] if it does not revoke users.
    pub async fn logout_everywhere(&self) -> Result<usize, SessionError> {
        let mut state = self.loaded().await?;
        let Some(user) = state.meta.user_id.clone() else {
            return Ok(0);
        };
        let shared = &self.inner.shared;
        let ended = match &shared.backend {
            Kind::Server(store) => call(
                shared,
                "delete_user_sessions",
                store.delete_user_sessions(&user),
            )
            .await
            .map_err(|e| state.fail(e))?,
            Kind::Client(client) => {
                if !client.store.revokes_users() {
                    return Err(SessionError::Unsupported(
                        "log out everywhere needs a client-side store that revokes users",
                    ));
                }
                // Every session created up to now, this one included.
                let until = state.now.saturating_add(Duration::from_millis(1));
                call(
                    shared,
                    "revoke_user",
                    client.store.revoke_user(&user, until),
                )
                .await
                .map_err(|e| state.fail(e))?;
                1
            }
        };
        // The store deleted this session's record too; only the handle is left.
        state.stored = Stored::Absent;
        state.id = None;
        state.base.clear();
        state.changes = Changes::default();
        state.meta = fresh_meta(shared, state.now);
        state.logged_in = false;
        Ok(ended)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Whether any method was called: if not, the layer has nothing to do.
    pub(crate) fn is_used(&self) -> bool {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Finishes the request without waiting, if it needs no store call: the common
    /// case of a request that only read its session. `None` means it does.
    pub(crate) fn try_finish(&self) -> Option<Result<Option<IdUpdate>, StoreErrorKind>> {
        let mut state = self.inner.state.try_lock()?;
        if let Some(kind) = state.failed {
            return Some(Err(kind));
        }
        let shared = &self.inner.shared;
        if let Kind::Client(_) = shared.backend {
            state.settle_client(shared);
        }
        if state.needs_store(shared) {
            return None;
        }
        Some(Ok(state.id_update(shared, false)))
    }

    /// Writes what the request changed and says what the client must be told. An
    /// error means the request must fail with the error policy's response.
    pub(crate) async fn finish(&self) -> Result<Option<IdUpdate>, StoreErrorKind> {
        let mut state = self.inner.state.lock().await;
        if let Some(kind) = state.failed {
            return Err(kind);
        }
        match self.write_back(&mut state).await {
            Ok(refresh_cookie) => Ok(state.id_update(&self.inner.shared, refresh_cookie)),
            Err(_) => Err(state.failed.unwrap_or(StoreErrorKind::Other)),
        }
    }

    /// The store calls that end a request; `State::needs_store` says whether there
    /// are any. Returns whether a persistent cookie should be re-sent.
    async fn write_back(&self, state: &mut State) -> Result<bool, SessionError> {
        let shared = &self.inner.shared;
        let store = match &shared.backend {
            Kind::Server(store) => store.as_ref(),
            Kind::Client(client) => {
                self.write_back_client(state, client.store.as_ref()).await?;
                return Ok(false);
            }
        };
        let mut refresh_cookie = false;
        match state.stored {
            Stored::Unknown => {
                if !state.changes.is_empty() {
                    refresh_cookie = self.save_unloaded(store, state).await?;
                }
            }
            Stored::Present => {
                if !state.changes.is_empty() || state.meta_changed {
                    refresh_cookie = self.save_changes(store, state, false).await?;
                } else if let Some(expires_at) = state.touch_due(shared) {
                    let key = state.key();
                    let meta = Meta {
                        expires_at,
                        ..state.meta.clone()
                    };
                    let saved = call(shared, "touch", store.touch(&key, &meta))
                        .await
                        .map_err(|e| state.fail(e))?;
                    match saved {
                        Saved::Saved => {
                            state.meta = meta;
                            refresh_cookie = true;
                        }
                        Saved::Missing => state.lose(shared),
                    }
                }
            }
            Stored::Absent => {
                if !state.is_view_empty() || state.meta.user_id.is_some() {
                    self.create(state).await?;
                }
            }
        }
        if state.stored == Stored::Present && state.logged_in {
            self.enforce_user_cap(store, state).await?;
        }
        for key in std::mem::take(&mut state.retired) {
            call(shared, "delete", store.delete(&key))
                .await
                .map_err(|e| state.fail(e))?;
        }
        Ok(refresh_cookie)
    }

    /// `write_back` for a client-side session: everything is settled locally, to be
    /// sealed into the response; only a login under a per-user cap (of one) asks the
    /// store, to refuse the user's older sessions.
    async fn write_back_client(
        &self,
        state: &mut State,
        client: &dyn ClientStore,
    ) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        state.settle_client(shared);
        if state.stored == Stored::Present
            && state.logged_in
            && shared.max_sessions_per_user.is_some()
        {
            if let Some(user) = state.meta.user_id.clone() {
                // This session was created at its login, so it is not refused itself.
                let at = state.meta.created_at;
                call(shared, "revoke_user", client.revoke_user(&user, at))
                    .await
                    .map_err(|e| state.fail(e))?;
            }
            state.logged_in = false;
        }
        Ok(())
    }

    /// Saves the pending changes of a `Present` session, folding them into what the
    /// request sees if it goes on (`keep_view`). Returns whether the expiry moved far
    /// enough for a persistent cookie to be worth re-sending.
    async fn save_changes(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
        keep_view: bool,
    ) -> Result<bool, SessionError> {
        let shared = &self.inner.shared;
        let key = state.key();
        let meta = state.meta_for_write(shared);
        let saved = call(shared, "save", store.save(&key, &state.changes, &meta))
            .await
            .map_err(|e| state.fail(e))?;
        match saved {
            Saved::Saved => {
                let extended = state.extends_enough(shared, meta.expires_at);
                state.meta = meta;
                let changes = std::mem::take(&mut state.changes);
                if keep_view {
                    changes.apply_to(&mut state.base);
                }
                state.meta_changed = false;
                Ok(extended)
            }
            Saved::Missing => {
                // Another request or server ended the session meanwhile; its end wins
                // and this request's changes are dropped rather than resurrect it.
                tracing::debug!("session ended concurrently; changes dropped");
                state.lose(shared);
                Ok(false)
            }
        }
    }

    /// Saves the changes of a session nobody read, in one store call. If its record is
    /// gone, the changes become a new session, as they would had the request read
    /// first. Returns whether a persistent cookie should be re-sent.
    async fn save_unloaded(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
    ) -> Result<bool, SessionError> {
        let shared = &self.inner.shared;
        let id = match &state.incoming {
            Some(Incoming::Id(id)) => Some(id.clone()),
            _ => None,
        };
        let previous = match &id {
            Some(id) => {
                let (key, refresh) = (id.key(), state.refresh(shared));
                let future = store.save_unloaded(&key, &state.changes, &refresh);
                call(shared, "save_unloaded", future)
                    .await
                    .map_err(|e| state.fail(e))?
            }
            None => None,
        };
        let (Some(id), Some(previous)) = (id, previous) else {
            state.stored = Stored::Absent;
            self.create(state).await?;
            return Ok(false);
        };
        state.meta = previous;
        let meta = state.meta_for_write(shared);
        let extended = state.extends_enough(shared, meta.expires_at);
        state.meta = meta;
        state.changes = Changes::default();
        // The data stays unread: a later read loads what the store holds now.
        state.id = Some(id);
        Ok(extended)
    }

    /// Stores the local view as a new record under a fresh id.
    async fn create(&self, state: &mut State) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        let store = match &shared.backend {
            Kind::Server(store) => store,
            Kind::Client(_) => {
                state.create_client(shared);
                return Ok(());
            }
        };
        let record = state.new_record(shared);
        for _ in 0..CREATE_ATTEMPTS {
            let id = SessionId::generate();
            let key = id.key();
            let created = call(shared, "create", store.create(&key, &record))
                .await
                .map_err(|e| state.fail(e))?;
            if created == Created::Created {
                state.adopt(id, record, true);
                return Ok(());
            }
            tracing::warn!("session id collision; drawing another id");
        }
        Err(state.fail(StoreError::new(
            StoreErrorKind::Other,
            "the store reported a collision for every fresh id",
        )))
    }

    /// Ends the user's oldest sessions beyond the layer's cap.
    async fn enforce_user_cap(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
    ) -> Result<(), SessionError> {
        let shared = &self.inner.shared;
        let (Some(cap), Some(user)) = (shared.max_sessions_per_user, state.meta.user_id.clone())
        else {
            return Ok(());
        };
        let current = state.key();
        let mut others = call(shared, "user_sessions", store.user_sessions(&user))
            .await
            .map_err(|e| state.fail(e))?;
        others.retain(|s| s.key != current);
        others.sort_by_key(|s| Reverse(s.meta.created_at));
        for old in others.iter().skip(cap - 1) {
            call(shared, "delete", store.delete(&old.key))
                .await
                .map_err(|e| state.fail(e))?;
        }
        Ok(())
    }

    /// Locks the state for a change that needs no current data: a server-side session
    /// nobody has read stays unread, and its changes are saved blind
    /// ([`SessionStore::save_unloaded`]) when the request ends.
    async fn writable(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        self.inner.used.store(true, Ordering::Relaxed);
        let state = self.inner.state.lock().await;
        let server = matches!(self.inner.shared.backend, Kind::Server(_));
        if server && state.stored == Stored::Unknown && state.failed.is_none() {
            return Ok(state);
        }
        self.load_into(state).await
    }

    /// Locks the state, loading the record first if nobody has.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        self.inner.used.store(true, Ordering::Relaxed);
        let state = self.inner.state.lock().await;
        self.load_into(state).await
    }

    /// Loads the record into the locked state if nobody has.
    async fn load_into<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, SessionError> {
        if let Some(kind) = state.failed {
            return Err(SessionError::Store(StoreError::new(
                kind,
                "an earlier store operation of this request failed",
            )));
        }
        if state.stored == Stored::Unknown {
            let shared = &self.inner.shared;
            let found = match (&shared.backend, &state.incoming) {
                (Kind::Server(store), Some(Incoming::Id(id))) => {
                    let id = id.clone();
                    let key = id.key();
                    let loaded = match store.load_without_waiting(&key, state.now) {
                        Some(loaded) => loaded,
                        None => call(shared, "load", store.load(&key)).await,
                    };
                    let record = loaded.map_err(|e| state.fail(e))?;
                    record.map(|record| (id, record, false))
                }
                (Kind::Client(client), Some(Incoming::Sealed(values))) => {
                    client.open_first(shared.transport.name(), values)
                }
                _ => None,
            };
            // The store enforces expiry too; this check makes the stored times
            // authoritative even where a store's clock or TTL lags, and it is all the
            // expiry a client-side session has.
            let refresh = state.refresh(shared);
            let mut found = found.filter(|(_, record, _)| refresh.is_live(&record.meta));
            if let (Some((_, record, _)), Kind::Client(client)) = (&found, &shared.backend) {
                if let Some(user) = record.meta.user_id.as_deref() {
                    if client.store.revokes_users() {
                        let revoked_before =
                            call(shared, "revoked_before", client.store.revoked_before(user))
                                .await
                                .map_err(|e| state.fail(e))?;
                        if revoked_before.is_some_and(|at| record.meta.created_at < at) {
                            found = None;
                        }
                    }
                }
            }
            match found {
                Some((id, record, stale)) => {
                    // Changes made before this first read stay on top of the record.
                    let pending = std::mem::take(&mut state.changes);
                    state.adopt(id, record, stale);
                    state.changes = pending;
                }
                None => state.stored = Stored::Absent,
            }
        }
        Ok(state)
    }
}

/// Runs one store operation under the layer's timeout, logging its outcome and
/// timing (never ids or data).
async fn call<T>(
    shared: &Shared,
    operation: &'static str,
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = tracing::enabled!(tracing::Level::WARN).then(Instant::now);
    let mut future = pin!(future);
    // A store that answers at once (the memory store, a cache hit) pays for no
    // deadline, and its callers' futures carry none: the bound is boxed, beside the
    // network call it bounds.
    let result = match poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        Poll::Ready(result) => result,
        Poll::Pending => Box::pin(shared.store_timeout.bound(future))
            .await
            .unwrap_or_else(|| Err(StoreError::timed_out())),
    };
    if let Some(started) = started {
        let elapsed_us = started.elapsed().as_micros() as u64;
        match &result {
            Ok(_) => tracing::debug!(operation, elapsed_us, "session store call"),
            Err(error) => tracing::warn!(
                operation,
                elapsed_us,
                %error,
                source = ?std::error::Error::source(error),
                "session store call failed"
            ),
        }
    }
    result
}

impl State {
    fn key(&self) -> SessionKey {
        self.id.as_ref().expect("a Present session has an id").key()
    }

    /// Remembers a failure, so that the layer answers with the error policy.
    fn fail(&mut self, error: StoreError) -> SessionError {
        self.failed.get_or_insert(error.kind());
        SessionError::Store(error)
    }

    /// The value under `key` as this request sees it.
    fn view(&self, key: &str) -> Option<&Value> {
        if let Some(value) = self.changes.set.get(key) {
            return Some(value);
        }
        if self.changes.cleared || self.changes.removed.iter().any(|k| k == key) {
            return None;
        }
        self.base.get(key)
    }

    fn is_view_empty(&self) -> bool {
        self.changes.set.is_empty()
            && (self.changes.cleared
                || self
                    .base
                    .iter()
                    .all(|(key, _)| self.changes.removed.iter().any(|k| k == key)))
    }

    /// The data as this request sees it, as one map.
    fn merged(&self) -> Data {
        let mut data = self.base.clone();
        self.changes.apply_to(&mut data);
        data
    }

    /// Whether ending the request needs the store: `Session::write_back` has work.
    fn needs_store(&self, shared: &Shared) -> bool {
        if let Kind::Client(_) = shared.backend {
            return self.stored == Stored::Present
                && self.logged_in
                && shared.max_sessions_per_user.is_some();
        }
        !self.retired.is_empty()
            || match self.stored {
                Stored::Unknown => !self.changes.is_empty(),
                Stored::Present => {
                    !self.changes.is_empty()
                        || self.meta_changed
                        || self.touch_due(shared).is_some()
                        || (self.logged_in && shared.max_sessions_per_user.is_some())
                }
                Stored::Absent => !self.is_view_empty() || self.meta.user_id.is_some(),
            }
    }

    /// What the client must be told once the store is right.
    fn id_update(&self, shared: &Shared, refresh_cookie: bool) -> Option<IdUpdate> {
        let expiry = self.meta.expiry.unwrap_or(shared.expiry);

        match (&self.id, self.stored) {
            // `Unknown` with an id: saved unread (`Session::save_unloaded`).
            (Some(id), Stored::Present | Stored::Unknown)
                if self.issued || (refresh_cookie && expiry.is_persistent()) =>
            {
                let max_age = expiry
                    .is_persistent()
                    .then(|| self.meta.expires_at.saturating_since(self.now));
                let value = match &shared.backend {
                    Kind::Server(_) => id.encode(),
                    Kind::Client(client) => {
                        client.seal(shared.transport.name(), id, &self.meta, &self.base)
                    }
                };
                Some(IdUpdate::Issue(value, max_age))
            }
            (_, Stored::Present | Stored::Unknown) => None,
            (_, Stored::Absent) => self.incoming.is_some().then_some(IdUpdate::Remove),
        }
    }

    /// Marks the current record (if any) for deletion; the data stays, to be stored
    /// under a fresh id if anything remains.
    fn retire(&mut self) {
        if self.stored == Stored::Present {
            let key = self.key();
            self.retired.push(key);
            self.id = None;
            self.issued = false;
        }
        self.base = self.merged();
        self.stored = Stored::Absent;
        self.changes = Changes::default();
        self.meta_changed = false;
    }

    /// Folds what the request did to a client-side session into the session to be
    /// sealed: with no store, this is all the writing there is. It may run twice.
    fn settle_client(&mut self, shared: &Shared) {
        match self.stored {
            Stored::Unknown => {}
            Stored::Present => {
                if !self.changes.is_empty() || self.meta_changed {
                    let changes = std::mem::take(&mut self.changes);
                    changes.apply_to(&mut self.base);
                    self.meta = self.meta_for_write(shared);
                    self.meta_changed = false;
                    self.issued = true;
                } else if let Some(expires_at) = self.touch_due(shared) {
                    self.meta.expires_at = expires_at;
                    self.issued = true;
                }
            }
            Stored::Absent => {
                if !self.is_view_empty() || self.meta.user_id.is_some() {
                    self.create_client(shared);
                }
            }
        }
        // Nothing is stored, so an ended session has nothing to delete.
        self.retired.clear();
    }

    /// Makes the local view a new client-side session under a fresh id.
    fn create_client(&mut self, shared: &Shared) {
        let record = self.new_record(shared);
        self.adopt(SessionId::generate(), record, true);
    }

    /// What a new record holds: the local view, expiring an idle timeout from now.
    fn new_record(&self, shared: &Shared) -> Record {
        let mut meta = self.meta.clone();
        meta.expires_at = self.refresh(shared).expires_at(&meta);
        Record {
            data: self.merged(),
            meta,
        }
    }

    /// Makes `record` under `id` the session this request reads and writes, with
    /// nothing pending; `announce` says the client must be sent it.
    fn adopt(&mut self, id: SessionId, record: Record, announce: bool) {
        self.id = Some(id);
        self.stored = Stored::Present;
        self.base = record.data;
        self.meta = record.meta;
        self.changes = Changes::default();
        self.meta_changed = false;
        self.issued = announce;
    }

    /// The record vanished under us (deleted or expired elsewhere): start afresh.
    fn lose(&mut self, shared: &Shared) {
        self.stored = Stored::Absent;
        self.id = None;
        self.issued = false;
        self.base.clear();
        self.changes = Changes::default();
        self.meta = fresh_meta(shared, self.now);
        self.meta_changed = false;
        self.logged_in = false;
    }

    /// The metadata a write stores: the current one with the idle timeout restarted.
    fn meta_for_write(&self, shared: &Shared) -> Meta {
        let mut meta = self.meta.clone();
        meta.expires_at = self.refresh(shared).expires_at(&meta);
        meta
    }

    /// The layer's expiry rule at the time of this request.
    fn refresh(&self, shared: &Shared) -> Refresh {
        Refresh {
            now: self.now,
            idle_timeout: shared.expiry.idle_timeout(),
        }
    }

    fn extends_enough(&self, shared: &Shared, new_expires_at: Timestamp) -> bool {
        let idle = self.refresh(shared).idle_timeout_of(&self.meta);
        new_expires_at.saturating_since(self.meta.expires_at) >= idle / 4
    }

    /// The new expiry if pushing it back is due: only when it would gain at least a
    /// quarter of the idle timeout, so that most reads write nothing.
    fn touch_due(&self, shared: &Shared) -> Option<Timestamp> {
        let refresh = self.refresh(shared);
        let target = refresh.expires_at(&self.meta);
        let gain = target.saturating_since(self.meta.expires_at);
        (gain >= refresh.idle_timeout_of(&self.meta) / 4).then_some(target)
    }
}

fn fresh_meta(shared: &Shared, now: Timestamp) -> Meta {
    let mut meta = Meta::new(now, now);
    meta.deadline = shared.absolute_timeout.map(|t| now.saturating_add(t));
    meta
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}
