//! How a session lies in Redis: the keys, the fields of a session's hash, and the
//! record codec.
//!
//! A session is one hash under `{prefix}{<key>}` (the key in a hash tag, so that a
//! cluster keeps everything about one session in one slot): `e` its expiry (Unix ms,
//! also the key's `PEXPIREAT`), `m` its metadata as JSON, `u` its user (set at
//! creation only), and `d:<name>` per data key, holding the value as JSON. A user's
//! sessions are a sorted set under `{prefix}user:{<user>}`, scored by expiry. The
//! scripts (`scripts.rs`) write the same layout in Lua.

use std::fmt;
use std::sync::Arc;

use redis::Value;
use session_core::store::{Data, Record};
use session_core::{Meta, SessionKey, StoreError, StoreErrorKind, Timestamp};

/// What the field of a data key starts with; the key's name follows.
pub(crate) const DATA_FIELD_PREFIX: &str = "d:";

/// What follows the store's prefix in the keys of user indices.
const INDEX_INFIX: &str = "user:";

/// The Redis keys of one store: everything under its prefix.
#[derive(Clone)]
pub(crate) struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    pub(crate) fn new(prefix: impl Into<Arc<str>>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a session.
    pub(crate) fn session(&self, key: &SessionKey) -> String {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.session_len());
        let _ = write!(text, "{}", self.session_text(key));
        text
    }

    /// The Redis key of a session, to be written where it goes.
    pub(crate) fn session_text<'a>(&'a self, key: &'a SessionKey) -> SessionKeyText<'a> {
        SessionKeyText {
            prefix: &self.prefix,
            key,
        }
    }

    pub(crate) fn session_len(&self) -> usize {
        // The key's text is 46 bytes, and the braces two more.
        self.prefix.len() + 48
    }

    /// The session a Redis key names, if it is a session's key of this store.
    pub(crate) fn session_from(&self, redis_key: &str) -> Option<SessionKey> {
        let tagged = redis_key.strip_prefix(&*self.prefix)?;
        SessionKey::parse(tagged.strip_prefix('{')?.strip_suffix('}')?)
    }

    /// The key of `user`'s index: [`index_prefix`](Self::index_prefix), then the
    /// user in a hash tag.
    pub(crate) fn index(&self, user: &str) -> String {
        format!("{}{{{user}}}", self.index_prefix())
    }

    /// What the keys of user indices start with (the save script that does not read
    /// first builds the index key from the stored user).
    pub(crate) fn index_prefix(&self) -> impl fmt::Display + '_ {
        IndexPrefix(&self.prefix)
    }
}

struct IndexPrefix<'a>(&'a str);

impl fmt::Display for IndexPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{INDEX_INFIX}", self.0)
    }
}

/// See [`Keys::session_text`].
pub(crate) struct SessionKeyText<'a> {
    prefix: &'a str,
    key: &'a SessionKey,
}

impl fmt::Display for SessionKeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{{}}}", self.prefix, self.key)
    }
}

/// The field of the data key `name`.
pub(crate) fn data_field(name: &str) -> String {
    format!("{DATA_FIELD_PREFIX}{name}")
}

pub(crate) fn meta_error(error: serde_json::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Other, error)
}

pub(crate) fn meta_json(meta: &Meta) -> Result<String, StoreError> {
    serde_json::to_string(meta).map_err(meta_error)
}

/// A record nobody can read is no session: the client gets a new one, and the broken
/// record expires with its TTL.
pub(crate) fn decode_or_absent(reply: Value) -> Option<Record> {
    decode(reply).unwrap_or_else(|problem| {
        tracing::warn!(problem, "corrupt session record in Redis treated as absent");
        None
    })
}

/// Reads a session hash (`HGETALL`'s reply) back into a record; `None` for an empty
/// hash (no such key), an error for one that does not decode. The reply is read as
/// it came, its bytes parsed in place: converting it into pairs of `String`s first
/// cost a read about 1,000 instructions and two allocations per field.
fn decode(reply: Value) -> Result<Option<Record>, String> {
    let items = match reply {
        Value::Array(items) => items,
        // RESP3 answers with a map.
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => return Err(format!("HGETALL answered {other:?}")),
    };
    if items.is_empty() {
        return Ok(None);
    }
    if items.len() % 2 != 0 {
        return Err("HGETALL answered an odd number of items".into());
    }
    let mut data = Data::new();
    let (mut meta, mut expires_at, mut user) = (None, None, None);
    let mut items = items.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        let (Value::BulkString(field), Value::BulkString(value)) = (field, value) else {
            return Err("a field or value that is not a string".into());
        };
        match field.as_slice() {
            b"m" => meta = Some(value),
            b"e" => expires_at = Some(value),
            b"u" => user = Some(value),
            _ => {
                let name = field
                    .strip_prefix(DATA_FIELD_PREFIX.as_bytes())
                    .ok_or("unknown field")?;
                let name = std::str::from_utf8(name).map_err(|e| e.to_string())?;
                let value = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
                data.insert(name.to_owned(), value);
            }
        }
    }
    let meta = stored_meta(expires_at.as_deref(), meta.as_deref(), user)?;
    Ok(Some(Record { data, meta }))
}

