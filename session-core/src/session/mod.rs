//! The per-request session handle: the API handlers call, and loading the record the
//! first time it is needed. What a request's session holds is `state`; what the layer
//! writes when the request ends is `write_back`; everything that differs for a
//! session sealed in the client's cookie is `client_side`.

mod client_side;
mod state;
mod write_back;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use futures_util::lock::{Mutex, MutexGuard};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::backend::Kind;
use crate::data::Data;
use crate::error::{SessionError, StoreError};
use crate::expiry::{Expiry, Timestamp};
use crate::id::{SessionId, SessionKey};
use crate::layer::Shared;
use crate::login;
use crate::record::Changes;
use crate::record::Record;
use crate::session_store::{SessionStore, Updated, UserSession};
use crate::storable;
use crate::transport::Incoming;

use state::{fresh_meta, State, Stored};
use write_back::call;

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
                    ends_client_id: false,
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
        storable::check_key(key)?;
        let limits = self.inner.shared.size_limits;
        let size = limits.check_value(&value)?;
        let mut state = self.writable().await?;
        limits.check_session(state.size_without(key), key, size)?;
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
        storable::check_key(key)?;
        let limits = self.inner.shared.size_limits;
        // What the session takes besides `key`, once loaded.
        let others = AtomicUsize::new(0);
        let refused = StdMutex::new(None);
        let failure = StdMutex::new(None);
        let compute = |current: Option<&Value>| -> Option<Value> {
            let result = current
                .map(T::deserialize)
                .transpose()
                .and_then(|current| serde_json::to_value(f(current)));
            match result {
                Ok(value) => match limits.check_value(&value).and_then(|size| {
                    limits.check_session(others.load(Ordering::Relaxed), key, size)
                }) {
                    Ok(()) => Some(value),
                    Err(error) => {
                        *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        None
                    }
                },
                Err(error) => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                    None
                }
            }
        };
        let take_failure = || {
            if let Some(error) = refused.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return error;
            }
            let error = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
            SessionError::Value(error.unwrap_or_else(|| {
                serde::de::Error::custom("the update function produced no value")
            }))
        };

        let mut state = self.loaded().await?;
        others.store(state.size_without(key), Ordering::Relaxed);
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
        others.store(state.size_without(key), Ordering::Relaxed);
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
            // No need to load what is being deleted: every id the client presented
            // ends (deleting one that names nothing is harmless).
            let keys: Vec<SessionKey> = state
                .incoming
                .as_ref()
                .map_or(&[][..], Incoming::ids)
                .iter()
                .map(SessionId::key)
                .collect();
            state.ends_client_id = state.incoming.is_some();
            state.retired.extend(keys);
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
    ///
    /// What the session held stays if it was anonymous (a cart) or the same user's;
    /// a session of another user starts empty (see [`LoginData`](crate::LoginData)
    /// for the layer's choice).
    pub async fn login(&self, user_id: impl Into<String>) -> Result<(), SessionError> {
        let mut state = self.loaded().await?;
        let shared = &self.inner.shared;
        let now = state.now;
        let user_id = user_id.into();
        let starts_empty = shared
            .login_data
            .starts_empty(state.meta.user_id.as_deref(), &user_id);
        state.retire();
        if starts_empty {
            state.base.clear();
            state.meta = fresh_meta(shared, now);
        }
        state.meta.created_at = match &shared.backend {
            Kind::Client(client) => client_side::login_time(shared, client, &user_id, now)
                .await
                .map_err(|e| state.fail(e))?,
            Kind::Server(store) if shared.max_sessions_per_user.is_some() => {
                self.login_time(store.as_ref(), &mut state, &user_id)
                    .await?
            }
            Kind::Server(_) => now,
        };
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
            Kind::Client(_) => state.current_only(),
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
                client_side::revoke_all(shared, client, &mut state, &user).await?
            }
        };
        // The store deleted this session's record too; only the handle is left.
        state.ends_client_id = state.stored == Stored::Present;
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
            // Taken out while the state is written to; put back below.
            let incoming = state.incoming.take();
            let found = match (&shared.backend, &incoming) {
                (Kind::Server(store), Some(incoming)) => {
                    self.load_first_live(store.as_ref(), &mut state, incoming.ids())
                        .await
                }
                (Kind::Client(client), Some(Incoming::Sealed(values))) => {
                    client_side::open(shared, client, &mut state, values).await
                }
                _ => Ok(None),
            };
            state.incoming = incoming;
            let found = found?;
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

    /// When a login of `user` under a cap of sessions counts as made: after the
    /// user's newest session, so that a login that follows another within the same
    /// millisecond is the newer in the order of logins, and the cap keeps it.
    async fn login_time(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
        user: &str,
    ) -> Result<Timestamp, SessionError> {
        let shared = &self.inner.shared;
        let sessions = call(shared, "user_sessions", store.user_sessions(user))
            .await
            .map_err(|e| state.fail(e))?;
        let newest = sessions.iter().map(|s| s.meta.created_at).max();
        Ok(login::login_time(state.now, newest))
    }

    /// The first of `ids` that names a live session, loaded. One the store holds but
    /// whose stored times say it has expired is this request's to end (the client is
    /// told to forget it, unless another id is live); one the store does not know
    /// could be another request's, ended or rotated meanwhile, and is left alone.
    async fn load_first_live(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
        ids: &[SessionId],
    ) -> Result<Option<(SessionId, Record, bool)>, SessionError> {
        let shared = &self.inner.shared;
        let refresh = state.refresh(shared);
        for id in ids {
            let key = id.key();
            let loaded = match store.load_without_waiting(&key, state.now) {
                Some(loaded) => loaded,
                None => call(shared, "load", store.load(&key)).await,
            };
            match loaded.map_err(|e| state.fail(e))? {
                // The store enforces expiry too; this check makes the stored times
                // authoritative even where a store's clock or TTL lags.
                Some(record) if refresh.is_live(&record.meta) => {
                    state.ends_client_id = false;
                    return Ok(Some((id.clone(), record, false)));
                }
                Some(_) => state.ends_client_id = true,
                None => {}
            }
        }
        Ok(None)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}
