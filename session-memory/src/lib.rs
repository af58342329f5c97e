//! [`MemoryStore`]: sessions in the memory of one process.
//!
//! For a single server and for tests. Behind a load balancer each server has its own
//! store, so a user whose requests land on another server is logged out: use a
//! central store (Redis, SQL) there.
//!
//! ```
//! use session_core::SessionLayer;
//! use session_memory::MemoryStore;
//!
//! let store = MemoryStore::new();
//! let layer = SessionLayer::new(store.clone());
//! assert_eq!(store.len(), 0);
//! # let _ = layer;
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use session_core::store::{
    async_trait, Changes, Created, KeyHasher, Record, Refresh, Saved, UpdateFn, Updated,
    USER_SESSIONS_LIMIT,
};
use session_core::{Meta, SessionKey, SessionStore, StoreError, Timestamp, UserSession};

/// An in-process session store.
///
/// Sessions live in a sharded map, so requests of different sessions rarely wait for
/// each other; the operations on one session are atomic under its shard's lock.
/// Expired sessions are never returned, and a background task (started on the first
/// write, inside the tokio runtime) removes them every minute, or as often as
/// [`with_sweep_interval`](Self::with_sweep_interval) says. Clones share the store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: DashMap<SessionKey, Record, KeyHasher>,
    /// Keys of each user's sessions. It may briefly list a key that is gone (readers
    /// check `sessions`), never miss one that is live: keys are added before their
    /// session and removed after it.
    users: DashMap<String, HashSet<SessionKey>>,
    sweep_interval: Duration,
    sweeper: OnceLock<()>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_sweep_interval(Duration::from_secs(60))
    }

    /// An empty store whose expired sessions are removed every `interval`.
    pub fn with_sweep_interval(interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: DashMap::default(),
                users: DashMap::new(),
                sweep_interval: interval.max(Duration::from_millis(1)),
                sweeper: OnceLock::new(),
            }),
        }
    }

    /// How many sessions the store holds, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Whether the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.inner.sessions.is_empty()
    }

    /// The record under `key`, if it is live at `now`.
    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<Record> {
        self.inner
            .sessions
            .get(key)
            .filter(|record| !record.meta.is_expired(now))
            .map(|record| record.clone())
    }

    /// Starts the sweeper once, if a tokio runtime is there to run it. It holds only a
    /// weak reference, and ends when the last clone of the store is dropped.
    fn start_sweeper(&self) {
        self.inner.sweeper.get_or_init(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let weak = Arc::downgrade(&self.inner);
            runtime.spawn(sweep(weak, self.inner.sweep_interval));
        });
    }
}

async fn sweep(store: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let removed = inner.remove_expired(Timestamp::now());
        if removed > 0 {
            tracing::debug!(removed, "memory store swept expired sessions");
        }
    }
}

impl Inner {
    fn remove_expired(&self, now: Timestamp) -> usize {
        let mut expired = Vec::new();
        self.sessions.retain(|key, record| {
            let live = !record.meta.is_expired(now);
            if !live {
                expired.push((*key, record.meta.user_id.take()));
            }
            live
        });
        for (key, user) in &expired {
            if let Some(user) = user {
                self.unindex(user, key);
            }
        }
        expired.len()
    }

    fn unindex(&self, user: &str, key: &SessionKey) {
        if let Entry::Occupied(mut keys) = self.users.entry(user.to_owned()) {
            keys.get_mut().remove(key);
            if keys.get().is_empty() {
                keys.remove();
            }
        }
    }

    /// Removes `key`; its index entry goes after it.
    fn remove(&self, key: &SessionKey) -> Option<Record> {
        let (_, record) = self.sessions.remove(key)?;
        if let Some(user) = &record.meta.user_id {
            self.unindex(user, key);
        }
        Some(record)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish()
    }
}