/// A session's metadata from its fields `e`, `m` and `u`: the expiry and the user are
/// kept apart from the metadata's JSON (scripts move the expiry alone, and index the
/// user), and override what it says. Any of them that is no text makes the record
/// corrupt.
fn stored_meta(
    expires_at: Option<&[u8]>,
    meta: Option<&[u8]>,
    user: Option<Vec<u8>>,
) -> Result<Meta, String> {
    let expires_at = std::str::from_utf8(expires_at.ok_or("no expiry")?)
        .map_err(|e| e.to_string())?
        .parse::<i64>()
        .map_err(|e| e.to_string())?;
    let mut meta =
        serde_json::from_slice::<Meta>(meta.ok_or("no metadata")?).map_err(|e| e.to_string())?;
    meta.expires_at = Timestamp::from_unix_millis(expires_at);
    meta.user_id = user
        .map(|user| String::from_utf8(user).map_err(|e| e.to_string()))
        .transpose()?;
    Ok(meta)
}

/// The metadata a save script found (`{1, e, m, u}`, the fields as they were).
pub(crate) fn decode_previous(reply: &[Value]) -> Result<Meta, String> {
    decode_meta_fields(reply.get(1..).unwrap_or_default())
}

/// A session's metadata from its fields `e`, `m` and `u`, in that order (`HMGET`'s
/// reply); an error for a record that is not there or does not decode.
pub(crate) fn decode_meta_fields(fields: &[Value]) -> Result<Meta, String> {
    let bytes = |i: usize| match fields.get(i) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        _ => None,
    };
    stored_meta(bytes(0), bytes(1), bytes(2).map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::BulkString(bytes.into())
    }

    /// A record as `HGETALL` answers it, as the store's scripts write it.
    fn stored(record: &Record) -> Value {
        let meta = &record.meta;
        let mut items = vec![
            bulk("e"),
            bulk(meta.expires_at.unix_millis().to_string()),
            bulk("m"),
            bulk(meta_json(meta).unwrap()),
        ];
        if let Some(user) = &meta.user_id {
            items.extend([bulk("u"), bulk(user.as_str())]);
        }
        for (name, value) in record.data.iter() {
            items.extend([bulk(data_field(name)), bulk(value.to_string())]);
        }
        Value::Array(items)
    }

    /// Any reply: strings of any bytes, integers, nil and nested arrays.
    fn any_reply() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(Value::BulkString),
            prop_oneof![
                Just("e"),
                Just("m"),
                Just("u"),
                Just("d:a"),
                Just("{}"),
                Just("1")
            ]
            .prop_map(bulk),
        ];
        leaf.prop_recursive(3, 64, 12, |inner| {
            prop::collection::vec(inner, 0..12).prop_map(Value::Array)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// docs/security.md 28: whatever a hash holds (fields and values of any
        /// bytes, any count), `load` finds a record or nothing, never a panic; the
        /// same for the metadata fields the scripts read back.
        #[test]
        fn any_hash_decodes_or_is_absent(reply in any_reply()) {
            let _ = decode_or_absent(reply.clone());
            if let Value::Array(items) = &reply {
                let _ = decode_meta_fields(items);
                let _ = decode_previous(items);
            }
        }

        /// A record the scripts wrote, with any data and user, reads back as it was.
        #[test]
        fn any_record_round_trips(
            entries in prop::collection::btree_map(
                any::<String>(),
                prop_oneof![
                    any::<String>().prop_map(serde_json::Value::String),
                    any::<i64>().prop_map(serde_json::Value::from),
                    any::<bool>().prop_map(serde_json::Value::Bool),
                ],
                0..8,
            ),
            user in proptest::option::of(any::<String>()),
            expires_at in 0..i64::MAX / 2,
        ) {
            let mut meta = Meta::new(Timestamp::from_unix_millis(1), Timestamp::from_unix_millis(expires_at));
            meta.user_id = user;
            let record = Record { data: entries.into_iter().collect(), meta };
            let decoded = decode_or_absent(stored(&record)).expect("a record");
            prop_assert_eq!(decoded.data, record.data);
            prop_assert_eq!(decoded.meta.user_id, record.meta.user_id);
            prop_assert_eq!(decoded.meta.expires_at, record.meta.expires_at);
        }
    }

    /// An oversized field decodes like any other; one that is no JSON makes the
    /// record absent.
    #[test]
    fn oversized_and_broken_fields() {
        let now = Timestamp::now();
        let mut record = Record {
            data: Data::new(),
            meta: Meta::new(now, now),
        };
        record
            .data
            .insert("big".into(), serde_json::Value::String("x".repeat(8 << 20)));
        assert_eq!(decode_or_absent(stored(&record)), Some(record.clone()));
        let Value::Array(mut items) = stored(&record) else {
            unreachable!()
        };
        items.extend([bulk("d:broken"), bulk("{\u{0}")]);
        assert_eq!(decode_or_absent(Value::Array(items)), None);
    }
}
