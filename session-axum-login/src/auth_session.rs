//! [`AuthSession`]: axum-login's handle on the logged-in user, over a session-kit
//! [`Session`].

use std::collections::HashSet;
use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};
use session_core::{Session, SessionError};
use session_login::{bind_credentials, credentials_hold};

use crate::user_id;

/// What [`AuthSession`]'s operations fail with: the session's error (a store failure,
/// which the layer answers with its error policy, by default a 503) or the backend's.
#[derive(thiserror::Error)]
pub enum Error<Backend: AuthnBackend> {
    /// The session failed; also an id that does not serialise at login.
    #[error(transparent)]
    Session(SessionError),
    /// The backend failed.
    #[error(transparent)]
    Backend(Backend::Error),
}

impl<Backend: AuthnBackend> fmt::Debug for Error<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Session(err) => f.debug_tuple("Session").field(err).finish(),
            Error::Backend(err) => f.debug_tuple("Backend").field(err).finish(),
        }
    }
}

impl<Backend: AuthnBackend> From<SessionError> for Error<Backend> {
    fn from(err: SessionError) -> Self {
        Self::Session(err)
    }
}

/// The logged-in user of a request, the backend, and the session: what axum-login's
/// `AuthSession` is, with the same fields and methods, over a session-kit [`Session`].
/// [`AuthManagerLayer`](crate::AuthManagerLayer) puts it in every request; handlers
/// take it as an extractor.
///
/// - [`login`](Self::login) is session-kit's login: a new id, the session listed under
///   the user (so "log out everywhere" and the layer's cap of sessions per user apply),
///   a session of another user started empty, and the session tied to the user's
///   [`session_auth_hash`](AuthUser::session_auth_hash): when it changes (a new
///   password), the user's sessions end on their next request.
/// - [`logout`](Self::logout) deletes the session from the store, so it ends on every
///   server; [`logout_everywhere`](Self::logout_everywhere) ends all of the user's.
pub struct AuthSession<Backend: AuthnBackend> {
    /// The logged-in user, loaded by the backend's
    /// [`get_user`](AuthnBackend::get_user) for this request.
    pub user: Option<Backend::User>,
    /// The backend the layer was given.
    pub backend: Backend,
    /// The request's session, for the application's own data.
    pub session: Session,
}

impl<Backend: AuthnBackend> Clone for AuthSession<Backend> {
    fn clone(&self) -> Self {
        Self {
            user: self.user.clone(),
            backend: self.backend.clone(),
            session: self.session.clone(),
        }
    }
}

impl<Backend: AuthnBackend> fmt::Debug for AuthSession<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSession")
            .field("user", &self.user)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl<Backend: AuthnBackend> AuthSession<Backend> {
    /// The user these credentials are, as the backend's
    /// [`authenticate`](AuthnBackend::authenticate) says; nothing is logged in yet.
    pub async fn authenticate(
        &self,
        creds: Backend::Credentials,
    ) -> Result<Option<Backend::User>, Error<Backend>> {
        self.backend
            .authenticate(creds)
            .await
            .map_err(Error::Backend)
    }

    /// Logs `user` in: see the type's documentation for what session-kit adds.
    pub async fn login(&mut self, user: &Backend::User) -> Result<(), Error<Backend>> {
        let id = user_id::encode(&user.id()).map_err(SessionError::Value)?;
        self.session.login(id).await?;
        bind_credentials(&self.session, user.session_auth_hash()).await?;
        self.user = Some(user.clone());
        Ok(())
    }

    /// Logs out: the session ends in the store (on every server) and the client is
    /// told to forget it. Returns the user who was logged in.
    pub async fn logout(&mut self) -> Result<Option<Backend::User>, Error<Backend>> {
        self.session.destroy().await;
        Ok(self.user.take())
    }

    /// Ends every session of the logged-in user, this one included, on every server.
    /// Returns how many ended (see
    /// [`Session::logout_everywhere`](session_core::Session::logout_everywhere)).
    pub async fn logout_everywhere(&mut self) -> Result<usize, Error<Backend>> {
        let ended = self.session.logout_everywhere().await?;
        self.user = None;
        Ok(ended)
    }

    /// Whether the logged-in user has `perm`, directly or through a group (the
    /// backend's [`has_perm`](AuthzBackend::has_perm)); `false` without a user.
    pub async fn has_perm(&self, perm: Backend::Permission) -> Result<bool, Error<Backend>>
    where
        Backend: AuthzBackend,
    {
        match &self.user {
            Some(user) => self
                .backend
                .has_perm(user, perm)
                .await
                .map_err(Error::Backend),
            None => Ok(false),
        }
    }

    /// Every permission of the logged-in user, its own and its groups'; none without
    /// a user.
    pub async fn permissions(&self) -> Result<HashSet<Backend::Permission>, Error<Backend>>
    where
        Backend: AuthzBackend,
    {
        match &self.user {
            Some(user) => self
                .backend
                .get_all_permissions(user)
                .await
                .map_err(Error::Backend),
            None => Ok(HashSet::new()),
        }
    }

    /// The auth session of a request whose session is `session`: its user, if it has
    /// one that the backend still knows and whose credentials have not changed since
    /// the login. A session whose credentials changed, or whose user is gone, ends.
    pub(crate) async fn from_session(
        session: Session,
        backend: Backend,
    ) -> Result<Self, Error<Backend>> {
        let id = session
            .user_id()
            .await?
            // A user bound by other code, with an id this backend does not read, is
            // not this backend's user.
            .and_then(|stored| user_id::decode::<UserId<Backend>>(&stored).ok());
        let mut user = None;
        if let Some(id) = id {
            let found = backend.get_user(&id).await.map_err(Error::Backend)?;
            let current = found.as_ref().map(AuthUser::session_auth_hash);
            if credentials_hold(&session, current).await? {
                user = found;
            }
        }
        Ok(Self {
            user,
            backend,
            session,
        })
    }
}

impl<S, Backend> FromRequestParts<S> for AuthSession<Backend>
where
    S: Send + Sync,
    Backend: AuthnBackend + 'static,
{
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the `AuthSession` extractor needs `AuthManagerLayer`: add \
             `.layer(AuthManagerLayerBuilder::new(backend, session_layer).build())` to the router",
        ))
    }
}
