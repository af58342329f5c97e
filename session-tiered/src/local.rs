//! The in-process tier: the cache, the generations that keep loads in flight from
//! putting stale copies back, and whether the channel is subscribed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use session_core::{Record, SessionKey};
use tokio::sync::Notify;

/// Generations are kept per stripe of keys, not per key: a bump may make a load of
/// another key in the same stripe skip the cache once, which costs one round trip.
const STRIPES: usize = 1024;

pub(crate) struct Local {
    cache: Cache<SessionKey, Arc<Record>>,
    generations: Box<[AtomicU64]>,
    coherent: AtomicBool,
    became_coherent: Notify,
}

impl Local {
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            cache: Cache::new(capacity),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            coherent: AtomicBool::new(false),
            became_coherent: Notify::new(),
        }
    }

    /// The cached session, only while the channel is subscribed.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<Record> {
        if !self.is_coherent() {
            return None;
        }
        self.cache.get(key).map(|record| Record::clone(&record))
    }

    /// The generation of `key`'s stripe, read before a load from the central store.
    pub(crate) fn generation(&self, key: &SessionKey) -> u64 {
        self.stripe(key).load(Ordering::Acquire)
    }

    /// Keeps a loaded record, unless an invalidation of its stripe came since
    /// `generation` was read or the channel is down. Insert first, check after: an
    /// invalidation bumps first and removes after, so one of the two removes it.
    pub(crate) fn insert_if_current(&self, key: &SessionKey, record: &Record, generation: u64) {
        if !self.is_coherent() || self.generation(key) != generation {
            return;
        }
        self.cache.insert(*key, Arc::new(record.clone()));
        if !self.is_coherent() || self.generation(key) != generation {
            self.cache.invalidate(key);
        }
    }

    pub(crate) fn invalidate(&self, key: &SessionKey) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(key);
    }

    /// Drops every session of `user_id`: their keys are not known here, so every
    /// stripe is bumped and the cache searched.
    pub(crate) fn invalidate_user(&self, user_id: &str) {
        self.bump_all();
        let keys: Vec<Arc<SessionKey>> = self
            .cache
            .iter()
            .filter(|(_, record)| record.meta.user_id.as_deref() == Some(user_id))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.cache.invalidate(&*key);
        }
    }

    /// The channel is down: stop serving and keeping copies, and drop them all.
    pub(crate) fn lost(&self) {
        self.coherent.store(false, Ordering::Release);
        self.flush();
    }

    /// The channel is subscribed again: what was missed meanwhile is unknown, so
    /// start from an empty cache.
    pub(crate) fn subscribed(&self) {
        self.flush();
        self.coherent.store(true, Ordering::Release);
        self.became_coherent.notify_waiters();
    }

    pub(crate) fn is_coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_coherent(&self, limit: Duration) {
        let notified = self.became_coherent.notified();
        if self.is_coherent() {
            return;
        }
        let _ = tokio::time::timeout(limit, notified).await;
    }

    pub(crate) fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    fn flush(&self) {
        self.bump_all();
        self.cache.invalidate_all();
    }

    fn bump_all(&self) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn stripe(&self, key: &SessionKey) -> &AtomicU64 {
        // Keys are SHA-256 output: their first bytes are as good as any hash.
        let bytes = key.as_bytes();
        let index = usize::from(u16::from_le_bytes([bytes[0], bytes[1]]));
        &self.generations[index % STRIPES]
    }
}
