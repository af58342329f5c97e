//! [`RedisStore`]: sessions in Redis: a standalone server, a Redis Cluster, or the
//! master that Redis Sentinel names, followed through failovers.
//!
//! Every server of an application shares one Redis, so a user stays logged in
//! whichever server answers. Each session is one Redis hash under a hash-tagged key
//! (`{prefix}{<key>}`), so that every operation on a session stays in one slot of a
//! cluster; its TTL is the session's expiry. Writes are Lua scripts: one round trip
//! each, atomic, writing only the fields that changed, never re-creating a session
//! that is gone.
//!
//! | request | Redis round trips |
//! | --- | --- |
//! | no cookie, or a handler that never touches the session | 0 |
//! | reads the session | 1 (`HGETALL`); 2 when the idle timeout is due to be pushed back, which happens at most once per quarter of it per session |
//! | writes the session without reading it | 1: one script, which also restarts the idle timeout from the stored metadata |
//! | reads, then writes the session | 2: the load, then one script |
//! | `Session::update` | load, then `HGET` and one compare-and-set script per attempt |
//!
//! Why the push is not folded into the load: it would make the load a script, and on
//! this project's benchmark machine a script costs Redis 7.8 µs of CPU per read where
//! `HGETALL` costs under 3 (see BENCHMARKS.md); a second round trip once every few
//! minutes per session is much the cheaper.
//!
//! An update's attempt fails only when the field changed since it was read. Updates
//! of one field from one process take turns before they read it, so that only
//! updates from other processes make attempts fail: N concurrent increments through
//! one store cost N scripts, not the N²/2 they would racing each other.
//!
//! With [`with_invalidation_channel`](RedisStore::with_invalidation_channel), each
//! script that changes or ends a session also publishes its invalidation, for the
//! tiered stores of other servers, in the same atomic step (one more command inside
//! the script, no round trip).
//!
//! A user's sessions are a sorted set scored by expiry. On a standalone server it is
//! kept in the same script as each write, atomically; on a cluster it lives in its own
//! slot and is kept by a second call after each write (listing skips members whose
//! session is gone). Deleting a session removes its member in a second call. Expired
//! members are dropped whenever the set is written, and the set's own TTL follows its
//! last member, so an index nobody touches again still ends empty.
//!
//! ```no_run
//! # async fn run() -> Result<(), session_core::StoreError> {
//! use session_redis::RedisStore;
//!
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let layer = session_core::SessionLayer::new(store.with_prefix("myapp:session:"));
//! # let _ = layer;
//! # Ok(()) }
//! ```

mod scripts;
mod turns;
mod watched;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, RedisError, RedisWrite, Value};
use session_core::{
    async_trait, Changes, Created, Data, Meta, Record, Refresh, Saved, SessionKey, SessionStore,
    StoreError, StoreErrorKind, Timestamp, UpdateFn, Updated, UserSession,
};

use crate::scripts::{ScriptCall, Scripts, StoreScript, DATA_FIELD_PREFIX};
use crate::turns::Turns;
use crate::watched::{Server, WatchedConnection};

/// The `redis` crate, whose errors are the sources of this store's errors.
pub use redis;

/// How many times `update` retries a compare-and-set that lost a race (to another
/// process: this one's take turns) before it reports an error: far beyond what
/// contention on one field of one session produces.
const UPDATE_ATTEMPTS: usize = 1000;

/// What follows the store's prefix in the keys of user indices.
const INDEX_INFIX: &str = "user:";

/// A session store in Redis or a Redis Cluster. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: WatchedConnection,
    topology: Topology,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    turns: Arc<Turns>,
}

/// What the connection goes to: a cluster keeps a user's index in another slot than
/// the user's sessions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    Standalone,
    Sentinel,
    Cluster,
}

/// How long a connection attempt may take, and on a cluster a command too, inside the
/// driver. The layer's own store timeout (one second by default) is what requests see.
/// A standalone connection gives commands no timeout of its own: the layer's bounds
/// every call already, and a second timer per command made the runtime wake its
/// driver through a system call on most requests.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(2);

/// A single connection's settings: a limit on connecting, none on commands.
fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(DRIVER_TIMEOUT))
        .set_response_timeout(None)
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::unavailable(error)
}

