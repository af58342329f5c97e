//! How the session id travels: a cookie (the default) or a request header.

use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, COOKIE, SET_COOKIE};
use http::HeaderMap;

use crate::error::StoreErrorKind;
use crate::id::SessionId;

/// The most a browser keeps of one cookie: name, value and attributes (RFC 6265
/// section 6.1's minimum, which browsers treat as the maximum).
pub(crate) const MAX_COOKIE_LEN: usize = 4096;

/// What the request carried: an id, or (for a client-side store) sealed sessions,
/// every value of the session cookie in order, to be opened when first needed.
pub(crate) enum Incoming {
    Id(SessionId),
    /// Several well-formed ids under the session's name (another path or a sibling
    /// domain can plant a cookie of the same name): the first that names a live
    /// session wins.
    Ids(Vec<SessionId>),
    Sealed(Vec<String>),
}

impl Incoming {
    /// The ids the request carries, in order.
    pub(crate) fn ids(&self) -> &[SessionId] {
        match self {
            Incoming::Id(id) => std::slice::from_ref(id),
            Incoming::Ids(ids) => ids,
            Incoming::Sealed(_) => &[],
        }
    }

    /// The ids in `ids`, each once, in order: `None` for none, without an allocation
    /// for the usual one (or one repeated).
    fn from_ids(mut ids: impl Iterator<Item = SessionId>) -> Option<Self> {
        let first = ids.next()?;
        let mut all = Vec::new();
        for id in ids {
            if id != first && !all.contains(&id) {
                all.push(id);
            }
        }
        if all.is_empty() {
            return Some(Incoming::Id(first));
        }
        all.insert(0, first);
        Some(Incoming::Ids(all))
    }
}

