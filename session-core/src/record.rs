//! What a store keeps for a session, and the changes a request makes to it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A point in time, in whole milliseconds since the Unix epoch: the resolution that
/// Redis TTLs and SQL timestamps share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time of the system clock.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// `self` moved `duration` later, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            Err(before) => Self(-i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// How long a session lives without requests, and whether its cookie outlives the
/// browser.
///
/// The layer has one (see `SessionLayerBuilder::with_expiry`); a session can carry its
/// own with `Session::set_expiry`, for example a long one after "remember me".
///
/// ```
/// use std::time::Duration;
/// use session_core::Expiry;
///
/// let remember_me = Expiry::on_inactivity(Duration::from_secs(30 * 24 * 3600)).persistent();
/// assert!(remember_me.is_persistent());
/// assert_eq!(remember_me.idle_timeout(), Duration::from_secs(30 * 24 * 3600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(rename = "i", with = "whole_seconds")]
    idle_timeout: Duration,
    #[serde(rename = "p", default, skip_serializing_if = "std::ops::Not::not")]
    persistent: bool,
}

impl Expiry {
    /// Ends the session after `idle_timeout` without a request, with a cookie that the
    /// browser drops when it closes. Whole seconds count; zero is raised to one second.
    pub fn on_inactivity(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout: Duration::from_secs(idle_timeout.as_secs().max(1)),
            persistent: false,
        }
    }

    /// The same expiry with a persistent cookie (`Max-Age`), kept across browser
    /// restarts until the session expires.
    #[must_use]
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// How long the session lives without a request.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Whether the cookie carries a `Max-Age`.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }
}

impl Default for Expiry {
    /// Thirty minutes of inactivity, a browser-session cookie: a servlet container's
    /// default.
    fn default() -> Self {
        Self::on_inactivity(Duration::from_secs(30 * 60))
    }
}

mod whole_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A session's metadata: what the store needs for expiry and the user index, plus the
/// layer's own bookkeeping. Stores persist it whole (it serialises compactly with
/// serde) and read `expires_at` and `user_id` for their TTL and index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// When the store must stop returning the session.
    #[serde(rename = "e")]
    pub expires_at: Timestamp,
    /// When the session was created (or its user last logged in).
    #[serde(rename = "c")]
    pub created_at: Timestamp,
    /// The user the session is bound to, if any.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The absolute end of the session, if the layer sets an absolute lifetime.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// This session's own expiry, when it differs from the layer's.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
}

impl Meta {
    /// Metadata for a session created at `now` that expires at `expires_at`.
    pub fn new(now: Timestamp, expires_at: Timestamp) -> Self {
        Self {
            expires_at,
            created_at: now,
            user_id: None,
            deadline: None,
            expiry: None,
        }
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// A session's data: string keys, JSON values.
///
/// A small ordered map, cheap to clone (it shares its entries until one side changes),
/// free when empty, and compact for the few keys a session usually has. `Debug` shows
/// the keys, never the values.
#[derive(Clone, Default)]
pub struct Data(Option<Arc<[Entry]>>);

/// One key and its value. The entries sit in the same allocation as the reference
/// count, and short keys inside the entries: reading a value from a session held in
/// memory follows one pointer, then the value's own (a cache miss each, when many
/// sessions are live).
#[derive(Clone, Default, PartialEq)]
struct Entry {
    key: Key,
    value: Value,
}

/// The longest key kept inline; an `Entry` is then no larger than a `(String, Value)`.
const INLINE_KEY: usize = 22;

/// A session key, inline when short (the usual case), boxed otherwise.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Boxed(Box<str>),
}

impl Key {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Boxed(text) => text.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Key::Inline { .. } => std::str::from_utf8(self.as_bytes())
                .expect("inline bytes are a whole `str`'s, copied by `From<&str>`"),
            Key::Boxed(text) => text,
        }
    }
}