impl RedisStore {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`). The connection
    /// is multiplexed and reconnects by itself when the server comes back.
    ///
    /// Commands carry no timeout of their own: behind a [`SessionLayer`] its store
    /// timeout bounds every call. Code that calls the store directly, outside a
    /// request, bounds it with `tokio::time::timeout`.
    ///
    /// [`SessionLayer`]: session_core::SessionLayer
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let connection = WatchedConnection::connect(Server::Address(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Standalone))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port`).
    pub async fn connect_cluster<I, U>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|u| u.as_ref().to_owned()).collect();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(DRIVER_TIMEOUT)
            .response_timeout(DRIVER_TIMEOUT)
            .retries(2)
            .build()
            .map_err(unavailable)?;
        let connection = WatchedConnection::connect(Server::Cluster(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Cluster))
    }

    /// Connects to the master that the Redis Sentinels at `sentinels`
    /// (`redis://host:26379`) name for `master_name`, and follows it through
    /// failovers: when the master is lost, or turns out to be a replica, the store asks
    /// the sentinels again and connects to the master they name then.
    ///
    /// While a failover is under way requests fail closed, as they do while a
    /// standalone server is down: with the layer's 503 and `Retry-After`, the cookie
    /// kept. A write sent to a demoted master is refused by it (`READONLY`) and sent
    /// once more, to the new master; a write whose connection broke is not sent again,
    /// since it may have run. A master that stops answering without closing its
    /// connections (frozen, or cut off) is noticed too: when a request gives up waiting
    /// on it, the store sends it a `PING`, and drops the connection if that goes
    /// unanswered for a second.
    ///
    /// For a master that needs a password, a database other than 0, or TLS, build the
    /// `SentinelClient` yourself and pass it to
    /// [`connect_sentinel_client`](Self::connect_sentinel_client).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_core::StoreError> {
    /// let store = session_redis::RedisStore::connect_sentinel(
    ///     ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"],
    ///     "mymaster",
    /// )
    /// .await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel<I, U>(sentinels: I, master_name: &str) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let sentinels: Vec<String> = sentinels
            .into_iter()
            .map(|url| url.as_ref().to_owned())
            .collect();
        let client = SentinelClient::build(
            sentinels,
            master_name.to_owned(),
            None,
            SentinelServerType::Master,
        )
        .map_err(unavailable)?;
        Self::connect_sentinel_client(client).await
    }

    /// Like [`connect_sentinel`](Self::connect_sentinel), with a `SentinelClient` built
    /// by the caller (`SentinelServerType::Master`), which can carry the master's
    /// password, database and TLS settings.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_core::StoreError> {
    /// use session_redis::redis::sentinel::{
    ///     SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
    /// };
    /// use session_redis::redis::RedisConnectionInfo;
    ///
    /// let master = SentinelNodeConnectionInfo::default()
    ///     .set_redis_connection_info(RedisConnectionInfo::default().set_db(2));
    /// let client = SentinelClient::build(
    ///     vec!["redis://127.0.0.1:26379"],
    ///     "mymaster".to_owned(),
    ///     Some(master),
    ///     SentinelServerType::Master,
    /// )
    /// .expect("valid sentinel addresses");
    /// let store = session_redis::RedisStore::connect_sentinel_client(client).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub async fn connect_sentinel_client(client: SentinelClient) -> Result<Self, StoreError> {
        let connection = WatchedConnection::connect(Server::Sentinel(client), connection_config())
            .await
            .map_err(unavailable)?;
        Ok(Self::new(connection, Topology::Sentinel))
    }

    fn new(connection: WatchedConnection, topology: Topology) -> Self {
        Self {
            connection,
            topology,
            prefix: Arc::from("session:"),
            scripts: Arc::new(Scripts::new(None)),
            turns: Arc::default(),
        }
    }

    /// Puts every key this store writes under `prefix` (default `session:`), so that
    /// several applications, or tests, can share one Redis.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Publishes, on the pub/sub `channel`, an invalidation of every session this
    /// store changes or ends (a save, an update, a touch, a delete), from inside the
    /// write itself: what a `TieredStore` in front of this store listens for, when it
    /// subscribes to `channel` on the same Redis and is built with
    /// `published_by_central()`. The tiered store then publishes nothing itself: a
    /// write costs one round trip instead of two, and a server that dies between a
    /// write and its announcement cannot leave other servers serving a stale copy.
    ///
    /// On a Redis Cluster this does nothing (a warning is logged): a message published
    /// on one master reaches the others over the cluster bus, in no order with those
    /// published elsewhere, which strict mode relies on. A tiered store in front of a
    /// cluster publishes its own invalidations.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_core::StoreError> {
    /// let store = session_redis::RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_invalidation_channel("myapp:invalidate");
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_invalidation_channel(mut self, channel: impl Into<String>) -> Self {
        if self.is_cluster() {
            tracing::warn!("RedisStore: no invalidation channel on a Redis Cluster");
        } else {
            self.scripts = Arc::new(Scripts::new(Some(channel.into())));
        }
        self
    }

    /// The Redis key of a session.
    fn session_key(&self, key: &SessionKey) -> String {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.session_key_len());
        let _ = write!(text, "{}", self.session_key_text(key));
        text
    }

    /// The Redis key of a session, to be written where it goes: the store's prefix,
    /// then the key inside a hash tag, so that a cluster keeps everything about one
    /// session in one slot.
    fn session_key_text<'a>(&'a self, key: &'a SessionKey) -> SessionKeyText<'a> {
        SessionKeyText {
            prefix: &self.prefix,
            key,
        }
    }

    fn session_key_len(&self) -> usize {
        // The key's text is 46 bytes, and the braces two more.
        self.prefix.len() + 48
    }

    fn session_key_from(&self, redis_key: &str) -> Option<SessionKey> {
        let tagged = redis_key.strip_prefix(&*self.prefix)?;
        SessionKey::parse(tagged.strip_prefix('{')?.strip_suffix('}')?)
    }

    /// The key of `user`'s index: the store's prefix, [`INDEX_INFIX`], then the user
    /// in a hash tag.
    fn index_key(&self, user: &str) -> String {
        format!("{}{INDEX_INFIX}{{{user}}}", self.prefix)
    }

    /// A record nobody can read is no session: the client gets a new one, and the
    /// broken record expires with its TTL.
    fn decode_or_absent(&self, reply: Value) -> Option<Record> {
        decode(reply).unwrap_or_else(|problem| {
            tracing::warn!(problem, "corrupt session record in Redis treated as absent");
            None
        })
    }

    fn is_cluster(&self) -> bool {
        self.topology == Topology::Cluster
    }

    /// Runs `script` on the session `key`, with the arguments `args` writes, keeping
    /// the user index of `user` with it (the member's score is `expires_at`): in the
    /// same script on a standalone server, in a second call on a cluster, where the
    /// index is in another slot.
    async fn run_with_index<T: redis::FromRedisValue>(
        &self,
        script: &StoreScript,
        key: &SessionKey,
        user: Option<&str>,
        expires_at: i64,
        create: bool,
        args: impl FnOnce(&mut ScriptCall<'_>) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let session = self.session_key(key);
        let index = user.map(|user| self.index_key(user));
        let mut call = match (&index, self.is_cluster()) {
            (Some(index), false) => self.scripts.call(script, &[&session, index], key),
            _ => self.scripts.call(script, &[&session], key),
        };
        args(&mut call)?;
        let mut connection = self.connection.clone();
        let result: T = call.invoke(&mut connection).await?;
        if let (Some(index), true) = (&index, self.is_cluster()) {
            self.index_on_cluster(&mut connection, key, index, &session, expires_at, create)
                .await?;
        }
        Ok(result)
    }

    /// A cluster's second call after a write: the user index `index` is in another
    /// slot than the session, so it is kept by a script of its own.
    async fn index_on_cluster(
        &self,
        connection: &mut WatchedConnection,
        key: &SessionKey,
        index: &str,
        session: &str,
        expires_at: i64,
        create: bool,
    ) -> Result<(), StoreError> {
        let mut call = self.scripts.call(&self.scripts.index, &[index], key);
        call.arg(session)
            .arg(expires_at)
            .arg(if create { "1" } else { "0" });
        call.invoke::<i64>(connection).await.map(drop)
    }
}

