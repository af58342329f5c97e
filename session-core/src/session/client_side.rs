//! Sessions sealed in the client's cookie (a [`ClientStore`]): what the layer does
//! differently for them. No record is kept anywhere, so there is nothing to load,
//! save or delete: the session is opened from the request and settled into the
//! response. A client store that revokes users is the only store call, for "log out
//! everywhere", a per-user cap and the login that must start after a revocation.

use std::time::Duration;

use crate::client::{ClientSide, ClientStore};
use crate::error::{SessionError, StoreError};
use crate::expiry::{Refresh, Timestamp};
use crate::id::SessionId;
use crate::layer::Shared;
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

/// The first of the request's sealed values that opens, is live (the stored times
/// are all the expiry a client-side session has) and, for a store that revokes
/// users, was not created before its user's revocation.
pub(super) async fn open(
    shared: &Shared,
    client: &ClientSide,
    values: &[String],
    refresh: &Refresh,
) -> Result<Option<(SessionId, Record, bool)>, StoreError> {
    let Some(found) = client
        .open_first(shared.transport.name(), values)
        .filter(|(_, record, _)| refresh.is_live(&record.meta))
    else {
        return Ok(None);
    };
    let meta = &found.1.meta;
    if let (Some(user), true) = (meta.user_id.as_deref(), client.store.revokes_users()) {
        let revoked_before =
            call(shared, "revoked_before", client.store.revoked_before(user)).await?;
        if revoked_before.is_some_and(|at| meta.created_at < at) {
            return Ok(None);
        }
    }
    Ok(Some(found))
}

/// When a session that `user` logs in to at `now` counts as created. A session made
/// in the millisecond of a "log out everywhere", or on a server whose clock is behind
/// the one that revoked, would be created before the user's revocation and refused at
/// once: it starts at the revocation.
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
    Ok(revoked.map_or(now, |at| at.max(now)))
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
    let until = state.now.saturating_add(Duration::from_millis(1));
    call(shared, "revoke_user", client.store.revoke_user(user, until))
        .await
        .map_err(|e| state.fail(e))?;
    Ok(1)
}