impl Default for Key {
    fn default() -> Self {
        Key::from("")
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Self {
        if text.len() > INLINE_KEY {
            return Key::Boxed(text.into());
        }
        let mut bytes = [0; INLINE_KEY];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Key::Inline {
            len: text.len() as u8,
            bytes,
        }
    }
}

impl From<String> for Key {
    fn from(text: String) -> Self {
        if text.len() <= INLINE_KEY {
            Key::from(text.as_str())
        } else {
            Key::Boxed(text.into_boxed_str())
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            // A short key is copied inline from the parser's buffer, never allocated.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Key, E> {
                Ok(Key::from(text))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Key, E> {
                Ok(Key::from(text))
            }
        }

        deserializer.deserialize_str(KeyVisitor)
    }
}

impl Data {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of `entries`, sorted here; a repeated key keeps its last value, as JSON
    /// parsers conventionally do.
    fn from_entries(mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.key == earlier.key);
        entries.reverse();
        Data((!entries.is_empty()).then(|| Arc::from(entries)))
    }

    fn entries(&self) -> &[Entry] {
        self.0.as_deref().unwrap_or_default()
    }

    /// The entries, to change values in place: copied first if shared.
    fn entries_mut(&mut self) -> &mut [Entry] {
        let Some(entries) = &mut self.0 else {
            return &mut [];
        };
        if Arc::get_mut(entries).is_none() {
            *entries = Arc::from(entries.to_vec());
        }
        Arc::get_mut(entries).expect("just made unique")
    }

    /// Adds or removes entries: the entries move to a new allocation (copied if
    /// shared), as an `Arc<[_]>` cannot grow.
    fn reshape(&mut self, reserve: usize, change: impl FnOnce(&mut Vec<Entry>)) {
        let mut entries = Vec::with_capacity(self.len() + reserve);
        if let Some(mut shared) = self.0.take() {
            match Arc::get_mut(&mut shared) {
                Some(own) => entries.extend(own.iter_mut().map(std::mem::take)),
                None => entries.extend_from_slice(&shared),
            }
        }
        change(&mut entries);
        self.0 = (!entries.is_empty()).then(|| Arc::from(entries));
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries()
            .binary_search_by(|entry| entry.key.as_bytes().cmp(key.as_bytes()))
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).ok().map(|i| &self.entries()[i].value)
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        self.put(key, value)
    }

    /// [`insert`](Self::insert) of a borrowed key: a short key is copied inline,
    /// never allocated.
    pub(crate) fn insert_str(&mut self, key: &str, value: Value) -> Option<Value> {
        self.put(key, value)
    }

    fn put<K: AsRef<str> + Into<Key>>(&mut self, key: K, value: Value) -> Option<Value> {
        match self.position(key.as_ref()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries_mut()[i].value, value)),
            Err(i) => {
                let entry = Entry {
                    key: key.into(),
                    value,
                };
                if self.0.is_none() {
                    self.0 = Some(Arc::new([entry]));
                } else {
                    self.reshape(1, |entries| entries.insert(i, entry));
                }
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key).ok()?;
        let mut removed = None;
        self.reshape(0, |entries| removed = Some(entries.remove(i).value));
        removed
    }

    /// Removes every key.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries()
            .iter()
            .map(|entry| (entry.key.as_str(), &entry.value))
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|(k, _)| k)).finish()
    }
}

impl FromIterator<(String, Value)> for Data {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Data::from_entries(
            iter.into_iter()
                .map(|(key, value)| Entry {
                    key: Key::from(key),
                    value,
                })
                .collect(),
        )
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;

        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Data, A::Error> {
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some((key, value)) = access.next_entry::<Key, Value>()? {
                    entries.push(Entry { key, value });
                }
                Ok(Data::from_entries(entries))
            }
        }

        deserializer.deserialize_map(DataVisitor)
    }
}

/// The layer's expiry rule at the moment of one request, for a store that writes a
/// session it has not handed to the layer first
/// ([`SessionStore::save_unloaded`](crate::SessionStore::save_unloaded)).
///
/// A write restarts the session's idle timeout: it then expires its own idle timeout
/// ([`Meta::expiry`], else the layer's) after `now`, but never past its absolute
/// [`deadline`](Meta::deadline).
///
/// ```
/// use std::time::Duration;
/// use session_core::{Expiry, Meta, Refresh, Timestamp};
///
/// let now = Timestamp::from_unix_millis(1_000_000);
/// let refresh = Refresh { now, idle_timeout: Duration::from_secs(60) };
/// let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(5)));
/// assert!(refresh.is_live(&meta));
/// assert_eq!(refresh.expires_at(&meta), Timestamp::from_unix_millis(1_060_000));
///
/// meta.expiry = Some(Expiry::on_inactivity(Duration::from_secs(600)));
/// meta.deadline = Some(Timestamp::from_unix_millis(1_300_000));
/// assert_eq!(refresh.expires_at(&meta), Timestamp::from_unix_millis(1_300_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The time of the request.
    pub now: Timestamp,
    /// The idle timeout of sessions whose metadata sets none.
    pub idle_timeout: Duration,
}

