//! Per-user epochs: the server-side state that lets client-side sessions be revoked.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use session_core::store::{Created, Data, LoginOrder, Record, Updated};
use session_core::{Meta, SessionKey, SessionStore, StoreError, StoreErrorKind, Timestamp};
use sha2::{Digest, Sha256};

/// Domain separation from session keys (which hash ids under another prefix): no
/// cookie names an epoch record.
const EPOCH_DOMAIN: &[u8] = b"session-kit user epoch v1\0";
/// The field of an epoch record that holds the epoch: `[unix_millis, "key"]`, the
/// place in the order of logins before which the user's sessions are refused (a bare
/// number of milliseconds, as records of before the key was kept, counts with the
/// least key).
const FIELD: &str = "epoch";
/// Rounds of update-then-create before giving up on a store that keeps losing the
/// record between the two.
const ATTEMPTS: usize = 3;

/// Per user, the time before which that user's sessions are refused, kept in a
/// session store as one small record per revoked user.
#[derive(Clone)]
pub(crate) struct UserEpochs {
    store: Arc<dyn SessionStore>,
    /// How long an epoch is kept: it must outlive every session issued before it.
    retention: Duration,
}

impl UserEpochs {
    pub(crate) fn new(store: Arc<dyn SessionStore>, retention: Duration) -> Self {
        Self { store, retention }
    }

    pub(crate) async fn revoked_before(
        &self,
        user_id: &str,
    ) -> Result<Option<LoginOrder>, StoreError> {
        let Some(record) = self.store.load(&key(user_id)).await? else {
            return Ok(None);
        };
        let epoch = record
            .data
            .get(FIELD)
            .and_then(decode)
            .ok_or_else(|| StoreError::corrupt("an epoch record without an epoch"))?;
        Ok(Some(epoch))
    }

    /// Moves the user's epoch to `before`, never back: concurrent revocations keep
    /// the latest in the order of logins.
    pub(crate) async fn revoke(&self, user_id: &str, before: LoginOrder) -> Result<(), StoreError> {
        let key = key(user_id);
        let at = before.created_at;
        let meta = Meta::new(at, at.saturating_add(self.retention));
        let later = |current: Option<&Value>| match current.and_then(decode) {
            Some(current) if current >= before => None,
            _ => Some(encode(before)),
        };
        for _ in 0..ATTEMPTS {
            match self.store.update(&key, FIELD, &later, &meta).await? {
                Updated::Stored(_) | Updated::Kept(_) => return Ok(()),
                Updated::Missing => {}
            }
            let record = Record {
                data: Data::from_iter([(FIELD.to_owned(), encode(before))]),
                meta: meta.clone(),
            };
            if self.store.create(&key, &record).await? == Created::Written {
                return Ok(());
            }
        }
        Err(StoreError::new(
            StoreErrorKind::Other,
            "the epoch record kept vanishing between update and create",
        ))
    }
}

fn encode(epoch: LoginOrder) -> Value {
    json!([epoch.created_at.unix_millis(), epoch.key.to_string()])
}

fn decode(value: &Value) -> Option<LoginOrder> {
    if let Some(millis) = value.as_i64() {
        return Some(LoginOrder {
            created_at: Timestamp::from_unix_millis(millis),
            key: SessionKey::from_bytes([0; 32]),
        });
    }
    let [millis, key] = value.as_array()?.as_slice() else {
        return None;
    };
    Some(LoginOrder {
        created_at: Timestamp::from_unix_millis(millis.as_i64()?),
        key: SessionKey::parse(key.as_str()?)?,
    })
}

fn key(user_id: &str) -> SessionKey {
    let hash = Sha256::new()
        .chain_update(EPOCH_DOMAIN)
        .chain_update(user_id.as_bytes())
        .finalize();
    SessionKey::from_bytes(hash.into())
}
