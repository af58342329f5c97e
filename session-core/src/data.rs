//! A session's data: string keys, JSON values.

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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
}
