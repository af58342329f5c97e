//! A tiered session store for session-kit: sessions cached in the process, in front of
//! a central [`SessionStore`] that every server shares, kept coherent across servers
//! by an [`InvalidationChannel`]: Redis pub/sub (`session_redis::RedisChannel`, on a
//! server or on the master Redis Sentinel names), PostgreSQL `LISTEN`/`NOTIFY`
//! (`session_sql::PostgresChannel`), or a channel of your own. This crate knows no
//! driver: it composes any store with any channel through their traits.
//!
//! - **Reads** of a cached session cost no round trip to the central store. A session
//!   is cached when it is created here, or read here after a change.
//! - **Writes** go to the central store first; only once it has them does this
//!   server drop its copy and publish the session's key, so that every other server
//!   drops its copy too. A write is never acknowledged before the central store has
//!   it. A write that fails, times out or is cancelled is announced all the same,
//!   from a task of its own: it may have reached the central store anyway. A central
//!   store that publishes the invalidation inside the write itself
//!   ([`published_by_central`](TieredStoreBuilder::published_by_central), with the invalidation
//!   channel of `RedisStore` or `PostgresStore`) makes a write one round trip
//!   instead of two, and leaves no moment at which a crash could separate a write
//!   from its announcement.
//! - **Coherence:** between a write's publication and its delivery (loopback: well
//!   under a millisecond), another server may still serve its copy. In
//!   [strict mode](TieredStoreBuilder::strict) there is no such window: a read first waits for a
//!   marker of its own to come back through the channel, one small round trip shared
//!   by every read in flight.
//! - **Losing the channel** never leaves a server serving stale sessions: while its
//!   subscription is down, the cache is flushed and bypassed (every read goes to the
//!   central store), and it is flushed again once the subscription is back, since
//!   messages sent in between were lost.
//! - **Loads in flight** cannot put a stale copy back: every invalidation bumps a
//!   generation, and a load only keeps what it read if no invalidation of its key
//!   came while it was in flight.
//! - **Changes behind the store's back.** A server learns of a change through the
//!   channel, or when the central store answers one of its own calls. A record that
//!   disappears from the central store unannounced (evicted under `maxmemory`, lost
//!   in a failover, deleted by hand) is still served from a server's copy until one
//!   of these happens: a write, touch or delete of that session from the server
//!   (whatever the answer; an `update` that finds the session missing included),
//!   its eviction from the cache, or the end of the copy's own idle timeout, which
//!   the copy carries. What a server cannot notice is a change made directly in the
//!   central store by something other than session-kit: to end sessions by hand, end
//!   them through a store (`delete`, `delete_user_sessions`), which announces it.
//!
//! ```no_run
//! # async fn run(central: impl session_core::SessionStore) -> Result<(), Box<dyn std::error::Error>> {
//! use session_redis::RedisChannel;
//! use session_tiered::TieredStore;
//!
//! // `central`: the store every server shares, a `RedisStore` or a `PostgresStore`.
//! let channel = RedisChannel::connect("redis://127.0.0.1:6379", "sessions:invalidate").await?;
//! let store = TieredStore::builder(central)
//!     .with_capacity(100_000)
//!     .connect(channel)
//!     .await?;
//! let layer = session_core::SessionLayer::new(store);
//! # let _ = layer;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod barrier;
mod channel;
mod local;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_core::store::{
    async_trait, Changes, Created, Invalidation, InvalidationChannel, Record, Refresh, Saved,
    UpdateFn, Updated,
};
use session_core::{Meta, SessionKey, SessionStore, StoreError, Timestamp, UserSession};

use channel::Channel;
use local::{Bound, Local};

/// Sessions cached in process in front of a central store `S`; see the crate docs.
pub struct TieredStore<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    central: S,
    local: Arc<Local>,
    channel: Channel,
    strict: bool,
    /// The central store publishes every write's invalidation itself, inside the
    /// write: checked at `connect`.
    published_by_central: bool,
}

/// How long a strict read waits for its marker before it loads from the central
/// store instead; markers take well under a millisecond on a healthy channel.
const STRICT_WAIT: Duration = Duration::from_millis(500);

/// How long `connect` waits for the invalidation the central store is to publish.
const CHECK_WAIT: Duration = Duration::from_secs(1);

