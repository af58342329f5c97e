//! A store that wraps a real store to count its calls, make it fail, or force an id
//! collision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use session_core::store::{Changes, Created, Record, Refresh, Saved, UpdateFn, Updated};
use session_core::{Meta, SessionKey, SessionStore, StoreError, Timestamp, UserSession};
use tokio::sync::Notify;

/// Wraps a store: counts the calls made to it by operation name (`load`, `create`,
/// `save`, `update`, `touch`, `delete`, `user_sessions`, `delete_user_sessions`), and
/// on demand makes them fail or hang, or sends the next `create` to a chosen key.
/// Clones share the counters and switches. By default it answers no read without
/// waiting ([`SessionStore::load_without_waiting`]), whatever it wraps: every read is
/// a counted `load`, as against a store over the network.
#[derive(Clone)]
pub struct InstrumentedStore<S> {
    inner: S,
    shared: Arc<Instruments>,
}

#[derive(Default)]
struct Instruments {
    counts: Mutex<HashMap<&'static str, usize>>,
    failing: AtomicBool,
    hanging: AtomicBool,
    yielding: AtomicBool,
    answering_without_waiting: AtomicBool,
    released: Notify,
    forced_key: Mutex<Option<SessionKey>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S> InstrumentedStore<S> {
    /// Wraps `inner`, healthy, with zero counts.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            shared: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Calls of `operation` so far.
    pub fn count(&self, operation: &str) -> usize {
        lock(&self.shared.counts)
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of every operation so far.
    pub fn total(&self) -> usize {
        lock(&self.shared.counts).values().sum()
    }

    /// Calls that write (all but the reads: `load`, `load_without_waiting` and
    /// `user_sessions`).
    pub fn writes(&self) -> usize {
        self.total()
            - self.count("load")
            - self.count("load_without_waiting")
            - self.count("user_sessions")
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
    }

    /// While `on`, every call returns an `Unavailable` error without reaching the store.
    pub fn set_failing(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }

    /// While `on` (and the store is neither failing nor hanging), reads that the
    /// wrapped store answers without waiting are answered so, and counted as
    /// `load_without_waiting`: the layer then sees the store as it would unwrapped.
    pub fn set_answering_without_waiting(&self, on: bool) {
        self.shared
            .answering_without_waiting
            .store(on, Ordering::SeqCst);
    }

    /// While `on`, every call waits before it reaches the store (the layer's timeout
    /// ends it); turned off, the calls still waiting go on.
    pub fn set_hanging(&self, on: bool) {
        self.shared.hanging.store(on, Ordering::SeqCst);
        if !on {
            self.shared.released.notify_waiters();
        }
    }

    /// Makes the next `create` write under `key`, whatever key it was given: an id
    /// generator repeating an existing id.
    pub fn collide_next_with(&self, key: SessionKey) {
        *lock(&self.shared.forced_key) = Some(key);
    }

    /// Whether a forced collision is still waiting for a `create`.
    pub fn is_collision_pending(&self) -> bool {
        lock(&self.shared.forced_key).is_some()
    }

    /// Makes every call give the runtime a turn before it runs (off by default), as a
    /// call over the network would: requests of a test then interleave between store
    /// calls, as they do against a real server, where a store that answers at once
    /// would run each request's calls in one go.
    pub fn set_yielding(&self, on: bool) {
        self.shared.yielding.store(on, Ordering::SeqCst);
    }

    fn tally(&self, operation: &'static str) {
        *lock(&self.shared.counts).entry(operation).or_default() += 1;
    }

    async fn enter(&self, operation: &'static str) -> Result<(), StoreError> {
        self.tally(operation);
        if self.shared.yielding.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        loop {
            // Made before the check, so that a release in between is not missed.
            let released = self.shared.released.notified();
            if !self.shared.hanging.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
        if self.shared.failing.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "injected fault",
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for InstrumentedStore<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        self.enter("load").await?;
        self.inner.load(key).await
    }

    fn load_without_waiting(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Option<Result<Option<Record>, StoreError>> {
        let shared = &self.shared;
        if !shared.answering_without_waiting.load(Ordering::SeqCst)
            || shared.failing.load(Ordering::SeqCst)
            || shared.hanging.load(Ordering::SeqCst)
        {
            return None;
        }
        let answer = self.inner.load_without_waiting(key, now)?;
        self.tally("load_without_waiting");
        Some(answer)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        self.enter("create").await?;
        let forced = lock(&self.shared.forced_key).take();
        self.inner.create(&forced.unwrap_or(*key), record).await
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        self.enter("save").await?;
        self.inner.save(key, changes, meta).await
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        self.enter("save_unloaded").await?;
        self.inner.save_unloaded(key, changes, refresh).await
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        self.enter("update").await?;
        self.inner.update(key, field, f, meta).await
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        self.enter("touch").await?;
        self.inner.touch(key, meta).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.enter("delete").await?;
        self.inner.delete(key).await
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        self.enter("user_sessions").await?;
        self.inner.user_sessions(user_id).await
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        self.enter("delete_user_sessions").await?;
        self.inner.delete_user_sessions(user_id).await
    }
}
