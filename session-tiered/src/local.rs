//! The in-process tier: the cache, the generations that keep loads in flight from
//! putting stale copies back, and whether the channel is subscribed.

use std::cell::Cell;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{OptionsBuilder, Weighter};
use session_core::serde_json::Value;
use session_core::store::{KeyHasher, Record};
use session_core::SessionKey;
use tokio::sync::{oneshot, Notify};

use crate::barrier::Barrier;

/// Generations are kept per stripe of keys, not per key: a bump may make a load of
/// another key in the same stripe skip the cache once, which costs one round trip.
const STRIPES: usize = 1024;

/// How much the cache may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bound {
    /// At most this many sessions.
    Entries(u64),
    /// At most this many bytes of sessions, as [`Cached::new`] estimates them.
    Bytes(u64),
}

/// A cached record, with its estimated size: the cache weighs entries during eviction,
/// so the size is computed once, on the way in.
#[derive(Clone)]
struct Cached {
    record: Record,
    bytes: u32,
}

impl Cached {
    fn new(record: &Record) -> Self {
        let data: usize = record
            .data
            .iter()
            .map(|(key, value)| size_of::<(String, Value)>() + key.len() + value_bytes(value))
            .sum();
        let meta = record.meta.user_id.as_ref().map_or(0, String::len);
        let bytes = size_of::<SessionKey>() + size_of::<Cached>() + data + meta;
        Self {
            record: record.clone(),
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }
}

/// The heap bytes a JSON value holds beyond its own `size_of`, roughly.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(text) => text.len(),
        Value::Array(items) => items
            .iter()
            .map(|item| size_of::<Value>() + value_bytes(item))
            .sum(),
        Value::Object(fields) => fields
            .iter()
            .map(|(key, item)| {
                // A map node holds a key and a value, plus about a pointer's worth of
                // bookkeeping per entry.
                size_of::<(String, Value, usize)>() + key.len() + value_bytes(item)
            })
            .sum(),
    }
}

#[derive(Clone, Copy)]
struct Weight(Bound);

impl Weighter<SessionKey, Cached> for Weight {
    fn weight(&self, _key: &SessionKey, cached: &Cached) -> u64 {
        match self.0 {
            Bound::Entries(_) => 1,
            Bound::Bytes(_) => u64::from(cached.bytes),
        }
    }
}

/// One cache hit in this many, drawn at random, tells the eviction policy that the
/// session was read again; the others only look. Telling it reads and writes a field
/// of the cache's entry that the lookup does not otherwise touch: across 10,000 cached
/// sessions, that cache miss on every hit cost a warm read 1.5–2% of its throughput.
/// A session read `n` times while it waits in the cache's probation queue is marked
/// with probability 1 - (7/8)^n: one read ten times, three times in four.
const MARK_ONE_HIT_IN: u32 = 8;

thread_local! {
    /// A xorshift generator per thread: no state shared between cores on the hot path.
    static HIT_DRAWS: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// Whether this hit is the one in [`MARK_ONE_HIT_IN`] that marks its session.
fn marks_this_hit() -> bool {
    HIT_DRAWS.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        x % MARK_ONE_HIT_IN == 0
    })
}

/// What a session costs on average, to size the cache's tables for a bound in bytes.
const TYPICAL_SESSION_BYTES: u64 = 512;

pub(crate) struct Local {
    cache: Cache<SessionKey, Cached, Weight, KeyHasher>,
    generations: Box<[AtomicU64]>,
    coherent: AtomicBool,
    became_coherent: Notify,
    /// Strict mode's sync point with the channel.
    pub(crate) barrier: Barrier,
    /// A key whose invalidation is awaited from the channel, and who awaits it.
    awaited: Mutex<Option<(SessionKey, oneshot::Sender<()>)>>,
}