/// Takes a write's metadata, but not its user: the user of a session changes only
/// through login, which creates a new record, so the index stays right.
fn adopt_meta(stored: &mut Meta, written: &Meta) {
    let user_id = stored.user_id.take();
    *stored = Meta {
        user_id,
        ..written.clone()
    };
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        Ok(self.live(key, Timestamp::now()))
    }

    fn load_without_waiting(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Option<Result<Option<Record>, StoreError>> {
        Some(Ok(self.live(key, now)))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        self.start_sweeper();
        let now = Timestamp::now();
        if record.meta.is_expired(now) {
            // Born dead: nothing to keep, and nothing live can be under this key.
            return Ok(Created::Written);
        }
        // The user's index entry is held while the session goes in (lock order: the
        // index, then the sessions, as `delete_user_sessions` takes them): a "log
        // out everywhere" of the user either ends this session or comes after it is
        // listed, never in between, where it would end neither.
        let mut keys = record
            .meta
            .user_id
            .as_ref()
            .map(|user| self.inner.users.entry(user.clone()).or_default());
        let replaced = match self.inner.sessions.entry(*key) {
            Entry::Occupied(existing) if !existing.get().meta.is_expired(now) => {
                drop(existing);
                if let Some(keys) = keys {
                    // The entry may have been made for this call alone.
                    if keys.is_empty() {
                        let user = keys.key().clone();
                        drop(keys);
                        self.inner.users.remove_if(&user, |_, keys| keys.is_empty());
                    }
                }
                return Ok(Created::Collision);
            }
            Entry::Occupied(mut dead) => Some(std::mem::replace(dead.get_mut(), record.clone())),
            Entry::Vacant(vacant) => {
                vacant.insert(record.clone());
                None
            }
        };
        if let Some(keys) = &mut keys {
            keys.insert(*key);
        }
        drop(keys);
        if let Some(user) = replaced.and_then(|dead| dead.meta.user_id) {
            if record.meta.user_id.as_deref() != Some(&user) {
                self.inner.unindex(&user, key);
            }
        }
        Ok(Created::Written)
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let now = Timestamp::now();
        let Some(mut record) = self.inner.sessions.get_mut(key) else {
            return Ok(Saved::Missing);
        };
        if record.meta.is_expired(now) {
            return Ok(Saved::Missing);
        }
        adopt_meta(&mut record.meta, meta);
        changes.apply_to(&mut record.data);
        Ok(Saved::Applied)
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        let now = Timestamp::now();
        let Some(mut record) = self.inner.sessions.get_mut(key) else {
            return Ok(None);
        };
        if record.meta.is_expired(now) || !refresh.is_live(&record.meta) {
            return Ok(None);
        }
        let previous = record.meta.clone();
        record.meta.expires_at = refresh.expires_at(&previous);
        changes.apply_to(&mut record.data);
        Ok(Some(previous))
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let now = Timestamp::now();
        let Some(mut record) = self.inner.sessions.get_mut(key) else {
            return Ok(Updated::Missing);
        };
        if record.meta.is_expired(now) {
            return Ok(Updated::Missing);
        }
        // The shard's write lock is held from read to write: the update is atomic.
        let current = record.data.get(field);
        let Some(value) = f(current) else {
            return Ok(Updated::Kept(current.cloned()));
        };
        record.data.insert(field.to_owned(), value.clone());
        adopt_meta(&mut record.meta, meta);
        Ok(Updated::Stored(value))
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let now = Timestamp::now();
        match self.inner.sessions.get_mut(key) {
            Some(mut record) if !record.meta.is_expired(now) => {
                record.meta.expires_at = meta.expires_at;
                Ok(Saved::Applied)
            }
            _ => Ok(Saved::Missing),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.inner.remove(key);
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let now = Timestamp::now();
        let keys: Vec<SessionKey> = match self.inner.users.get(user_id) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(Vec::new()),
        };
        let mut sessions: Vec<UserSession> = keys
            .into_iter()
            .filter_map(|key| {
                let record = self.inner.sessions.get(&key)?;
                let mine = record.meta.user_id.as_deref() == Some(user_id);
                (mine && !record.meta.is_expired(now)).then(|| UserSession {
                    key,
                    meta: record.meta.clone(),
                })
            })
            .collect();
        if sessions.len() > USER_SESSIONS_LIMIT {
            sessions.sort_unstable_by_key(|session| std::cmp::Reverse(session.meta.expires_at));
            sessions.truncate(USER_SESSIONS_LIMIT);
        }
        Ok(sessions)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let now = Timestamp::now();
        // Held until every listed session is gone: a create bound to this user waits
        // for it (see `create`).
        let Entry::Occupied(keys) = self.inner.users.entry(user_id.to_owned()) else {
            return Ok(0);
        };
        let mut ended = 0;
        for key in keys.get() {
            let removed = self.inner.sessions.remove_if(key, |_, record| {
                record.meta.user_id.as_deref() == Some(user_id)
            });
            if removed.is_some_and(|(_, record)| !record.meta.is_expired(now)) {
                ended += 1;
            }
        }
        keys.remove();
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    session_testkit::conformance_tests!(MemoryStore::new());

    #[tokio::test]
    async fn expired_sessions_are_swept_without_a_request() {
        let store = MemoryStore::with_sweep_interval(Duration::from_millis(20));
        let now = Timestamp::now();
        for i in 0..100 {
            let key = session_testkit::random_key();
            let mut meta = Meta::new(now, now.saturating_add(Duration::from_millis(50)));
            meta.user_id = Some(format!("user-{}", i % 3));
            let record = Record {
                data: [("n".to_owned(), serde_json::json!(i))]
                    .into_iter()
                    .collect(),
                meta,
            };
            assert_eq!(store.create(&key, &record).await.unwrap(), Created::Written);
        }
        assert_eq!(store.len(), 100);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (!store.is_empty() || !store.inner.users.is_empty())
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(store.len(), 0, "expired sessions left in the store");
        assert!(store.inner.users.is_empty(), "user index not cleaned");
    }

    /// docs/security.md 34: "log out everywhere" of 100,000 sessions of one user, while
    /// logins of that user keep coming.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_out_everywhere_of_100_000_sessions_wins_against_a_login_storm() {
        let store = Arc::new(MemoryStore::new());
        let user = session_testkit::random_user();
        let record = session_testkit::storm::login_record(&user);
        for _ in 0..100_000 {
            store
                .create(&session_testkit::random_key(), &record)
                .await
                .unwrap();
        }
        session_testkit::storm::log_out_everywhere_against_a_login_storm(store, &user, 100_000)
            .await;
    }

    /// A login (a create bound to a user) racing "log out everywhere" of that user
    /// either is ended by it or stays listed, to be ended by the next one: never a
    /// live session that nothing lists or ends. One thread logs the user in again and
    /// again while another ends all the user's sessions in a loop; released together
    /// by a barrier, round after round.
    #[test]
    fn a_login_racing_log_out_everywhere_is_never_lost() {
        const ROUNDS: usize = 80;
        const LOGINS: usize = 500;
        let store = MemoryStore::new();
        fn block_on<F: std::future::Future>(future: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(future)
        }
        let now = Timestamp::now();
        let mut lost = 0;
        for round in 0..ROUNDS {
            let user = format!("user-{round}");
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let done = Arc::new(AtomicBool::new(false));
            let ending = {
                let (store, barrier, done, user) =
                    (store.clone(), barrier.clone(), done.clone(), user.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    block_on(async {
                        while !done.load(Ordering::Relaxed) {
                            store.delete_user_sessions(&user).await.unwrap();
                        }
                    })
                })
            };
            let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(600)));
            meta.user_id = Some(user.clone());
            let record = Record {
                data: Default::default(),
                meta,
            };
            let keys: Vec<SessionKey> =
                (0..LOGINS).map(|_| session_testkit::random_key()).collect();
            barrier.wait();
            block_on(async {
                for key in &keys {
                    store.create(key, &record).await.unwrap();
                }
            });
            done.store(true, Ordering::Relaxed);
            ending.join().unwrap();
            block_on(async {
                let listed = store.user_sessions(&user).await.unwrap();
                for key in &keys {
                    let live = store.load(key).await.unwrap().is_some();
                    if live && !listed.iter().any(|s| s.key == *key) {
                        lost += 1;
                    }
                    store.delete(key).await.unwrap();
                }
            });
        }
        assert_eq!(lost, 0, "{lost} sessions live but unlisted");
    }

    #[tokio::test]
    async fn the_sweeper_ends_with_the_store() {
        let store = MemoryStore::with_sweep_interval(Duration::from_millis(5));
        store.start_sweeper();
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(weak.upgrade().is_none());
    }
}