impl<S> Clone for TieredStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for TieredStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredStore")
            .field("cached", &self.inner.local.len())
            .field("coherent", &self.inner.local.is_coherent())
            .field("strict", &self.inner.strict)
            .field("published_by_central", &self.inner.published_by_central)
            .finish_non_exhaustive()
    }
}

/// Configures a [`TieredStore`].
#[derive(Debug)]
pub struct TieredStoreBuilder<S> {
    central: S,
    bound: Bound,
    strict: bool,
    published_by_central: bool,
}

impl<S: SessionStore> TieredStore<S> {
    /// Starts configuring a tiered store in front of `central`.
    pub fn builder(central: S) -> TieredStoreBuilder<S> {
        TieredStoreBuilder {
            central,
            bound: Bound::Entries(100_000),
            strict: false,
            published_by_central: false,
        }
    }

    /// Whether the invalidation channel is subscribed, so that cached sessions are
    /// served. While it is not, every read goes to the central store.
    pub fn is_coherent(&self) -> bool {
        self.inner.local.is_coherent()
    }

    /// The cached copy of `key`, if it may be served.
    async fn cached(&self, key: &SessionKey) -> Option<Record> {
        if self.inner.strict {
            // Boxed: every load's future would otherwise be as large as the
            // marker's wait and its timer, and be moved whole into its box on every
            // call, warm reads included.
            Box::pin(self.cached_strictly(key)).await
        } else {
            self.inner.local.get(key)
        }
    }

    /// The cached copy of `key`, once the channel has delivered every invalidation
    /// sent before this read began.
    async fn cached_strictly(&self, key: &SessionKey) -> Option<Record> {
        let local = &self.inner.local;
        // Only a session cached now is worth a marker; what the marker lets through
        // is taken after it.
        if local.holds(key) && local.barrier.pass(STRICT_WAIT).await {
            local.get(key)
        } else {
            None
        }
    }

    /// The invalidation a write to the central store owes, taken before the write: see
    /// [`Owed`].
    fn owe(&self, message: Invalidation) -> Owed<'_> {
        Owed {
            local: &self.inner.local,
            channel: (!self.inner.published_by_central).then_some(&self.inner.channel),
            message: Some(message),
        }
    }
}

/// The invalidation owed for a write to the central store, which must go out whatever
/// becomes of the write. Once the write returns, [`send`](Self::send) drops the local
/// copy and tells the other servers before the request is answered. A write that
/// failed, timed out or was cancelled (the layer's store timeout, a client that went
/// away) may still have reached the central store, so an invalidation dropped unsent
/// is sent anyway, from a task of its own: one invalidation too many costs a reload,
/// one too few lets other servers serve a session that was changed or ended.
///
/// When the central store publishes invalidations itself, inside its writes, only the
/// local copy is dropped here: the write and its announcement happened together, or
/// neither did.
struct Owed<'a> {
    local: &'a Local,
    /// Where to publish; `None` when the central store does.
    channel: Option<&'a Channel>,
    message: Option<Invalidation>,
}

impl Owed<'_> {
    /// The write is done: invalidate here and publish, then the request may go on.
    async fn send(mut self) {
        if let Some(message) = &self.message {
            invalidate_locally(self.local, message);
            // Taken only once published: a publish cancelled halfway is sent again by
            // `drop`.
            if let Some(channel) = self.channel {
                channel.publish(message).await;
            }
        }
        self.message = None;
    }

    /// The write changed nothing: nothing to announce.
    fn forgive(mut self) {
        self.message = None;
    }
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            invalidate_locally(self.local, &message);
            if let Some(channel) = self.channel {
                channel.publish_detached(message);
            }
        }
    }
}

fn invalidate_locally(local: &Local, message: &Invalidation) {
    match message {
        Invalidation::Session(key) => local.invalidate(key),
        Invalidation::User(user_id) => local.invalidate_user(user_id),
    }
}

impl<S: SessionStore> TieredStoreBuilder<S> {
    /// Keeps at most `entries` sessions in process (the default: 100,000). When the
    /// cache is full, the least useful go first: sessions read once are evicted before
    /// those read again and again (S3-FIFO, as the `quick_cache` crate evicts; one hit
    /// in eight, drawn at random, is counted, which spares the other warm reads the
    /// cache miss of the entry's hit count).
    pub fn with_capacity(mut self, entries: u64) -> Self {
        self.bound = Bound::Entries(entries);
        self
    }

