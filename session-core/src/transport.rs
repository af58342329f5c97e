//! How the session id travels: a cookie (the default) or a request header.

use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::HeaderMap;

use crate::id::SessionId;

/// What the response must tell the client about its id.
#[derive(Debug)]
pub(crate) enum IdUpdate {
    /// Send this id; with `Some(max_age)` as a persistent cookie.
    Issue(SessionId, Option<Duration>),
    /// Tell the client to forget its id.
    Remove,
}

/// The cookie's attributes, checked when the layer is built.
#[derive(Clone)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) signing_key: Option<Key>,
}

impl Default for CookieSettings {
    fn default() -> Self {
        Self {
            name: "id".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            signing_key: None,
        }
    }
}

impl CookieSettings {
    /// The id in the request's cookies: the first cookie of our name whose value is a
    /// well-formed (and, with a key, correctly signed) id.
    fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|header| header.to_str().ok())
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                (name.trim() == self.name).then(|| value.trim())
            })
            .find_map(|value| self.verified_id(value))
    }

    fn verified_id(&self, value: &str) -> Option<SessionId> {
        match &self.signing_key {
            None => SessionId::parse(value),
            Some(key) => {
                let jar = CookieJar::new();
                let cookie = jar
                    .signed(key)
                    .verify(Cookie::new(self.name.clone(), value.to_owned()))?;
                SessionId::parse(cookie.value())
            }
        }
    }

    /// The `Set-Cookie` value that carries `update`.
    fn set_cookie(&self, update: &IdUpdate) -> String {
        let value = match update {
            IdUpdate::Issue(id, _) => self.signed_value(id.encode()),
            IdUpdate::Remove => String::new(),
        };
        let mut cookie = Cookie::build((self.name.clone(), value))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(self.same_site);
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        let mut cookie = cookie.build();
        match update {
            IdUpdate::Issue(_, Some(max_age)) => {
                cookie.set_max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64));
            }
            IdUpdate::Issue(_, None) => {}
            IdUpdate::Remove => cookie.make_removal(),
        }
        cookie.to_string()
    }

    fn signed_value(&self, value: String) -> String {
        let Some(key) = &self.signing_key else {
            return value;
        };
        let mut jar = CookieJar::new();
        jar.signed_mut(key)
            .add(Cookie::new(self.name.clone(), value));
        jar.get(&self.name)
            .map(|cookie| cookie.value().to_owned())
            .unwrap_or_default()
    }
}

/// Where the id is read from and written to.
#[derive(Clone)]
pub(crate) enum Transport {
    Cookie(CookieSettings),
    /// For API clients: the id comes in this request header and, when it changes,
    /// goes back in the same response header (empty when the session ended).
    Header(HeaderName),
}

impl Transport {
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        match self {
            Transport::Cookie(settings) => settings.read(headers),
            Transport::Header(name) => headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| SessionId::parse(value.trim())),
        }
    }

    /// Writes `update` into the response headers. Responses that carry an id are
    /// marked `Cache-Control: no-store` so that no shared cache keeps them.
    pub(crate) fn write(&self, headers: &mut HeaderMap, update: &IdUpdate) {
        let value = match self {
            Transport::Cookie(settings) => HeaderValue::try_from(settings.set_cookie(update)),
            Transport::Header(_) => match update {
                IdUpdate::Issue(id, _) => HeaderValue::try_from(id.encode()),
                IdUpdate::Remove => Ok(HeaderValue::from_static("")),
            },
        };
        // Every part of the value was checked when the layer was built, and ids are
        // base64url, so the header value is always valid; a failure here would mean a
        // bug, and sending no id is then the safe answer.
        let Ok(value) = value else {
            tracing::error!("session id header value was not valid; not sent");
            return;
        };
        match self {
            Transport::Cookie(_) => headers.append(SET_COOKIE, value),
            Transport::Header(name) => headers.insert(name.clone(), value).is_some(),
        };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
