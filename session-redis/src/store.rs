//! [`RedisStore`] and how it keeps the store contract with one script per write.

use std::fmt;
use std::sync::Arc;

use redis::{Cmd, RedisWrite, Value};
use session_core::store::{
    async_trait, Changes, Created, Record, Refresh, Saved, UpdateFn, Updated, USER_SESSIONS_LIMIT,
};
use session_core::{
    Meta, SessionKey, SessionStore, StoreError, StoreErrorKind, Timestamp, UserSession,
};

use crate::connect::{unavailable, Topology};
use crate::layout::{
    data_field, decode_meta_fields, decode_or_absent, decode_previous, meta_error, meta_json, Keys,
};
use crate::scripts::{ScriptCall, Scripts, StoreScript};
use crate::turns::Turns;
use crate::watched::WatchedConnection;

/// How many times `update` retries a compare-and-set that lost a race (to another
/// process: this one's take turns) before it reports an error: far beyond what
/// contention on one field of one session produces.
const UPDATE_ATTEMPTS: usize = 1000;

/// Sessions per step of "log out everywhere": a page of the set being ended is read
/// and ended in two round trips, whatever the number of the user's sessions.
const PAGE: usize = 2000;

/// A session store in Redis or a Redis Cluster. Clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) connection: WatchedConnection,
    pub(crate) topology: Topology,
    pub(crate) keys: Keys,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) turns: Arc<Turns>,
}

impl RedisStore {
    /// Puts every key this store writes under `prefix` (default `session:`), so that
    /// several applications, or tests, can share one Redis.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.keys = Keys::new(prefix.into());
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
        let session = self.keys.session(key);
        let index = user.map(|user| self.keys.index(user));
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

    /// The fields `e`, `m` and `u` of each session in `members` (full keys): one
    /// pipeline on a server, concurrent commands on a cluster, whose slots differ.
    async fn meta_fields(
        &self,
        connection: &mut WatchedConnection,
        members: &[String],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let fields = |member: &String| {
            let mut command = redis::cmd("HMGET");
            command.arg(member).arg("e").arg("m").arg("u");
            command
        };
        if members.is_empty() {
            return Ok(Vec::new());
        }
        if !self.is_cluster() {
            let mut pipeline = redis::pipe();
            for member in members {
                pipeline.add_command(fields(member));
            }
            return pipeline.query_async(connection).await.map_err(unavailable);
        }
        let replies = members.iter().map(|member| {
            let (command, mut connection) = (fields(member), connection.clone());
            async move { command.query_async(&mut connection).await }
        });
        futures_util::future::try_join_all(replies)
            .await
            .map_err(unavailable)
    }

    /// Ends the sessions in `members` that are still `user`'s, on a cluster: one
    /// script per session, sent together, since their slots differ; then they leave
    /// `ending`. Returns how many ended.
    async fn end_on_cluster(
        &self,
        connection: &mut WatchedConnection,
        user: &str,
        ending: &str,
        members: &[String],
    ) -> Result<usize, StoreError> {
        let ends = members.iter().filter_map(|member| {
            let key = self.keys.session_from(member)?;
            let mut connection = connection.clone();
            Some(async move {
                let mut call = self
                    .scripts
                    .call(&self.scripts.end_session, &[member], &key);
                call.arg(user);
                call.invoke::<usize>(&mut connection).await
            })
        });
        let ended = futures_util::future::try_join_all(ends).await?;
        redis::cmd("ZREM")
            .arg(ending)
            .arg(members)
            .query_async::<i64>(connection)
            .await
            .map_err(unavailable)?;
        Ok(ended.into_iter().sum())
    }
}

