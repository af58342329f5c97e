//! What every store can hold: data some store would refuse is refused by the layer,
//! for every store alike, before any store call.

use serde_json::Value;

use crate::error::SessionError;

/// Why the layer refused data before writing it: no store is asked, and nothing of
/// the refused change is kept. A handler answers it as the client's error
/// (`400 Bad Request` with axum), never "retry later".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A key holds a control character (U+0000 to U+001F, U+007F): SQLite and
    /// MariaDB cannot address such a key in a JSON document.
    #[error("a session key may not hold control characters")]
    ControlCharacterInKey,
    /// A value holds the character U+0000, which PostgreSQL's `jsonb` refuses.
    #[error("a session value may not hold the character U+0000")]
    NulInValue,
    /// A value is larger, as JSON, than the layer's limit
    /// ([`with_max_value_size`](crate::SessionLayerBuilder::with_max_value_size));
    /// `413 Payload Too Large` with axum.
    #[error("a session value of {size} bytes is over the limit of {limit}")]
    ValueTooLarge {
        /// The value's size, in bytes of JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The session would grow larger than the layer's limit
    /// ([`with_max_session_size`](crate::SessionLayerBuilder::with_max_session_size));
    /// `413 Payload Too Large` with axum.
    #[error("the session would take {size} bytes, over the limit of {limit}")]
    SessionTooLarge {
        /// The session's size with the change: its keys and their values as JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Refusal {
    /// Whether the data was refused for its size (rather than its content).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::ValueTooLarge { .. } | Self::SessionTooLarge { .. }
        )
    }
}

/// How large a session and each of its values may grow, in bytes of JSON (a
/// session's size is its keys' lengths and its values' sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SizeLimits {
    pub(crate) value: usize,
    pub(crate) session: usize,
}

impl Default for SizeLimits {
    /// A session is read whole on every request that uses it, and sent whole over
    /// the network by every server-side store: 64 KiB keeps that well under a
    /// millisecond on a LAN and a Redis core busy with others, while leaving room for
    /// what sessions hold (ids, flags, a cart, a few forms' drafts). One value may
    /// take a quarter of it.
    fn default() -> Self {
        Self {
            value: 16 * 1024,
            session: 64 * 1024,
        }
    }
}

impl SizeLimits {
    /// The size of `value` if every store can hold it ([`check_value`]) and it is
    /// within the limit of one value.
    pub(crate) fn check_value(&self, value: &Value) -> Result<usize, SessionError> {
        check_value(value)?;
        let size = json_size(value);
        if size > self.value {
            return Err(SessionError::Refused(Refusal::ValueTooLarge {
                size,
                limit: self.value,
            }));
        }
        Ok(size)
    }

    /// Whether a session of `others` bytes besides `key` may hold a value of `size`
    /// under it.
    pub(crate) fn check_session(
        &self,
        others: usize,
        key: &str,
        size: usize,
    ) -> Result<(), SessionError> {
        let total = others + key.len() + size;
        if total > self.session {
            return Err(SessionError::Refused(Refusal::SessionTooLarge {
                size: total,
                limit: self.session,
            }));
        }
        Ok(())
    }
}

/// What `key` and its value take in a session.
pub(crate) fn entry_size(key: &str, value: &Value) -> usize {
    key.len() + json_size(value)
}

/// The length of `value` as compact JSON, without writing it out.
fn json_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// `key` if every store can hold it.
pub(crate) fn check_key(key: &str) -> Result<(), SessionError> {
    if key.chars().any(char::is_control) {
        return Err(SessionError::Refused(Refusal::ControlCharacterInKey));
    }
    Ok(())
}

/// `value` if every store can hold it: no U+0000 in any string or object key in it.
fn check_value(value: &Value) -> Result<(), SessionError> {
    let holds_nul = |text: &str| text.contains('\0');
    let refused = match value {
        Value::String(text) => holds_nul(text),
        Value::Array(items) => return items.iter().try_for_each(check_value),
        Value::Object(entries) => {
            for (key, value) in entries {
                if holds_nul(key) {
                    return Err(SessionError::Refused(Refusal::NulInValue));
                }
                check_value(value)?;
            }
            false
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    };
    if refused {
        return Err(SessionError::Refused(Refusal::NulInValue));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_those_of_the_json() {
        assert_eq!(json_size(&json!("abc")), 5);
        assert_eq!(json_size(&json!({"a": [1, 2]})), 11);
        assert_eq!(entry_size("key", &json!(12)), 5);
        let limits = SizeLimits {
            value: 5,
            session: 10,
        };
        assert_eq!(limits.check_value(&json!("abc")).unwrap(), 5);
        assert!(matches!(
            limits.check_value(&json!("abcd")),
            Err(SessionError::Refused(Refusal::ValueTooLarge {
                size: 6,
                limit: 5
            }))
        ));
        assert!(limits.check_session(4, "k", 5).is_ok());
        assert!(matches!(
            limits.check_session(5, "k", 5),
            Err(SessionError::Refused(Refusal::SessionTooLarge {
                size: 11,
                limit: 10
            }))
        ));
    }

    #[test]
    fn keys_and_values_no_store_can_hold_are_refused() {
        for bad in ["a\0b", "a\nb", "\r", "\u{7f}"] {
            assert!(matches!(
                check_key(bad),
                Err(SessionError::Refused(Refusal::ControlCharacterInKey))
            ));
        }
        for good in ["", "a b", "é", "pref:theme", "a/b%00"] {
            assert!(check_key(good).is_ok(), "{good:?}");
        }
        for bad in [json!("a\0"), json!(["x", {"y": "\0"}]), json!({"\0": 1})] {
            assert!(matches!(
                check_value(&bad),
                Err(SessionError::Refused(Refusal::NulInValue))
            ));
        }
        for good in [
            json!("line\nbreak"),
            json!({"a": [1, null, true]}),
            json!("\\u0000"),
        ] {
            assert!(check_value(&good).is_ok(), "{good}");
        }
    }
}