    /// Keeps at most `bytes` of sessions in process, instead of a number of them; for
    /// applications whose sessions differ much in size. A session's size is estimated
    /// from its keys, values and metadata as they sit in memory (a session holding a
    /// 1 KiB string weighs a little over 1 KiB); one larger than the whole bound is
    /// never cached. Evicts as [`with_capacity`](Self::with_capacity) does.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.bound = Bound::Bytes(bytes);
        self
    }

    /// Starts the store on `channel`, the invalidation channel every server of the
    /// application shares (`session_redis::RedisChannel`,
    /// `session_sql::PostgresChannel`, or any [`InvalidationChannel`]). Waits up to two
    /// seconds for the subscription, so that the store starts serving cached
    /// sessions; if the channel's server is not reachable by then, the store starts
    /// bypassing its cache and keeps trying. Must be called inside a tokio runtime.
    ///
    /// A channel that cannot publish this store's invalidations (one over Redis
    /// Sentinel, whose master may change under it) needs a central store that
    /// publishes them inside its writes, and the builder must say so with
    /// [`published_by_central`](Self::published_by_central); without it, `connect`
    /// fails.
    ///
    /// The subscription is kept: when it is lost (a closed connection, a server that
    /// stops answering, over Sentinel a new master), the cache is flushed and bypassed
    /// until a new subscription is up.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_redis::{RedisChannel, RedisStore};
    /// use session_tiered::TieredStore;
    ///
    /// let sentinels = ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"];
    /// let central = RedisStore::connect_sentinel(sentinels, "mymaster")
    ///     .await?
    ///     .with_invalidation_channel("myapp:invalidate");
    /// let channel = RedisChannel::sentinel(sentinels, "mymaster", "myapp:invalidate")?;
    /// let store = TieredStore::builder(central)
    ///     .published_by_central()
    ///     .connect(channel)
    ///     .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        self,
        channel: impl InvalidationChannel,
    ) -> Result<TieredStore<S>, StoreError> {
        if !channel.publishes_invalidations() && !self.published_by_central {
            return Err(StoreError::new(
                session_core::StoreErrorKind::Other,
                format!(
                    "the invalidation channel {:?} cannot publish this store's \
                     invalidations: it needs a central store that publishes them \
                     (`with_invalidation_channel`) and `published_by_central`",
                    channel.name()
                ),
            ));
        }
        let local = Arc::new(Local::new(self.bound));
        let channel = Channel::start(Arc::new(channel), &local);
        self.finish(local, channel).await
    }

    /// Strict mode: no coherence window at all. Before it serves a cached session, a
    /// read waits until the channel has delivered every invalidation sent before the
    /// read began, so a session logged out on any server (its response returned) is
    /// refused by every server from then on. The check is a marker this server
    /// publishes on a channel of its own and receives back: one small round trip to
    /// the channel's server, cheaper than a load and shared by all the reads in
    /// flight (one marker serves every read that began before it was sent). If the
    /// marker does not come back within half a second, the read loads from the
    /// central store.
    pub fn strict(mut self) -> Self {
        self.strict = true;
        self
    }

    /// The central store publishes every write's invalidation itself, on the same
    /// channel and server, inside the write (`RedisStore::with_invalidation_channel`
    /// on a standalone Redis, `PostgresStore::with_invalidation_channel` with a
    /// `PostgresChannel`): this store then publishes none. A write costs one round trip instead of two, and a server that dies
    /// between a write and its announcement can no longer leave others serving a
    /// stale copy.
    ///
    /// `connect` checks it: it deletes a random key, which holds no session, through
    /// the central store and waits up to a second for that invalidation; if none
    /// comes, it fails. If the channel is not subscribed yet, there is nothing to
    /// check with: the store publishes its own invalidations, as without this option,
    /// and logs a warning.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_redis::{RedisChannel, RedisStore};
    /// use session_tiered::TieredStore;
    ///
    /// let url = "redis://127.0.0.1:6379";
    /// let central = RedisStore::connect(url).await?.with_invalidation_channel("myapp:invalidate");
    /// let channel = RedisChannel::connect(url, "myapp:invalidate").await?;
    /// let store = TieredStore::builder(central)
    ///     .published_by_central()
    ///     .connect(channel)
    ///     .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn published_by_central(mut self) -> Self {
        self.published_by_central = true;
        self
    }

    async fn finish(
        self,
        local: Arc<Local>,
        channel: Channel,
    ) -> Result<TieredStore<S>, StoreError> {
        local.wait_coherent(Duration::from_secs(2)).await;
        let published_by_central = self.published_by_central
            && (central_publishes(&self.central, &local, channel.name()).await?
                || untested_publisher(&channel));
        Ok(TieredStore {
            inner: Arc::new(Inner {
                central: self.central,
                local,
                channel,
                strict: self.strict,
                published_by_central,
            }),
        })
    }
}

