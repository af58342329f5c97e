//! What a login does with the session it happens in, and the order of a user's
//! logins.

use crate::expiry::Timestamp;
use crate::id::SessionKey;

/// What a login keeps of the session it happens in
/// ([`SessionLayerBuilder::with_login_data`](crate::SessionLayerBuilder::with_login_data)).
/// Either way the session gets a new id (against session fixation) and its absolute
/// lifetime counts from the login.
///
/// ```
/// use session_core::{LoginData, SessionLayer};
/// # let store = session_memory::MemoryStore::new();
///
/// // A shared terminal: nothing of the previous user's session survives a login.
/// let layer = SessionLayer::builder(store)
///     .with_login_data(LoginData::StartEmpty)
///     .build()?;
/// # let _ = layer;
/// # Ok::<_, session_core::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginData {
    /// The data of an anonymous session (a cart) carries over into the login, and so
    /// does a session of the same user logging in again; a session that belongs to
    /// another user starts empty, its data, metadata and own expiry left behind (as
    /// Django's `login()` does).
    #[default]
    KeepUnlessOtherUser,
    /// Every login starts from an empty session.
    StartEmpty,
}

impl LoginData {
    /// Whether a login of `user` into a session bound to `previous` starts empty.
    pub(crate) fn starts_empty(self, previous: Option<&str>, user: &str) -> bool {
        match self {
            LoginData::KeepUnlessOtherUser => previous.is_some_and(|previous| previous != user),
            LoginData::StartEmpty => true,
        }
    }
}

/// A session's place in the order of its user's logins: its login time, then its key.
/// Every server agrees on it, since both are stored, so that logins that overlap
/// agree on which are the newest: a cap of N sessions per user keeps the newest N, and
/// a client-side store refuses the sessions before a user's revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoginOrder {
    /// When the session was created, or its user last logged in (`Meta::created_at`).
    pub created_at: Timestamp,
    /// The session's key.
    pub key: SessionKey,
}

impl LoginOrder {
    /// Before every session created after `created_at`, and after every session
    /// created at it or before: what "log out everywhere" at that time revokes.
    pub fn after_all_of(created_at: Timestamp) -> Self {
        Self {
            created_at: created_at.saturating_add(std::time::Duration::from_millis(1)),
            key: SessionKey::from_bytes([0; 32]),
        }
    }
}

/// When a login at `now` counts as made: at `now`, unless the latest login or
/// revocation of the user it knows of (`latest`) is not before it (a login within
/// the same millisecond, a server whose clock is behind); then just after that, so
/// that the newer login is the newer in the order of logins.
pub(crate) fn login_time(now: Timestamp, latest: Option<Timestamp>) -> Timestamp {
    match latest {
        Some(latest) if latest >= now => LoginOrder::after_all_of(latest).created_at,
        _ => now,
    }
}
