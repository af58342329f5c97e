//! What a store keeps for a session, and the changes a request makes to it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::Data;
use crate::expiry::{Expiry, Timestamp};

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
    use std::time::Duration;

    use super::*;
    use serde_json::json;

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
}
