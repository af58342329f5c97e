//! A user's id as session-kit stores it: a string, the one the session list and
//! [`Session::user_id`](session_core::Session::user_id) show.
//!
//! axum-login's ids are any serde type. An id that serialises as a string is stored as
//! that string and a number as its digits, so `42` and `"alice"` read as themselves
//! in the session list; anything else is stored as its JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The stored form of `id`; it fails if `id` does not serialise, or would not read
/// back as the same type.
pub(crate) fn encode<Id: Serialize + DeserializeOwned>(
    id: &Id,
) -> Result<String, serde_json::Error> {
    let stored = match serde_json::to_value(id)? {
        Value::String(id) => id,
        other => other.to_string(),
    };
    decode::<Id>(&stored)?;
    Ok(stored)
}

/// The id stored as `stored`.
pub(crate) fn decode<Id: DeserializeOwned>(stored: &str) -> Result<Id, serde_json::Error> {
    // A string id first: `"42"` is the string "42" for a `String` id, and the number
    // 42 for an integer one.
    serde_json::from_value(Value::String(stored.to_owned()))
        .or_else(|_| serde_json::from_str(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<Id>(id: Id, stored: &str)
    where
        Id: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(encode(&id).unwrap(), stored);
        assert_eq!(decode::<Id>(stored).unwrap(), id);
    }

    #[test]
    fn ids_read_back_as_themselves() {
        round_trip(42_i64, "42");
        round_trip(-7_i32, "-7");
        round_trip(42_u64, "42");
        round_trip("alice".to_owned(), "alice");
        round_trip("42".to_owned(), "42");
        round_trip("{\"a\":1}".to_owned(), "{\"a\":1}");
        round_trip((1_u8, "x".to_owned()), "[1,\"x\"]");
    }

    #[test]
    fn an_id_of_another_type_does_not_read() {
        assert!(decode::<i64>("alice").is_err());
        assert!(decode::<u8>("300").is_err());
    }
}
