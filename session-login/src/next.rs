//! Where to go after the login: the page a visitor asked for, kept in a `next`
//! parameter, and only ever a path on this site.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// What a `next` value may not carry unencoded in a query.
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'=')
    .add(b'?')
    .add(b'`');

/// `next` if it is a path on this site, to redirect to after a login; `None` for
/// anything a browser would take somewhere else (`https://…`, `//host/…`, `/\host`,
/// `javascript:…`) or that carries control characters. A login handler checks the
/// `next` it is given with this before redirecting: the parameter comes from the
/// client, so unchecked it would make the login page an open redirect.
///
/// ```
/// use session_login::safe_next;
///
/// assert_eq!(safe_next("/reports?year=2026"), Some("/reports?year=2026"));
/// assert_eq!(safe_next("//evil.example/"), None);
/// assert_eq!(safe_next("/\\evil.example/"), None);
/// assert_eq!(safe_next("https://evil.example/"), None);
/// assert_eq!(safe_next("reports"), None);
/// ```
pub fn safe_next(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    let rooted = bytes.first() == Some(&b'/');
    // Browsers read `//host` and `/\host` (a backslash is a slash to them) as
    // another host.
    let other_host = matches!(bytes.get(1), Some(b'/' | b'\\'));
    let clean = !bytes.iter().any(|b| b.is_ascii_control());
    (rooted && !other_host && clean).then_some(next)
}

/// The login page's URL with the page asked for, `next` (a path on this site), in
/// its query parameter `field`; a login path whose query has `field` already is kept
/// as it is.
///
/// ```
/// use session_login::login_url;
///
/// assert_eq!(login_url("/login", "next", "/reports?year=2026"), "/login?next=/reports%3Fyear%3D2026");
/// assert_eq!(login_url("/login?lang=en", "then", "/"), "/login?lang=en&then=/");
/// assert_eq!(login_url("/login?next=/home", "next", "/reports"), "/login?next=/home");
/// ```
pub fn login_url(login_path: &str, field: &str, next: &str) -> String {
    let query = login_path.split_once('?').map(|(_, query)| query);
    let has_field = query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(field))
    });
    if has_field {
        return login_path.to_owned();
    }
    let separator = if query.is_some() { '&' } else { '?' };
    format!(
        "{login_path}{separator}{}={}",
        utf8_percent_encode(field, QUERY_VALUE),
        utf8_percent_encode(next, QUERY_VALUE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_this_site_pass() {
        for good in ["/", "/a", "/a/b?c=d&e=f", "/%2F%2Fescaped"] {
            assert_eq!(safe_next(good), Some(good));
        }
        for bad in [
            "",
            "a",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/a\r\nSet-Cookie: x=y",
            "/a\t",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_login_url_carries_next_encoded() {
        assert_eq!(
            login_url("/login", "next", "/reports?year=2026&q=a b"),
            "/login?next=/reports%3Fyear%3D2026%26q%3Da%20b"
        );
        assert_eq!(
            login_url("/login?lang=en", "next", "/"),
            "/login?lang=en&next=/"
        );
    }
}
