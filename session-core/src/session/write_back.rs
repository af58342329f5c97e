//! The end of a request: the store calls that keep the store right, and what the
//! client must be told.

use std::cmp::Reverse;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use crate::backend::Kind;
use crate::error::{SessionError, StoreError, StoreErrorKind};
use crate::expiry::Refresh;
use crate::id::SessionId;
use crate::layer::Shared;
use crate::record::{Changes, Meta};
use crate::session_store::{Created, Saved, SessionStore, UserSession};
use crate::transport::{IdUpdate, Incoming};

use super::state::{State, Stored};
use super::Session;

/// Ids drawn before a store that reports only collisions is declared broken. With
/// 192-bit ids a single real collision is already beyond belief.
const CREATE_ATTEMPTS: usize = 3;

impl Session {
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
    pub(super) async fn write_back(&self, state: &mut State) -> Result<bool, SessionError> {
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
                        Saved::Applied => {
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

    /// Saves the pending changes of a `Present` session, folding them into what the
    /// request sees if it goes on (`keep_view`). Returns whether the expiry moved far
    /// enough for a persistent cookie to be worth re-sending.
    pub(super) async fn save_changes(
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
            Saved::Applied => {
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

    /// Saves the changes of a session nobody read, in one store call (one per id the
    /// client presented, until one is live). If its record is gone, the changes are
    /// dropped. Returns whether a persistent cookie should be re-sent.
    pub(super) async fn save_unloaded(
        &self,
        store: &dyn SessionStore,
        state: &mut State,
    ) -> Result<bool, SessionError> {
        let shared = &self.inner.shared;
        let refresh = state.refresh(shared);
        let ids = state.incoming.as_ref().map_or(&[][..], Incoming::ids);
        let saved = first_saved(shared, store, ids, &state.changes, &refresh)
            .await
            .map_err(|e| state.fail(e))?;
        let Some((id, previous)) = saved else {
            // The session is gone: ended or rotated by another request meanwhile, or
            // expired. A new session here would give the client a cookie in place of
            // the one that other request may have set (a login's), so the changes are
            // dropped and the client told nothing; a handler that must keep a value
            // reads the session first, which starts a new one when none is found.
            tracing::debug!("session gone before an unread write; changes dropped");
            state.stored = Stored::Absent;
            state.changes = Changes::default();
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
    pub(super) async fn create(&self, state: &mut State) -> Result<(), SessionError> {
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
            if created == Created::Written {
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
    pub(super) async fn enforce_user_cap(
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
        let mut sessions = call(shared, "user_sessions", store.user_sessions(&user))
            .await
            .map_err(|e| state.fail(e))?;
        if !sessions.iter().any(|s| s.key == current) {
            sessions.push(UserSession {
                key: current,
                meta: state.meta.clone(),
            });
        }
        // The newest `cap` survive, in an order every server agrees on: login time,
        // then key. Every login ends what it sees beyond them, itself included, so
        // that logins that overlap leave exactly `cap`: the newest are never ended by
        // anyone, and each older one is seen beside them by the last of them to list.
        sessions.sort_by_key(|s| Reverse((s.meta.created_at, s.key)));
        let mut superseded = false;
        for old in sessions.iter().skip(cap) {
            call(shared, "delete", store.delete(&old.key))
                .await
                .map_err(|e| state.fail(e))?;
            superseded |= old.key == current;
        }
        if superseded {
            // A newer login of the user took this one's place.
            state.lose(shared);
        }
        Ok(())
    }
}

/// Saves `changes`, unread, under the first of `ids` that names a live session; the id
/// and its metadata as it was, or `None` if none does.
async fn first_saved(
    shared: &Shared,
    store: &dyn SessionStore,
    ids: &[SessionId],
    changes: &Changes,
    refresh: &Refresh,
) -> Result<Option<(SessionId, Meta)>, StoreError> {
    for id in ids {
        let key = id.key();
        let future = store.save_unloaded(&key, changes, refresh);
        if let Some(previous) = call(shared, "save_unloaded", future).await? {
            return Ok(Some((id.clone(), previous)));
        }
    }
    Ok(None)
}

/// Runs one store operation under the layer's timeout, logging its outcome and
/// timing (never ids or data).
pub(super) async fn call<T>(
    shared: &Shared,
    operation: &'static str,
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = tracing::enabled!(tracing::Level::WARN).then(Instant::now);
    let mut future = pin!(future);
    // A store that answers at once (the memory store, a cache hit) pays for no
    // timer, and its callers' futures carry none: the bound is boxed, beside the
    // network call it bounds.
    let result = match poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        Poll::Ready(result) => result,
        // The timeout runs on Tokio's clock; outside a Tokio runtime nothing
        // enforces it.
        Poll::Pending if tokio::runtime::Handle::try_current().is_err() => future.await,
        Poll::Pending => Box::pin(tokio::time::timeout(shared.store_timeout, future))
            .await
            .unwrap_or_else(|_| Err(StoreError::timed_out())),
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
