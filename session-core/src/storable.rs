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
}

/// `key` if every store can hold it.
pub(crate) fn check_key(key: &str) -> Result<(), SessionError> {
    if key.chars().any(char::is_control) {
        return Err(SessionError::Refused(Refusal::ControlCharacterInKey));
    }
    Ok(())
}

/// `value` if every store can hold it: no U+0000 in any string or object key in it.
pub(crate) fn check_value(value: &Value) -> Result<(), SessionError> {
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
