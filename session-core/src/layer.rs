//! Configuration: [`SessionLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cookie::{Key, SameSite};
use http::header::HeaderName;
use tower_layer::Layer;

use crate::backend::{Backend, Kind};
use crate::error::ConfigError;
use crate::expiry::{Expiry, Timestamp};
use crate::login::LoginData;
use crate::on_store_error::{DefaultOnStoreError, OnStoreError};
use crate::service::SessionService;
use crate::storable::SizeLimits;
use crate::transport::{CookieSettings, Incoming, Transport};

/// Where the layer reads the time; a test can replace it.
pub(crate) type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a request's session needs from the layer, shared by all requests.
pub(crate) struct Shared {
    pub(crate) backend: Kind,
    pub(crate) transport: Transport,
    pub(crate) expiry: Expiry,
    pub(crate) absolute_timeout: Option<Duration>,
    pub(crate) store_timeout: Duration,
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) login_data: LoginData,
    pub(crate) size_limits: SizeLimits,
    pub(crate) on_store_error: Arc<dyn OnStoreError>,
    pub(crate) clock: Clock,
}

/// A tower layer that gives every request a [`Session`](crate::Session).
///
/// The session is loaded from the store only when the handler first uses it, and
/// after the handler only what changed is written back. See the crate docs for the
/// whole flow.
///
/// ```
/// use session_core::SessionLayer;
/// use session_memory::MemoryStore;
///
/// let layer = SessionLayer::new(MemoryStore::new());
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl SessionLayer {
    /// A layer with the secure defaults: a cookie named `id` with `Secure`, `HttpOnly`,
    /// `SameSite=Lax` and `Path=/`, lasting until the browser closes; a 30-minute idle
    /// timeout; no absolute lifetime; a one-second store timeout; a 503 when the store
    /// fails.
    ///
    /// `store` is any [`SessionStore`](crate::SessionStore), or a client-side store
    /// such as `session-cookie`'s `CookieStore`.
    pub fn new(store: impl Into<Backend>) -> Self {
        Self::builder(store).build_unchecked()
    }

    /// A builder to change the defaults; [`SessionLayerBuilder::build`] checks them.
    pub fn builder(store: impl Into<Backend>) -> SessionLayerBuilder {
        SessionLayerBuilder {
            backend: store.into().0,
            cookie: CookieSettings::default(),
            header: None,
            expiry: Expiry::default(),
            absolute_timeout: None,
            store_timeout: Duration::from_secs(1),
            max_sessions_per_user: None,
            login_data: LoginData::default(),
            size_limits: SizeLimits::default(),
            on_store_error: Arc::new(DefaultOnStoreError::new()),
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl SessionLayer {
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Shared {
    /// What the request carries: for a server-side store a well-formed id; for a
    /// client-side one every value of the session cookie, opened when first needed.
    pub(crate) fn incoming(&self, headers: &http::HeaderMap) -> Option<Incoming> {
        match self.backend {
            Kind::Server(_) => self.transport.read_ids(headers),
            Kind::Client(_) => {
                let values = self.transport.read_values(headers);
                (!values.is_empty()).then_some(Incoming::Sealed(values))
            }
        }
    }
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.shared.clone())
    }
}

/// Builds a [`SessionLayer`]; made by [`SessionLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use session_core::{cookie::SameSite, Expiry, SessionLayer};
/// # let store = session_memory::MemoryStore::new();
///
/// let layer = SessionLayer::builder(store)
///     .with_cookie_name("__Host-session")
///     .with_same_site(SameSite::Strict)
///     .with_expiry(Expiry::on_inactivity(Duration::from_secs(15 * 60)))
///     .with_absolute_timeout(Duration::from_secs(12 * 3600))
///     .with_max_sessions_per_user(1)
///     .build()
///     .expect("a valid configuration");
/// # let _ = layer;
/// ```
#[must_use]
pub struct SessionLayerBuilder {
    backend: Kind,
    cookie: CookieSettings,
    header: Option<String>,
    expiry: Expiry,
    absolute_timeout: Option<Duration>,
    store_timeout: Duration,
    max_sessions_per_user: Option<usize>,
    login_data: LoginData,
    size_limits: SizeLimits,
    on_store_error: Arc<dyn OnStoreError>,
    clock: Clock,
}

impl SessionLayerBuilder {
    /// The cookie's name (default `id`). A `__Host-` name must be `Secure`, with
    /// `Path=/` and no `Domain`; a `__Secure-` name must be `Secure` (the prefixes in
    /// any case, as browsers match them).
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// Whether the cookie is `Secure` (default `true`). Turn it off only for local
    /// HTTP development: browsers send `Secure` cookies over HTTPS only.
    ///
    /// ```
    /// # let store = session_memory::MemoryStore::new();
    /// let err = session_core::SessionLayer::builder(store)
    ///     .with_cookie_name("__Host-id")
    ///     .with_secure(false)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err, session_core::ConfigError::PrefixWithoutSecure);
    /// ```
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly` (default `true`), hidden from scripts.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// The cookie's `SameSite` (default `Lax`).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// The cookie's `Path` (default `/`).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie's `Domain` (default none: the cookie goes back only to the host
    /// that set it).
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// Signs the id in the cookie with `key` (HMAC-SHA256), so that a cookie not made
    /// by this application is rejected before the store is asked.
    ///
    /// ```
    /// # let store = session_memory::MemoryStore::new();
    /// let key = session_core::cookie::Key::from(&[7u8; 64]);
    /// let layer = session_core::SessionLayer::builder(store).with_signing_key(key).build();
    /// assert!(layer.is_ok());
    /// ```
    pub fn with_signing_key(mut self, key: Key) -> Self {
        self.cookie.signing_key = Some(key);
        self
    }

    /// Carries the id in a request header instead of a cookie, for API clients. When
    /// the id changes the response carries it in the same header (empty when the
    /// session ended).
    ///
    /// ```
    /// # let store = session_memory::MemoryStore::new();
    /// let layer = session_core::SessionLayer::builder(store).with_header("x-session").build();
    /// assert!(layer.is_ok());
    /// ```
    pub fn with_header(mut self, name: impl Into<String>) -> Self {
        self.header = Some(name.into());
        self
    }

    /// The default expiry of sessions (30 minutes idle, browser-session cookie).
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// An absolute lifetime, counted from the session's creation or its user's login;
    /// no request extends a session past it. Default: none.
    pub fn with_absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = Some(timeout);
        self
    }

    /// How long one store operation may take before the request fails with the error
    /// policy's response (default one second). The timeout runs on Tokio's clock (a
    /// test with paused time sees it pass at once); outside a Tokio runtime nothing
    /// enforces it.
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Caps the sessions one user may have: a login beyond the cap ends the user's
    /// oldest sessions. With a cap of 1, a new login ends every other session of the
    /// user.
    pub fn with_max_sessions_per_user(mut self, cap: usize) -> Self {
        self.max_sessions_per_user = Some(cap);
        self
    }

    /// What a login keeps of the session it happens in (default
    /// [`LoginData::KeepUnlessOtherUser`]: an anonymous session's data and the same
    /// user's carry over; a session of another user starts empty).
    pub fn with_login_data(mut self, login_data: LoginData) -> Self {
        self.login_data = login_data;
        self
    }

    /// The largest value a session may hold, in bytes of JSON (default 16 KiB). A
    /// larger one is refused before any store call with
    /// [`Refusal::ValueTooLarge`](crate::Refusal::ValueTooLarge) (`413` with axum),
    /// and nothing of it is kept.
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.size_limits.value = bytes;
        self
    }

    /// The largest a session may grow: its keys and their values as JSON (default
    /// 64 KiB). A write that would take it past is refused before any store call with
    /// [`Refusal::SessionTooLarge`](crate::Refusal::SessionTooLarge) (`413` with
    /// axum), and nothing of it is kept.
    ///
    /// The session's data is known once it was read: a write without a read (the
    /// one-round-trip write) is checked with what this request writes; whatever the
    /// session held before counts from the next request that reads it.
    pub fn with_max_session_size(mut self, bytes: usize) -> Self {
        self.size_limits.session = bytes;
        self
    }

    /// The response when the store fails (default [`DefaultOnStoreError`]).
    pub fn with_on_store_error(mut self, policy: impl OnStoreError) -> Self {
        self.on_store_error = Arc::new(policy);
        self
    }

    /// Replaces the clock, so that tests can move time forward.
    #[doc(hidden)]
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<SessionLayer, ConfigError> {
        let name = self.cookie.name.as_str();
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !valid_name {
            return Err(ConfigError::InvalidCookieName(self.cookie.name));
        }
        let value_is_safe = |text: &str| text.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !value_is_safe(&self.cookie.path) || !self.cookie.path.starts_with('/') {
            return Err(ConfigError::InvalidCookiePath(self.cookie.path));
        }
        if let Some(domain) = &self.cookie.domain {
            if !value_is_safe(domain) {
                return Err(ConfigError::InvalidCookieDomain(domain.clone()));
            }
        }
        // Browsers match the prefixes without regard to case (`__HOST-` is one).
        let has_prefix = |prefix: &str| {
            name.len() >= prefix.len()
                && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        };
        if has_prefix("__Host-") {
            if self.cookie.domain.is_some() {
                return Err(ConfigError::HostPrefixWithDomain);
            }
            if self.cookie.path != "/" {
                return Err(ConfigError::HostPrefixWithPath);
            }
        }
        if (has_prefix("__Host-") || has_prefix("__Secure-")) && !self.cookie.secure {
            return Err(ConfigError::PrefixWithoutSecure);
        }
        if let Some(header) = &self.header {
            if HeaderName::try_from(header.as_str()).is_err() {
                return Err(ConfigError::InvalidHeaderName(header.clone()));
            }
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::ZeroSessionCap);
        }
        if self
            .max_sessions_per_user
            .is_some_and(|cap| cap > crate::store::USER_SESSIONS_LIMIT)
        {
            return Err(ConfigError::SessionCapTooLarge);
        }
        if let (Kind::Client(client), Some(cap)) = (&self.backend, self.max_sessions_per_user) {
            if cap != 1 || !client.store.revokes_users() {
                return Err(ConfigError::ClientSideCap);
            }
        }
        Ok(self.build_unchecked())
    }

    fn build_unchecked(self) -> SessionLayer {
        let transport = match self.header.and_then(|h| HeaderName::try_from(h).ok()) {
            Some(header) => Transport::Header(header),
            None => Transport::Cookie(self.cookie),
        };
        SessionLayer {
            shared: Arc::new(Shared {
                backend: self.backend,
                transport,
                expiry: self.expiry,
                absolute_timeout: self.absolute_timeout,
                store_timeout: self.store_timeout,
                max_sessions_per_user: self.max_sessions_per_user,
                login_data: self.login_data,
                size_limits: self.size_limits,
                on_store_error: self.on_store_error,
                clock: self.clock,
            }),
        }
    }
}

impl fmt::Debug for SessionLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayerBuilder")
            .field("cookie_name", &self.cookie.name)
            .field("expiry", &self.expiry)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}
