//! Errors: a store's, and a session's.

use std::error::Error as StdError;
use std::fmt;

/// A boxed error, as stores carry their driver's errors.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What kind of failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or refused the operation.
    Unavailable,
    /// The store did not answer within the layer's timeout.
    TimedOut,
    /// The store returned data that does not decode as a session.
    Corrupt,
    /// A client-side session grew past what its cookie can carry (4096 bytes with
    /// the cookie's name and attributes). Nothing was sent: the client keeps its
    /// previous cookie. By default the response is a 500.
    TooLarge,
    /// Anything else.
    Other,
}

/// A session store failed. The layer never mistakes it for "no such session": by
/// default the request gets a 503 and the client's cookie is left alone.
///
/// The driver's error, if any, is the [`source`](StdError::source).
///
/// ```
/// use session_core::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let error = StoreError::unavailable(io);
/// assert_eq!(error.kind(), StoreErrorKind::Unavailable);
/// assert!(std::error::Error::source(&error).is_some());
/// ```
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: StoreErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// The store could not be reached or refused the operation.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::new(StoreErrorKind::Unavailable, source)
    }

    /// The store returned data that does not decode.
    pub fn corrupt(source: impl Into<BoxError>) -> Self {
        Self::new(StoreErrorKind::Corrupt, source)
    }

    /// The store did not answer in time.
    pub fn timed_out() -> Self {
        Self {
            kind: StoreErrorKind::TimedOut,
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("StoreError");
        s.field("kind", &self.kind);
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Unavailable => "session store unavailable",
            StoreErrorKind::TimedOut => "session store timed out",
            StoreErrorKind::Corrupt => "session store returned corrupt data",
            StoreErrorKind::TooLarge => "session too large for its cookie",
            StoreErrorKind::Other => "session store failed",
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// A session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed. The layer answers the request with its error policy (by
    /// default 503 with `Retry-After`) whatever the handler returns.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A value did not serialise, or a stored value is not of the type asked for.
    #[error("session value does not (de)serialise as the requested type")]
    Value(#[source] serde_json::Error),
    /// The layer's store cannot do this: a client-side store without user revocation
    /// cannot end a user's other sessions. The request goes on unharmed.
    #[error("not supported by this session store: {0}")]
    Unsupported(&'static str),
    /// Data that some store could not hold was refused before any store call;
    /// nothing of the change is kept.
    #[error("session data refused: {0}")]
    Refused(#[from] crate::storable::Refusal),
}

/// A layer configuration that cannot work, reported when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or has characters a cookie name cannot have.
    #[error("invalid cookie name {0:?}")]
    InvalidCookieName(String),
    /// The cookie path does not start with `/`, or has characters a cookie attribute
    /// cannot have.
    #[error("invalid cookie path {0:?}")]
    InvalidCookiePath(String),
    /// The cookie domain has characters a cookie attribute cannot have.
    #[error("invalid cookie domain {0:?}")]
    InvalidCookieDomain(String),
    /// A `__Host-` cookie must not have a `Domain`.
    #[error("a `__Host-` cookie must not set a Domain")]
    HostPrefixWithDomain,
    /// A `__Host-` cookie must have `Path=/`.
    #[error("a `__Host-` cookie must have Path=/")]
    HostPrefixWithPath,
    /// `__Host-` and `__Secure-` cookies must be `Secure`.
    #[error("a `__Host-` or `__Secure-` cookie must be Secure")]
    PrefixWithoutSecure,
    /// The header name for header transport is not a valid header name.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A cap of zero sessions per user would end every login at once.
    #[error("the cap of sessions per user must be at least 1")]
    ZeroSessionCap,
    /// A cap of sessions per user above what a store lists of a user's sessions
    /// ([`USER_SESSIONS_LIMIT`](crate::store::USER_SESSIONS_LIMIT)) could not be
    /// enforced.
    #[error(
        "the cap of sessions per user may be at most {}",
        crate::store::USER_SESSIONS_LIMIT
    )]
    SessionCapTooLarge,
    /// A client-side store can cap sessions per user only at one, and only if it
    /// revokes users: there is no list of sessions to trim.
    #[error("a client-side store supports only a cap of 1 session per user, with user revocation")]
    ClientSideCap,
}