/// Whether the central store, which could not be checked (the channel is not
/// subscribed yet), is taken at its word: only where this store could not publish its
/// own invalidations instead.
fn untested_publisher(channel: &Channel) -> bool {
    let trusted = !channel.can_publish_invalidations();
    tracing::warn!(
        channel = channel.name(),
        "the invalidation channel is not subscribed: whether the central store publishes \
         on it is not known, so {}",
        if trusted {
            "it is taken at its word"
        } else {
            "this store publishes its own"
        }
    );
    trusted
}

/// Whether `central` publishes invalidations on the channel: an error if the channel
/// is up and none came, `false` if the channel is not up to tell.
async fn central_publishes<S: SessionStore>(
    central: &S,
    local: &Local,
    channel: &str,
) -> Result<bool, StoreError> {
    if !local.is_coherent() {
        return Ok(false);
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|error| StoreError::unavailable(error.to_string()))?;
    let key = SessionKey::from_bytes(random);
    let heard = local.await_invalidation(key);
    central.delete(&key).await?;
    match tokio::time::timeout(CHECK_WAIT, heard).await {
        Ok(Ok(())) => Ok(true),
        _ => Err(StoreError::new(
            session_core::StoreErrorKind::Other,
            format!(
                "the central store published no invalidation on {channel:?} within a \
                 second: give it that channel on the same Redis \
                 (`RedisStore::with_invalidation_channel`), or build the tiered store \
                 without `published_by_central`"
            ),
        )),
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for TieredStore<S> {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        let local = &self.inner.local;
        if let Some(record) = self.cached(key).await {
            if !record.meta.is_expired(Timestamp::now()) {
                return Ok(Some(record));
            }
            // Expired here; the central store knows whether it was extended meanwhile.
            local.invalidate(key);
        }
        let generation = local.generation(key);
        let loaded = self.inner.central.load(key).await?;
        if let Some(record) = &loaded {
            local.insert_if_current(key, record, generation);
        }
        Ok(loaded)
    }

    /// A warm read: the cached copy, if it is live at `now` and strict mode does not
    /// have to wait for the channel first.
    fn load_without_waiting(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Option<Result<Option<Record>, StoreError>> {
        if self.inner.strict {
            return None;
        }
        let record = self.inner.local.get(key)?;
        // An expired copy goes to `load`, which asks the central store whether
        // another server extended the session meanwhile.
        (!record.meta.is_expired(now)).then_some(Ok(Some(record)))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        // A new session is cached as created, so the request after a login is warm.
        // No other server has a copy of a key that had no session to drop.
        let local = &self.inner.local;
        let generation = local.generation(key);
        let created = self.inner.central.create(key, record).await?;
        if created == Created::Written {
            local.insert_if_current(key, record, generation);
        }
        Ok(created)
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let owed = self.owe(Invalidation::Session(*key));
        let saved = self.inner.central.save(key, changes, meta).await?;
        owed.send().await;
        Ok(saved)
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        let owed = self.owe(Invalidation::Session(*key));
        let saved = self
            .inner
            .central
            .save_unloaded(key, changes, refresh)
            .await?;
        owed.send().await;
        Ok(saved)
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let owed = self.owe(Invalidation::Session(*key));
        let updated = self.inner.central.update(key, field, f, meta).await?;
        match updated {
            // A session found gone (ended behind this store's back, by an eviction or
            // a manual delete) is dropped here and on the other servers too.
            Updated::Stored(_) | Updated::Missing => owed.send().await,
            Updated::Kept(_) => owed.forgive(),
        }
        Ok(updated)
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let owed = self.owe(Invalidation::Session(*key));
        let touched = self.inner.central.touch(key, meta).await?;
        owed.send().await;
        Ok(touched)
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let owed = self.owe(Invalidation::Session(*key));
        self.inner.central.delete(key).await?;
        owed.send().await;
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        self.inner.central.user_sessions(user_id).await
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let owed = self.owe(Invalidation::User(user_id.to_owned()));
        let deleted = self.inner.central.delete_user_sessions(user_id).await?;
        owed.send().await;
        Ok(deleted)
    }
}