/// What the response must tell the client about its session.
pub(crate) enum IdUpdate {
    /// Send this value (an encoded id, or a sealed session); with `Some(max_age)` as a
    /// persistent cookie.
    Issue(String, Option<Duration>),
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
    /// The raw values of the request's cookies of our name, in order. The header is
    /// split as bytes: other cookies of the site may hold bytes that are not visible
    /// ASCII (a script's `document.cookie = "name=José"` arrives as raw UTF-8), which
    /// must not hide ours.
    fn raw_values<'h>(&'h self, headers: &'h HeaderMap) -> impl Iterator<Item = &'h [u8]> + 'h {
        headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|header| pairs(header.as_bytes()))
            .filter_map(|pair| {
                let equals = memchr::memchr(b'=', pair)?;
                let (name, value) = (&pair[..equals], &pair[equals + 1..]);
                (name.trim_ascii() == self.name.as_bytes()).then(|| value.trim_ascii())
            })
    }

    /// The values of the request's cookies of our name, in order, each with its
    /// signature checked and removed if the layer signs. Values that are not text are
    /// none of ours.
    fn values<'h>(&'h self, headers: &'h HeaderMap) -> impl Iterator<Item = String> + 'h {
        self.raw_values(headers)
            .filter_map(|value| std::str::from_utf8(value).ok())
            .filter_map(|value| self.verified(value))
    }

    fn verified(&self, value: &str) -> Option<String> {
        match &self.signing_key {
            None => Some(value.to_owned()),
            Some(key) => {
                let jar = CookieJar::new();
                let cookie = jar
                    .signed(key)
                    .verify(Cookie::new(self.name.clone(), value.to_owned()))?;
                Some(cookie.value().to_owned())
            }
        }
    }

    /// The ids in the request's cookies: every cookie of our name whose value is a
    /// well-formed (and, with a key, correctly signed) id, in order.
    fn read_ids(&self, headers: &HeaderMap) -> Option<Incoming> {
        if self.signing_key.is_some() {
            return Incoming::from_ids(
                self.values(headers)
                    .filter_map(|value| SessionId::parse(&value)),
            );
        }
        // Unsigned ids are parsed in place: no allocation on the hot path.
        Incoming::from_ids(self.raw_values(headers).filter_map(SessionId::parse_bytes))
    }

    /// The `Set-Cookie` value that carries `update`.
    fn set_cookie(&self, update: &IdUpdate) -> String {
        let value = match update {
            IdUpdate::Issue(value, _) => self.signed_value(value.clone()),
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

/// The `;`-separated pairs of a `Cookie` header, found by `memchr`: the header holds
/// every cookie of the site, often hundreds of bytes, of which ours is one.
fn pairs(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(header);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(end) => {
                rest = Some(&current[end + 1..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
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
    /// The well-formed ids the request carries, if any.
    pub(crate) fn read_ids(&self, headers: &HeaderMap) -> Option<Incoming> {
        match self {
            Transport::Cookie(settings) => settings.read_ids(headers),
            Transport::Header(name) => headers
                .get(name)
                .and_then(|value| SessionId::parse_bytes(value.as_bytes().trim_ascii()))
                .map(Incoming::Id),
        }
    }

    /// Every session value the request carries, for a client-side store to open.
    pub(crate) fn read_values(&self, headers: &HeaderMap) -> Vec<String> {
        match self {
            Transport::Cookie(settings) => settings.values(headers).collect(),
            Transport::Header(name) => headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|value| value.trim_ascii().to_owned())
                .into_iter()
                .collect(),
        }
    }

    /// The cookie's or header's name, which a client-side store binds its sealed
    /// values to.
    pub(crate) fn name(&self) -> &str {
        match self {
            Transport::Cookie(settings) => &settings.name,
            Transport::Header(name) => name.as_str(),
        }
    }

    /// Writes `update` into the response headers. Responses that carry an id are
    /// marked `Cache-Control: no-store` so that no shared cache keeps them. A cookie
    /// longer than a browser keeps is not sent at all: `TooLarge`.
    pub(crate) fn write(
        &self,
        headers: &mut HeaderMap,
        update: &IdUpdate,
    ) -> Result<(), StoreErrorKind> {
        let value = match self {
            Transport::Cookie(settings) => {
                let set_cookie = settings.set_cookie(update);
                if set_cookie.len() > MAX_COOKIE_LEN {
                    tracing::error!(
                        cookie_len = set_cookie.len(),
                        limit = MAX_COOKIE_LEN,
                        "session too large for its cookie; not sent"
                    );
                    return Err(StoreErrorKind::TooLarge);
                }
                HeaderValue::try_from(set_cookie)
            }
            Transport::Header(_) => match update {
                IdUpdate::Issue(value, _) => HeaderValue::try_from(value.as_str()),
                IdUpdate::Remove => Ok(HeaderValue::from_static("")),
            },
        };
        // Every part of the value was checked when the layer was built, and values
        // are base64url, so the header value is always valid; a failure here would
        // mean a bug, and sending nothing is then the safe answer.
        let Ok(value) = value else {
            tracing::error!("session header value was not valid; not sent");
            return Ok(());
        };
        match self {
            Transport::Cookie(_) => headers.append(SET_COOKIE, value),
            Transport::Header(name) => headers.insert(name.clone(), value).is_some(),
        };
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{pairs, Incoming};
    use crate::id::SessionId;

    #[test]
    fn each_id_is_kept_once_in_order() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let ids = |list: &[&SessionId]| {
            Incoming::from_ids(list.iter().map(|id| (*id).clone()))
                .map(|incoming| incoming.ids().to_vec())
        };
        assert_eq!(ids(&[]), None);
        assert_eq!(ids(&[&a]), Some(vec![a.clone()]));
        assert!(matches!(
            Incoming::from_ids([a.clone(), a.clone()].into_iter()),
            Some(Incoming::Id(_))
        ));
        assert_eq!(ids(&[&b, &a, &b, &a]), Some(vec![b.clone(), a.clone()]));
    }

    #[test]
    fn pairs_are_the_pieces_between_semicolons() {
        for header in [
            &b""[..],
            b";",
            b"id=abc",
            b"a=1; id=abc",
            b"a=1;id=abc;",
            b";;a=1;; b=\xc3\xa9 ;",
            b"   ",
        ] {
            let expected: Vec<&[u8]> = header.split(|&byte| byte == b';').collect();
            assert_eq!(pairs(header).collect::<Vec<_>>(), expected, "{header:?}");
        }
    }
}
