//! What one request's session holds, and the decisions made on it: what the request
//! sees, whether ending it needs the store, and what the client must be told.

use serde_json::Value;

use crate::backend::Kind;
use crate::data::Data;
use crate::error::{SessionError, StoreError, StoreErrorKind};
use crate::expiry::{Refresh, Timestamp};
use crate::id::{SessionId, SessionKey};
use crate::layer::Shared;
use crate::record::{Changes, Meta, Record};
use crate::storable;
use crate::transport::{IdUpdate, Incoming};

/// Whether a record stands behind this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// The client sent an id (or a sealed session), and nobody has asked the store
    /// about it (or opened it) yet.
    Unknown,
    /// No record: a new session, or the client's id named nothing (live).
    Absent,
    /// A live record under `State::id` (client-side: a live session in the cookie).
    Present,
}

pub(super) struct State {
    /// The well-formed id (or the sealed sessions) the client sent, if any.
    pub(super) incoming: Option<Incoming>,
    /// The id of the record this session reads and writes, when `Present`.
    pub(super) id: Option<SessionId>,
    pub(super) stored: Stored,
    /// The record's data as loaded (or, when `Absent`, what a new record will hold
    /// besides `changes`). What the request sees is `base` with `changes` on top.
    pub(super) base: Data,
    /// The record's metadata (or, when `Absent`, the metadata a new record will get).
    pub(super) meta: Meta,
    /// What this request changed, to be saved when `Present`.
    pub(super) changes: Changes,
    pub(super) meta_changed: bool,
    /// The client must be sent the session: its id was created by this request, or
    /// (client-side) the sealed session changed or was sealed under an old key.
    pub(super) issued: bool,
    /// A login happened: the per-user cap applies when the request ends.
    pub(super) logged_in: bool,
    /// This request ended the session the client's id names (a logout, an id it
    /// cycled, a session it found expired): if no session replaces it, the client is
    /// told to forget the id. A session that another request ended or rotated, or
    /// that the layer did not find, is none of this request's to remove: the client's
    /// cookie may by now be that other request's.
    pub(super) ends_client_id: bool,
    /// Records this request ended (logout, id cycling), deleted when it ends.
    pub(super) retired: Vec<SessionKey>,
    /// The first store failure of this request, if any.
    pub(super) failed: Option<StoreErrorKind>,
    /// When the request started: the time every expiry decision of the request uses.
    pub(super) now: Timestamp,
}

impl State {
    pub(super) fn key(&self) -> SessionKey {
        self.id.as_ref().expect("a Present session has an id").key()
    }

    /// Remembers a failure, so that the layer answers with the error policy.
    pub(super) fn fail(&mut self, error: StoreError) -> SessionError {
        self.failed.get_or_insert(error.kind());
        SessionError::Store(error)
    }

    /// The value under `key` as this request sees it.
    pub(super) fn view(&self, key: &str) -> Option<&Value> {
        if let Some(value) = self.changes.set.get(key) {
            return Some(value);
        }
        if self.changes.cleared || self.changes.removed.iter().any(|k| k == key) {
            return None;
        }
        self.base.get(key)
    }

    pub(super) fn is_view_empty(&self) -> bool {
        self.changes.set.is_empty()
            && (self.changes.cleared
                || self
                    .base
                    .iter()
                    .all(|(key, _)| self.changes.removed.iter().any(|k| k == key)))
    }

    /// What the session takes besides `key`, as this request sees it (see
    /// [`SizeLimits`](crate::storable::SizeLimits)).
    pub(super) fn size_without(&self, key: &str) -> usize {
        let changes = &self.changes;
        let base = self.base.iter().filter(|(k, _)| {
            !changes.cleared
                && !changes.removed.iter().any(|removed| removed == k)
                && changes.set.get(k).is_none()
        });
        base.chain(changes.set.iter())
            .filter(|(k, _)| *k != key)
            .map(|(k, value)| storable::entry_size(k, value))
            .sum()
    }

    /// The data as this request sees it, as one map.
    pub(super) fn merged(&self) -> Data {
        let mut data = self.base.clone();
        self.changes.apply_to(&mut data);
        data
    }

    /// Whether ending the request needs the store: `Session::write_back` has work.
    pub(super) fn needs_store(&self, shared: &Shared) -> bool {
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
    pub(super) fn id_update(&self, shared: &Shared, refresh_cookie: bool) -> Option<IdUpdate> {
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
            (_, Stored::Absent) => self.ends_client_id.then_some(IdUpdate::Remove),
        }
    }

    /// Marks the current record (if any) for deletion; the data stays, to be stored
    /// under a fresh id if anything remains.
    pub(super) fn retire(&mut self) {
        if self.stored == Stored::Present {
            let key = self.key();
            self.retired.push(key);
            self.id = None;
            self.issued = false;
            self.ends_client_id = true;
        }
        self.base = self.merged();
        self.stored = Stored::Absent;
        self.changes = Changes::default();
        self.meta_changed = false;
    }

    /// What a new record holds: the local view, expiring an idle timeout from now.
    pub(super) fn new_record(&self, shared: &Shared) -> Record {
        let mut meta = self.meta.clone();
        meta.expires_at = self.refresh(shared).expires_at(&meta);
        Record {
            data: self.merged(),
            meta,
        }
    }

    /// Makes `record` under `id` the session this request reads and writes, with
    /// nothing pending; `announce` says the client must be sent it.
    pub(super) fn adopt(&mut self, id: SessionId, record: Record, announce: bool) {
        self.id = Some(id);
        self.stored = Stored::Present;
        self.base = record.data;
        self.meta = record.meta;
        self.changes = Changes::default();
        self.meta_changed = false;
        self.issued = announce;
    }

    /// The record vanished under us (deleted or expired elsewhere): start afresh.
    pub(super) fn lose(&mut self, shared: &Shared) {
        self.stored = Stored::Absent;
        self.id = None;
        self.issued = false;
        self.base.clear();
        self.changes = Changes::default();
        self.meta = fresh_meta(shared, self.now);
        self.meta_changed = false;
        self.logged_in = false;
        self.ends_client_id = false;
    }

    /// The metadata a write stores: the current one with the idle timeout restarted.
    pub(super) fn meta_for_write(&self, shared: &Shared) -> Meta {
        let mut meta = self.meta.clone();
        meta.expires_at = self.refresh(shared).expires_at(&meta);
        meta
    }

    /// The layer's expiry rule at the time of this request.
    pub(super) fn refresh(&self, shared: &Shared) -> Refresh {
        Refresh {
            now: self.now,
            idle_timeout: shared.expiry.idle_timeout(),
        }
    }

    /// The expiry a request that changed nothing pushes the session's back to, when
    /// the touch rule says it is due ([`Refresh::touch_due`]).
    pub(super) fn touch_due(&self, shared: &Shared) -> Option<Timestamp> {
        self.refresh(shared).touch_due(&self.meta)
    }

    /// Whether a write that moved the expiry to `new_expires_at` moved it far enough
    /// for a persistent cookie to be sent again (the same rule).
    pub(super) fn extends_enough(&self, shared: &Shared, new_expires_at: Timestamp) -> bool {
        self.refresh(shared)
            .is_worth_pushing(&self.meta, new_expires_at)
    }
}

pub(super) fn fresh_meta(shared: &Shared, now: Timestamp) -> Meta {
    let mut meta = Meta::new(now, now);
    meta.deadline = shared.absolute_timeout.map(|t| now.saturating_add(t));
    meta
}
