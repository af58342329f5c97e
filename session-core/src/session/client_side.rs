//! Sessions sealed in the client's cookie (a [`ClientStore`]): what the layer does
//! differently for them. No record is kept anywhere, so there is nothing to load,
//! save or delete: the session is opened from the request and settled into the
//! response. A client store that revokes users is the only store call, for "log out
//! everywhere", a per-user cap and the login that must start after a revocation.

use crate::client::{ClientSide, ClientStore};
use crate::error::{SessionError, StoreError};
use crate::expiry::Timestamp;
use crate::id::SessionId;
use crate::layer::Shared;
use crate::login::{self, LoginOrder};
use crate::record::Record;
use crate::session_store::UserSession;

use super::state::{State, Stored};
use super::write_back::call;
use super::Session;

impl Session {
    /// `write_back` for a client-side session: everything is settled locally, to be
    /// sealed into the response; only a login under a per-user cap (of one) asks the
    /// store, to refuse the user's older sessions.
    pub(super) async fn write_back_client(
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
                // Every session of the user before this one ends, this one not: of
                // logins that overlap, the newest in the order of logins survives.
                let before = LoginOrder {
                    created_at: state.meta.created_at,
                    key: state.key(),
                };
                call(shared, "revoke_user", client.revoke_user(&user, before))
                    .await
                    .map_err(|e| state.fail(e))?;
            }
            state.logged_in = false;
        }
        Ok(())
    }
}

impl State {
    /// Folds what the request did to a client-side session into the session to be
    /// sealed: with no store, this is all the writing there is. It may run twice.
    pub(super) fn settle_client(&mut self, shared: &Shared) {
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
    pub(super) fn create_client(&mut self, shared: &Shared) {
        let record = self.new_record(shared);
        self.adopt(SessionId::generate(), record, true);
    }

    /// The user's sessions as a client-side store knows them: the one in this
    /// request's cookie.
    pub(super) fn current_only(&self) -> Vec<UserSession> {
        (self.stored == Stored::Present)
            .then(|| UserSession {
                key: self.key(),
                meta: self.meta.clone(),
            })
            .into_iter()
            .collect()
    }
}

/// The first of the request's sealed values that opens and, for a store that
/// revokes users, was not created before its user's revocation; `None` if there is
/// none. Its stored times are all the expiry a client-side session has: one that has
/// expired is this request's to end, and it says so (`ends_client_id`).
pub(super) async fn open(
    shared: &Shared,
    client: &ClientSide,
    state: &mut State,
    values: &[String],
) -> Result<Option<(SessionId, Record, bool)>, SessionError> {
    let Some(found) = client.open_first(shared.transport.name(), values) else {
        return Ok(None);
    };
    if !state.refresh(shared).is_live(&found.1.meta) {
        state.ends_client_id = true;
        return Ok(None);
    }
    let (id, record, _) = &found;
    let meta = &record.meta;
    if let (Some(user), true) = (meta.user_id.as_deref(), client.store.revokes_users()) {
        let revoked_before = call(shared, "revoked_before", client.store.revoked_before(user))
            .await
            .map_err(|e| state.fail(e))?;
        let place = LoginOrder {
            created_at: meta.created_at,
            key: id.key(),
        };
        if revoked_before.is_some_and(|before| place < before) {
            return Ok(None);
        }
    }
    Ok(Some(found))
}

/// When a session that `user` logs in to at `now` counts as created: after the
/// user's revocation, if that is not before `now`. A session made in the millisecond
/// of a "log out everywhere" or of another login, or on a server whose clock is
/// behind the one that revoked, would otherwise be refused at once.
pub(super) async fn login_time(
    shared: &Shared,
    client: &ClientSide,
    user: &str,
    now: Timestamp,
) -> Result<Timestamp, StoreError> {
    if !client.store.revokes_users() {
        return Ok(now);
    }
    let revoked = call(shared, "revoked_before", client.store.revoked_before(user)).await?;
    Ok(login::login_time(
        now,
        revoked.map(|before| before.created_at),
    ))
}

/// "Log out everywhere" for a client-side store: every session of `user` created up
/// to now, this one included, is refused from now on. Counted as one, since the
/// store cannot count them.
pub(super) async fn revoke_all(
    shared: &Shared,
    client: &ClientSide,
    state: &mut State,
    user: &str,
) -> Result<usize, SessionError> {
    if !client.store.revokes_users() {
        return Err(SessionError::Unsupported(
            "log out everywhere needs a client-side store that revokes users",
        ));
    }
    let before = LoginOrder::after_all_of(state.now);
    call(
        shared,
        "revoke_user",
        client.store.revoke_user(user, before),
    )
    .await
    .map_err(|e| state.fail(e))?;
    Ok(1)
}