impl Refresh {
    /// The idle timeout that applies to a session with `meta`.
    pub fn idle_timeout_of(&self, meta: &Meta) -> Duration {
        meta.expiry.map_or(self.idle_timeout, |e| e.idle_timeout())
    }

    /// When a session with `meta` written now expires.
    pub fn expires_at(&self, meta: &Meta) -> Timestamp {
        let idle_end = self.now.saturating_add(self.idle_timeout_of(meta));
        meta.deadline
            .map_or(idle_end, |deadline| idle_end.min(deadline))
    }

    /// Whether a session with `meta` is still live now: neither expired nor past its
    /// deadline.
    pub fn is_live(&self, meta: &Meta) -> bool {
        !meta.is_expired(self.now) && !meta.deadline.is_some_and(|deadline| deadline <= self.now)
    }
}

/// A session as a store keeps it.
#[derive(Clone, PartialEq)]
pub struct Record {
    /// The session's data.
    pub data: Data,
    /// Its metadata.
    pub meta: Meta,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("keys", &self.data)
            .field("meta", &self.meta)
            .finish()
    }
}

/// What one request changed in a session: stores apply it atomically, on top of
/// whatever other requests have written meanwhile.
///
/// Applied in this order: `cleared` empties the data, then `removed` keys go, then
/// `set` keys are written. A key is never in both `set` and `removed`.
#[derive(Clone, Default, PartialEq)]
pub struct Changes {
    /// Whether the request cleared the session before its other changes.
    pub cleared: bool,
    /// Keys removed.
    pub removed: Vec<String>,
    /// Keys set, with their new values.
    pub set: Data,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.removed.is_empty() && self.set.is_empty()
    }

    /// Records that `key` was set.
    pub(crate) fn insert(&mut self, key: &str, value: Value) {
        self.removed.retain(|k| k != key);
        self.set.insert_str(key, value);
    }

    /// Records that `key` was removed.
    pub(crate) fn remove(&mut self, key: &str) {
        self.set.remove(key);
        if !self.cleared && !self.removed.iter().any(|k| k == key) {
            self.removed.push(key.to_owned());
        }
    }

    /// Records that everything was removed.
    pub(crate) fn clear(&mut self) {
        *self = Changes {
            cleared: true,
            ..Changes::default()
        };
    }

    /// Applies the changes to `data`, as a store that keeps whole documents does.
    pub fn apply_to(&self, data: &mut Data) {
        if self.cleared {
            data.clear();
        }
        for key in &self.removed {
            data.remove(key);
        }
        for (key, value) in self.set.iter() {
            data.insert_str(key, value.clone());
        }
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("cleared", &self.cleared)
            .field("removed", &self.removed)
            .field("set", &self.set)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_keeps_keys_sorted_and_unique() {
        let mut data = Data::new();
        assert_eq!(data.insert("b".into(), json!(2)), None);
        assert_eq!(data.insert("a".into(), json!(1)), None);
        assert_eq!(data.insert("b".into(), json!(3)), Some(json!(2)));
        assert_eq!(data.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(data.remove("a"), Some(json!(1)));
        assert_eq!(data.get("a"), None);
        assert_eq!(data.get("b"), Some(&json!(3)));
    }

    #[test]
    fn data_clones_share_until_written() {
        let mut first: Data = [("k".to_owned(), json!("v"))].into_iter().collect();
        let second = first.clone();
        first.insert("k".into(), json!("w"));
        assert_eq!(second.get("k"), Some(&json!("v")));
        assert_eq!(first.get("k"), Some(&json!("w")));
    }

    #[test]
    fn data_keys_of_every_length_sort_by_their_bytes() {
        // Around the inline limit, and non-ASCII (byte order is code point order).
        let keys = [
            String::new(),
            "a".repeat(INLINE_KEY - 1),
            "a".repeat(INLINE_KEY),
            "a".repeat(INLINE_KEY + 1),
            "a".repeat(200),
            "é".repeat(INLINE_KEY / 2),
            "é".repeat(INLINE_KEY / 2 + 1),
            // Escaped in JSON: the parser hands these over from a scratch buffer.
            "q\"\\".into(),
            format!("{}\n", "n".repeat(INLINE_KEY)),
            "z".into(),
        ];
        let mut data = Data::new();
        for (n, key) in keys.iter().rev().enumerate() {
            data.insert(key.clone(), json!(n));
        }
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(data.iter().map(|(k, _)| k).collect::<Vec<_>>(), sorted);
        for (n, key) in keys.iter().rev().enumerate() {
            assert_eq!(data.get(key), Some(&json!(n)), "{key}");
        }
        assert_eq!(data.get(&"a".repeat(INLINE_KEY + 2)), None);
        let text = serde_json::to_string(&data).unwrap();
        assert_eq!(serde_json::from_str::<Data>(&text).unwrap(), data);
        for key in &keys {
            assert!(data.remove(key).is_some(), "{key}");
        }
        assert!(data.is_empty());
        assert_eq!(data, Data::new());
    }

    #[test]
    fn data_shared_copies_keep_their_entries_when_one_is_reshaped() {
        let mut first: Data = [("a".to_owned(), json!(1)), ("c".to_owned(), json!(3))]
            .into_iter()
            .collect();
        let second = first.clone();
        first.insert("b".into(), json!(2));
        first.remove("a");
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({"b": 2, "c": 3})
        );
        assert_eq!(
            serde_json::to_value(&second).unwrap(),
            json!({"a": 1, "c": 3})
        );
        // Unshared, the same changes move the entries instead of copying them.
        let mut only = second;
        only.insert("b".into(), json!(2));
        assert_eq!(only.remove("a"), Some(json!(1)));
        assert_eq!(only, first);
        assert_eq!(only.remove("x"), None);
    }

    #[test]
    fn data_from_an_iterator_keeps_the_last_of_a_repeated_key() {
        let data: Data = [("k", 1), ("j", 2), ("k", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"j": 2, "k": 3})
        );
        assert!(Data::from_iter(std::iter::empty()).is_empty());
    }

    #[test]
    fn data_serialises_as_an_object_and_last_duplicate_wins() {
        let data: Data = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(serde_json::to_string(&data).unwrap(), r#"{"a":2,"b":3}"#);
        assert!(serde_json::from_str::<Data>("[1]").is_err());
    }

    #[test]
    fn debug_shows_keys_not_values() {
        let record = Record {
            data: [("user".to_owned(), json!("secret-value"))]
                .into_iter()
                .collect(),
            meta: Meta::new(
                Timestamp::from_unix_millis(0),
                Timestamp::from_unix_millis(1),
            ),
        };
        let printed = format!("{record:?}");
        assert!(printed.contains("user"));
        assert!(!printed.contains("secret-value"));
    }

    #[test]
    fn changes_apply_in_order() {
        let mut data: Data = [("a".to_owned(), json!(1)), ("b".to_owned(), json!(2))]
            .into_iter()
            .collect();
        let mut changes = Changes::default();
        changes.insert("a", json!(10));
        changes.remove("a");
        changes.insert("c", json!(3));
        assert_eq!(changes.removed, ["a"]);
        changes.apply_to(&mut data);
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"b": 2, "c": 3})
        );

        let mut cleared = Changes::default();
        cleared.insert("x", json!(0));
        cleared.clear();
        cleared.remove("b");
        cleared.insert("d", json!(4));
        assert!(cleared.removed.is_empty());
        cleared.apply_to(&mut data);
        assert_eq!(serde_json::to_value(&data).unwrap(), json!({"d": 4}));
    }

    #[test]
    fn meta_round_trips_compactly() {
        let mut meta = Meta::new(
            Timestamp::from_unix_millis(5),
            Timestamp::from_unix_millis(9),
        );
        assert_eq!(serde_json::to_string(&meta).unwrap(), r#"{"e":9,"c":5}"#);
        meta.user_id = Some("alice".into());
        meta.expiry = Some(Expiry::on_inactivity(Duration::from_secs(60)).persistent());
        let text = serde_json::to_string(&meta).unwrap();
        assert_eq!(serde_json::from_str::<Meta>(&text).unwrap(), meta);
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp::from_unix_millis(1_000);
        assert_eq!(
            t.saturating_since(Timestamp::from_unix_millis(2_000)),
            Duration::ZERO
        );
        assert_eq!(t.saturating_add(Duration::MAX).unix_millis(), i64::MAX);
    }
}