fn meta_error(error: serde_json::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Other, error)
}

fn meta_json(meta: &Meta) -> Result<String, StoreError> {
    serde_json::to_string(meta).map_err(meta_error)
}

/// A save's changes as its scripts take them: '1' if cleared, the number of removed
/// fields, the removed fields, then field/value pairs to set.
fn push_changes(call: &mut ScriptCall<'_>, changes: &Changes) {
    call.arg(if changes.cleared { "1" } else { "0" })
        .arg(changes.removed.len());
    for name in &changes.removed {
        call.data_field(name);
    }
    for (name, value) in changes.set.iter() {
        call.data_field(name).json(value);
    }
}

/// See [`RedisStore::session_key_text`].
struct SessionKeyText<'a> {
    prefix: &'a str,
    key: &'a SessionKey,
}

impl fmt::Display for SessionKeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{{{}}}", self.prefix, self.key)
    }
}

/// A field's value as `update` compares and sends it back: bytes that are no text
/// are as corrupt as text that is no JSON (as `load` finds them). Read as text, they
/// failed as if Redis were down; replaced lossily, they never compared equal again.
fn stored_text(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(StoreError::corrupt)
}

fn data_field(name: &str) -> String {
    format!("{DATA_FIELD_PREFIX}{name}")
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
fn decode_previous(reply: &[Value]) -> Result<Meta, String> {
    let bytes = |i: usize| match reply.get(i) {
        Some(Value::BulkString(bytes)) => Some(bytes.as_slice()),
        _ => None,
    };
    stored_meta(bytes(1), bytes(2), bytes(3).map(<[u8]>::to_vec))
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field(
                "connection",
                &match self.topology {
                    Topology::Standalone => "standalone",
                    Topology::Sentinel => "sentinel",
                    Topology::Cluster => "cluster",
                },
            )
            .finish()
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>, StoreError> {
        // The command's buffers sized once, the key written straight into them.
        let mut command = Cmd::with_capacity(2, "HGETALL".len() + self.session_key_len());
        command.arg("HGETALL");
        command.write_arg_fmt(self.session_key_text(key));
        let mut connection = self.connection.clone();
        let reply: Value = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(self.decode_or_absent(reply))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created, StoreError> {
        let expires_at = record.meta.expires_at.unix_millis();
        let user = record.meta.user_id.as_deref();
        let created: i64 = self
            .run_with_index(&self.scripts.create, key, user, expires_at, true, |call| {
                call.arg(expires_at)
                    .meta(&record.meta)
                    .map_err(meta_error)?
                    .arg(user.unwrap_or_default());
                for (name, value) in record.data.iter() {
                    call.data_field(name).json(value);
                }
                Ok(())
            })
            .await?;
        Ok(if created == 1 {
            Created::Created
        } else {
            Created::Collision
        })
    }

    async fn save(
        &self,
        key: &SessionKey,
        changes: &Changes,
        meta: &Meta,
    ) -> Result<Saved, StoreError> {
        let expires_at = meta.expires_at.unix_millis();
        let user = meta.user_id.as_deref();
        let saved: i64 = self
            .run_with_index(&self.scripts.save, key, user, expires_at, false, |call| {
                call.arg(expires_at).meta(meta).map_err(meta_error)?;
                push_changes(call, changes);
                Ok(())
            })
            .await?;
        Ok(if saved == 1 {
            Saved::Saved
        } else {
            Saved::Missing
        })
    }

    async fn save_unloaded(
        &self,
        key: &SessionKey,
        changes: &Changes,
        refresh: &Refresh,
    ) -> Result<Option<Meta>, StoreError> {
        let session = self.session_key(key);
        let mut call = self
            .scripts
            .call(&self.scripts.save_unloaded, &[&session], key);
        call.arg(refresh.now.unix_millis())
            .arg(u64::try_from(refresh.idle_timeout.as_millis()).unwrap_or(u64::MAX));
        // On a cluster the index is in another slot: it is kept in a second call.
        if self.is_cluster() {
            call.arg("");
        } else {
            call.arg_fmt(format_args!("{}{INDEX_INFIX}", self.prefix));
        }
        push_changes(&mut call, changes);
        let mut connection = self.connection.clone();
        let reply: Vec<Value> = call.invoke(&mut connection).await?;
        if !matches!(reply.first(), Some(Value::Int(1))) {
            return Ok(None);
        }
        let previous = match decode_previous(&reply) {
            Ok(meta) => meta,
            Err(problem) => {
                // As `load` would have: the client gets a new session, and the broken
                // record expires with its TTL.
                tracing::warn!(problem, "corrupt session record in Redis treated as absent");
                return Ok(None);
            }
        };
        if let (Some(user), true) = (&previous.user_id, self.is_cluster()) {
            let expires_at = refresh.expires_at(&previous).unix_millis();
            let index = self.index_key(user);
            self.index_on_cluster(&mut connection, key, &index, &session, expires_at, false)
                .await?;
        }
        Ok(Some(previous))
    }

    async fn update(
        &self,
        key: &SessionKey,
        field: &str,
        f: &UpdateFn<'_>,
        meta: &Meta,
    ) -> Result<Updated, StoreError> {
        let session = self.session_key(key);
        let field = data_field(field);
        // Read after the turn starts: a value read before it would be stale by then.
        let _turn = self.turns.take(format!("{session}\0{field}")).await;
        let mut connection = self.connection.clone();
        let stored: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&session)
            .arg(&field)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut current = stored.map(stored_text).transpose()?;
        let expires_at = meta.expires_at.unix_millis();
        let meta_text = meta_json(meta)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let parsed = match current.as_deref().map(serde_json::from_str).transpose() {
                Ok(parsed) => parsed,
                Err(e) => return Err(StoreError::corrupt(e)),
            };
            let Some(new) = f(parsed.as_ref()) else {
                return Ok(Updated::Kept(parsed));
            };
            let expected_absent = if current.is_none() { "1" } else { "0" };
            let outcome: Vec<Value> = self
                .run_with_index(
                    &self.scripts.compare_and_set,
                    key,
                    meta.user_id.as_deref(),
                    expires_at,
                    false,
                    |call| {
                        call.arg(field.as_str())
                            .arg(expected_absent)
                            .arg(current.as_deref().unwrap_or_default())
                            .json(&new)
                            .arg(expires_at)
                            .arg(meta_text.as_str());
                        Ok(())
                    },
                )
                .await?;
            match outcome.first() {
                Some(Value::Int(1)) => return Ok(Updated::Stored(new)),
                Some(Value::Int(0)) => return Ok(Updated::Missing),
                _ => {
                    current = match outcome.into_iter().nth(1) {
                        Some(Value::BulkString(bytes)) => Some(stored_text(bytes)?),
                        _ => None,
                    };
                }
            }
        }
        Err(StoreError::new(
            StoreErrorKind::Other,
            "update lost every compare-and-set race",
        ))
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta) -> Result<Saved, StoreError> {
        let expires_at = meta.expires_at.unix_millis();
        let user = meta.user_id.as_deref();
        let touched: i64 = self
            .run_with_index(&self.scripts.touch, key, user, expires_at, false, |call| {
                call.arg(expires_at);
                Ok(())
            })
            .await?;
        Ok(if touched == 1 {
            Saved::Saved
        } else {
            Saved::Missing
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let session = self.session_key(key);
        let user: String = self
            .scripts
            .call(&self.scripts.delete, &[&session], key)
            .invoke(&mut connection)
            .await?;
        if !user.is_empty() {
            redis::cmd("ZREM")
                .arg(self.index_key(&user))
                .arg(&session)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let index = self.index_key(user_id);
        let mut connection = self.connection.clone();
        let now = Timestamp::now().unix_millis();
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(now)
            .arg("+inf")
            .arg("BYSCORE")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut sessions = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for member in members {
            let Some(key) = self.session_key_from(&member) else {
                gone.push(member);
                continue;
            };
            match self.load(&key).await? {
                Some(record) if record.meta.user_id.as_deref() == Some(user_id) => {
                    sessions.push(UserSession {
                        key,
                        meta: record.meta,
                    });
                }
                _ => gone.push(member),
            }
        }
        if !gone.is_empty() {
            redis::cmd("ZREM")
                .arg(&index)
                .arg(&gone)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(sessions)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<usize, StoreError> {
        let index = self.index_key(user_id);
        let mut connection = self.connection.clone();
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut ended = 0;
        for member in &members {
            // Only a session still bound to this user: a member can outlive its session
            // on a cluster, where the index is written after the session.
            let Some(key) = self.session_key_from(member) else {
                continue;
            };
            if let Some(record) = self.load(&key).await? {
                if record.meta.user_id.as_deref() == Some(user_id) {
                    // The script, not a `DEL`: it announces the end of each session.
                    self.scripts
                        .call(&self.scripts.delete, &[member], &key)
                        .invoke::<String>(&mut connection)
                        .await?;
                    ended += 1;
                }
            }
        }
        if !members.is_empty() {
            // Members added meanwhile (a login racing this call) stay.
            redis::cmd("ZREM")
                .arg(&index)
                .arg(&members)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(ended)
    }
}