impl Local {
    pub(crate) fn new(bound: Bound) -> Self {
        let (items, weight) = match bound {
            Bound::Entries(entries) => (entries, entries),
            Bound::Bytes(bytes) => (bytes / TYPICAL_SESSION_BYTES, bytes),
        };
        let options = OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(items.max(1)).unwrap_or(usize::MAX))
            .weight_capacity(weight)
            .build()
            .expect("both capacities are set");
        Self {
            cache: Cache::with_options(
                options,
                Weight(bound),
                KeyHasher,
                DefaultLifecycle::default(),
            ),
            generations: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            coherent: AtomicBool::new(false),
            became_coherent: Notify::new(),
            barrier: Barrier::new(),
            awaited: Mutex::new(None),
        }
    }

    /// The cached session, only while the channel is subscribed.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<Record> {
        if !self.is_coherent() {
            return None;
        }
        let cached = if marks_this_hit() {
            self.cache.get(key)
        } else {
            self.cache.peek(key)
        };
        cached.map(|cached| cached.record)
    }

    /// Whether a copy of `key` would be served now, without taking it out.
    pub(crate) fn holds(&self, key: &SessionKey) -> bool {
        self.is_coherent() && self.cache.contains_key(key)
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
        self.cache.insert(*key, Cached::new(record));
        if !self.is_coherent() || self.generation(key) != generation {
            self.cache.remove(key);
        }
    }

    pub(crate) fn invalidate(&self, key: &SessionKey) {
        self.stripe(key).fetch_add(1, Ordering::AcqRel);
        self.cache.remove(key);
    }

    /// Drops every session of `user_id`: their keys are not known here, so every
    /// stripe is bumped and the cache searched.
    pub(crate) fn invalidate_user(&self, user_id: &str) {
        self.bump_all();
        self.cache
            .retain(|_, cached| cached.record.meta.user_id.as_deref() != Some(user_id));
    }

    /// Resolves once an invalidation of `key` arrives through the channel.
    pub(crate) fn await_invalidation(&self, key: SessionKey) -> oneshot::Receiver<()> {
        let (heard, hearing) = oneshot::channel();
        *self.awaited.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, heard));
        hearing
    }

    /// An invalidation of `key` arrived through the channel.
    pub(crate) fn heard(&self, key: &SessionKey) {
        let mut awaited = self.awaited.lock().unwrap_or_else(|e| e.into_inner());
        if awaited
            .as_ref()
            .is_some_and(|(expected, _)| expected == key)
        {
            if let Some((_, heard)) = awaited.take() {
                let _ = heard.send(());
            }
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

    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }

    fn flush(&self) {
        self.bump_all();
        self.cache.clear();
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

#[cfg(test)]
mod tests {
    use session_core::store::Data;
    use session_core::{Meta, Timestamp};
    use std::time::Duration;

    use super::*;

    fn record_holding(text_bytes: usize) -> Record {
        let now = Timestamp::now();
        let mut data = Data::new();
        data.insert("text".to_owned(), Value::String("x".repeat(text_bytes)));
        Record {
            data,
            meta: Meta::new(now, now.saturating_add(Duration::from_secs(60))),
        }
    }

    fn subscribed(bound: Bound) -> Local {
        let local = Local::new(bound);
        local.subscribed();
        local
    }

    fn cache(local: &Local, record: &Record) -> SessionKey {
        let key = session_testkit::random_key();
        local.insert_if_current(&key, record, local.generation(&key));
        key
    }

    #[test]
    fn a_session_weighs_what_it_holds() {
        let small = Cached::new(&record_holding(10)).bytes;
        let large = Cached::new(&record_holding(1024)).bytes;
        assert_eq!(large - small, 1014);
        assert!((1024..1024 + 256).contains(&large), "{large} bytes");
    }

    #[test]
    fn a_bound_in_bytes_keeps_the_cache_within_it() {
        let local = subscribed(Bound::Bytes(100 * 1024));
        let record = record_holding(1024);
        for _ in 0..1000 {
            cache(&local, &record);
        }
        let held = local.len();
        assert!((40..=100).contains(&held), "{held} sessions of 1 KiB held");
    }

    #[test]
    fn a_session_larger_than_the_bound_is_not_cached() {
        let local = subscribed(Bound::Bytes(64 * 1024));
        let small = cache(&local, &record_holding(10));
        let huge = cache(&local, &record_holding(100 * 1024));
        assert!(local.get(&small).is_some());
        assert!(local.get(&huge).is_none());
    }

    #[test]
    fn a_bound_in_entries_counts_sessions_whatever_their_size() {
        let local = subscribed(Bound::Entries(1000));
        let record = record_holding(4096);
        let keys: Vec<SessionKey> = (0..500).map(|_| cache(&local, &record)).collect();
        assert_eq!(local.len(), 500);
        assert!(keys.iter().all(|key| local.get(key).is_some()));
    }

    /// The eviction policy still hears of sessions that are read again, though only
    /// some hits tell it: in a full cache of a hundred, thirty sessions read thirty
    /// times each as they arrive outlast the ninety read once around them.
    #[test]
    fn sessions_read_again_outlast_sessions_read_once() {
        let local = subscribed(Bound::Entries(100));
        let record = record_holding(10);
        let read_once = |local: &Local| {
            let key = cache(local, &record);
            local.get(&key);
        };
        for _ in 0..100 {
            read_once(&local);
        }
        let mut again = Vec::new();
        for _ in 0..30 {
            let key = cache(&local, &record);
            for _ in 0..30 {
                assert!(local.get(&key).is_some());
            }
            again.push(key);
            read_once(&local);
        }
        for _ in 0..60 {
            read_once(&local);
        }
        let kept = again.iter().filter(|key| local.get(key).is_some()).count();
        assert!(kept >= 25, "{kept} of 30 sessions read again kept");
    }

    #[test]
    fn nothing_is_served_or_kept_while_the_channel_is_down() {
        let local = subscribed(Bound::Entries(1000));
        let key = cache(&local, &record_holding(10));
        local.lost();
        assert!(local.get(&key).is_none());
        let later = cache(&local, &record_holding(10));
        local.subscribed();
        assert!(local.get(&key).is_none() && local.get(&later).is_none());
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let local = subscribed(Bound::Entries(1000));
        let key = session_testkit::random_key();
        let generation = local.generation(&key);
        local.invalidate(&key);
        local.insert_if_current(&key, &record_holding(10), generation);
        assert!(local.get(&key).is_none());
    }

    #[test]
    fn a_user_is_dropped_with_every_session_of_theirs() {
        let local = subscribed(Bound::Entries(1000));
        let mut theirs = record_holding(10);
        theirs.meta.user_id = Some("ada".to_owned());
        let mine = cache(&local, &record_holding(10));
        let first = cache(&local, &theirs);
        let second = cache(&local, &theirs);
        local.invalidate_user("ada");
        assert!(local.get(&first).is_none() && local.get(&second).is_none());
        assert!(local.get(&mine).is_some());
    }
}