/// What `update` answers for a record it cannot read: no session, as `load` finds
/// it; the broken record expires with its TTL.
fn corrupt_record_is_missing() -> Updated {
    tracing::warn!("corrupt session record in Redis treated as absent");
    Updated::Missing
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

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
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
        let mut command = Cmd::with_capacity(2, "HGETALL".len() + self.keys.session_len());
        command.arg("HGETALL");
        command.write_arg_fmt(self.keys.session_text(key));
        let mut connection = self.connection.clone();
        let reply: Value = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(decode_or_absent(reply))
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
            Created::Written
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
            Saved::Applied
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
        let session = self.keys.session(key);
        let mut call = self
            .scripts
            .call(&self.scripts.save_unloaded, &[&session], key);
        call.arg(refresh.now.unix_millis())
            .arg(u64::try_from(refresh.idle_timeout.as_millis()).unwrap_or(u64::MAX));
        // On a cluster the index is in another slot: it is kept in a second call.
        if self.is_cluster() {
            call.arg("");
        } else {
            call.arg_fmt(self.keys.index_prefix());
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
            let index = self.keys.index(user);
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
        let session = self.keys.session(key);
        let field = data_field(field);
        // Read after the turn starts: a value read before it would be stale by then.
        let _turn = self.turns.take(format!("{session}\0{field}")).await;
        let mut connection = self.connection.clone();
        // The field's bytes as stored: compared as they are, parsed as `load` parses
        // them.
        let mut current: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&session)
            .arg(&field)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let expires_at = meta.expires_at.unix_millis();
        let meta_text = meta_json(meta)?;
        for _ in 0..UPDATE_ATTEMPTS {
            // A field that is no JSON (or no text) makes the record corrupt, and a
            // corrupt record is no session, as `load` finds it: nothing is written.
            let Ok(parsed) = current.as_deref().map(serde_json::from_slice).transpose() else {
                return Ok(corrupt_record_is_missing());
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
                        Some(Value::BulkString(bytes)) => Some(bytes),
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
            Saved::Applied
        } else {
            Saved::Missing
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let session = self.keys.session(key);
        let user: Vec<u8> = self
            .scripts
            .call(&self.scripts.delete, &[&session], key)
            .invoke(&mut connection)
            .await?;
        // A user that is no text names no index this store wrote: the record was
        // corrupt, and it is deleted all the same.
        let user = String::from_utf8(user).unwrap_or_default();
        if !user.is_empty() {
            redis::cmd("ZREM")
                .arg(self.keys.index(&user))
                .arg(&session)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, StoreError> {
        let index = self.keys.index(user_id);
        let mut connection = self.connection.clone();
        let now = Timestamp::now();
        // Those that expire last first, as many as the contract lists.
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg("+inf")
            .arg(now.unix_millis())
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(USER_SESSIONS_LIMIT)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let fields = self.meta_fields(&mut connection, &members).await?;
        let mut sessions = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for (member, fields) in members.into_iter().zip(fields) {
            let session = self.keys.session_from(&member).and_then(|key| {
                let meta = decode_meta_fields(&fields).ok()?;
                let live = !meta.is_expired(now) && meta.user_id.as_deref() == Some(user_id);
                live.then_some(UserSession { key, meta })
            });
            match session {
                Some(session) => sessions.push(session),
                None => gone.push(member),
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
        let index = self.keys.index(user_id);
        let ending = format!("{index}:ending");
        let mut connection = self.connection.clone();
        // The index becomes the set of sessions to end: logins from now on start a
        // new one, and every session created before this call is in the set.
        let _: i64 = self
            .scripts
            .call_for_user(&self.scripts.take_index, &[&index, &ending], user_id)
            .invoke(&mut connection)
            .await?;
        let mut ended = 0;
        loop {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(&ending)
                .arg(0)
                .arg(PAGE - 1)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if members.is_empty() {
                return Ok(ended);
            }
            ended += if self.is_cluster() {
                self.end_on_cluster(&mut connection, user_id, &ending, &members)
                    .await?
            } else {
                let keys: Vec<&str> = std::iter::once(ending.as_str())
                    .chain(members.iter().map(String::as_str))
                    .collect();
                self.scripts
                    .call_for_user(&self.scripts.end_sessions, &keys, user_id)
                    .invoke::<usize>(&mut connection)
                    .await?
            };
        }
    }
}
