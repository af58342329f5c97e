//! Sessions tied to the credentials they were made with: when a user's password
//! changes, every session made with the old one ends on its next request.

use async_trait::async_trait;
use session_core::{Session, SessionError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Where a session keeps the hash of its credentials' fingerprint.
const FINGERPRINT_KEY: &str = "session_login:credentials";

/// The current fingerprint of a user's credentials, for
/// [`RequireLoginLayer::with_credentials`](crate::RequireLoginLayer::with_credentials):
/// anything that changes when the credentials do, such as the password hash (axum-login
/// calls it the session auth hash). `None` for a user who no longer exists, whose
/// sessions then end too. Called on every request of a session bound with
/// [`bind_credentials`], so an application that reads it from a database caches it.
#[async_trait]
pub trait Credentials: Send + Sync + 'static {
    /// The fingerprint of `user_id`'s credentials as they are now.
    async fn fingerprint(&self, user_id: &str) -> Option<Vec<u8>>;
}

/// Ties the session, just logged in, to `fingerprint`, the user's credentials as
/// they are now: behind a guard with [`Credentials`], the session ends on the first
/// request after they change. The session keeps only a hash of it. "Log out
/// everywhere" stays the way to end the sessions at once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), session_core::SessionError> {
/// # let session = session_core::Session::detached(session_memory::MemoryStore::new());
/// let password_hash = "$argon2id$v=19$…"; // as stored for the user
/// session.login("alice").await?;
/// session_login::bind_credentials(&session, password_hash.as_bytes()).await?;
/// # Ok(()) }
/// ```
pub async fn bind_credentials(session: &Session, fingerprint: &[u8]) -> Result<(), SessionError> {
    session.insert(FINGERPRINT_KEY, digest(fingerprint)).await
}

/// Whether `session` still holds for its user's credentials as they are now
/// (`current`, the fingerprint [`Credentials::fingerprint`] would give; `None` for a
/// user who no longer exists). A session that was never bound holds; one bound with
/// [`bind_credentials`] to other credentials, or whose user is gone, is ended here
/// (as [`Session::destroy`] does) and does not hold. The comparison takes the same
/// time wherever the fingerprints differ.
///
/// The guard calls it on every request; a login layer that loads the user anyway
/// (such as the axum-login bridge) calls it with the user it loaded.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), session_core::SessionError> {
/// # let session = session_core::Session::detached(session_memory::MemoryStore::new());
/// session.login("alice").await?;
/// session_login::bind_credentials(&session, b"old password hash").await?;
/// assert!(session_login::credentials_hold(&session, Some(b"old password hash")).await?);
/// assert!(!session_login::credentials_hold(&session, Some(b"new password hash")).await?);
/// assert_eq!(session.user_id().await?, None); // ended
/// # Ok(()) }
/// ```
pub async fn credentials_hold(
    session: &Session,
    current: Option<&[u8]>,
) -> Result<bool, SessionError> {
    match bound_fingerprint(session).await? {
        Some(bound) => Ok(ends_unless_bound_to(session, &bound, current).await),
        None => Ok(true),
    }
}

/// [`credentials_hold`] with the fingerprint asked of `credentials`, which is asked
/// only for a bound session.
pub(crate) async fn still_hold(
    session: &Session,
    user: &str,
    credentials: &dyn Credentials,
) -> Result<bool, SessionError> {
    let Some(bound) = bound_fingerprint(session).await? else {
        return Ok(true);
    };
    let current = credentials.fingerprint(user).await;
    Ok(ends_unless_bound_to(session, &bound, current.as_deref()).await)
}

/// The hash of the fingerprint the session was bound to, if it was.
async fn bound_fingerprint(session: &Session) -> Result<Option<String>, SessionError> {
    session.get::<String>(FINGERPRINT_KEY).await
}

/// Whether `current` is the fingerprint whose hash is `bound`; the session ends if
/// it is not.
async fn ends_unless_bound_to(session: &Session, bound: &str, current: Option<&[u8]>) -> bool {
    let current = current.map(digest);
    let holds =
        current.is_some_and(|current| bool::from(current.as_bytes().ct_eq(bound.as_bytes())));
    if !holds {
        session.destroy().await;
    }
    holds
}

fn digest(fingerprint: &[u8]) -> String {
    Sha256::digest(fingerprint)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
